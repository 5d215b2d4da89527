"""Real TrainHub processes for tests: the web server (daphne) and later nodes, on the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import requests
from django.conf import settings

from tests.helpers.ports import free_port

BASE_DIR = Path(__file__).resolve().parents[2]


def shared_database_url() -> str:
    """DATABASE_URL of the test database (pytest-django renamed it), SQLite or PostgreSQL."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{database['NAME']}"
    user = quote(database["USER"] or "", safe="")
    password = f":{quote(database['PASSWORD'], safe='')}" if database.get("PASSWORD") else ""
    port = f":{database['PORT']}" if database.get("PORT") else ""
    # A unix socket folder as the host is written percent-encoded, as dj-database-url reads it.
    host = quote(database.get("HOST") or "", safe="")
    return f"postgres://{user}{password}@{host}{port}/{quote(database['NAME'], safe='')}"


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a TrainHub process sharing this test session's database, files and Redis."""
    env = dict(os.environ)
    env["DATABASE_URL"] = shared_database_url()
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Server:
    """daphne serving TrainHub on a free port, as `make run` does."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"web-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        env = process_env(TRAINHUB_HOST="127.0.0.1", TRAINHUB_PORT=str(self.port))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trainhub.ops.serve"],
            cwd=BASE_DIR,
            env=env,
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{self.url}/accounts/login/", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"The test web server did not start:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class NodeProcess:
    """`manage.py trainhub_node` for a cluster, as people start nodes by hand."""

    def __init__(self, cluster, log_dir: Path, name: str | None = None, prefix: tuple[str, ...] = (), **env: str):
        self.cluster = cluster
        self.prefix = list(prefix)
        self.name = name or f"{cluster.name}-test-{free_port()}"
        self.log_path = log_dir / f"node-{self.name}.log"
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> NodeProcess:
        from trainhub.compute.models import Node

        self.process = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "manage.py",
                "trainhub_node",
                "--cluster",
                self.cluster.name,
                "--workspace",
                self.cluster.workspace.name,
                "--name",
                self.name,
            ],
            cwd=BASE_DIR,
            env=process_env(**self.env),
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
        )
        if wait:
            deadline = time.monotonic() + 60
            while not Node.objects.filter(name=self.name, state="idle").exists():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"The test node did not start:\n{self.log()}")
                time.sleep(0.1)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ControllerProcess:
    """`manage.py trainhub_controller`: the reaper, dispatcher and local provisioner."""

    def __init__(self, log_dir: Path):
        self.log_path = log_dir / f"controller-{free_port()}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> ControllerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "trainhub_controller"],
            cwd=BASE_DIR,
            env=process_env(),
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
        )
        # Loading Django takes the controller seconds, tens of them on a busy machine: a test that
        # kills a node meanwhile would wait for the reaper's start, not for its work.
        deadline = time.monotonic() + 60
        while "Controller ready." not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"The test controller did not start:\n{self.log()}")
            time.sleep(0.1)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.1, message: str = "condition") -> float:
    """Seconds it took; fails the test past the timeout."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{message} not reached in {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started


def bytes_written(pid: int) -> int:
    """Bytes a process has written so far: to files, its temporary spools and sockets alike
    (`wchar`, which counts the same on any file system, tmpfs included)."""
    with open(f"/proc/{pid}/io") as io:
        counters = dict(line.split(": ") for line in io.read().splitlines())
    return int(counters["wchar"])


def run_folder(run_id: str, node_rank: int = 0) -> Path:
    """The run's working folder on its node `node_rank`: the boxed ranks' current folder, and the one
    folder a test and the run's processes both see (their /tmp is their own)."""
    from runs.models import RunNode

    name = RunNode.objects.filter(run__run_id=run_id, node_rank=node_rank).values_list("node__name", flat=True).first()
    return Path(settings.TRAINHUB_NODE_WORK_DIR) / str(name) / run_id


def run_pids(run_id: str) -> list[tuple[int, int]]:
    """The processes of a run on this machine, seen from outside its boxes: (pid here, pid in its box)
    each (a box has its own PID namespace; /proc/PID/status's NSpid lists both)."""
    marker = f"TRAINHUB_RUN_ID={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if marker not in environ.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/status") as status:
                nspid = next(line.split()[1:] for line in status if line.startswith("NSpid:"))
        except (OSError, StopIteration):
            continue
        found.append((int(entry), int(nspid[-1])))
    return found


def host_pid(run_id: str, pid_in_box: int) -> int:
    """The pid here of the process of a (one-rank) run that has `pid_in_box` in its box."""
    return next(pid for pid, boxed in run_pids(run_id) if boxed == pid_in_box)
