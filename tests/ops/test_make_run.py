"""`make run` as a person runs it: a clean data directory, the printed login, Ctrl-C, a restart."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests

from tests.helpers.ports import free_port
from tests.helpers.processes import BASE_DIR, pid_alive
from trainhub.sdk import Workspace
from trainhub.sdk.exceptions import AuthenticationError

pytestmark = pytest.mark.slow

START_TIMEOUT = 240
STOP_TIMEOUT = 30
# Variables of this test session that a person's shell would not have.
SESSION_ONLY = (
    "TRAINHUB_",
    "DJANGO_",
    "DATABASE_URL",
    "REDIS_URL",
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
)


def processes_with_data_dir(data_dir: Path) -> list[int]:
    """Every live process on this machine whose environment names this data directory."""
    needle = f"TRAINHUB_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class MakeRun:
    """`make run` in its own session, so that SIGINT to its group is a Ctrl-C in its terminal."""

    def __init__(self, data_dir: Path, port: int | None = None, redis_port: int | None = None):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.redis_port = redis_port or free_port()
        self.process: subprocess.Popen | None = None
        self.output_path = data_dir.parent / f"{data_dir.name}-make-run-{self.port}.log"

    def start(self) -> MakeRun:
        assert not listening(self.redis_port), "the test needs a port where no Redis answers"
        env = {k: v for k, v in os.environ.items() if not k.startswith(SESSION_ONLY)}
        env.update(
            TRAINHUB_DATA_DIR=str(self.data_dir),
            TRAINHUB_PORT=str(self.port),
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
        )
        self.process = subprocess.Popen(
            ["make", "run"],
            cwd=BASE_DIR,
            env=env,
            stdout=open(self.output_path, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def printed(self, label: str) -> str:
        match = re.search(rf"^\s*{label}:\s+(.+)$", self.output(), re.MULTILINE)
        assert match, f"make run did not print {label!r}:\n{self.output()}"
        return match.group(1).strip()

    @property
    def url(self) -> str:
        return self.printed("URL").rstrip("/")

    @property
    def login(self) -> tuple[str, str]:
        username, password = self.printed("Login").split(" / ")
        return username, password

    @property
    def config_path(self) -> Path:
        return Path(self.printed("config.json"))

    def wait_until_serving(self) -> MakeRun:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                code = self.process.returncode
                raise AssertionError(f"make run exited with {code}:\n{self.output()}")
            if "Stop with Ctrl-C." in self.output():
                try:
                    if requests.get(f"{self.url}/accounts/login/", timeout=2).status_code == 200:
                        return self
                except requests.RequestException:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"make run did not serve in time:\n{self.output()}")
            time.sleep(0.2)

    def press_ctrl_c(self) -> set[int]:
        """SIGINT to the terminal's process group; returns every process make run had started."""
        assert self.process is not None
        started = descendants(self.process.pid) | set(processes_with_data_dir(self.data_dir))
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"make run did not stop on Ctrl-C:\n{self.output()}") from None
        return started

    def clean_up(self) -> None:
        """After a failed test: end what this instance started, by process id."""
        if self.process is None:
            return
        leftovers = set(processes_with_data_dir(self.data_dir))
        if self.process.poll() is None:
            leftovers |= descendants(self.process.pid) | {self.process.pid}
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.wait(10)


@pytest.fixture
def make_run(tmp_path):
    instances: list[MakeRun] = []

    def start(name: str = "data", **ports: int) -> MakeRun:
        instance = MakeRun(tmp_path / name, **ports).start()
        instances.append(instance)
        return instance

    yield start
    for instance in instances:
        instance.clean_up()


def sign_in(url: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{url}/accounts/login/", timeout=10).raise_for_status()
    response = session.post(
        f"{url}/accounts/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "",
        },
        timeout=10,
    )
    response.raise_for_status()
    return session


def assert_all_gone(instance: MakeRun, started: set[int]) -> None:
    deadline = time.monotonic() + 10
    while True:
        left = {pid for pid in started if pid_alive(pid)}
        left |= set(processes_with_data_dir(instance.data_dir))
        serving = [p for p in (instance.port, instance.redis_port) if listening(p)]
        if not left and not serving:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"after Ctrl-C, processes {sorted(left)} live and ports {serving} answer:\n" + instance.output()[-3000:]
            )
        time.sleep(0.2)


def test_it_serves_a_clean_data_directory_and_stops_on_ctrl_c(make_run, tmp_path):
    instance = make_run().wait_until_serving()

    assert instance.url == f"http://localhost:{instance.port}"
    assert instance.config_path.is_absolute()
    assert instance.config_path == tmp_path / "data" / "config.json"
    config = json.loads(instance.config_path.read_text())
    assert config["server_url"] == instance.url
    assert config["workspace_name"] == "demo"
    assert Workspace.from_config(instance.config_path).get_details()["role"] == "owner"

    username, password = instance.login
    page = sign_in(instance.url, username, password).get(f"{instance.url}/workspaces/", timeout=10)
    assert page.url == f"{instance.url}/workspaces/"
    assert 'href="/w/demo/"' in page.text

    assert listening(instance.redis_port)
    assert any((tmp_path / "data" / "redis").iterdir()), "Redis keeps its data in the data dir"
    password = (tmp_path / "data" / "redis-password").read_text().strip()
    assert instance.printed("Redis") == f"redis://trainhub:***@127.0.0.1:{instance.redis_port}/0"
    assert password not in instance.output()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=instance.redis_port).ping()
    assert redis.Redis(port=instance.redis_port, username="trainhub", password=password).ping()

    started = instance.press_ctrl_c()
    assert len(started) >= 5, f"expected redis, daphne, workers and the controller: {started}"
    assert_all_gone(instance, started)
    # Redis stops last, so no worker or node loses it while saying goodbye.
    assert "Traceback" not in instance.output()


def test_a_second_start_reuses_the_password_and_the_token(make_run):
    first = make_run().wait_until_serving()
    login, config = first.login, first.config_path.read_text()
    assert_all_gone(first, first.press_ctrl_c())

    second = make_run(port=first.port, redis_port=first.redis_port).wait_until_serving()
    assert second.login == login
    assert second.config_path.read_text() == config
    assert Workspace.from_config(second.config_path).name == "demo"
    assert 'href="/w/demo/"' in sign_in(second.url, *login).get(f"{second.url}/workspaces/").text
    assert_all_gone(second, second.press_ctrl_c())


def test_two_instances_run_side_by_side(make_run):
    one, two = make_run("one"), make_run("two")
    one.wait_until_serving()
    two.wait_until_serving()

    assert {one.port, one.redis_port}.isdisjoint({two.port, two.redis_port})
    assert Workspace.from_config(one.config_path).url == one.url
    assert Workspace.from_config(two.config_path).url == two.url
    # Separate databases: the token one instance made is unknown to the other.
    token_of_one = json.loads(one.config_path.read_text())["token"]
    with pytest.raises(AuthenticationError):
        Workspace.get("demo", url=two.url, token=token_of_one)

    assert_all_gone(one, one.press_ctrl_c())
    assert requests.get(f"{two.url}/accounts/login/", timeout=5).status_code == 200
    assert_all_gone(two, two.press_ctrl_c())
