"""What the runner of a compute_target="local" run does on the submitting machine (runs/local_runner.py
starts it, with Django set up on the runner's own folder): a node's phases (runs/execution.py) with
the same environment builder, box, launch plan and executor, recording through the API with the
member's token (runs/local_runs.py is the server's side) instead of into the database."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from runs import system_metrics
from runs.archives import UnsafeArchiveError, extract_snapshot, walk_regular_files
from runs.containers import ProcessLauncher
from runs.executor import HostExecutor, RunAborted, RunTimedOut, SetupFailed, StartedProcess
from runs.launch_plan import Host, Rendezvous, RunAccess, RunLaunch, plan_host
from runs.rendezvous import DEFAULT_MASTER_PORT, free_port
from trainhub.environments.builders import BuildError, sdk_path
from trainhub.environments.services import materialise
from trainhub.environments.spec import USER_MANAGED
from trainhub.redis_conn import get_redis
from trainhub.sandbox import (
    Box,
    SandboxUnavailable,
    box_uid,
    interpreter_folders,
    node_is_root,
    node_sandbox_support,
    python_folders,
    run_box,
)

REPORT_SECONDS = 0.25
# The server fails a run whose runner is silent for RUNNER_SILENT_SECONDS (runs/local_runs.py).
HEARTBEAT_SECONDS = 5.0
PREPARE_STREAM = "prepare_node_0"
NAME = "the submitting machine"
USER_MANAGED_PYTHON = (
    "Environment {name} is user-managed (python.user_managed_dependencies): nothing is built, the "
    "processes run with {python} as it is, read-only in the run's box"
)
NOT_COPIED = "Not copied (symlinks, special files and files not the run's are never copied)"


def machine_problem() -> str | None:
    """Why this machine cannot run a run in its box, or None."""
    try:
        node_sandbox_support(settings.TRAINHUB_NODE_SANDBOX)
    except ImproperlyConfigured as error:
        return str(error)
    return None


class ApiRecords:
    """What the executor records (runs/executor.py, DatabaseRecords), and the ranks' system metrics,
    gathered and sent to the server every REPORT_SECONDS by a thread of its own; its answer says when
    the run must stop."""

    def __init__(self, store: Any, run_id: str):
        self.store = store
        self.run_id = run_id
        self.lock = threading.Lock()  # what is gathered
        self.sending = threading.Lock()  # one report at a time, so they reach the server in order
        self.logs: list[dict[str, Any]] = []
        self.processes: list[dict[str, Any]] = []
        self.system: list[dict[str, Any]] = []  # metrics batches, one per rank and sample
        self.stop_reason = ""
        self.sent_at = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="local-run-reports")

    # ---------------------------------------------------------- the executor's records

    def log_append(self, run_pk: int, stream: str, lines: list[str]) -> None:
        with self.lock:
            if self.logs and self.logs[-1]["stream"] == stream:
                self.logs[-1]["lines"].extend(lines)
            else:
                self.logs.append({"stream": stream, "lines": list(lines)})

    def process_started(self, *, run_pk: int, rank: int, node_rank: int, local_rank: int, node_name: str, pid=None):
        self._process({"event": "started", "rank": rank, "local_rank": local_rank, "pid": pid})

    def process_ended(self, run_pk: int, rank: int, state: str, exit_code: int | None = None) -> None:
        self._process({"event": "ended", "rank": rank, "state": str(state), "exit_code": exit_code})

    def running_processes_ended(
        self,
        run_pk: int,
        state: str,
        *,
        node_rank: int | None = None,
        exit_code: int | None = None,
        except_rank: int | None = None,
    ) -> None:
        self._process(
            {"event": "running_ended", "state": str(state), "exit_code": exit_code, "except_rank": except_rank}
        )

    def placement_node_names(self, run_pk: int) -> dict[int, str]:
        return {0: NAME}

    def _process(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.processes.append(event)

    def system_metrics(self, batches: list[dict[str, Any]]) -> None:
        with self.lock:
            self.system.extend(batches)

    # ---------------------------------------------------------- sending

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(REPORT_SECONDS):
            try:
                self.send(heartbeat=time.monotonic() - self.sent_at >= HEARTBEAT_SECONDS)
            except Exception as error:  # the next report tries again; the server waits RUNNER_SILENT_SECONDS
                print(f"local runner: report failed: {error}", file=sys.stderr, flush=True)

    def send(self, status: dict[str, Any] | None = None, *, heartbeat: bool = True) -> None:
        """What was gathered (and `status`, a state for the run), in order; with nothing to say, only
        a heartbeat when one is due."""
        with self.sending:
            with self.lock:
                logs, self.logs = self.logs, []
                processes, self.processes = self.processes, []
                system, self.system = self.system, []
            try:
                # Before the report: a run's end (its last report) comes after its last sample.
                for batch in system:
                    self.store.log_metrics(self.run_id, batch)
            except Exception as error:  # a run never fails for want of a sample
                print(f"local runner: system metrics not sent: {error}", file=sys.stderr, flush=True)
            if not (logs or processes or status or heartbeat):
                return
            report = {"logs": logs, "processes": processes, "status": status}
            try:
                answer = self.store.report_local_run(self.run_id, report)
            except Exception:
                with self.lock:
                    # Kept for the next report, in front of what came meanwhile.
                    self.logs = logs + self.logs
                    self.processes = processes + self.processes
                raise
            self.sent_at = time.monotonic()
            self.stop_reason = self.stop_reason or answer.get("stop", "")

    def close(self) -> None:
        self.done.set()
        self.thread.join()


class LocalExecution:
    """The run's execution on this machine, phase by phase as a node's (runs/execution.py)."""

    def __init__(self, workspace: Any, run_id: str, snapshot: Path, user_python: Path | None = None):
        self.workspace = workspace
        # A user-managed environment's interpreter, as the submitting SDK chose it (never the server).
        self.user_python = Path(user_python or sys.executable).absolute()
        self.user_managed = False
        self.store = workspace._store
        self.run_id = run_id
        self.snapshot = snapshot
        self.records = ApiRecords(self.store, run_id)
        work = Path(settings.TRAINHUB_NODE_WORK_DIR)
        self.workdir = work / run_id
        self.private_logs = work / f"{run_id}.logs"
        self.box_folder = work / f"{run_id}.box"
        self.prepare_lines: list[str] = []
        self.executor: HostExecutor | None = None
        self.box: Box | None = None
        self.claim: dict[str, Any] = {}

    def say(self, line: str) -> None:
        self.prepare_lines.append(line)
        self.records.log_append(0, PREPARE_STREAM, [line])

    def report(self, status: str, **details: Any) -> None:
        self.records.send({"status": status, **details})

    def check_abort(self) -> None:
        if self.records.stop_reason:
            raise RunAborted(self.records.stop_reason)

    def take_run(self) -> None:
        """Claim the run from the server (once: a second runner is refused)."""
        self.claim = self.store.claim_local_run(self.run_id)

    def execute(self) -> int:
        self.records.start()
        try:
            self.report("Preparing")
            python, variables = self.prepare_environment()
            self.check_abort()
            self.unpack_snapshot()
            self.make_box(python)
            self.check_abort()
            self.report("Starting")
            failed = self.run_plan(python, variables)
            self.finish(failed)
        except RunAborted as aborted:
            self.stop_and_copy()
            self.end_aborted(str(aborted))
        except SetupFailed as failure:
            self.stop_and_copy()
            self.report("Failed", reason=failure.reason, traceback=failure.details)
        except Exception as error:  # the run ends Failed, whatever went wrong here
            self.stop_and_copy()
            self.report(
                "Failed",
                reason=f"TrainHub's runner on {NAME} failed: {type(error).__name__}: {error}",
                traceback=traceback.format_exc(),
            )
        finally:
            if self.executor is not None:
                self.executor.close()
            self.records.close()
            self.records.send(heartbeat=False)
            shutil.rmtree(self.workdir, ignore_errors=True)
            shutil.rmtree(self.private_logs, ignore_errors=True)
            if self.box is not None:
                self.box.cleanup()
            shutil.rmtree(self.box_folder, ignore_errors=True)
        return 0

    def prepare_environment(self) -> tuple[Path, dict[str, str]]:
        spec = self.claim["environment_spec"]
        variables = {str(k): str(v) for k, v in (spec.get("environment_variables") or {}).items()}
        if spec.get(USER_MANAGED):
            self.user_managed = True
            self.say(USER_MANAGED_PYTHON.format(name=self.claim["environment_name"], python=self.user_python))
            return self.user_python, variables
        self.say(f"Preparing environment {self.claim['environment_name']} on {NAME} ({socket.gethostname()})")
        started = time.monotonic()
        try:
            built = materialise(spec, cache_dir=Path(settings.TRAINHUB_ENV_CACHE_DIR), log=self.say)
        except BuildError as error:
            raise SetupFailed(f"Environment build failed: {error.reason}", error.log) from None
        self.say(
            ("Environment cache hit" if built.cache_hit else "Environment built")
            + f" ({built.spec_hash[:12]}) in {time.monotonic() - started:.2f} s"
        )
        return built.python, variables

    def unpack_snapshot(self) -> None:
        digest = hashlib.sha256()
        with open(self.snapshot, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != self.claim["snapshot"]:
            raise SetupFailed("The snapshot on this machine is not the run's: it changed after the submit.", "")
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.private_logs.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.snapshot, "rb") as archive:
                count = extract_snapshot(archive, self.workdir, max_bytes=settings.TRAINHUB_SNAPSHOT_MAX_EXPANDED_BYTES)
        except UnsafeArchiveError as error:
            raise SetupFailed(f"Snapshot rejected: {error}", "") from None
        (self.workdir / "outputs").mkdir(exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.say(f"Snapshot {self.claim['snapshot'][:12]} unpacked: {count} files")

    def sdk_folder(self) -> Path:
        return sdk_path(Path(settings.TRAINHUB_ENV_CACHE_DIR))

    def make_box(self, python: Path) -> None:
        try:
            folders = interpreter_folders(python) if self.user_managed else python_folders(python)
            self.box = run_box(
                uid=box_uid("run", self.claim["pk"]),
                workdir=self.workdir,
                box_folder=self.box_folder,
                read_only=[*folders, self.sdk_folder()],
                say=self.say,
            )
        except SandboxUnavailable as error:
            raise SetupFailed(str(error), "") from None
        if self.box is not None:
            self.box.prepare()

    def run_plan(self, python: Path, variables: dict[str, str]) -> StartedProcess | None:
        claim = self.claim
        launch = RunLaunch(
            pk=claim["pk"],
            run_id=claim["run_id"],
            workspace=claim["workspace"],
            experiment=claim["experiment"],
            experiment_id=claim["experiment_id"],
            script=claim["script"],
            command=tuple(claim["command"]),
            arguments=tuple(claim["arguments"]),
            distributed=claim["distributed"],
            node_count=claim["node_count"],
            process_count_per_node=claim["process_count_per_node"],
        )
        host = Host(
            node_rank=0,
            name=NAME,
            workdir=self.workdir,
            python=python,
            run_variables=variables,
            node_environ=dict(os.environ),
            pass_env=tuple(settings.TRAINHUB_NODE_PASS_ENV),
            sdk_folder=self.sdk_folder(),
            torch=any(python_folders(python)[0].glob("lib/python*/site-packages/torch/distributed/rendezvous.py")),
        )
        access = RunAccess(server_url=self.workspace.url, token=claim["token"])
        plan = plan_host(launch, host, Rendezvous("127.0.0.1", free_port(DEFAULT_MASTER_PORT)), access)
        self.executor = HostExecutor(
            run_pk=claim["pk"],
            node_rank=0,
            node_name=NAME,
            workdir=self.workdir,
            private_logs=self.private_logs,
            launcher=ProcessLauncher(),
            box=self.box,
            # A single host: the executor's Redis (MPI daemons on other hosts) is never reached.
            connection=get_redis(),
            records=self.records,
        )
        self.executor.start(plan, self.check_abort)
        self.report("Running")
        return self.executor.pump(self.watch())

    def watch(self) -> Any:
        """As a node's: the run's abort, its time limit, and (every TRAINHUB_SYSTEM_METRICS_SECONDS)
        its ranks' CPU, memory and GPU use, sent as its system/ metrics."""
        timeout = self.claim.get("timeout_seconds")
        timeout_at = time.monotonic() + timeout if timeout else None
        sample_every = settings.TRAINHUB_SYSTEM_METRICS_SECONDS
        next_sample = time.monotonic() + min(1.0, sample_every)  # the first only starts the CPU clocks
        sampler = system_metrics.Sampler()

        def tick() -> None:
            nonlocal next_sample
            self.check_abort()
            now = time.monotonic()
            if sample_every and self.executor is not None and now >= next_sample:
                next_sample = now + sample_every
                samples = sampler.sample(self.executor.running_ranks())
                self.records.system_metrics([system_metrics.batch(rank, values) for rank, values in samples.items()])
            if timeout_at is not None and now > timeout_at:
                raise RunTimedOut()

        return tick

    def finish(self, failed: StartedProcess | None) -> None:
        if failed is not None:
            assert self.executor is not None
            failure = self.executor.failure(failed)
            self.stop_and_copy()
            self.report(
                "Failed",
                reason=failure.reason,
                exit_code=failure.exit_code,
                failed_rank=failure.rank,
                traceback=failure.traceback,
            )
            return
        self.report("Finalizing")
        self.copy_files()
        self.report("Completed", exit_code=0)

    def stop_and_copy(self) -> None:
        if self.executor is not None:
            self.executor.stop()
            self.executor.drain()
        if self.claim:
            try:
                self.copy_files()
            except Exception as error:  # the run's end is still reported
                self.records.log_append(0, PREPARE_STREAM, [f"Copying outputs/ and logs/ failed: {error}"])

    def end_aborted(self, reason: str) -> None:
        if reason == "timeout":
            self.report(
                "Failed", reason=f"The run passed its time limit of {self.claim['timeout_seconds']} s and was stopped."
            )
        elif reason == "Canceled":
            self.report("Finalizing")
            self.report("Canceled")
        # Otherwise the server ended the run already (its answer said so).

    def copy_files(self) -> None:
        """outputs/ and logs/ into the run's history: regular files the run's user owns, as a node copies."""

        if self.executor is not None:
            self.executor.close_logs()
        if self.prepare_lines:
            self.private_logs.mkdir(parents=True, exist_ok=True)
            (self.private_logs / f"{PREPARE_STREAM}.txt").write_text("\n".join(self.prepare_lines) + "\n")
        owner = self.box.uid if self.box is not None and node_is_root() else None
        skipped: list[str] = []
        files: list[tuple[str, Path]] = []
        for folder in ("outputs", "logs"):
            for relative, absolute, is_link in walk_regular_files(self.workdir / folder):
                name = f"{folder}/{relative}"
                if is_link or not absolute.is_file() or (owner is not None and absolute.lstat().st_uid != owner):
                    skipped.append(name)
                    continue
                files.append((name, absolute))
        for relative, absolute, is_link in walk_regular_files(self.private_logs):
            if not is_link:
                files.append((f"logs/{relative}", absolute))
        for name, absolute in files:
            self.store.upload_local_run_file(self.run_id, name, _sha256(absolute), absolute)
        if skipped:
            self.records.log_append(
                0,
                PREPARE_STREAM,
                [f"{NOT_COPIED}: {', '.join(skipped[:20])}"],
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
