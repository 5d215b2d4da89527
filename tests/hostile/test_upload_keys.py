"""Chunks sent under an upload key (a file hashed while it is sent) stay in their workspace, are
committed only whole and only as the sha256 they match, and a key that is not one is refused."""

from __future__ import annotations

import hashlib

import pytest
import requests

from registry.models import ModelBlob
from tests.conftest import issue_token
from trainhub import uploads

KEY = "u" + "1" * 32
CONTENT = b"a model file sent under a key" * 1000
SHA = hashlib.sha256(CONTENT).hexdigest()
SIZE = len(CONTENT)


def put(
    sdk_ws,
    name: str,
    token: str | None,
    content_range: str,
    body: bytes = b"",
    key: str | None = None,
    workspace: str = "birds",
):
    headers = {"Content-Range": content_range}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None:
        headers[uploads.KEY_HEADER] = key
    return requests.put(
        f"{sdk_ws.url}/api/v1/workspaces/{workspace}/model-blobs/{name}", data=body, headers=headers, timeout=30
    )


def send_under_key(sdk_ws, body: bytes = CONTENT) -> None:
    answer = put(sdk_ws, KEY, sdk_ws._token, f"bytes 0-{len(body) - 1}/{SIZE}", body)
    assert answer.status_code == 200, answer.text


def staged(workspace) -> list[str]:
    root = uploads.upload_root() / str(workspace.pk)
    return [p.name for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_key_upload_is_committed_as_the_sha256_a_probe_names(sdk_ws, workspace):
    send_under_key(sdk_ws)
    assert not ModelBlob.objects.filter(sha256=SHA).exists()

    answer = put(sdk_ws, SHA, sdk_ws._token, f"bytes */{SIZE}", key=KEY)

    assert answer.status_code == 201 and answer.json() == {"sha256": SHA, "size": SIZE}
    assert ModelBlob.objects.get(workspace=workspace, sha256=SHA).size == SIZE
    assert staged(workspace) == []


def test_another_workspace_can_neither_add_to_nor_take_a_key_upload(sdk_ws, workspace, other_workspace, outsider):
    token = issue_token(other_workspace, outsider)
    send_under_key(sdk_ws, CONTENT[:100])
    refused = put(sdk_ws, KEY, token, f"bytes 100-{SIZE - 1}/{SIZE}", CONTENT[100:])
    assert refused.status_code == 404

    taken = put(sdk_ws, SHA, token, f"bytes */{SIZE}", key=KEY, workspace="elsewhere")

    assert taken.status_code == 200 and taken.json()["held"] == []
    assert not ModelBlob.objects.filter(sha256=SHA).exists()
    assert put(sdk_ws, KEY, sdk_ws._token, f"bytes */{SIZE}").json()["held"] == [[0, 100]]


def test_a_key_upload_without_a_token_is_refused(sdk_ws, workspace):
    answer = put(sdk_ws, KEY, None, f"bytes 0-{SIZE - 1}/{SIZE}", CONTENT)
    assert answer.status_code in (401, 403)  # no token; no session (the CSRF check refuses first)
    assert staged(workspace) == []


def test_an_unfinished_key_upload_is_not_committed(sdk_ws, workspace):
    send_under_key(sdk_ws, CONTENT[:100])

    answer = put(sdk_ws, SHA, sdk_ws._token, f"bytes */{SIZE}", key=KEY)

    assert answer.status_code == 200 and answer.json()["held"] == [[0, 100]]
    assert not ModelBlob.objects.filter(sha256=SHA).exists()


def test_a_key_upload_named_by_another_sha256_is_dropped_whole(sdk_ws, workspace):
    send_under_key(sdk_ws)
    other = hashlib.sha256(b"something else").hexdigest()

    answer = put(sdk_ws, other, sdk_ws._token, f"bytes */{SIZE}", key=KEY)

    assert answer.status_code == 400 and answer.json()["detail"] == uploads.HASH_MISMATCH
    assert not ModelBlob.objects.exists()
    assert staged(workspace) == []


def test_a_chunk_shorter_than_its_range_under_a_key_changes_nothing(sdk_ws, workspace):
    answer = put(sdk_ws, KEY, sdk_ws._token, f"bytes 0-{SIZE - 1}/{SIZE}", CONTENT[:-1])
    assert answer.status_code == 400
    assert put(sdk_ws, KEY, sdk_ws._token, f"bytes */{SIZE}").json()["held"] == []


@pytest.mark.parametrize(
    ("name", "content_range", "key", "code"),
    [
        (SHA, f"bytes */{SIZE}", "../../../../etc/passwd", "upload_key"),
        (SHA, f"bytes */{SIZE}", "u" + "1" * 31, "upload_key"),
        (SHA, f"bytes */{SIZE}", "U" + "1" * 32, "upload_key"),
        (SHA, f"bytes 0-{SIZE - 1}/{SIZE}", KEY, "upload_key"),
        (KEY, f"bytes */{SIZE}", KEY, "upload_key"),
        ("u" + "1" * 33, f"bytes 0-{SIZE - 1}/{SIZE}", None, "upload_sha"),
        ("..%2F..%2F" + "1" * 32, f"bytes 0-{SIZE - 1}/{SIZE}", None, None),
    ],
)
def test_a_name_or_key_that_is_not_one_is_refused_and_stores_nothing(sdk_ws, workspace, name, content_range, key, code):
    answer = put(sdk_ws, name, sdk_ws._token, content_range, CONTENT if "*" not in content_range else b"", key=key)
    assert answer.status_code in (400, 404)
    if code is not None:
        assert answer.json()["code"] == code
    assert staged(workspace) == []
    assert not ModelBlob.objects.exists()
