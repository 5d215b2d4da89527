"""A real Slurm for tests, from Debian's packages: its own munged (own key and socket), one
slurmctld and one slurmd per node name on this host (`slurmd -N n1`, each on its own port), all
configured by a slurm.conf in the session's Slurm folder (TRAINHUB_SLURM_CONF, set by
tests/session_env.py, so that every TrainHub process of the session talks to this Slurm).

Partition `debug` holds n1 and n2; n3 is configured but in no partition and not started, so a
test can add a node to the partition (start_slurmd, then set_partition_nodes)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.ports import free_port

NODES = ("n1", "n2", "n3")
PARTITION = "debug"
PARTITION_NODES = ("n1", "n2")
# Small on purpose: a killed slurmd is a failed node (NODE_FAIL) within seconds, not minutes.
SLURMD_TIMEOUT = 6


def slurm_missing() -> str | None:
    """Why this machine cannot run the test Slurm, or None."""
    for program in ("munged", "slurmctld", "slurmd", "sbatch"):
        if shutil.which(program) is None:
            return f"{program} is not installed (scripts/system-deps.sh test installs slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "slurmd launches jobs' tasks as their users and must run as root"
    return None


class SlurmCluster:
    def __init__(self, conf: Path, node_env: dict[str, str], env_file: Path):
        self.folder = conf.parent
        self.conf = conf
        self.env_file = env_file
        self.node_env = node_env
        self.munge_socket = self.folder / "munge" / "munge.sock"
        self.processes: dict[str, subprocess.Popen] = {}
        self.ports = {name: free_port() for name in ("slurmctld", *NODES)}

    # ---------------------------------------------------------------- start and stop

    def start(self) -> SlurmCluster:
        for sub in ("munge", "munge-key", "state", "spool", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder / "munge", 0o755)  # munged wants its socket folder reachable by all
        os.chmod(self.folder / "munge-key", 0o700)
        key = self.folder / "munge-key" / "munge.key"
        key.write_bytes(secrets.token_bytes(128))
        os.chmod(key, 0o400)
        self._write_conf()
        self._write_env_file()
        key_dir = self.folder / "munge-key"
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--log-file={key_dir / 'munged.log'}",
                f"--pid-file={key_dir / 'munged.pid'}",
                f"--seed-file={key_dir / 'munged.seed'}",
            ],
        )
        self._wait(lambda: self.munge_socket.exists(), 20, "munged's socket")
        self.start_controller()
        for name in PARTITION_NODES:
            self.start_slurmd(name, wait=False)
        self.wait_nodes_idle(PARTITION_NODES)
        return self

    def stop(self) -> None:
        try:
            jobs = self.slurm("squeue", "--noheader", "--format=%i").split()
            if jobs:
                self.slurm("scancel", *jobs)
            # Until every job has ended: a step daemon whose slurmd stops first lingers on.
            self._wait(lambda: not self.slurm("squeue", "--noheader", "--format=%i").split(), 30, "jobs ended")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError):
            pass
        for name in [n for n in self.processes if n not in ("slurmctld", "munged")] + ["slurmctld", "munged"]:
            self._stop(name)
        for pid in self._step_daemons():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _step_daemons(self) -> list[int]:
        """slurmstepd processes of this Slurm (their SLURM_CONF is its), left by a slurmd stopped or killed."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if not cmdline.read().startswith(b"slurmstepd"):
                        continue
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if marker in environ.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def stop_controller(self) -> None:
        """slurmctld stopped (it saves its jobs' state first): every Slurm command fails until
        start_controller(); the jobs' steps on the hosts go on."""
        self._stop("slurmctld")

    def start_controller(self) -> None:
        """slurmctld started again: it takes its jobs back from its saved state."""
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(self._controller_answers, 60, "slurmctld to answer")

    def start_slurmd(self, name: str, wait: bool = True) -> None:
        """Start node `name`'s slurmd; waiting for it idle needs it in the partition (sinfo lists
        only nodes of partitions)."""
        (self.folder / "spool" / name).mkdir(parents=True, exist_ok=True)
        self._spawn(name, ["slurmd", "-D", "-N", name, "-f", str(self.conf)])
        if wait:
            self.wait_nodes_idle([name])

    def kill_host(self, name: str) -> None:
        """As a host that dies would: its slurmd, and every process of its jobs' steps (the step
        daemons, TrainHub's task, the run's ranks), killed at once."""
        process = self.processes.pop(name)
        process.kill()
        process.wait()
        for pid in self.freeze_steps(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def freeze_steps(self, name: str) -> set[int]:
        """SIGSTOP every process of node `name`'s job steps, as a host that hangs (its slurmd still
        answers Slurm); returns them, for thaw() or a kill. Frozen first, so none forks away."""
        frozen: set[int] = set()
        while new := self._step_processes(name) - frozen:
            for pid in new:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            frozen |= new
        return frozen

    @staticmethod
    def thaw(pids: set[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def _step_processes(self, name: str) -> set[int]:
        """The step daemons of node `name` of this Slurm (found as the parents of the tasks Slurm
        started there, which carry its SLURM_CONF and SLURMD_NODENAME) and all their descendants."""
        markers = {f"SLURM_CONF={self.conf}".encode(), f"SLURMD_NODENAME={name}".encode()}
        parents: dict[int, int] = {}
        step_daemons: set[int] = set()
        tasks: list[int] = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                with open(f"/proc/{pid}/status") as status:
                    parents[pid] = int(next(line.split()[1] for line in status if line.startswith("PPid:")))
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    if cmdline.read().startswith(b"slurmstepd"):
                        step_daemons.add(pid)
                with open(f"/proc/{pid}/environ", "rb") as environ:
                    if markers <= set(environ.read().split(b"\0")):
                        tasks.append(pid)
            except (OSError, StopIteration):
                continue
        roots = set()
        for pid in tasks:
            while pid > 1 and pid not in step_daemons:
                pid = parents.get(pid, 0)
            if pid > 1:
                roots.add(pid)
        children: dict[int, list[int]] = {}
        for pid, parent in parents.items():
            children.setdefault(parent, []).append(pid)
        found, todo = set(), list(roots)
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo.extend(children.get(pid, []))
        return found

    def stop_slurmd(self, name: str) -> None:
        self._stop(name)

    @contextlib.contextmanager
    def node_settings(self, **values: str) -> Iterator[None]:
        """The hosts' node settings (TRAINHUB_SLURM_NODE_ENV_FILE) with `values` changed, for the
        tasks that start meanwhile: a host set up differently."""
        saved = dict(self.node_env)
        self.node_env.update(values)
        self._write_env_file()
        try:
            yield
        finally:
            self.node_env = saved
            self._write_env_file()

    def set_partition_nodes(self, names: list[str] | tuple[str, ...]) -> None:
        self.slurm("scontrol", "update", f"PartitionName={PARTITION}", f"Nodes={','.join(names)}")

    # ---------------------------------------------------------------- queries

    def slurm(self, program: str, *arguments: str) -> str:
        return subprocess.run(
            [program, *arguments], env=self.env(), capture_output=True, text=True, timeout=30, check=True
        ).stdout

    def env(self) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def node_states(self) -> dict[str, str]:
        output = self.slurm("sinfo", "--noheader", "--Node", "--format=%N|%T")
        return dict(line.split("|", 1) for line in output.split())

    def wait_nodes_idle(self, names) -> None:
        def idle() -> bool:
            try:
                states = self.node_states()
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                return False
            return all(states.get(name) == "idle" for name in names)

        self._wait(idle, 90, f"Slurm nodes {', '.join(names)} idle")

    def log(self) -> str:
        logs = sorted((self.folder / "log").glob("*"))
        return "\n".join(f"== {path.name}\n{path.read_text(errors='replace')[-3000:]}" for path in logs)

    # ---------------------------------------------------------------- internals

    def _write_conf(self) -> None:
        folder = self.folder
        lines = [
            "ClusterName=trainhubtest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={self.ports['slurmctld']}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}/%n",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'spool'}/slurmd-%n.pid",
            f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'log'}/slurmd-%n.log",
            "ProctrackType=proctrack/pgid",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            "ReturnToService=2",
            f"SlurmdTimeout={SLURMD_TIMEOUT}",
            "KillWait=5",
            "InactiveLimit=0",
            "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none",
            *(
                f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={self.ports[name]} CPUs=2"
                for name in NODES
            ),
            f"PartitionName={PARTITION} Nodes={','.join(PARTITION_NODES)} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _write_env_file(self) -> None:
        """The node settings of the Slurm hosts (TRAINHUB_SLURM_NODE_ENV_FILE): this session's."""
        lines = [f"{name}={value}" for name, value in sorted(self.node_env.items()) if "\n" not in value]
        self.env_file.write_text("\n".join(lines) + "\n")
        os.chmod(self.env_file, 0o600)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.folder / "log" / f"{name}.out", "ab")
        self.processes[name] = subprocess.Popen(
            argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _controller_answers(self) -> bool:
        try:
            self.slurm("scontrol", "ping")
            return True
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return False

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            crashed = [name for name, process in self.processes.items() if process.poll() is not None]
            if crashed or time.monotonic() > deadline:
                raise RuntimeError(f"The test Slurm: no {what} (ended: {crashed}).\n{self.log()}")
            time.sleep(0.2)
