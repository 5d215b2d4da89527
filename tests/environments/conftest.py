"""Fixtures for environment tests: a node cache directory, an administrator, small specs."""

from __future__ import annotations

import pytest

from tests.conftest import make_user

# six is a pure-Python wheel in the machine's local index: a real build of it takes about a second.
SIX_SPEC = {"python": "3.11", "pip": ["six"]}


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "envs"


@pytest.fixture
def staff(db):
    return make_user("ada", is_staff=True, is_superuser=True)


@pytest.fixture
def curated(db, staff):
    from trainhub.environments.services import seed_demo

    seed_demo(workspace=None, user=staff)
    from trainhub.environments.models import Environment

    return Environment.objects.get(name="TrainHub-PyTorch-2.13-CPU")
