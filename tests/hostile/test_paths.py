"""Hostile paths on every endpoint that takes one, against one real run whose script planted
symlinks to the server's secret key, database and data folder in outputs/ and logs/.

Requests are sent byte for byte (http.client: nothing normalises or re-encodes them) to the
live daphne, so what is tested is what a client on the network can send.
"""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from registry.models import ModelVersion
from trainhub.sdk import Environment, Experiment, ScriptRunConfig
from trainhub.sdk.exceptions import UserErrorException

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).parent / "projects" / "leak"
SQLITE_HEADER = b"SQLite format 3"

# (name, the raw value of ?path=): each written as an attacker would put it on the wire.
PATH_ATTACKS = [
    ("dot-dot", "../../secret_key"),
    ("dot-dot-inside", "outputs/../../../secret_key"),
    ("percent-encoded", "%2e%2e%2f%2e%2e%2fsecret_key"),
    ("double-encoded", "%252e%252e%252f%252e%252e%252fsecret_key"),
    ("backslashes", "outputs%5c..%5c..%5csecret_key"),
    ("semicolon-parameter", "outputs/model.pt;/../../../secret_key"),
    ("absolute", "{secret_key}"),
    ("nul", "outputs/model.pt%00.txt"),
    ("very-long", "a" * 10_000),
    ("symlink-to-secret-key", "outputs/secret_key"),
    ("symlink-to-database", "outputs/db.sqlite3"),
    ("through-a-folder-symlink", "outputs/data/secret_key"),
    ("relative-symlink", "outputs/nested/relative_key"),
    ("symlink-in-logs", "logs/secret_key.txt"),
]

# URLs whose path segments themselves climb or smuggle: none may serve anything.
URL_ATTACKS = [
    ("run-id-encoded-climb", "/w/birds/runs/..%2f..%2f..%2fsecret_key/"),
    ("run-id-dot-dot", "/api/v1/workspaces/birds/runs/%2e%2e/file?path=outputs/model.pt"),
    ("workspace-semicolon", "/api/v1/workspaces/birds;x=1/runs/{run_id}/file?path=outputs/model.pt"),
    ("model-name-climb", "/w/birds/models/..%2f..%2fsecret_key/1/file?path=model.pt"),
    ("model-name-double-encoded", "/w/birds/models/%252e%252e%252fsecret_key/1/download"),
    ("export-name-climb", "/api/v1/workspaces/birds/models/..%2f..%2fx/versions/1/onnx-exports"),
    ("environment-name-climb", "/api/v1/workspaces/birds/environments/..%2f..%2fsecret_key"),
    ("static-dot-dot", "/static/../../secret_key"),
    ("static-encoded", "/static/%2e%2e/%2e%2e/secret_key"),
    ("static-backslash", "/static/..%5c..%5csecret_key"),
]


def raw_get(base_url: str, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """GET `target` exactly as written."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def assert_nothing_leaks(status: int, body: bytes, what: str) -> None:
    assert status in (400, 404, 405), f"{what}: answered {status}"
    assert settings.SECRET_KEY.encode() not in body, f"{what}: the secret key was served"
    assert SQLITE_HEADER not in body, f"{what}: the database was served"


@pytest.fixture
def leaky_run(ws, node):
    """A completed run whose script planted symlinks to the server's secrets."""
    src = ScriptRunConfig(
        source_directory=str(PROJECT),
        script="leak.py",
        arguments=[str(settings.DATA_DIR / "secret_key"), connection.settings_dict["NAME"], str(settings.DATA_DIR)],
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )
    run = Experiment(ws, "leak").submit(src)
    assert run.wait_for_completion()["status"] == "Completed"
    return run


def assert_planted_links_were_never_stored(run) -> None:
    assert (settings.DATA_DIR / "secret_key").exists(), "the server keeps its generated key there"
    stored = run.get_file_names()
    assert "outputs/model.pt" in stored
    assert [p for p in stored if "secret" in p or "db.sqlite3" in p or p.startswith("outputs/data")] == []
    for model_path in ("outputs/secret_key", "outputs/db.sqlite3", "outputs/data", "logs/secret_key.txt"):
        with pytest.raises(UserErrorException, match="has no stored file or folder"):
            run.register_model("stolen", model_path)
    assert not ModelVersion.objects.filter(model__name="stolen").exists()
    run.register_model("outputs-folder", "outputs")
    version = ModelVersion.objects.get(model__name="outputs-folder")
    assert [f.path for f in version.files.all()] == ["outputs/model.pt"]


def session_headers(user) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    return {"Cookie": f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"}


def path_endpoints(run_id: str) -> list[tuple[str, str]]:
    """(name, URL up to '?path=') of every endpoint that takes a file path: pages and API."""
    api = "/api/v1/workspaces/birds"
    return [
        ("run file page", f"/w/birds/runs/{run_id}/file?path="),
        ("run file API", f"{api}/runs/{run_id}/file?path="),
        ("model file page", "/w/birds/models/outputs-folder/1/file?path="),
        ("model file API", f"{api}/models/outputs-folder/versions/1/file?path="),
    ]


def test_planted_symlinks_and_hostile_paths_serve_nothing(leaky_run, owner, owner_token, live_url):
    """One real run for every attack: its links are not stored, not registrable, and no path
    on any endpoint, however encoded, reaches them or anything else outside the run."""
    assert_planted_links_were_never_stored(leaky_run)
    secret_key = str(settings.DATA_DIR / "secret_key")
    for endpoint, prefix in path_endpoints(leaky_run.id):
        headers = {"Authorization": f"Bearer {owner_token}"} if "API" in endpoint else session_headers(owner)
        status, _ = raw_get(live_url, prefix + "outputs/model.pt", headers)
        assert status == 200, f"{endpoint}: the honest file is served (the control)"
        for attack, raw in PATH_ATTACKS:
            status, body = raw_get(live_url, prefix + raw.format(secret_key=secret_key), headers)
            assert_nothing_leaks(status, body, f"{endpoint}, {attack}")
    for attack, target in URL_ATTACKS:
        headers = {"Authorization": f"Bearer {owner_token}"} if target.startswith("/api/") else session_headers(owner)
        status, body = raw_get(live_url, target.format(run_id=leaky_run.id), headers)
        assert_nothing_leaks(status, body, attack)
