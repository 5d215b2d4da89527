"""`manage.py check --deploy` with the production variables the README documents."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from tests.helpers.processes import BASE_DIR

pytestmark = pytest.mark.slow

PRODUCTION = {
    "DEBUG": "false",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "ALLOWED_HOSTS": "trainhub.example.org",
}


def check_deploy(tmp_path, **variables: str) -> subprocess.CompletedProcess:
    # Only what a production shell would have: none of this test session's variables.
    session = ("TRAINHUB_", "DJANGO_", "DATABASE_URL", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION and not k.startswith(session)}
    env.update(TRAINHUB_DATA_DIR=str(tmp_path), **variables)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_variables_pass_the_deployment_checks(tmp_path):
    done = check_deploy(tmp_path, DJANGO_SECRET_KEY=secrets.token_urlsafe(50), **PRODUCTION)
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout


def test_a_misspelt_switch_stops_the_server_from_starting(tmp_path):
    done = check_deploy(tmp_path, SECURE_SSL_REDIRECT="yes please")
    assert done.returncode != 0
    assert "SECURE_SSL_REDIRECT must be true or false, not 'yes please'" in done.stderr
