"""The SDK's Workspace against a live server (daphne, real Redis)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import issue_token
from tests.helpers.ports import free_port
from trainhub.sdk import Workspace, exceptions
from trainhub.workspaces import services
from trainhub.workspaces.models import ApiToken
from trainhub.workspaces.selectors import hash_token


@pytest.fixture
def config_dir(tmp_path, live_url, workspace, owner_token, monkeypatch):
    (tmp_path / "config.json").write_text(
        json.dumps({"server_url": live_url, "workspace_name": "birds", "token": owner_token})
    )
    nested = tmp_path / "project" / "src"
    nested.mkdir(parents=True)
    monkeypatch.delenv("TRAINHUB_TOKEN", raising=False)
    monkeypatch.setenv("TRAINHUB_CREDENTIALS", str(tmp_path / "no-credentials"))
    return tmp_path


def test_from_config_finds_the_file_in_a_parent_folder(config_dir, monkeypatch):
    monkeypatch.chdir(config_dir / "project" / "src")
    ws = Workspace.from_config()
    assert ws.name == "birds"
    assert ws.get_details()["role"] == "owner"


def test_from_config_takes_a_path(config_dir):
    assert Workspace.from_config(str(config_dir / "config.json")).name == "birds"
    assert Workspace.from_config(config_dir).name == "birds"


def test_from_config_reads_the_token_from_the_environment(config_dir, owner_token, monkeypatch):
    path = config_dir / "config.json"
    config = json.loads(path.read_text())
    del config["token"]
    path.write_text(json.dumps(config))
    with pytest.raises(exceptions.AuthenticationError, match="No API token"):
        Workspace.from_config(path)
    monkeypatch.setenv("TRAINHUB_TOKEN", owner_token)
    assert Workspace.from_config(path).name == "birds"


def test_from_config_reads_the_credentials_file(config_dir, owner_token, live_url, monkeypatch):
    from trainhub.sdk._config import save_token

    path = config_dir / "config.json"
    config = json.loads(path.read_text())
    del config["token"]
    path.write_text(json.dumps(config))
    save_token(live_url, owner_token)
    assert Workspace.from_config(path).name == "birds"


def test_get_with_a_wrong_token(live_url, workspace):
    with pytest.raises(exceptions.AuthenticationError, match="not valid"):
        Workspace.get("birds", url=live_url, token="th_wrong")


def test_get_with_a_revoked_token(live_url, workspace, owner_token):
    services.token_revoke(token=ApiToken.objects.get(token_hash=hash_token(owner_token)))
    with pytest.raises(exceptions.AuthenticationError):
        Workspace.get("birds", url=live_url, token=owner_token)


def test_get_an_unknown_workspace(live_url, workspace, owner_token):
    with pytest.raises(exceptions.WorkspaceNotFoundError, match="No workspace named 'nowhere'"):
        Workspace.get("nowhere", url=live_url, token=owner_token)


def test_get_a_workspace_of_which_i_am_not_a_member(live_url, workspace, other_workspace, outsider):
    token = issue_token(other_workspace, outsider)
    with pytest.raises(exceptions.WorkspaceNotFoundError):
        Workspace.get("birds", url=live_url, token=token)


def test_an_unreachable_server(db):
    with pytest.raises(exceptions.ServerUnreachableError, match="Cannot reach"):
        Workspace.get("birds", url=f"http://127.0.0.1:{free_port()}", token="th_x")


def test_no_config_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(exceptions.ConfigNotFoundError, match="No config.json"):
        Workspace.from_config()


def test_the_sdk_does_not_import_django():
    import subprocess
    import sys

    code = "import sys, trainhub.sdk.workspace; print('django' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
