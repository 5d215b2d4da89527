"""The Redis server TrainHub starts when none answers at REDIS_URL, and the checks for one.

Run as `python -m trainhub.ops.redis_server` (the Procfile's `redis` entry): it needs no
Django, so Redis is up while the other processes are still importing theirs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import redis

from trainhub.datadir import private_dir, redacted, redis_url_with_credentials

# Stopping Redis last lets workers and nodes say goodbye to it; honcho kills whatever is
# left 5 s after Ctrl-C, so the wait for them stays well below that.
CLIENTS_LEAVE_SECONDS = 3.0
PR_SET_PDEATHSIG = 1
REFUSED = (
    "The Redis at {url} refuses TrainHub's credential: put its user and password in REDIS_URL "
    "(README: Adding nodes on another machine), or, to have TrainHub start its own, stop it or "
    "choose another port."
)


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def wait_for_redis(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not redis_answers(url):
        if refuses_credential(url):
            raise RuntimeError(REFUSED.format(url=redacted(url)))
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis does not answer at {redacted(url)} after {timeout:.0f} s.")
        time.sleep(0.2)


def redis_acl(url: str) -> str:
    """The ACL of a Redis that serves `url`'s credential and nobody else: its user with every right,
    and the password-less `default` user switched off (unless the URL is `default`'s). Only the
    password's SHA-256 is written, and on Redis's standard input, never on a command line."""
    parsed = urlparse(url)
    if not parsed.password:
        raise ValueError("TrainHub's Redis needs a URL with a password.")
    digest = hashlib.sha256(unquote(parsed.password).encode()).hexdigest()
    user = unquote(parsed.username or "default")
    acl = f"user {user} reset on #{digest} ~* &* +@all\n"
    return acl if user == "default" else f"user default reset off\n{acl}"


def redis_server_command(url: str, data_dir: Path, persistent: bool = True) -> list[str]:
    """redis-server serving `url`, reading its ACL (`redis_acl`) from its standard input."""
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 6379
    private_dir(data_dir)
    return [
        "redis-server",
        "-",
        "--bind",
        host,
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--daemonize",
        "no",
        # Jobs, heartbeats and log batches must never be dropped to make room.
        "--maxmemory-policy",
        "noeviction",
        "--appendonly",
        "yes" if persistent else "no",
        "--save",
        "",
    ]


def start_redis_server(url: str, data_dir: Path, persistent: bool = True, **popen: Any) -> subprocess.Popen:
    """Start redis-server for `url` (which carries the credential it will require)."""
    server = subprocess.Popen(redis_server_command(url, data_dir, persistent), stdin=subprocess.PIPE, **popen)
    assert server.stdin is not None
    server.stdin.write(redis_acl(url).encode())
    server.stdin.close()
    return server


def refuses_credential(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.AuthenticationError:
        return True
    except (redis.RedisError, OSError, ValueError):
        pass
    return False


def something_listens(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=0.5):
            return True
    except OSError:
        return False


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
        print(f"Redis already answers at {redacted(url)}: using it.", flush=True)
        while not stop:
            time.sleep(0.2)
        return 0
    if something_listens(url):
        print(REFUSED.format(url=redacted(url)), file=sys.stderr, flush=True)
        return 1
    # Its own session keeps the runner's group-wide SIGTERM from stopping Redis before its clients.
    server = start_redis_server(url, data_dir, start_new_session=True, preexec_fn=_ended_with(os.getpid()))
    while not stop and server.poll() is None:
        time.sleep(0.1)
    if server.poll() is None:
        _wait_for_clients_to_leave(url, CLIENTS_LEAVE_SECONDS)
        server.terminate()
        server.wait()
    return server.returncode if server.returncode > 0 else 0


def main() -> int:
    default_data_dir = Path(__file__).resolve().parents[2] / "var"
    data_dir = Path(os.environ.get("TRAINHUB_DATA_DIR") or default_data_dir).resolve()
    url = redis_url_with_credentials(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0", data_dir)
    return run_redis(url, data_dir / "redis")


if __name__ == "__main__":
    sys.exit(main())
