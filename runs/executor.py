"""Carries out one host's launch plan (runs/launch_plan.py): starts its processes (in the run's box,
or through the container launcher), routes their output line by line to the run's log streams and
per-rank files (runs/output_routing.py), records each process's start and end, tells which one
failed first, and stops them all. Local nodes (runs/execution.py) and Slurm tasks
(runs/slurm_execution.py) both use it."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis

from runs import selectors, services
from runs.container_relay import ContainerRelay
from runs.containers import ContainerLauncher, Launcher, ProcessLauncher, host_variables, launcher_variables
from runs.launch_plan import (
    STORE_LISTEN_FD,
    STORE_LISTEN_SOCKET,
    STORE_SOCKET_NAME,
    HostPlan,
    Process,
    mpi_rank_app,
    mpirun_argv,
    mpirun_environment,
    without_agent_store,
)
from runs.models import ProcessState
from runs.mpi_agent import SOCKET_VARIABLE as MPI_AGENT_SOCKET
from runs.mpi_relay import MpiRelay
from runs.output_routing import (
    RANK_STREAM,
    TRACEBACK_STARTS,
    crash_report,
    last_traceback,
    launcher_failed_exit_code,
    launcher_failed_rank,
    mpi_failed_rank,
    rank_started,
    rank_stream,
    signal_named,
    split_mpi_output,
)
from runs.run_socket import SocketHandover
from runs.system_metrics import launched_ranks, mpi_launched_ranks
from trainhub import redis_keys
from trainhub.sandbox import SPARE_POPEN, Box, start_unboxed
from trainhub.sdk._whole_lines import ANNOUNCE, split_tagged

FLUSH_SECONDS = 0.05
MAX_LINES_PER_CHUNK = 2000
STOP_GRACE_SECONDS = 3.0
# How long another host waits for mpirun on the lead host to ask for Open MPI's daemon.
MPI_DAEMON_TIMEOUT_SECONDS = 120
TRACEBACK_LINES = 400


def master_port_socket(port: int) -> socket.socket:
    """A socket listening on `port` of every address, as torch's TCPStore binds it (IPv6 and IPv4
    where the host has both)."""
    dual = socket.has_dualstack_ipv6()
    return socket.create_server(
        ("", port), family=socket.AF_INET6 if dual else socket.AF_INET, backlog=1024, dualstack_ipv6=dual
    )


class RunAborted(Exception):
    """Another node, the user or the platform ended the run."""


class RunTimedOut(RunAborted):
    def __init__(self) -> None:
        super().__init__("timeout")


class SetupFailed(Exception):
    """The run cannot start on this host: `reason` is what the run page says, `details` its log."""

    def __init__(self, reason: str, details: str):
        super().__init__(reason)
        self.reason = reason
        self.details = details


@dataclass
class StartedProcess:
    rank: int
    local_rank: int
    stream: str
    process: subprocess.Popen
    log_file: IO[str]
    exit_code: int | None = None
    reader_done: threading.Event = field(default_factory=threading.Event)
    mpi: bool = False
    # A per-node launcher (torchrun): its ranks' lines arrive tagged on its pipe, see _whole_lines.
    launcher: bool = False
    # The run's rendezvous store: not a rank, it runs until the run is over on this host.
    store: bool = False


class DatabaseRecords:
    """Where a node's executor records what it sees: the database, through runs.services. A runner on
    the submitting machine (runs/local_runner.py) gives its own, which reports through the API."""

    log_append = staticmethod(services.log_append)
    process_started = staticmethod(services.process_started)
    process_ended = staticmethod(services.process_ended)
    running_processes_ended = staticmethod(services.running_processes_ended)
    placement_node_names = staticmethod(selectors.placement_node_names)


@dataclass(frozen=True)
class Failure:
    """The rank that failed first, as the run's end names it."""

    rank: int | None  # None: the run's rendezvous store, not a rank
    exit_code: int | None
    reason: str
    traceback: str


class HostExecutor:
    def __init__(
        self,
        *,
        run_pk: int,
        node_rank: int,
        node_name: str,
        workdir: Path,
        private_logs: Path,
        launcher: Launcher,
        box: Box | None,
        connection: redis.Redis,
        records: Any = None,
    ):
        self.records = records or DatabaseRecords()
        self.run_pk = run_pk
        self.node_rank = node_rank
        self.node_name = node_name
        self.workdir = workdir
        self.private_logs = private_logs
        self.launcher = launcher
        self.box = box
        self.redis = connection
        self.processes: list[StartedProcess] = []
        self.lines: collections.deque[tuple[str, str]] = collections.deque()
        self.lines_lock = threading.Lock()
        # Set by a reader when it adds lines or reaches its end: pump() wakes for it.
        self.output = threading.Event()
        self.started: list[tuple[int, str]] = []  # announcements of a per-node launch's ranks
        self.announced: dict[int, int] = {}  # rank → the pid a per-node launch's rank gave (in its box)
        self.mpi_ranks: list[int] = []  # an MPI launch's ranks on this host, by local rank
        self.tails: dict[str, collections.deque[str]] = {}
        self.stream_files: dict[str, IO[str]] = {}
        self.mpi_relay: MpiRelay | None = None
        self.container_relay: ContainerRelay | None = None
        self.store: StartedProcess | None = None
        self.store_handover: SocketHandover | None = None

    # ------------------------------------------------------------ starting

    def start(self, plan: HostPlan, tick: Callable[[], None]) -> None:
        """Start what the plan says this host starts. On a host other than the lead of an MPI run,
        that is Open MPI's daemon, once mpirun asks for it: this returns when the daemon ended.
        `tick` is called while waiting and may raise RunAborted."""
        if plan.mpi is not None:
            self.mpi_ranks = [
                rank for rank, node, _ in sorted(plan.mpi.ranks, key=lambda r: r[2]) if node == plan.node_rank
            ]
            if isinstance(self.launcher, ContainerLauncher) and self.box is not None:
                self.container_relay = ContainerRelay(
                    run_pk=self.run_pk,
                    folder=self.workdir,
                    spec=self.launcher.spec(plan.mpi.app, plan.env, plan.node_variables),
                    tmp=self.box.tmp,
                    ranks=plan.mpi.per_node,
                )
            if plan.leader:
                self._start_mpirun(plan)
            else:
                self._serve_mpi(plan, tick)
            return
        if plan.store is not None and not self._start_store(plan.store):
            plan = without_agent_store(plan)
        for process in plan.processes:
            command = self.launcher.command(process.argv, process.env, process.node_variables)
            self._spawn(process.rank, process.local_rank, process.stream, *command, launcher=process.launcher)

    def _start_store(self, store: Process) -> bool:
        """Start the run's rendezvous store, just before the ranks: it imports torch while they do.
        Its port listens before either starts (this node binds it and hands the socket over), so a
        rank that reaches init_process_group first waits for the store's answer, not for torch's
        retry. In a container launch the store is a container of the run's image too, which takes
        the socket over a unix socket in the run's folder. False where it cannot run."""
        if not isinstance(self.launcher, ProcessLauncher | ContainerLauncher):
            return False
        port = int(store.env["MASTER_PORT"])
        try:
            listening = master_port_socket(port)
        except OSError as error:
            raise SetupFailed(
                f"Node {self.node_name} cannot listen on the run's master port {port}: {error.strerror}.", ""
            ) from error
        if isinstance(self.launcher, ContainerLauncher):
            self.store_handover = SocketHandover(self.workdir, STORE_SOCKET_NAME, listening)
            env = dict(store.env, **{STORE_LISTEN_SOCKET: str(self.store_handover.socket.path)})
            command = self.launcher.command(store.argv, env, store.node_variables)
            self.store = self._spawn(store.rank, 0, store.stream, *command, record=False, store=True)
            return True
        with listening:
            env = dict(store.env, **{STORE_LISTEN_FD: str(listening.fileno())})
            self.store = self._spawn(
                store.rank, 0, store.stream, store.argv, env, record=False, store=True, pass_fds=(listening.fileno(),)
            )
        return True

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
        store: bool = False,
        pass_fds: tuple[int, ...] = (),
    ) -> StartedProcess:
        log_file = open(self.private_logs / f"{stream}.txt", "w", encoding="utf-8", errors="replace")
        # A session of its own, output piped, no input: the way the node's spares are ready for.
        pipes: dict[str, Any] = dict(SPARE_POPEN, pass_fds=pass_fds)
        if self.box is not None:
            if isinstance(self.launcher, ContainerLauncher):
                # mpirun or Open MPI's daemon of a Docker run: the run's variables reach only its containers.
                env = launcher_variables(env)
            process = self.box.popen(argv, env, **pipes)
        elif isinstance(self.launcher, ContainerLauncher):
            # The container helper runs outside any box: the run's variables reach only its container.
            process = start_unboxed(argv, host_variables(env), self.workdir, **pipes)
        else:
            process = start_unboxed(argv, env, self.workdir, **pipes)
        started = StartedProcess(rank, local_rank, stream, process, log_file, mpi=mpi, launcher=launcher, store=store)
        self.processes.append(started)
        threading.Thread(target=self._read, args=(started,), daemon=True).start()
        if record and not launcher:
            self.records.process_started(
                run_pk=self.run_pk,
                rank=rank,
                node_rank=self.node_rank,
                local_rank=local_rank,
                node_name=self.node_name,
                pid=process.pid,
            )
        return started

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
        self.mpi_relay = MpiRelay(self.run_pk, plan.mpi.node_count, self.workdir, self.redis)
        env = mpirun_environment(plan.env, app_variables, {MPI_AGENT_SOCKET: str(self.mpi_relay.path)})
        nodes = self.records.placement_node_names(self.run_pk)
        for rank, node_rank, local_rank in plan.mpi.ranks:
            self.records.process_started(
                run_pk=self.run_pk,
                rank=rank,
                node_rank=node_rank,
                local_rank=local_rank,
                node_name=nodes.get(node_rank, ""),
            )
        self._spawn(0, 0, "mpirun", mpirun_argv(plan.mpi, app), env, mpi=True, record=False)

    def _serve_mpi(self, plan: HostPlan, tick: Callable[[], None]) -> None:
        """On the other hosts: start what mpirun's agent asks for (Open MPI's daemon)."""
        key = redis_keys.run_mpi_requests(self.run_pk, self.node_rank)
        daemon_env = dict(plan.env, **self._mpi_app(plan)[1])
        deadline = time.monotonic() + MPI_DAEMON_TIMEOUT_SECONDS
        daemons: dict[str, StartedProcess] = {}
        while True:
            tick()
            request = self.redis.blpop([key], timeout=1)
            if request is None:
                if not daemons and time.monotonic() > deadline:
                    raise SetupFailed(f"mpirun never reached node {self.node_name}.", "")
                finished = [i for i, d in daemons.items() if d.process.poll() is not None]
                for request_id in finished:
                    daemon = daemons.pop(request_id)
                    self.redis.rpush(redis_keys.run_mpi_result(self.run_pk, request_id), daemon.process.returncode)
                    self.redis.expire(redis_keys.run_mpi_result(self.run_pk, request_id), 3600)
                self.flush()
                if finished and not daemons:
                    return
                continue
            message = json.loads(request[1])
            if message.get("kill"):
                target = daemons.get(message["id"])
                if target is not None and target.process.poll() is None:
                    os.kill(target.process.pid, signal.SIGTERM)
                continue
            stream = f"mpi_daemon_node_{self.node_rank}"
            command = ["bash", "-c", message["command"]]
            daemons[message["id"]] = self._spawn(-1, 0, stream, command, daemon_env, record=False)

    # ------------------------------------------------------------ output routing

    def _read(self, started: StartedProcess) -> None:
        assert started.process.stdout is not None
        pending: dict[str, str] = {}
        try:
            for raw in iter(started.process.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                tagged = split_tagged(line) if started.launcher else None
                if started.mpi:
                    found = split_mpi_output(line, pending)
                elif tagged is None:
                    found = [(started.stream, line)]
                elif tagged[1].startswith(ANNOUNCE):
                    with self.lines_lock:
                        self.started.append(tagged)
                    continue
                else:
                    found = [(rank_stream(tagged[0]), tagged[1])]
                with self.lines_lock:
                    self.lines.extend(found)
                self.output.set()
        finally:
            started.reader_done.set()
            self.output.set()

    def flush(self) -> None:
        """Store the lines read since the last flush, stream by stream, in the order they came."""
        with self.lines_lock:
            batch = list(self.lines)
            self.lines.clear()
            started, self.started = self.started, []
        for rank, announcement in started:
            self._record_started(rank, announcement)
        if not batch:
            return
        by_stream: dict[str, list[str]] = {}
        for stream, line in batch:
            by_stream.setdefault(stream, []).append(line)
        own = {process.stream: process for process in self.processes}
        for stream, lines in by_stream.items():
            self.tails.setdefault(stream, collections.deque(maxlen=TRACEBACK_LINES)).extend(lines)
            process = own.get(stream)
            if process is not None:
                process.log_file.write("\n".join(lines) + "\n")
            elif stream.startswith(RANK_STREAM):
                self._stream_file(stream).write("\n".join(lines) + "\n")
            for start in range(0, len(lines), MAX_LINES_PER_CHUNK):
                self.records.log_append(self.run_pk, stream, lines[start : start + MAX_LINES_PER_CHUNK])

    def _stream_file(self, stream: str) -> IO[str]:
        """Per-rank log files of ranks this host does not start itself (MPI ranks via mpirun)."""
        if stream not in self.stream_files:
            self.stream_files[stream] = open(
                self.private_logs / f"{stream}.txt", "a", encoding="utf-8", errors="replace"
            )
        return self.stream_files[stream]

    def drain(self) -> None:
        """Store what the processes printed before they ended."""
        self._wait_readers()
        self.flush()

    def _wait_readers(self, processes: list[StartedProcess] | None = None) -> None:
        # A reader reaches EOF once every writer of the pipe has exited; the supervisor makes
        # sure none outlives the rank, so this is short.
        deadline = time.monotonic() + 5
        for process in self._watched() if processes is None else processes:
            process.reader_done.wait(max(0.0, deadline - time.monotonic()))

    def _watched(self) -> list[StartedProcess]:
        """The processes whose ends are the run's (all but the store, which outlives them)."""
        return [process for process in self.processes if not process.store]

    def close_logs(self) -> None:
        for process in self.processes:
            if not process.log_file.closed:
                process.log_file.close()
        for handle in self.stream_files.values():
            handle.close()

    # ------------------------------------------------------------ watching

    def pump(self, tick: Callable[[], None]) -> StartedProcess | None:
        """Until every process has ended; returns the first that failed, if any. `tick` is called
        at least every FLUSH_SECONDS and may raise RunAborted."""
        stored_at = 0.0
        while True:
            self._await_output(stored_at)
            if self.lines:
                stored_at = time.monotonic()
            self.flush()
            if self.store is not None and self.store.exit_code is None and self.store.process.poll() is not None:
                # The ranks cannot meet without it: a failure, not a wait until their timeout.
                self.store.exit_code = self.store.process.returncode
                self._wait_readers([self.store])
                self.flush()
                return self.store
            running = False
            for started in self._watched():
                if started.exit_code is None:
                    code = started.process.poll()
                    if code is None:
                        running = True
                        continue
                    started.exit_code = code
                    self._record_exit(started)
                    if code != 0:
                        self._wait_readers([started])  # the others still run: their pipes stay open
                        self.flush()
                        return started
            if not running:
                self.drain()
                if any(started.launcher for started in self.processes):
                    # Its ranks' announcements are all read by now.
                    self.records.running_processes_ended(
                        self.run_pk, ProcessState.COMPLETED, node_rank=self.node_rank, exit_code=0
                    )
                return None
            tick()

    def _await_output(self, stored_at: float) -> None:
        """Until a process printed or ended, or FLUSH_SECONDS passed. A line after a quiet spell is
        stored (and streamed) at once; while lines keep coming, they are stored in batches, at most
        one every FLUSH_SECONDS (`stored_at`: when the last batch was)."""
        self.output.wait(FLUSH_SECONDS)
        self.output.clear()
        rest = stored_at + FLUSH_SECONDS - time.monotonic()
        if rest > 0:
            time.sleep(rest)

    def running_ranks(self) -> dict[int, int]:
        """rank → pid of the processes still running that are ranks (not mpirun's daemons); a per-node
        launcher's ranks are its processes that announced themselves, an MPI launch's those mpirun or
        Open MPI's daemon started (runs/system_metrics.py)."""
        ranks: dict[int, int] = {}
        # A Docker rank's processes are its container's, which the engine started.
        in_containers = isinstance(self.launcher, ContainerLauncher)
        roots = self.launcher.rank_pids() if isinstance(self.launcher, ContainerLauncher) else {}
        for p in self.processes:
            root = roots.get(p.rank) if in_containers else p.process.pid
            if p.exit_code is None and self.mpi_ranks:
                ranks.update(mpi_launched_ranks(p.process.pid, self.mpi_ranks))
            elif p.exit_code is None and p.rank >= 0 and root is not None:
                if p.launcher:
                    ranks.update(launched_ranks(root, self.announced))
                else:
                    ranks[p.rank] = root
        return ranks

    def failure(self, failed: StartedProcess, cause: str = "") -> Failure:
        """Which rank `failed` stands for (mpirun and a per-node launcher name it), recorded as failed;
        `cause` (": …") says why, where the node knows (its memory limit)."""
        code = f"{failed.exit_code}{signal_named(failed.exit_code)}{cause}"
        if failed.store:
            return Failure(
                rank=None,
                exit_code=failed.exit_code,
                reason=f"The run's rendezvous store (node {self.node_name}) exited with code {code}.",
                traceback=last_traceback(list(self.tails.get(failed.stream, []))),
            )
        rank, where, exit_code = failed.rank, f"node {self.node_name}", failed.exit_code
        if failed.mpi:
            rank, where = mpi_failed_rank(self.tails), "reported by mpirun"
            self.records.running_processes_ended(self.run_pk, ProcessState.STOPPED)
            self.records.process_ended(self.run_pk, rank, ProcessState.FAILED, failed.exit_code)
        elif failed.launcher:
            rank = launcher_failed_rank(self.tails, failed.stream, default=failed.rank)
            where = f"node {self.node_name}, reported by the launcher"
            exit_code = launcher_failed_exit_code(self.tails, failed.stream) or failed.exit_code
            code = f"{exit_code}{signal_named(exit_code)}{cause}"
            self._file_crash_report(rank, failed.stream)
            self.records.running_processes_ended(
                self.run_pk, ProcessState.STOPPED, node_rank=self.node_rank, except_rank=rank
            )
            self.records.process_ended(self.run_pk, rank, ProcessState.FAILED, exit_code)
        return Failure(
            rank=rank,
            exit_code=exit_code,
            reason=f"Rank {rank} ({where}) exited with code {code}.",
            traceback=last_traceback(list(self.tails.get(rank_stream(rank), []))),
        )

    def _file_crash_report(self, rank: int, launcher_stream: str) -> None:
        """A launcher's rank that died in native code wrote its crash report below Python, untagged,
        into the launcher's output: it goes to the rank's own log too, and so into the run's error."""
        if any(line.startswith(TRACEBACK_STARTS) for line in self.tails.get(rank_stream(rank), [])):
            return
        report = crash_report(list(self.tails.get(launcher_stream, [])))
        if report:
            with self.lines_lock:
                self.lines.extend((rank_stream(rank), line) for line in report)
            self.flush()

    # ------------------------------------------------------------ records

    def _record_started(self, rank: int, announcement: str) -> None:
        """A rank of this host's per-node launcher said it started."""
        local_rank, pid = rank_started(announcement)
        if pid is not None:
            self.announced[rank] = pid
        self.records.process_started(
            run_pk=self.run_pk,
            rank=rank,
            node_rank=self.node_rank,
            local_rank=local_rank,
            node_name=self.node_name,
            pid=pid,
        )

    def _record_exit(self, started: StartedProcess) -> None:
        if started.launcher:
            return  # its ranks' rows once their lines are read: pump() on success, failure() otherwise
        state = ProcessState.COMPLETED if started.exit_code == 0 else ProcessState.FAILED
        self.records.process_ended(self.run_pk, started.rank, state, started.exit_code)

    def _record_stopped(self, started: StartedProcess) -> None:
        """The recorded processes a stopped process stands for: itself, or a launcher's ranks."""
        if started.store:
            return
        if started.launcher:
            self.records.running_processes_ended(
                self.run_pk, ProcessState.STOPPED, node_rank=self.node_rank, exit_code=started.exit_code
            )
        else:
            self.records.process_ended(self.run_pk, started.rank, ProcessState.STOPPED, started.exit_code)

    # ------------------------------------------------------------ stopping

    def stop(self, processes: list[StartedProcess] | None = None) -> None:
        """SIGTERM to every process (of `processes`, all by default) still running, SIGKILL to its
        group after STOP_GRACE_SECONDS."""
        alive = [
            started
            for started in (self.processes if processes is None else processes)
            if started.process.poll() is None
        ]
        for started in alive:
            try:
                os.kill(started.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE_SECONDS + 1
        for started in alive:
            try:
                started.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(started.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                started.process.wait()
        for started in alive:
            started.exit_code = started.process.returncode
            self._record_stopped(started)

    def stop_store(self) -> None:
        """The run's store, once every rank of the run has ended: before the run's end, so that a
        Docker launch's store container is gone by then, as the ranks' are."""
        if self.store is not None:
            self.stop([self.store])

    def close(self) -> None:
        """Every process stopped, the relays closed."""
        self.stop()
        if self.mpi_relay is not None:
            self.mpi_relay.close()
        if self.container_relay is not None:
            self.container_relay.close()
        if self.store_handover is not None:
            self.store_handover.close()
