"""Real TrainHub processes for tests: the web server (daphne) and later nodes, on the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from django.conf import settings

from tests.helpers.ports import free_port

BASE_DIR = Path(__file__).resolve().parents[2]


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a TrainHub process sharing this test session's database, files and Redis."""
    env = dict(os.environ)
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        env["DATABASE_URL"] = f"sqlite:///{database['NAME']}"
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
