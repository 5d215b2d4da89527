"""What a node does for its share of a run: prepare, unpack, start the ranks, pump their
output, watch for cancel and failures, then copy outputs and logs into the run's history."""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import close_old_connections

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
from runs.launch_plan import (
    Host,
    HostPlan,
    Rendezvous,
    RunAccess,
    RunLaunch,
    mpi_rank_app,
    mpirun_argv,
    mpirun_environment,
    plan_host,
)
from runs.limits import ENFORCED, NOT_ENFORCED, OUT_OF_MEMORY, LimitsUnavailable, RunCgroup, describe, make_run_cgroup
from runs.models import PlacementState, ProcessState, Run, RunNode, RunStatus
from runs.mpi_agent import SOCKET_VARIABLE as MPI_AGENT_SOCKET
from runs.mpi_relay import MpiRelay, request_key, result_key
from runs.output_routing import (
    last_traceback,
    launcher_failed_rank,
    mpi_failed_rank,
    rank_started,
    signal_named,
    split_mpi_output,
)
from runs.sandbox import (
    Box,
    SandboxUnavailable,
    box_uid,
    chown_tree,
    node_is_root,
    python_folders,
    run_box,
    start_unboxed,
)
from runs.scheduling import dispatch_cluster
from runs.tokens import run_token
from trainhub.compute.models import Node
from trainhub.compute.services import node_set_idle
from trainhub.environments.builders import BuildError, sdk_path
from trainhub.environments.services import materialise_recorded
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
        self.cgroup: RunCgroup | None = None
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
        services.placement_preparing(self.run.pk, self.node_rank)
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
            self.start_ranks(self.plan(python, env_vars, self.rendezvous()))
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
            services.running_processes_ended(self.run.pk, ProcessState.STOPPED, node_rank=self.node_rank)
            services.placement_done(self.run.pk, self.node_rank)
            shutil.rmtree(self.workdir, ignore_errors=True)
            shutil.rmtree(self.private_logs, ignore_errors=True)
            if self.box is not None:
                self.box.cleanup()
            if self.cgroup is not None:
                self.cgroup.remove()
            shutil.rmtree(self.box_folder, ignore_errors=True)

    def prepare_environment(self) -> tuple[Path, dict[str, str]]:
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
            self.hold_to_limits()
        elif isinstance(self.launcher, ContainerLauncher):
            raise _SetupFailed(DOCKER_MPI_NEEDS_BOX, "")

    def hold_to_limits(self) -> None:
        """The run's limits (Run.limits), held by a cgroup its box joins; said in its log either way."""
        limits = {k: v for k, v in (self.run.limits or {}).items() if v is not None}
        if not limits or self.box is None:
            return
        try:
            self.cgroup = make_run_cgroup(self.run.pk, limits)
        except LimitsUnavailable as why:
            self.say(NOT_ENFORCED.format(limits=describe(limits), node=self.node.name, why=why))
            return
        self.box = dataclasses.replace(self.box, cgroups=tuple(self.cgroup.folders))
        self.say(ENFORCED.format(node=self.node.name, limits=describe(limits), version=self.cgroup.version))

    def rendezvous(self) -> Rendezvous:
        key = services.rendezvous_key(self.run.pk)
        if self.leader:
            port = reserve_master_port(self.redis, self.node.address, self.run.pk)
            self.redis.set(key, json.dumps({"addr": self.node.address, "port": str(port)}), ex=7 * 86400)
            return Rendezvous(self.node.address, port)
        deadline = time.monotonic() + RENDEZVOUS_TIMEOUT_SECONDS
        while True:
            raw = self.redis.get(key)
            if raw:
                value = json.loads(raw)
                return Rendezvous(value["addr"], int(value["port"]))
            self.check_abort()
            if time.monotonic() > deadline:
                raise _SetupFailed(
                    f"Node {self.node.name} (node rank {self.node_rank}) waited "
                    f"{RENDEZVOUS_TIMEOUT_SECONDS} s for node 0's address and port: rendezvous failed.",
                    "",
                )
            time.sleep(0.1)

    def plan(self, python: Path, env_vars: dict[str, str], rendezvous: Rendezvous) -> HostPlan:
        """This host's share of the run's launch plan (runs/launch_plan.py)."""
        host = Host(
            node_rank=self.node_rank,
            name=self.node.name,
            workdir=self.workdir,
            python=python,
            run_variables=env_vars,
            node_environ=dict(os.environ),
            pass_env=tuple(settings.TRAINHUB_NODE_PASS_ENV),
            sdk_folder=self.sdk_folder,
        )
        access = RunAccess(server_url=settings.TRAINHUB_NODE_SERVER_URL, token=self.token)
        return plan_host(RunLaunch.of(self.run), host, rendezvous, access)

    def start_ranks(self, plan: HostPlan) -> None:
        self.node_variables = plan.node_variables
        if plan.mpi is not None:
            if isinstance(self.launcher, ContainerLauncher) and self.box is not None:
                self.container_relay = ContainerRelay(
                    run_pk=self.run.pk,
                    folder=self.workdir,
                    spec=self.launcher.spec(plan.mpi.app, plan.env, plan.node_variables),
                    tmp=self.box.tmp,
                    ranks=self.run.process_count_per_node,
                )
            if self.leader:
                self._start_mpirun(plan)
            else:
                self._serve_mpi(plan)
            return
        for process in plan.processes:
            command = self.launcher.command(process.argv, process.env, process.node_variables)
            self._spawn(process.rank, process.local_rank, process.stream, *command, launcher=process.launcher)

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
        services.process_started(
            run_pk=run.pk,
            rank=rank,
            node_rank=self.node_rank,
            local_rank=local_rank,
            node_name=self.node.name,
            pid=process.pid,
        )
        return rank_process

    # ------------------------------------------------------------ MPI

    def _mpi_app(self, plan: HostPlan) -> tuple[list[str], dict[str, str]]:
        """What mpirun starts for each rank of this host, and what this host adds to the environment
        of mpirun or of Open MPI's daemon for it."""
        assert plan.mpi is not None
        app, variables = self.launcher.mpi_app(plan.mpi.app, plan.env, plan.node_variables)
        in_own_folder, rank_dir = mpi_rank_app(app, self.workdir)
        return in_own_folder, dict(variables, **rank_dir)

    def _start_mpirun(self, plan: HostPlan) -> None:
        assert plan.mpi is not None
        app, app_variables = self._mpi_app(plan)
        self.mpi_relay = MpiRelay(self.run.pk, self.run.node_count, self.workdir, self.redis)
        env = mpirun_environment(plan.env, app_variables, {MPI_AGENT_SOCKET: str(self.mpi_relay.path)})
        nodes = dict(RunNode.objects.filter(run=self.run).values_list("node_rank", "node__name"))
        for rank, node_rank, local_rank in plan.mpi.ranks:
            services.process_started(
                run_pk=self.run.pk,
                rank=rank,
                node_rank=node_rank,
                local_rank=local_rank,
                node_name=nodes.get(node_rank, ""),
            )
        self._spawn(0, 0, "mpirun", mpirun_argv(plan.mpi, app), env, mpi=True, record=False)

    def _serve_mpi(self, plan: HostPlan) -> None:
        """On the other nodes: start what mpirun's agent asks for (Open MPI's daemon)."""
        key = request_key(self.run.pk, self.node_rank)
        daemon_env = dict(plan.env, **self._mpi_app(plan)[1])
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
                        services.running_processes_ended(
                            self.run.pk, ProcessState.COMPLETED, node_rank=self.node_rank, exit_code=0
                        )
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
        local_rank, pid = rank_started(announcement)
        services.process_started(
            run_pk=self.run.pk,
            rank=rank,
            node_rank=self.node_rank,
            local_rank=local_rank,
            node_name=self.node.name,
            pid=pid,
        )

    def _record_exit(self, rank: RankProcess) -> None:
        if rank.launcher:
            return  # its ranks' rows once their lines are read: pump() on success, finish() on failure
        state = ProcessState.COMPLETED if rank.exit_code == 0 else ProcessState.FAILED
        services.process_ended(self.run.pk, rank.rank, state, rank.exit_code)

    def _record_stopped(self, rank: RankProcess) -> None:
        """The recorded processes a stopped process stands for: itself, or a launcher's ranks."""
        if rank.launcher:
            services.running_processes_ended(
                self.run.pk, ProcessState.STOPPED, node_rank=self.node_rank, exit_code=rank.exit_code
            )
        else:
            services.process_ended(self.run.pk, rank.rank, ProcessState.STOPPED, rank.exit_code)

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
            self._record_stopped(rank)

    def finish(self, failed: RankProcess | None) -> None:
        if failed is not None:
            rank, where = failed.rank, f"node {self.node.name}"
            if failed.mpi:
                rank, where = mpi_failed_rank(self.tails), "reported by mpirun"
                services.running_processes_ended(self.run.pk, ProcessState.STOPPED)
                services.process_ended(self.run.pk, rank, ProcessState.FAILED, failed.exit_code)
            elif failed.launcher:
                rank = launcher_failed_rank(self.tails, failed.stream, default=failed.rank)
                where = f"node {self.node.name}, reported by the launcher"
                services.running_processes_ended(
                    self.run.pk, ProcessState.STOPPED, node_rank=self.node_rank, except_rank=rank
                )
                services.process_ended(self.run.pk, rank, ProcessState.FAILED, failed.exit_code)
            tb = last_traceback(list(self.tails.get(f"std_log_process_{rank}", failed.tail)))
            why = ""
            if self.cgroup is not None and self.cgroup.out_of_memory():
                why = ": " + OUT_OF_MEMORY.format(memory_gb=f"{self.run.limits.get('memory_gb'):g}")
                self.say(f"Rank {rank} was stopped{why}.")
            services.fail_run(
                self.run.pk,
                f"Rank {rank} ({where}) exited with code {failed.exit_code}{signal_named(failed.exit_code)}{why}.",
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
            services.running_processes_ended(self.run.pk, ProcessState.COMPLETED, exit_code=0)
        self.transition(RunStatus.FINALIZING)
        self.finalize_files()
        self.transition(RunStatus.COMPLETED, exit_code=0)

    def wait_for_peers(self) -> None:
        deadline = time.monotonic() + PEERS_TIMEOUT_SECONDS
        while RunNode.objects.filter(run=self.run).exclude(node_rank=0).exclude(state=PlacementState.DONE).exists():
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
        node_set_idle(node_pk)
        cluster_pk = Node.objects.filter(pk=node_pk).values_list("cluster_id", flat=True).first()
        if cluster_pk is not None:
            dispatch_cluster(cluster_pk)
        close_old_connections()
