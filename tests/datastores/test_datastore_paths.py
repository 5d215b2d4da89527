"""Hostile paths: file paths, prefixes, dataset patterns and run inputs that would leave the
datastore are refused with a clear error and change nothing; a tampered file list never lands
outside the node's cache."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from datastores.models import DataBlob, DatasetVersion, DatastoreFile, RunInput
from datastores.staging import UnsafeInputPath, stage_tree
from runs.models import Run
from tests.conftest import api_client, issue_token
from tests.datastores.builders import submit, upload
from trainhub.sdk._data_reference import marker

pytestmark = pytest.mark.django_db

BASE = "/api/v1/workspaces/birds"
SHA = hashlib.sha256(b"a").hexdigest()
HOSTILE = [
    "../escape.txt",
    "fowl/../../escape.txt",
    "/etc/passwd",
    "C:/windows/x",
    "fowl\\..\\x",
    "fowl/\x00x",
    "fowl/\nx",
    "",
    "..",
    "x" * 2000,
]


@pytest.fixture
def client(workspace, owner):
    client = api_client(issue_token(workspace, owner))
    upload(client, "birds", {"fowl/a.csv": b"a"})
    return client


@pytest.mark.parametrize("path", HOSTILE)
def test_a_file_path_outside_the_datastore_is_refused(client, path):
    files = [{"path": "fowl/fine.csv", "sha256": SHA}, {"path": path, "sha256": SHA}]
    answer = client.post(
        f"{BASE}/datastores/workspaceblobstore/files", {"files": files}, content_type="application/json"
    )
    assert answer.status_code == 400
    assert answer.json()["detail"]
    assert list(DatastoreFile.objects.values_list("path", flat=True)) == ["fowl/a.csv"]


@pytest.mark.parametrize("prefix", ["../", "/etc", "fowl/../.."])
def test_a_listing_prefix_outside_is_refused(client, prefix):
    answer = client.get(f"{BASE}/datastores/workspaceblobstore/files", {"prefix": prefix})
    assert answer.status_code == 400


@pytest.mark.parametrize("pattern", ["../**", "/etc/**", "fowl/../../**", "**/../x"])
def test_a_dataset_pattern_outside_is_refused(client, pattern):
    answer = client.post(
        f"{BASE}/datasets/fowl/versions",
        {"sources": [["workspaceblobstore", pattern]]},
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert not DatasetVersion.objects.exists()


@pytest.mark.parametrize(
    "description, message",
    [
        ({"kind": "datastore", "datastore": "workspaceblobstore", "path": "../../etc"}, "climbs out"),
        ({"kind": "datastore", "datastore": "workspaceblobstore", "path": "/etc/passwd"}, "is absolute"),
        ({"kind": "datastore", "datastore": "workspaceblobstore", "path": "geese"}, "no file or folder 'geese'"),
        ({"kind": "datastore", "datastore": "workspaceblobstore", "path": "fowl", "name": "x;rm -rf"}, "input name"),
        ({"kind": "files", "sources": [["workspaceblobstore", "../**"]]}, "climbs out"),
    ],
)
def test_a_run_input_outside_the_datastore_submits_nothing(client, workspace, curated_env, description, message):
    answer = submit(client, workspace, ["--data_dir", marker(dict(description, mode="mount"))])
    assert answer.status_code == 400
    assert message in answer.json()["detail"]
    assert not Run.objects.exists() and not RunInput.objects.exists()


def test_a_forged_marker_is_refused(client, workspace, curated_env):
    answer = submit(client, workspace, ["{{trainhub-input:bm90IGpzb24=}}"])
    assert answer.status_code == 400
    assert "could not be read" in answer.json()["detail"]
    assert not Run.objects.exists()


@pytest.mark.parametrize("path", ["../escape", "a/../../escape", "/tmp/escape", "."])
def test_a_tampered_file_list_never_lands_outside_the_cache(client, workspace, settings, tmp_path, path):
    settings.TRAINHUB_DATA_CACHE_DIR = str(tmp_path / "cache")
    with pytest.raises(UnsafeInputPath):
        stage_tree("node-1", workspace.pk, [[path, SHA, 1]])
    assert not (tmp_path / "escape").exists() and not (tmp_path / "cache" / "escape").exists()
    assert not list((tmp_path / "cache" / "node-1" / "trees").glob("*/escape"))
    assert list((tmp_path / "cache" / "node-1" / "trees").iterdir()) == []


def tar_of(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as archive:
        for info, content in members:
            info.size = len(content) if info.isfile() else 0
            archive.addfile(info, io.BytesIO(content) if info.isfile() else None)
    return body.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    "members, message",
    [
        ([(member("../" + SHA), b"a")], "named by the sha256"),
        ([(member(SHA, tarfile.SYMTYPE, "/etc/passwd"), b"")], "regular files"),
        ([(member(SHA, tarfile.LNKTYPE, "/etc/passwd"), b"")], "regular files"),
        ([(member(hashlib.sha256(b"b").hexdigest()), b"not b")], "does not match its sha256"),
    ],
)
def test_a_hostile_batch_of_small_files_stores_nothing_of_it(client, members, message):
    answer = client.post(f"{BASE}/data-blobs", data=tar_of(members), content_type="application/x-tar")
    assert answer.status_code == 400
    assert message in answer.json()["detail"]
    assert not DataBlob.objects.exclude(sha256=SHA).exists()


def test_a_batch_stores_each_small_file_once(client):
    contents = [b"one", b"two", b"a"]
    members = [(member(hashlib.sha256(c).hexdigest()), c) for c in contents]
    answer = client.post(f"{BASE}/data-blobs", data=tar_of(members), content_type="application/x-tar")
    assert answer.status_code == 200 and answer.json() == {"stored": 2}
    assert DataBlob.objects.count() == 3
