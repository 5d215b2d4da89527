"""Loaded with `-p tests.session_env` before Django is: a data directory and a real Redis for the session.

The environment is set when this module is imported, because pytest-django reads the
settings before any later hook of ours would run.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time

from tests.helpers.ports import free_port


def _start_redis(data_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    redis_dir = os.path.join(data_dir, "redis")
    os.makedirs(redis_dir, exist_ok=True)
    process = subprocess.Popen(
        [
            "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", redis_dir,
            "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
        ],
        stdout=open(os.path.join(data_dir, "redis.log"), "wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    deadline = time.monotonic() + 20
    while True:
        try:
            if redis.Redis.from_url(url).ping():
                break
        except redis.RedisError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("The test Redis server did not start: see redis.log.")
        time.sleep(0.05)
    return process, url


def _setup() -> None:
    if os.environ.get("TRAINHUB_TEST_SESSION"):
        return
    data_dir = tempfile.mkdtemp(prefix="trainhub-test-")
    redis_process, redis_url = _start_redis(data_dir)
    os.environ.update(
        {
            "TRAINHUB_TEST_SESSION": "1",
            "TRAINHUB_DATA_DIR": data_dir,
            "REDIS_URL": redis_url,
            # Playwright's sync API runs an event loop in the test's thread.
            "DJANGO_ALLOW_ASYNC_UNSAFE": "true",
        }
    )

    def stop() -> None:
        redis_process.terminate()
        try:
            redis_process.wait(10)
        except subprocess.TimeoutExpired:
            redis_process.kill()
        shutil.rmtree(data_dir, ignore_errors=True)

    atexit.register(stop)


_setup()
