"""Loaded with `-p tests.session_env` before Django is: a data directory and a real Redis for the session.

REDIS_URL names no password: as under `make run`, every process takes the site's credential from
the data directory (trainhub.datadir), so nothing passes it through the environment.

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
from pathlib import Path

from tests.helpers.ports import free_port
from trainhub.datadir import redis_url_with_credentials
from trainhub.ops.redis_server import redis_answers, start_redis_server


def start_session_redis(url: str, data_dir: str) -> subprocess.Popen:
    """The session's Redis as `make run` starts one (user `trainhub`, its password in the data
    directory, every other client refused), without persistence; the Redis restart tests start
    it again through this."""
    credentialed = redis_url_with_credentials(url, Path(data_dir))
    process = start_redis_server(
        credentialed,
        Path(data_dir) / "redis",
        persistent=False,
        stdout=open(os.path.join(data_dir, "redis.log"), "ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while not redis_answers(credentialed):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("The test Redis server did not start: see redis.log.")
        time.sleep(0.05)
    return process


def _setup() -> None:
    if os.environ.get("TRAINHUB_TEST_SESSION"):
        return
    data_dir = tempfile.mkdtemp(prefix="trainhub-test-")
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    redis_process = start_session_redis(redis_url, data_dir)
    # The test Slurm's folder (tests/helpers/slurm.py): outside the private data directory, since
    # munged wants every folder above its socket open to all. Nothing starts in it until a test asks.
    slurm_dir = tempfile.mkdtemp(prefix="trainhub-slurm-")
    os.chmod(slurm_dir, 0o755)
    os.environ.update(
        {
            "TRAINHUB_SLURM_CONF": os.path.join(slurm_dir, "slurm.conf"),
            "TRAINHUB_SLURM_NODE_ENV_FILE": os.path.join(slurm_dir, "node.env"),
            "TRAINHUB_SLURM_JOB_LOG_DIR": os.path.join(slurm_dir, "jobs"),
            "TRAINHUB_TEST_SESSION": "1",
            "TRAINHUB_DATA_DIR": data_dir,
            "REDIS_URL": redis_url,
            # Playwright's sync API runs an event loop in the test's thread.
            "DJANGO_ALLOW_ASYNC_UNSAFE": "true",
            # Upload tests size their files in chunks: a quarter of the default keeps them small,
            # and still several whole pages past the size a body is read in.
            "TRAINHUB_UPLOAD_CHUNK_BYTES": str(8 * 1024 * 1024),
        }
    )

    def stop() -> None:
        redis_process.terminate()
        try:
            redis_process.wait(10)
        except subprocess.TimeoutExpired:
            redis_process.kill()
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(slurm_dir, ignore_errors=True)

    atexit.register(stop)


_setup()
