"""Checks for, and the command line of, the Redis server TrainHub starts when none answers."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

import redis


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
