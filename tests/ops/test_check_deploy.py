"""`manage.py check --deploy` with the production variables the README documents (read from it)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from tests.helpers.processes import BASE_DIR

pytestmark = pytest.mark.slow


def readme_production_variables() -> dict[str, str]:
    """The variables of the README's "Production, behind HTTPS" block, exactly as documented."""
    readme = (BASE_DIR / "README.md").read_text()
    section = readme.split("### Production, behind HTTPS", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    pairs = dict(line.strip().split("=", 1) for line in block.splitlines() if "=" in line)
    assert pairs, "the README documents production variables"
    return pairs


PRODUCTION = {"DEBUG": "false", **readme_production_variables()}


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
    # The README's key is a placeholder ("<50 random characters>"): a real one takes its place.
    done = check_deploy(tmp_path, **(PRODUCTION | {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}))
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout


def test_a_misspelt_switch_stops_the_server_from_starting(tmp_path):
    done = check_deploy(tmp_path, SECURE_SSL_REDIRECT="yes please")
    assert done.returncode != 0
    assert "SECURE_SSL_REDIRECT must be true or false, not 'yes please'" in done.stderr
