"""The local runner's folder (runs/local_runner.py) on a member's machine holds what the runner uses
and nothing of a site's: no database, secret key or Redis password is made there, and its Django has
none to use."""

from __future__ import annotations

import os
import subprocess
import sys

RUNNER_DJANGO = """
from runs.local_runner import setup_django
setup_django()
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
for name, use in [("database", connection.ensure_connection), ("secret key", lambda: settings.SECRET_KEY)]:
    try:
        use()
    except ImproperlyConfigured:
        print("no", name)
"""


def test_the_runners_folder_gets_no_database_secret_key_or_redis_password(tmp_path):
    folder = tmp_path / "local-runner"
    env = dict(os.environ, TRAINHUB_LOCAL_RUNNER_DIR=str(folder))
    subprocess.run([sys.executable, "-m", "runs.local_runner", "--check"], env=env, capture_output=True, timeout=120)
    shown = subprocess.run([sys.executable, "-c", RUNNER_DJANGO], env=env, capture_output=True, text=True, timeout=120)
    assert shown.stdout.splitlines() == ["no database", "no secret key"], shown.stderr[-3000:]
    assert sorted(path.name for path in folder.iterdir()) == []
