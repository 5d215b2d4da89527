"""Chunks sent under an upload key (a file the server names) stay in their workspace, are committed
only whole, as the sha256 the server computes or, when a client names one, only as the sha256 they
match; a commit sent again stores nothing twice, a file that changed while it was sent is not
stored, a key that is not one is refused, and chunks another member sent are never taken for a
client's own."""

from __future__ import annotations

import hashlib
import os

import pytest
import requests
from django.conf import settings
from django.core.files.storage import default_storage

from registry.models import ModelBlob
from tests.conftest import issue_token
from trainhub import uploads
from trainhub.sdk import exceptions
from trainhub.sdk._transport import FILE_ENDED
from trainhub.sdk._uploads import CHANGED, file_identity, upload_file_keyed, upload_key

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
    commit: bool = False,
):
    headers = {"Content-Range": content_range}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None:
        headers[uploads.KEY_HEADER] = key
    if commit:
        headers[uploads.COMMIT_HEADER] = "sha256"
    return requests.put(
        f"{sdk_ws.url}/api/v1/workspaces/{workspace}/model-blobs/{name}", data=body, headers=headers, timeout=30
    )


def send_under_key(sdk_ws, body: bytes = CONTENT) -> None:
    answer = put(sdk_ws, KEY, sdk_ws._token, f"bytes 0-{len(body) - 1}/{SIZE}", body)
    assert answer.status_code == 200, answer.text


def staged(workspace) -> list[str]:
    """The staging files of the workspace (a committed key's record of its sha256 aside)."""
    root = uploads.upload_root() / str(workspace.pk)
    files = [p.name for p in root.rglob("*") if p.is_file()] if root.exists() else []
    return [name for name in files if not name.endswith(uploads.COMMITTED_SUFFIX)]


def stored(sha256: str) -> bytes:
    with default_storage.open(ModelBlob.objects.get(sha256=sha256).storage_name) as handle:
        return handle.read()


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
        (SHA, f"bytes */{SIZE}", "commit", "upload_commit"),
        (KEY, f"bytes 0-{SIZE - 1}/{SIZE}", "commit", "upload_commit"),
        ("u" + "1" * 33, f"bytes */{SIZE}", "commit", "upload_commit"),
    ],
)
def test_a_name_or_key_that_is_not_one_is_refused_and_stores_nothing(sdk_ws, workspace, name, content_range, key, code):
    body = CONTENT if "*" not in content_range else b""
    if key == "commit":
        answer = put(sdk_ws, name, sdk_ws._token, content_range, body, commit=True)
    else:
        answer = put(sdk_ws, name, sdk_ws._token, content_range, body, key=key)
    assert answer.status_code in (400, 404)
    if code is not None:
        assert answer.json()["code"] == code
    assert staged(workspace) == []
    assert not ModelBlob.objects.exists()


def test_a_committed_key_upload_is_stored_as_the_sha256_the_server_computes(sdk_ws, workspace):
    send_under_key(sdk_ws)

    answer = put(sdk_ws, KEY, sdk_ws._token, f"bytes */{SIZE}", commit=True)

    assert answer.status_code == 201 and answer.json() == {"sha256": SHA, "size": SIZE}
    assert stored(SHA) == CONTENT
    assert staged(workspace) == []


def test_a_commit_sent_again_gets_the_same_answer_and_stores_nothing_twice(sdk_ws, workspace):
    send_under_key(sdk_ws)
    first = put(sdk_ws, KEY, sdk_ws._token, f"bytes */{SIZE}", commit=True)

    again = put(sdk_ws, KEY, sdk_ws._token, f"bytes */{SIZE}", commit=True)

    assert again.status_code == 201 and again.json() == first.json() == {"sha256": SHA, "size": SIZE}
    assert ModelBlob.objects.count() == 1 and stored(SHA) == CONTENT


def test_a_committed_key_upload_of_a_content_the_server_has_is_not_stored_twice(sdk_ws, workspace):
    send_under_key(sdk_ws)
    assert put(sdk_ws, KEY, sdk_ws._token, f"bytes */{SIZE}", commit=True).status_code == 201
    again = "u" + "2" * 32
    assert put(sdk_ws, again, sdk_ws._token, f"bytes 0-{SIZE - 1}/{SIZE}", CONTENT).status_code == 200

    answer = put(sdk_ws, again, sdk_ws._token, f"bytes */{SIZE}", commit=True)

    assert answer.status_code == 201 and answer.json() == {"sha256": SHA, "size": SIZE}
    assert ModelBlob.objects.count() == 1
    assert staged(workspace) == []


def test_a_commit_of_an_unfinished_key_upload_stores_nothing(sdk_ws, workspace):
    send_under_key(sdk_ws, CONTENT[:100])

    answer = put(sdk_ws, KEY, sdk_ws._token, f"bytes */{SIZE}", commit=True)

    assert answer.status_code == 200 and answer.json()["held"] == [[0, 100]]
    assert not ModelBlob.objects.exists()


def test_another_workspace_cannot_commit_a_key_upload(sdk_ws, workspace, other_workspace, outsider):
    send_under_key(sdk_ws)
    token = issue_token(other_workspace, outsider)

    taken = put(sdk_ws, KEY, token, f"bytes */{SIZE}", workspace="elsewhere", commit=True)
    refused = put(sdk_ws, KEY, token, f"bytes */{SIZE}", commit=True)

    assert taken.status_code == 200 and taken.json()["held"] == []
    assert refused.status_code == 404
    assert not ModelBlob.objects.exists()
    assert put(sdk_ws, KEY, sdk_ws._token, f"bytes */{SIZE}", commit=True).json()["sha256"] == SHA


def write_file(path, size: int) -> bytes:
    content = os.urandom(size)
    path.write_bytes(content)
    # A day old: whatever the clock's grain, a later write moves the file's times.
    os.utime(path, (path.stat().st_atime - 86400, path.stat().st_mtime - 86400))
    return content


def test_a_file_changed_while_it_is_uploaded_is_refused_and_nothing_is_stored(sdk_ws, workspace, tmp_path):
    local = tmp_path / "model.pt"
    write_file(local, 3 * settings.TRAINHUB_UPLOAD_CHUNK_BYTES)
    changed = []

    def change_after_the_first_chunk(received: int, total: int) -> None:
        if received and not changed:
            with open(local, "r+b") as handle:
                handle.write(b"changed")  # same size, in place
            changed.append(True)

    with pytest.raises(exceptions.TrainHubError) as refused:
        upload_file_keyed(
            sdk_ws._http, sdk_ws.api("model-blobs"), local, on_progress=change_after_the_first_chunk, threads=1
        )

    assert str(refused.value) == CHANGED.format(path=local)
    assert changed and not ModelBlob.objects.exists()
    answer = upload_file_keyed(sdk_ws._http, sdk_ws.api("model-blobs"), local)
    assert answer["sha256"] == hashlib.sha256(local.read_bytes()).hexdigest()
    assert stored(answer["sha256"]) == local.read_bytes()


def test_a_file_cut_short_while_it_is_uploaded_is_refused_and_nothing_is_stored(sdk_ws, workspace, tmp_path):
    """The kernel sends a chunk from the file: one that ends sooner than the chunk's range is not
    sent short (the server would wait for the rest), and nothing is stored."""
    chunk = settings.TRAINHUB_UPLOAD_CHUNK_BYTES
    local = tmp_path / "model.pt"
    write_file(local, 3 * chunk)

    def truncate_after_the_first_chunk(received: int, total: int) -> None:
        if received:
            os.truncate(local, chunk // 2)

    with pytest.raises(exceptions.TrainHubError) as refused:
        upload_file_keyed(
            sdk_ws._http, sdk_ws.api("model-blobs"), local, on_progress=truncate_after_the_first_chunk, threads=1
        )

    assert str(refused.value) == FILE_ENDED.format(end=2 * chunk)
    assert not ModelBlob.objects.exists()


def test_chunks_another_member_sent_under_a_key_are_not_taken_for_a_clients_file(
    sdk_ws, workspace, contributor, tmp_path
):
    """An upload key is derived from the client's token as well as its file: a member who knows
    where the file lies, its inode and its times still cannot stage bytes the owner's client
    would resume from and commit as its own."""
    local = tmp_path / "model.pt"
    content = write_file(local, 2 * settings.TRAINHUB_UPLOAD_CHUNK_BYTES)
    token = issue_token(workspace, contributor, name="contributor")
    planted = upload_key(local, file_identity(local), token)
    for start in range(0, len(content), settings.TRAINHUB_UPLOAD_CHUNK_BYTES):
        end = min(start + settings.TRAINHUB_UPLOAD_CHUNK_BYTES, len(content)) - 1
        junk = b"\0" * (end - start + 1)
        assert put(sdk_ws, planted, token, f"bytes {start}-{end}/{len(content)}", junk).status_code == 200

    answer = upload_file_keyed(sdk_ws._http, sdk_ws.api("model-blobs"), local)

    assert answer["sha256"] == hashlib.sha256(content).hexdigest()
    assert stored(answer["sha256"]) == content
    assert ModelBlob.objects.count() == 1
