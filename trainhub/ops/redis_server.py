"""The Redis server TrainHub starts when none answers at REDIS_URL, and the checks for one.

Run as `python -m trainhub.ops.redis_server` (the Procfile's `redis` entry): it needs no
Django, so Redis is up while the other processes are still importing theirs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import redis

# Stopping Redis last lets workers and nodes say goodbye to it; honcho kills whatever is
# left 5 s after Ctrl-C, so the wait for them stays well below that.
CLIENTS_LEAVE_SECONDS = 3.0
PR_SET_PDEATHSIG = 1


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def wait_for_redis(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not redis_answers(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis does not answer at {url} after {timeout:.0f} s.")
        time.sleep(0.2)


def redis_server_command(url: str, data_dir: Path) -> list[str]:
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 6379
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        "redis-server",
        "--bind", host,
        "--port", str(port),
        "--dir", str(data_dir),
        "--daemonize", "no",
        # Jobs, heartbeats and log batches must never be dropped to make room.
        "--maxmemory-policy", "noeviction",
        "--appendonly", "yes",
        "--save", "",
    ]
    if parsed.password:
        command += ["--requirepass", parsed.password]
    return command


def _wait_for_clients_to_leave(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        client = redis.Redis.from_url(url, socket_timeout=1)
        while time.monotonic() < deadline and client.info("clients")["connected_clients"] > 1:
            time.sleep(0.1)
    except (redis.RedisError, OSError):
        pass


def _ended_with(parent: int) -> Callable[[], None]:
    """In the child: receive SIGTERM when `parent` dies, even if it is killed with SIGKILL."""

    def preexec() -> None:
        try:
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def run_redis(url: str, data_dir: Path) -> int:
    """Serve `url` until SIGTERM or SIGINT; if a Redis already answers there, just stay up."""
    stop: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stop.append(signum))
    if redis_answers(url):
        print(f"Redis already answers at {url}: using it.", flush=True)
        while not stop:
            time.sleep(0.2)
        return 0
    # Its own session keeps the runner's group-wide SIGTERM from stopping Redis before its clients.
    server = subprocess.Popen(
        redis_server_command(url, data_dir),
        start_new_session=True,
        preexec_fn=_ended_with(os.getpid()),
    )
    while not stop and server.poll() is None:
        time.sleep(0.1)
    if server.poll() is None:
        _wait_for_clients_to_leave(url, CLIENTS_LEAVE_SECONDS)
        server.terminate()
        server.wait()
    return server.returncode if server.returncode > 0 else 0


def main() -> int:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    default_data_dir = Path(__file__).resolve().parents[2] / "var"
    data_dir = Path(os.environ.get("TRAINHUB_DATA_DIR") or default_data_dir).resolve()
    return run_redis(url, data_dir / "redis")


if __name__ == "__main__":
    sys.exit(main())
