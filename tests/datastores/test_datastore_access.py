"""Datastore and dataset pages and endpoints answer 404 to outsiders; readers look, never change."""

from __future__ import annotations

import hashlib

import pytest

from datastores.models import Dataset, DatastoreFile, RunInput
from tests.conftest import api_client, issue_token
from tests.datastores.builders import submit, upload
from trainhub.sdk._data_reference import marker

pytestmark = pytest.mark.django_db

FILES = {"fowl/a.csv": b"a", "fowl/b.csv": b"b"}
SHA_A = hashlib.sha256(b"a").hexdigest()


@pytest.fixture
def data(workspace, owner):
    client = api_client(issue_token(workspace, owner))
    upload(client, "birds", FILES)
    answer = client.post(
        "/api/v1/workspaces/birds/datasets/fowl/versions",
        {"sources": [["workspaceblobstore", "fowl/**"]]},
        content_type="application/json",
    )
    assert answer.status_code == 201, answer.content
    return client


PAGES = [
    "/w/birds/data/",
    "/w/birds/data/stores/workspaceblobstore/",
    "/w/birds/data/sets/fowl/",
    "/w/birds/data/sets/fowl/1/",
    f"/w/birds/data/files/{SHA_A}/?path=fowl/a.csv",
]
READS = [
    "datastores",
    "default-datastore",
    "datastores/workspaceblobstore",
    "datastores/workspaceblobstore/files",
    f"data-blobs/{SHA_A}",
    f"data-blobs/{SHA_A}/content",
    "datasets/fowl",
    "datasets/fowl/versions/1",
    "datasets/fowl/versions/1/files",
]


def writes(client):
    base = "/api/v1/workspaces/birds"
    return [
        client.post(f"{base}/datastores", {"name": "mine"}, content_type="application/json"),
        client.post(
            f"{base}/datastores/workspaceblobstore/files",
            {"files": [{"path": "fowl/c.csv", "sha256": SHA_A}]},
            content_type="application/json",
        ),
        client.put(
            f"{base}/data-blobs/{hashlib.sha256(b'new').hexdigest()}",
            data=b"new",
            content_type="application/octet-stream",
        ),
        client.post(
            f"{base}/datasets/fowl/versions",
            {"sources": [["workspaceblobstore", "fowl/**"]], "create_new_version": True},
            content_type="application/json",
        ),
    ]


def test_members_see_the_pages_and_files(data, client_for, reader):
    client = client_for(reader)
    for url in PAGES:
        answer = client.get(url)
        assert answer.status_code == 200, url
    assert "fowl/a.csv" in client.get("/w/birds/data/stores/workspaceblobstore/").content.decode()
    downloaded = client.get(f"/w/birds/data/files/{SHA_A}/?path=fowl/a.csv")
    assert b"".join(downloaded) == b"a"
    assert downloaded["Content-Disposition"] == 'attachment; filename="a.csv"'
    assert client.get(f"/w/birds/data/files/{hashlib.sha256(b'nope').hexdigest()}/").status_code == 404
    page = client.get("/w/birds/data/").content.decode()
    assert "workspaceblobstore" in page and "/w/birds/data/sets/fowl/1/" in page


def test_outsiders_get_404_everywhere(data, client_for, outsider, other_workspace):
    client = client_for(outsider)
    for url in PAGES:
        assert client.get(url).status_code == 404, url
    for path in READS:
        assert client.get(f"/api/v1/workspaces/birds/{path}").status_code == 404, path
    assert {answer.status_code for answer in writes(client)} == {404}
    other_token = api_client(issue_token(other_workspace, outsider))
    assert other_token.get("/api/v1/workspaces/birds/datastores").status_code == 404


def test_readers_get_403_on_writes_and_nothing_changes(data, workspace, reader):
    client = api_client(issue_token(workspace, reader))
    for path in READS:
        assert client.get(f"/api/v1/workspaces/birds/{path}").status_code == 200, path
    answers = writes(client)
    assert {answer.status_code for answer in answers} == {403}
    assert "reader" in answers[0].json()["detail"]
    assert DatastoreFile.objects.count() == 2
    assert Dataset.objects.get(name="fowl").last_version == 1


def test_a_run_cannot_take_another_workspaces_data(data, other_workspace, outsider, curated_env):
    client = api_client(issue_token(other_workspace, outsider))
    stolen = marker({"kind": "dataset", "dataset": "fowl", "mode": "mount"})
    answer = submit(client, other_workspace, ["--data", stolen])
    assert answer.status_code == 404
    assert answer.json()["detail"] == "No dataset named 'fowl' in this workspace."
    assert not RunInput.objects.exists()
