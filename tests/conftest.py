"""Fixtures every test can use: three standing users (owner, member, outsider), a live server, a browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.helpers.processes import Server
from trainhub.workspaces import services
from trainhub.workspaces.models import Membership, Role, Workspace
from trainhub.workspaces.permissions import Access

PASSWORD = "correct horse battery staple"


def make_user(username: str, **extra):
    return get_user_model().objects.create_user(username, f"{username}@example.com", PASSWORD, **extra)


@pytest.fixture
def owner(db):
    return make_user("olivia")


@pytest.fixture
def contributor(db):
    return make_user("carl")


@pytest.fixture
def reader(db):
    return make_user("rita")


@pytest.fixture
def outsider(db):
    return make_user("oscar")


@pytest.fixture
def workspace(owner, contributor, reader) -> Workspace:
    ws = services.workspace_create(name="birds", user=owner, description="Fowl classifiers")
    Membership.objects.create(workspace=ws, user=contributor, role=Role.CONTRIBUTOR)
    Membership.objects.create(workspace=ws, user=reader, role=Role.READER)
    return ws


@pytest.fixture
def other_workspace(outsider) -> Workspace:
    return services.workspace_create(name="elsewhere", user=outsider)


def issue_token(workspace: Workspace, user, name: str = "test") -> str:
    role = Membership.objects.get(workspace=workspace, user=user).role
    return services.token_create(access=Access(workspace, role), user=user, name=name).secret


@pytest.fixture
def owner_token(workspace, owner) -> str:
    return issue_token(workspace, owner)


@pytest.fixture
def client_for():
    def make(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


def api_client(token: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture(scope="session")
def live_server_process(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Server]:
    """daphne on the test database (tests using it need `transactional_db` to share rows)."""
    server = Server(tmp_path_factory.mktemp("logs")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slurm_cluster(live_server_process):
    """A real Slurm (munged, slurmctld, slurmd n1 and n2 in partition `debug`) for the whole session;
    its hosts' node settings point at this session's server, database, files and Redis."""
    import os

    from tests.helpers.processes import process_env
    from tests.helpers.slurm import SlurmCluster, slurm_missing

    missing = slurm_missing()
    if missing:
        pytest.skip(f"No Slurm on this machine: {missing}")
    cluster = SlurmCluster(
        Path(os.environ["TRAINHUB_SLURM_CONF"]),
        process_env(TRAINHUB_NODE_SERVER_URL=live_server_process.url),
        Path(os.environ["TRAINHUB_SLURM_NODE_ENV_FILE"]),
    )
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def live_url(live_server_process, transactional_db) -> str:
    return live_server_process.url


BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


# Per module, not per session: while Playwright's sync API is open its event loop counts as
# running in the test's thread, and every later async_to_sync (Channels consumer tests) fails.
@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, tmp_path: Path):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
