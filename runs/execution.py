"""What a node does for its share of a run: prepare, unpack, start the ranks, pump their
output, watch for cancel and failures, then copy outputs and logs into the run's history."""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import close_old_connections
from django.utils import timezone

from datastores.staging import stage_run_inputs
from metrics.services import metrics_ingest, parse_batch
from runs import services, system_metrics
from runs.archives import UnsafeArchiveError, extract_snapshot, walk_regular_files
from runs.container_relay import ContainerRelay
from runs.containers import (
    ContainerLauncher,
    Launcher,
    ProcessLauncher,
    host_variables,
    launch_problem,
    launcher_for,
    launcher_variables,
)
from runs.models import Run, RunNode, RunProcess, RunStatus
from runs.mpi_agent import SOCKET_VARIABLE as MPI_AGENT_SOCKET
from runs.mpi_relay import MpiRelay, request_key, result_key
from runs.sandbox import (
    SYSTEM_PATH,
    Box,
    SandboxUnavailable,
    box_uid,
    chown_tree,
    node_is_root,
    python_folders,
    run_box,
    start_unboxed,
)
from runs.scheduling import run_token
from trainhub.compute.models import Node
from trainhub.redis_conn import get_redis
from trainhub.sdk._whole_lines import ANNOUNCE, split_tagged
from trainhub.workspaces.models import Role
from trainhub.workspaces.permissions import Access

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05
PREPARE_FLUSH_SECONDS = 0.25
MAX_LINES_PER_CHUNK = 2000
ABORT_POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 3.0
RENDEZVOUS_TIMEOUT_SECONDS = 120
PEERS_TIMEOUT_SECONDS = 60
DEFAULT_MASTER_PORT = 6105
TRACEBACK_LINES = 400
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


DOCKER_MPI_NEEDS_BOX = (
    "MPI launches in a Docker environment run mpirun and Open MPI's daemons in the run's box, which "
    "this node does not use (TRAINHUB_NODE_SANDBOX=false). Run it on nodes with the box, or without MPI."
)


class RunAborted(Exception):
    """Another node, the user or the platform ended the run."""


@dataclass
class RankProcess:
    rank: int
    local_rank: int
    stream: str
    process: subprocess.Popen
    log_file: Any
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TRACEBACK_LINES))
    exit_code: int | None = None
    reader_done: threading.Event = field(default_factory=threading.Event)
    mpi: bool = False
    # A per-node launcher (torchrun): its ranks' lines arrive tagged on its pipe, see _whole_lines.
    launcher: bool = False


MPI_HOST_PREFIX = "trainhub-node-"
MPI_TAG = re.compile(r"\[\d+,(\d+)\]<std(?:out|err)>:")
MPI_FAILED_RANK = re.compile(r"Process name: \[\[\d+,\d+\],(\d+)\]")
# torchrun's failure summary: "rank      : 3 (local_rank: 1)" under "Root Cause (first observed failure)".
LAUNCHER_FAILED_RANK = re.compile(r"^\s*rank\s*:\s*(\d+) \(local_rank: \d+\)")
RANK_STARTED = re.compile(r"started local_rank=(\d+) pid=(\d+)")
# Set by each node for the MPI ranks it hosts (mpirun's and Open MPI's daemon's children inherit it).
MPI_RANK_DIR = "TRAINHUB_MPI_RANK_DIR"


def split_mpi_output(line: str, pending: dict[str, str]) -> list[tuple[str, str]]:
    """Route a line of `mpirun --tag-output` to the ranks' streams.

    Open MPI tags every write, so one physical line can hold pieces of a rank's line;
    a piece ends the rank's line only where the physical line ends."""
    parts = MPI_TAG.split(line)
    found: list[tuple[str, str]] = []
    if parts[0]:
        found.append(("mpirun", parts[0]))
    last = None
    for index in range(1, len(parts), 2):
        stream = f"std_log_process_{parts[index]}"
        pending[stream] = pending.get(stream, "") + parts[index + 1]
        last = stream
    if last is not None:
        found.append((last, pending.pop(last)))
    return found


def expand_variables(value: str, env: dict[str, str]) -> str:
    """$VAR and ${VAR} from the rank's environment; unknown names stay as written."""
    return VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)


# Where a Python traceback starts, and where faulthandler's report of a crash does (a rank killed
# by a signal from native code: a segmentation fault, an abort in a C++ library).
TRACEBACK_STARTS = ("Traceback (most recent call last)", "Fatal Python error: ")


def last_traceback(lines: list[str]) -> str:
    start = None
    for index, line in enumerate(lines):
        if line.startswith(TRACEBACK_STARTS):
            start = index
    return "\n".join(lines[start:]) if start is not None else "\n".join(lines[-30:])


def signal_named(exit_code: int | None) -> str:
    """ " (SIGSEGV)" for an exit code that says a signal ended the process (128 + its number, as a
    shell reports it; negative from Popen), else ""."""
    if exit_code is None:
        return ""
    number = -exit_code if exit_code < 0 else exit_code - 128
    if number <= 0:
        return ""
    try:
        return f" ({signal.Signals(number).name})"
    except ValueError:
        return ""


def node_variables_passed(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    """What a run gets of the node's own variables: those TRAINHUB_NODE_PASS_ENV names (NAME* for a
    prefix), nothing else (the node's credentials, proxies, tokens stay the node's)."""
    names = settings.TRAINHUB_NODE_PASS_ENV
    exact = {name for name in names if not name.endswith("*")}
    prefixes = tuple(name[:-1] for name in names if name.endswith("*"))
    return {name: value for name, value in environ.items() if name in exact or (prefixes and name.startswith(prefixes))}


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError("no free port")


MASTER_PORT_HOLD_SECONDS = 120


def reserve_master_port(redis: Any, address: str, run_pk: int) -> int:
    """A free port on `address` that no other run is about to take. A port is free when checked
    but bound only once rank 0 starts, so two runs starting at once on one host would otherwise
    both pick 6105; each holds its pick in Redis until rank 0 has surely bound it."""
    preferred = DEFAULT_MASTER_PORT
    for _ in range(20):
        port = free_port(preferred)
        if redis.set(f"trainhub:master-port:{address}:{port}", run_pk, nx=True, ex=MASTER_PORT_HOLD_SECONDS):
            return port
        preferred = 0
    raise OSError(f"no free port on {address}")


class NodeExecution:
    def __init__(self, run_pk: int, node_pk: int, node_rank: int, stop_event: threading.Event | None = None):
        self.run = Run.objects.select_related("workspace", "experiment", "snapshot", "cluster").get(pk=run_pk)
        self.node = Node.objects.get(pk=node_pk)
        self.node_rank = node_rank
        # Derived here, from the row and the secret key: the job that brought the node here holds ids only.
        self.token = run_token(self.run.pk, self.run.token_salt)
        self.stop_event = stop_event or threading.Event()
        self.redis = get_redis()
        self.workdir = Path(settings.TRAINHUB_NODE_WORK_DIR) / self.node.name / self.run.run_id
        self.private_logs = self.workdir.parent / f"{self.run.run_id}.logs"
        self.box_folder = self.workdir.parent / f"{self.run.run_id}.box"  # its /tmp and /dev/shm
        self.ranks: list[RankProcess] = []
        self.lines: collections.deque[tuple[str, str]] = collections.deque()
        self.lines_lock = threading.Lock()
        self.started: list[tuple[int, str]] = []  # announcements of a per-node launch's ranks
        self.tails: dict[str, collections.deque] = {}
        self.prepare_stream = f"prepare_node_{node_rank}"
        self.prepare_lines: list[str] = []
        self.prepare_pending: list[str] = []
        self.prepare_flushed_at = time.monotonic()
        self.launcher: Launcher = ProcessLauncher()
        self.system = system_metrics.Sampler()
        self.box: Box | None = None
        self.mpi_relay: MpiRelay | None = None
        self.container_relay: ContainerRelay | None = None
        # Names of the ranks' variables that come from the node's own environment, not the run.
        self.node_variables: frozenset[str] = frozenset()

    # ------------------------------------------------------------ helpers

    @property
    def leader(self) -> bool:
        return self.node_rank == 0

    def say(self, line: str) -> None:
        """A line of the node's own (prepare/system) log; sent in batches, at most every
        PREPARE_FLUSH_SECONDS, so a long build streams and a cache hit costs one write."""
        self.prepare_lines.append(line)
        self.prepare_pending.append(line)
        if time.monotonic() - self.prepare_flushed_at >= PREPARE_FLUSH_SECONDS:
            self.flush_prepare()

    def flush_prepare(self) -> None:
        if self.prepare_pending:
            services.log_append(self.run.pk, self.prepare_stream, self.prepare_pending)
            self.prepare_pending = []
        self.prepare_flushed_at = time.monotonic()

    def aborted(self) -> str | None:
        if self.stop_event.is_set():
            return "node stopped"
        value = self.redis.get(services.abort_key(self.run.pk))
        return value.decode() if value else None

    def check_abort(self) -> None:
        reason = self.aborted()
        if reason:
            raise RunAborted(reason)

    def transition(self, status: str, **kwargs: Any) -> None:
        if self.leader:
            services.run_transition(self.run.pk, status, **kwargs)

    # ------------------------------------------------------------ phases

    def execute(self) -> None:
        RunNode.objects.filter(run=self.run, node_rank=self.node_rank).update(state="preparing")
        try:
            self.check_abort()
            self.transition(RunStatus.PREPARING)
            python, env_vars = self.prepare_environment()
            self.check_abort()
            self.unpack_snapshot()
            inputs = stage_run_inputs(self.run, self.node.name, self.workdir, self.say)
            env_vars.update(inputs)
            self.sandbox_processes(python, [Path(path) for path in inputs.values()])
            self.check_abort()
            self.flush_prepare()
            self.transition(RunStatus.STARTING)
            rendezvous = self.rendezvous()
            self.start_ranks(python, env_vars, rendezvous)
            self.transition(RunStatus.RUNNING)
            failed = self.pump()
            if failed is not None and failed.rank < 0:
                failed = None  # an MPI daemon of another node: mpirun on node 0 reports failures
            self.finish(failed)
        except RunAborted as aborted:
            self.flush_prepare()
            self.stop_ranks()
            self.drain()
            self.finalize_files()
            self.end_aborted(str(aborted))
        except _SetupFailed as failure:
            self.flush_prepare()
            self.stop_ranks()
            self.finalize_files()
            services.fail_run(self.run.pk, failure.reason, error_traceback=failure.details)
        except Exception as error:  # the node must survive anything a run does
            logger.exception("run %s failed on node %s", self.run.run_id, self.node.name)
            self.flush_prepare()
            self.stop_ranks()
            services.fail_run(
                self.run.pk,
                f"TrainHub node {self.node.name} failed: {type(error).__name__}: {error}",
                error_traceback=traceback.format_exc(),
            )
        finally:
            self.stop_ranks()
            if self.mpi_relay is not None:
                self.mpi_relay.close()
            if self.container_relay is not None:
                self.container_relay.close()
            self.launcher.remove_leftovers()
            self.flush_prepare()
            # Announced by a per-node launch's rank after its launcher was stopped, or never ended.
            RunProcess.objects.filter(run=self.run, node_rank=self.node_rank, state="running").update(
                state="stopped", ended_at=timezone.now()
            )
            RunNode.objects.filter(run=self.run, node_rank=self.node_rank).update(
                state="done", finished_at=timezone.now()
            )
            shutil.rmtree(self.workdir, ignore_errors=True)
            shutil.rmtree(self.private_logs, ignore_errors=True)
            if self.box is not None:
                self.box.cleanup()
            shutil.rmtree(self.box_folder, ignore_errors=True)

    def prepare_environment(self) -> tuple[Path, dict[str, str]]:
        from trainhub.environments.builders import BuildError
        from trainhub.environments.services import materialise_recorded

        spec = self.run.environment_spec
        self.say(
            f"Preparing environment {self.run.environment_name}"
            + (f" version {self.run.environment_version}" if self.run.environment_version else "")
            + f" on node {self.node.name}"
        )
        problem = launch_problem(self.run, self.node)
        if problem:
            raise _SetupFailed(problem, "")
        started = time.monotonic()
        try:
            built = materialise_recorded(
                spec, cache_dir=Path(settings.TRAINHUB_ENV_CACHE_DIR), node=self.node.name, log=self.say
            )
        except BuildError as error:
            raise _SetupFailed(f"Environment build failed: {error.reason}", error.log) from None
        self.launcher = launcher_for(self.run, self.node, self.workdir, built)
        self.say(
            ("Environment cache hit" if built.cache_hit else "Environment built")
            + f" ({built.spec_hash[:12]}) in {time.monotonic() - started:.2f} s"
        )
        variables = {str(k): str(v) for k, v in (spec.get("environment_variables") or {}).items()}
        return built.python, variables

    def unpack_snapshot(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.private_logs.mkdir(parents=True, exist_ok=True)
        try:
            with default_storage.open(self.run.snapshot.storage_name, "rb") as archive:
                count = extract_snapshot(archive, self.workdir, max_bytes=settings.TRAINHUB_SNAPSHOT_MAX_EXPANDED_BYTES)
        except UnsafeArchiveError as error:
            raise _SetupFailed(f"Snapshot rejected: {error}", "") from None
        (self.workdir / "outputs").mkdir(exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.say(f"Snapshot {self.run.snapshot.sha256[:12]} unpacked: {count} files")

    @functools.cached_property
    def sdk_folder(self) -> Path:
        """The in-run SDK (and the sitecustomize) that goes on the ranks' PYTHONPATH."""
        from trainhub.environments.builders import sdk_path

        return sdk_path(Path(settings.TRAINHUB_ENV_CACHE_DIR))

    def sandbox_processes(self, python: Path, inputs: list[Path]) -> None:
        """The node's own processes (not containers) start in the run's box: its uid, its private
        /tmp and /dev/shm (shared by the run's ranks on this node), the site's data out of sight.
        Containers see the run's folder, as its uid, and its own inputs read-only; a Docker MPI
        run's mpirun and Open MPI's daemons are in the box too."""
        readable = [*python_folders(python), self.sdk_folder, *inputs]
        if isinstance(self.launcher, ContainerLauncher):
            self.launcher = dataclasses.replace(self.launcher, mounts=tuple(inputs))
            uid = int(self.launcher.user.split(":")[0])
            if uid != os.getuid():
                chown_tree(self.workdir, uid)
            if self.run.distributed.get("type") != "mpi":
                return
            readable = list(inputs)
        try:
            self.box = run_box(
                uid=box_uid("run", self.run.pk),
                workdir=self.workdir,
                box_folder=self.box_folder,
                read_only=readable,
                say=self.say,
            )
        except SandboxUnavailable as error:
            raise _SetupFailed(str(error), "") from None
        if self.box is not None:
            self.box.prepare()
        elif isinstance(self.launcher, ContainerLauncher):
            raise _SetupFailed(DOCKER_MPI_NEEDS_BOX, "")

    def rendezvous(self) -> dict[str, str]:
        key = services.rendezvous_key(self.run.pk)
        if self.leader:
            port = reserve_master_port(self.redis, self.node.address, self.run.pk)
            value = {"addr": self.node.address, "port": str(port)}
            self.redis.set(key, json.dumps(value), ex=7 * 86400)
            return value
        deadline = time.monotonic() + RENDEZVOUS_TIMEOUT_SECONDS
        while True:
            raw = self.redis.get(key)
            if raw:
                return json.loads(raw)
            self.check_abort()
            if time.monotonic() > deadline:
                raise _SetupFailed(
                    f"Node {self.node.name} (node rank {self.node_rank}) waited "
                    f"{RENDEZVOUS_TIMEOUT_SECONDS} s for node 0's address and port: rendezvous failed.",
                    "",
                )
            time.sleep(0.1)

    @property
    def per_node_launch(self) -> bool:
        """A per-node launch: the command (torchrun, torch.distributed.launch) forks the ranks itself."""
        run = self.run
        return (
            bool(run.command) and run.distributed.get("type") == "pytorch" and not run.distributed.get("process_count")
        )

    @property
    def processes_started_per_node(self) -> int:
        return 1 if self.per_node_launch else self.run.process_count_per_node

    def _argv(self) -> list[str]:
        run = self.run
        if run.command:
            return [*run.command, *run.arguments]
        return ["python", run.script, *run.arguments]

    def _launch_plan(self) -> list[tuple[int, int, list[str]]]:
        """(global rank, local rank, argv) of each process this node starts."""
        per_node = self.processes_started_per_node
        return [(self.node_rank * per_node + local_rank, local_rank, self._argv()) for local_rank in range(per_node)]

    def start_ranks(self, python: Path, env_vars: dict[str, str], rendezvous: dict[str, str]) -> None:
        base = self._base_env(python, env_vars, rendezvous)
        if self.run.distributed.get("type") == "mpi":
            if isinstance(self.launcher, ContainerLauncher) and self.box is not None:
                argv = [expand_variables(str(part), base) for part in self._argv()]
                self.container_relay = ContainerRelay(
                    run_pk=self.run.pk,
                    folder=self.workdir,
                    spec=self.launcher.spec(argv, base, self.node_variables),
                    tmp=self.box.tmp,
                    ranks=self.run.process_count_per_node,
                )
            if self.leader:
                self._start_mpirun(python, base)
            else:
                self._serve_mpi(base)
            return
        for rank, local_rank, argv in self._launch_plan():
            rank_variables = {
                "RANK": str(rank),
                "LOCAL_RANK": str(local_rank),
                "AZ_BATCHAI_TASK_INDEX": str(rank),
                "TRAINHUB_RANK": str(rank),
            }
            env = dict(base, **rank_variables)
            argv = [expand_variables(str(part), env) for part in argv]
            if argv and argv[0] in ("python", "python3"):
                argv[0] = str(python)
            command = self.launcher.command(argv, env, self.node_variables - rank_variables.keys())
            if self.per_node_launch:
                # Its ranks' lines go to their own logs; what the launcher itself prints, to this one.
                self._spawn(rank, local_rank, f"launcher_node_{self.node_rank}", *command, launcher=True)
            else:
                self._spawn(rank, local_rank, f"std_log_process_{rank}", *command)

    def _base_env(self, python: Path, env_vars: dict[str, str], rendezvous: dict[str, str]) -> dict[str, str]:
        run = self.run
        world_size = self.processes_started_per_node * run.node_count
        inherited = node_variables_passed(os.environ)
        bin_dir = str(python.parent)
        pythonpath = env_vars.get("PYTHONPATH", inherited.get("PYTHONPATH"))
        run_set = dict(env_vars)
        run_set.update(
            {
                "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH') or SYSTEM_PATH}",
                # The run folder is its home; the box's user has no passwd entry to name it.
                "HOME": str(self.workdir),
                "USER": f"trainhub-run-{run.pk}",
                "LOGNAME": f"trainhub-run-{run.pk}",
                "VIRTUAL_ENV": str(python.parent.parent),
                "PYTHONPATH": os.pathsep.join([str(self.sdk_folder)] + ([pythonpath] if pythonpath else [])),
                "PYTHONUNBUFFERED": "1",
                # A rank that dies in native code (a segmentation fault, an abort in a C++ library)
                # prints where its Python threads were, into its log and the run's error.
                "PYTHONFAULTHANDLER": env_vars.get("PYTHONFAULTHANDLER", "1"),
                "TRAINHUB_RUN_ID": run.run_id,
                "TRAINHUB_RUN_TOKEN": self.token,
                "TRAINHUB_SERVER_URL": settings.TRAINHUB_NODE_SERVER_URL,
                "TRAINHUB_WORKSPACE": run.workspace.name,
                "TRAINHUB_EXPERIMENT": run.experiment.name,
                "TRAINHUB_OUTPUTS_DIR": str(self.workdir / "outputs"),
                # MLflow's client logs into this run unchanged: start_run() resumes MLFLOW_RUN_ID
                # (mlflow_compat/), with the run's own token, which reaches this run only.
                "MLFLOW_TRACKING_URI": f"{settings.TRAINHUB_NODE_SERVER_URL.rstrip('/')}/mlflow/{run.workspace.name}",
                "MLFLOW_TRACKING_TOKEN": self.token,
                "MLFLOW_RUN_ID": run.run_id,
                "MLFLOW_EXPERIMENT_NAME": run.experiment.name,
                "MLFLOW_EXPERIMENT_ID": str(run.experiment_id),
                "MASTER_ADDR": rendezvous["addr"],
                "MASTER_PORT": rendezvous["port"],
                "NODE_RANK": str(self.node_rank),
                "WORLD_SIZE": str(world_size),
                "AZ_BATCHAI_PYTORCH_INIT_METHOD": f"tcp://{rendezvous['addr']}:{rendezvous['port']}",
                "TRAINHUB_DIST_BACKEND": str(run.distributed.get("communication_backend") or "gloo").lower(),
                "TRAINHUB_NODE_COUNT": str(run.node_count),
            }
        )
        if run.process_count_per_node > 1 and "OMP_NUM_THREADS" not in env_vars:
            # Several ranks share the node's cores: one thread each, as torchrun sets by default;
            # otherwise every rank starts one thread per core and they fight over the CPUs.
            run_set["OMP_NUM_THREADS"] = "1"
        if self.per_node_launch:
            # The launcher's ranks share its pipe and run with `python -u`: see trainhub/sdk/_whole_lines.py.
            run_set["TRAINHUB_WHOLE_LINES"] = "1"
        # A container gets only what the run set, even where the node has the same value.
        self.node_variables = frozenset(inherited.keys() - run_set.keys())
        return inherited | run_set

    def _spawn(
        self,
        rank: int,
        local_rank: int,
        stream: str,
        argv: list[str],
        env: dict[str, str],
        mpi: bool = False,
        record: bool = True,
        launcher: bool = False,
    ) -> RankProcess:
        run = self.run
        log_file = open(self.private_logs / f"{stream}.txt", "w", encoding="utf-8", errors="replace")
        pipes: dict[str, Any] = dict(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if self.box is not None:
            if isinstance(self.launcher, ContainerLauncher):
                # mpirun or Open MPI's daemon of a Docker run: the run's variables reach only its containers.
                env = launcher_variables(env)
            process = self.box.popen(argv, env, start_new_session=True, **pipes)
        elif isinstance(self.launcher, ContainerLauncher):
            # The container helper runs outside any box: the run's variables reach only its container.
            process = start_unboxed(argv, host_variables(env), self.workdir, start_new_session=True, **pipes)
        else:
            process = start_unboxed(argv, env, self.workdir, start_new_session=True, **pipes)
        rank_process = RankProcess(rank, local_rank, stream, process, log_file, mpi=mpi, launcher=launcher)
        self.ranks.append(rank_process)
        threading.Thread(target=self._read, args=(rank_process,), daemon=True).start()
        if not record or launcher:
            return rank_process
        RunProcess.objects.update_or_create(
            run=run,
            rank=rank,
            defaults={
                "node_rank": self.node_rank,
                "local_rank": local_rank,
                "node_name": self.node.name,
                "pid": process.pid,
                "state": "running",
                "started_at": timezone.now(),
            },
        )
        return rank_process

    # ------------------------------------------------------------ MPI

    def _mpi_hosts(self) -> str:
        per_node = self.run.process_count_per_node
        hosts = [f"localhost:{per_node}"]
        hosts += [f"{MPI_HOST_PREFIX}{rank}:{per_node}" for rank in range(1, self.run.node_count)]
        return ",".join(hosts)

    def _mpi_app(self, base: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """What mpirun starts for each rank of this node, and what this node adds to the environment
        of mpirun or of Open MPI's daemon for it. Open MPI starts every rank in mpirun's working
        folder (node 0's, or the home folder where it does not exist): each rank first moves to its
        own node's."""
        argv = [expand_variables(str(part), base) for part in self._argv()]
        app, variables = self.launcher.mpi_app(argv, base, self.node_variables)
        in_own_folder = ["/bin/sh", "-c", f'cd "${MPI_RANK_DIR}" && exec "$@"', "trainhub-mpi-rank", *app]
        return in_own_folder, dict(variables, **{MPI_RANK_DIR: str(self.workdir)})

    def _start_mpirun(self, python: Path, base: dict[str, str]) -> None:
        run = self.run
        total = run.node_count * run.process_count_per_node
        app, app_variables = self._mpi_app(base)
        # Isolated and without site-packages: the agent needs the standard library only.
        agent = f"{sys.executable} -I -S {Path(settings.BASE_DIR) / 'runs' / 'mpi_agent.py'}"
        mpirun = [
            "mpirun",
            "--allow-run-as-root",
            "--tag-output",
            "--oversubscribe",
            "-np",
            str(total),
            "--host",
            self._mpi_hosts(),
            "--mca",
            "plm_rsh_agent",
            agent,
            "--mca",
            "btl",
            "tcp,self",
            "--mca",
            "orte_keep_fqdn_hostnames",
            "1",
            *app,
        ]
        self.mpi_relay = MpiRelay(run.pk, run.node_count, self.workdir, self.redis)
        env = dict(base, **app_variables, **{MPI_AGENT_SOCKET: str(self.mpi_relay.path)})
        env.pop("PYTHONUNBUFFERED", None)
        nodes = dict(RunNode.objects.filter(run=run).values_list("node_rank", "node__name"))
        for rank in range(total):
            node_rank, local_rank = divmod(rank, run.process_count_per_node)
            RunProcess.objects.update_or_create(
                run=run,
                rank=rank,
                defaults={
                    "node_rank": node_rank,
                    "local_rank": local_rank,
                    "node_name": nodes.get(node_rank, ""),
                    "state": "running",
                    "started_at": timezone.now(),
                },
            )
        self._spawn(0, 0, "mpirun", mpirun, env, mpi=True, record=False)

    def _serve_mpi(self, base: dict[str, str]) -> None:
        """On the other nodes: start what mpirun's agent asks for (Open MPI's daemon)."""
        key = request_key(self.run.pk, self.node_rank)
        daemon_env = dict(base, **self._mpi_app(base)[1])
        deadline = time.monotonic() + RENDEZVOUS_TIMEOUT_SECONDS
        daemons: dict[str, RankProcess] = {}
        while True:
            self.check_abort()
            request = self.redis.blpop([key], timeout=1)
            if request is None:
                if not daemons and time.monotonic() > deadline:
                    raise _SetupFailed(f"mpirun never reached node {self.node.name}.", "")
                finished = [i for i, d in daemons.items() if d.process.poll() is not None]
                for request_id in finished:
                    daemon = daemons.pop(request_id)
                    self.redis.rpush(result_key(self.run.pk, request_id), daemon.process.returncode)
                    self.redis.expire(result_key(self.run.pk, request_id), 3600)
                self.flush()
                if finished and not daemons:
                    return
                continue
            message = json.loads(request[1])
            if message.get("kill"):
                daemon = daemons.get(message["id"])
                if daemon is not None and daemon.process.poll() is None:
                    os.kill(daemon.process.pid, signal.SIGTERM)
                continue
            stream = f"mpi_daemon_node_{self.node_rank}"
            command = ["bash", "-c", message["command"]]
            daemons[message["id"]] = self._spawn(-1, 0, stream, command, daemon_env, record=False)

    def _read(self, rank: RankProcess) -> None:
        assert rank.process.stdout is not None
        pending: dict[str, str] = {}
        try:
            for raw in iter(rank.process.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                tagged = split_tagged(line) if rank.launcher else None
                if rank.mpi:
                    found = split_mpi_output(line, pending)
                elif tagged is None:
                    found = [(rank.stream, line)]
                elif tagged[1].startswith(ANNOUNCE):
                    with self.lines_lock:
                        self.started.append(tagged)
                    continue
                else:
                    found = [(f"std_log_process_{tagged[0]}", tagged[1])]
                with self.lines_lock:
                    self.lines.extend(found)
        finally:
            rank.reader_done.set()

    def flush(self) -> None:
        with self.lines_lock:
            batch = list(self.lines)
            self.lines.clear()
            started, self.started = self.started, []
        for rank, announcement in started:
            self._record_started(rank, announcement)
        if not batch:
            return
        by_stream: dict[str, list[str]] = {}
        order: list[str] = []
        for stream, line in batch:
            if stream not in by_stream:
                by_stream[stream] = []
                order.append(stream)
            by_stream[stream].append(line)
        ranks = {rank.stream: rank for rank in self.ranks}
        for stream in order:
            lines = by_stream[stream]
            self.tails.setdefault(stream, collections.deque(maxlen=TRACEBACK_LINES)).extend(lines)
            rank = ranks.get(stream)
            if rank is not None:
                rank.log_file.write("\n".join(lines) + "\n")
            elif stream.startswith("std_log_process_"):
                self._stream_file(stream).write("\n".join(lines) + "\n")
            for start in range(0, len(lines), MAX_LINES_PER_CHUNK):
                services.log_append(self.run.pk, stream, lines[start : start + MAX_LINES_PER_CHUNK])

    def _stream_file(self, stream: str) -> Any:
        """Per-rank log files of ranks this node does not start itself (MPI ranks via mpirun)."""
        files = self.__dict__.setdefault("_stream_files", {})
        if stream not in files:
            files[stream] = open(self.private_logs / f"{stream}.txt", "a", encoding="utf-8", errors="replace")
        return files[stream]

    def drain(self) -> None:
        """Store what the ranks printed before they ended."""
        self._wait_readers()
        self.flush()

    def pump(self) -> RankProcess | None:
        """Until every rank has ended; returns the first rank that failed, if any."""
        last_abort_check = 0.0
        timeout_at = time.monotonic() + self.run.timeout_seconds if self.run.timeout_seconds else None
        sample_every = settings.TRAINHUB_SYSTEM_METRICS_SECONDS
        # The first sample only starts each rank's CPU clock: take it soon.
        next_sample = time.monotonic() + min(1.0, sample_every)
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()
            if sample_every and time.monotonic() >= next_sample:
                next_sample = time.monotonic() + sample_every
                self.record_system_metrics()
            running = False
            for rank in self.ranks:
                if rank.exit_code is None:
                    code = rank.process.poll()
                    if code is None:
                        running = True
                        continue
                    rank.exit_code = code
                    self._record_exit(rank)
                    if code != 0:
                        self._wait_readers([rank])  # the others still run: their pipes stay open
                        self.flush()
                        return rank
            if not running:
                self._wait_readers()
                self.flush()
                for rank in self.ranks:
                    if rank.launcher:  # its ranks' announcements are all read by now
                        self._rows_of(rank).update(state="completed", exit_code=0, ended_at=timezone.now())
                return None
            now = time.monotonic()
            if now - last_abort_check >= ABORT_POLL_SECONDS:
                last_abort_check = now
                self.check_abort()
            if timeout_at is not None and now > timeout_at:
                raise _Timeout()

    def record_system_metrics(self) -> None:
        """CPU and memory of each running rank's process tree, as the run's system/ metrics. The
        processes of a container are the engine's, not ours: Docker runs are not sampled."""
        if not isinstance(self.launcher, ProcessLauncher):
            return
        roots = {rank.rank: rank.process.pid for rank in self.ranks if rank.exit_code is None and rank.rank >= 0}
        platform = Access(workspace=self.run.workspace, role=Role.CONTRIBUTOR)
        try:
            for rank, values in self.system.sample(roots).items():
                batch = parse_batch({"rank": rank, "metrics": [{"name": n, "values": [v]} for n, v in values.items()]})
                metrics_ingest(access=platform, run=self.run, batch=batch)
        except Exception:  # a run never fails for want of a sample
            logger.warning("system metrics of run %s failed", self.run.run_id, exc_info=True)

    def _wait_readers(self, ranks: list[RankProcess] | None = None) -> None:
        # A reader reaches EOF once every writer of the pipe has exited; the supervisor makes
        # sure none outlives the rank, so this is short.
        deadline = time.monotonic() + 5
        for rank in self.ranks if ranks is None else ranks:
            rank.reader_done.wait(max(0.0, deadline - time.monotonic()))

    def _record_started(self, rank: int, announcement: str) -> None:
        """A rank of this node's per-node launcher said it started."""
        match = RANK_STARTED.search(announcement)
        local_rank, pid = (int(match.group(1)), int(match.group(2))) if match else (0, None)
        RunProcess.objects.update_or_create(
            run=self.run,
            rank=rank,
            defaults={
                "node_rank": self.node_rank,
                "local_rank": local_rank,
                "node_name": self.node.name,
                "pid": pid,
                "state": "running",
                "started_at": timezone.now(),
            },
        )

    def _rows_of(self, rank: RankProcess) -> Any:
        """The recorded processes a started process stands for: itself, or a launcher's ranks."""
        if rank.launcher:
            return RunProcess.objects.filter(run=self.run, node_rank=self.node_rank, state="running")
        return RunProcess.objects.filter(run=self.run, rank=rank.rank)

    def _record_exit(self, rank: RankProcess) -> None:
        if rank.launcher:
            return  # its ranks' rows once their lines are read: pump() on success, finish() on failure
        self._rows_of(rank).update(
            state="completed" if rank.exit_code == 0 else "failed",
            exit_code=rank.exit_code,
            ended_at=timezone.now(),
        )

    def stop_ranks(self) -> None:
        alive = [rank for rank in self.ranks if rank.process.poll() is None]
        for rank in alive:
            try:
                os.kill(rank.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE_SECONDS + 1
        for rank in alive:
            try:
                rank.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(rank.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                rank.process.wait()
        for rank in alive:
            rank.exit_code = rank.process.returncode
            self._rows_of(rank).update(state="stopped", exit_code=rank.exit_code, ended_at=timezone.now())

    def finish(self, failed: RankProcess | None) -> None:
        if failed is not None:
            rank, where = failed.rank, f"node {self.node.name}"
            if failed.mpi:
                rank, where = self._mpi_failed_rank(), "reported by mpirun"
                RunProcess.objects.filter(run=self.run, state="running").update(
                    state="stopped", ended_at=timezone.now()
                )
                RunProcess.objects.filter(run=self.run, rank=rank).update(state="failed", exit_code=failed.exit_code)
            elif failed.launcher:
                rank, where = self._launcher_failed_rank(failed), f"node {self.node.name}, reported by the launcher"
                self._rows_of(failed).exclude(rank=rank).update(state="stopped", ended_at=timezone.now())
                RunProcess.objects.filter(run=self.run, rank=rank).update(
                    state="failed", exit_code=failed.exit_code, ended_at=timezone.now()
                )
            tb = last_traceback(list(self.tails.get(f"std_log_process_{rank}", failed.tail)))
            services.fail_run(
                self.run.pk,
                f"Rank {rank} ({where}) exited with code {failed.exit_code}{signal_named(failed.exit_code)}.",
                exit_code=failed.exit_code,
                failed_rank=rank,
                error_traceback=tb,
            )
            self.stop_ranks()
            self.drain()
            self.finalize_files()
            return
        if not self.leader:
            self.finalize_files()
            return
        self.wait_for_peers()
        if self.run.distributed.get("type") == "mpi":
            RunProcess.objects.filter(run=self.run).update(state="completed", exit_code=0, ended_at=timezone.now())
        self.transition(RunStatus.FINALIZING)
        self.finalize_files()
        self.transition(RunStatus.COMPLETED, exit_code=0)

    def _launcher_failed_rank(self, launcher: RankProcess) -> int:
        """The rank torchrun names as the root cause, else the first of its ranks with a traceback."""
        lines = list(self.tails.get(launcher.stream, []))
        for marker in ("Root Cause", ""):
            start = next((i for i, line in enumerate(lines) if marker in line), len(lines))
            for line in lines[start:]:
                match = LAUNCHER_FAILED_RANK.search(line)
                if match:
                    return int(match.group(1))
        return self._rank_with_traceback(default=launcher.rank)

    def _rank_with_traceback(self, default: int) -> int:
        for stream, lines in self.tails.items():
            if stream.startswith("std_log_process_") and any("Traceback" in line for line in lines):
                return int(stream.rsplit("_", 1)[1])
        return default

    def _mpi_failed_rank(self) -> int:
        for line in self.tails.get("mpirun", []):
            match = MPI_FAILED_RANK.search(line)
            if match:
                return int(match.group(1))
        return self._rank_with_traceback(default=0)

    def wait_for_peers(self) -> None:
        deadline = time.monotonic() + PEERS_TIMEOUT_SECONDS
        while RunNode.objects.filter(run=self.run).exclude(node_rank=0).exclude(state="done").exists():
            self.check_abort()
            if time.monotonic() > deadline:
                raise _SetupFailed("The other nodes of the run did not finish in time.", "")
            time.sleep(0.2)

    def end_aborted(self, reason: str) -> None:
        self.run.refresh_from_db(fields=["status", "cancel_requested_at", "cancel_reason"])
        if self.run.is_final:
            return
        if reason == RunStatus.CANCELED or self.run.cancel_requested_at:
            services.run_transition(self.run.pk, RunStatus.FINALIZING)
            services.run_transition(
                self.run.pk, RunStatus.CANCELED, reason=self.run.cancel_reason or services.CANCELED_BY_USER
            )
        elif reason == "timeout":
            services.fail_run(
                self.run.pk, f"The run passed its time limit of {self.run.timeout_seconds} s and was stopped."
            )
        else:
            services.fail_run(self.run.pk, f"Stopped: {reason}")

    def finalize_files(self) -> None:
        """Copy outputs/ and logs/ (regular files only: symlinks are never followed)."""
        for rank in self.ranks:
            if not rank.log_file.closed:
                rank.log_file.close()
        for handle in self.__dict__.get("_stream_files", {}).values():
            handle.close()
        if self.prepare_lines:
            # A build can fail before the snapshot (and this folder) is unpacked.
            self.private_logs.mkdir(parents=True, exist_ok=True)
            (self.private_logs / f"{self.prepare_stream}.txt").write_text("\n".join(self.prepare_lines) + "\n")
        skipped, foreign = [], []
        # A box's files are its uid's: any other is a hard link to a file the run could not read
        # itself, made where the kernel allows it (fs.protected_hardlinks=0). The node never copies one.
        owner = self.box.uid if self.box is not None and node_is_root() else None
        for folder in ("outputs", "logs"):
            for relative, absolute, is_link in walk_regular_files(self.workdir / folder):
                name = f"{folder}/{relative}"
                if is_link or not absolute.is_file():
                    skipped.append(name)
                    continue
                if owner is not None and absolute.lstat().st_uid != owner:
                    foreign.append(name)
                    continue
                services.run_file_store(run=self.run, path=name, local_path=absolute)
        for relative, absolute, is_link in walk_regular_files(self.private_logs):
            if not is_link:
                services.run_file_store(run=self.run, path=f"logs/{relative}", local_path=absolute)
        if skipped:
            services.log_append(
                self.run.pk,
                self.prepare_stream,
                [f"Not copied (symlinks and special files are never copied): {', '.join(skipped[:20])}"],
            )
        if foreign:
            services.log_append(
                self.run.pk,
                self.prepare_stream,
                [f"Not copied (files the run's user does not own are never copied): {', '.join(foreign[:20])}"],
            )


class _SetupFailed(Exception):
    def __init__(self, reason: str, details: str):
        super().__init__(reason)
        self.reason = reason
        self.details = details


class _Timeout(RunAborted):
    def __init__(self) -> None:
        super().__init__("timeout")


def execute_on_node(run_pk: int, node_pk: int, node_rank: int, stop_event: threading.Event | None = None) -> None:
    close_old_connections()
    try:
        NodeExecution(run_pk, node_pk, node_rank, stop_event).execute()
    finally:
        from runs.scheduling import dispatch_cluster
        from trainhub.compute.services import node_set_idle

        node_set_idle(node_pk)
        cluster_pk = Node.objects.filter(pk=node_pk).values_list("cluster_id", flat=True).first()
        if cluster_pk is not None:
            dispatch_cluster(cluster_pk)
        close_old_connections()
