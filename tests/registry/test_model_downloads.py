"""Downloads from a live server: byte-identical with checksums, Range, folders as streamed zips."""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile

import pytest
import requests

from registry.models import ModelFile
from tests.registry.builders import register, run_with_outputs
from trainhub.sdk import Model
from trainhub.sdk.exceptions import UserErrorException

WEIGHTS = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture
def stored(workspace, owner):
    run = run_with_outputs(
        workspace,
        {
            "outputs/model.pt": WEIGHTS,
            "outputs/bundle/config.json": b'{"layers": 2}',
            "outputs/bundle/weights/part-0.bin": WEIGHTS[:1000],
            "outputs/bundle/weights/part-1.bin": WEIGHTS[1000:5000],
        },
    )
    register(workspace, owner, run)
    register(workspace, owner, run, name="bundle", path="outputs/bundle")
    return run


def test_a_version_downloads_byte_identical(sdk_ws, stored, tmp_path):
    model = Model(sdk_ws, name="pytorch-birds")
    path = model.download(target_dir=str(tmp_path))
    assert path == str(tmp_path / "model.pt")
    assert (tmp_path / "model.pt").read_bytes() == WEIGHTS
    assert model.files == [{"path": "model.pt", "size": len(WEIGHTS), "sha256": hashlib.sha256(WEIGHTS).hexdigest()}]
    assert not list(tmp_path.glob("*.part"))


def test_a_second_download_needs_exist_ok(sdk_ws, stored, tmp_path):
    model = Model(sdk_ws, name="pytorch-birds", version=1)
    model.download(target_dir=str(tmp_path))
    with pytest.raises(UserErrorException, match="already exists: pass exist_ok=True"):
        model.download(target_dir=str(tmp_path))
    (tmp_path / "model.pt").write_bytes(b"stale")
    model.download(target_dir=str(tmp_path), exist_ok=True)
    assert (tmp_path / "model.pt").read_bytes() == WEIGHTS


def test_a_partial_download_resumes_and_is_checked(sdk_ws, stored, tmp_path):
    (tmp_path / "model.pt.part").write_bytes(WEIGHTS[:1_000_000])
    Model(sdk_ws, name="pytorch-birds").download(target_dir=str(tmp_path))
    assert (tmp_path / "model.pt").read_bytes() == WEIGHTS


def test_a_damaged_partial_download_is_refused(sdk_ws, stored, tmp_path):
    from trainhub.sdk.model import ChecksumMismatchError

    (tmp_path / "model.pt.part").write_bytes(b"x" * 1000)
    with pytest.raises(ChecksumMismatchError, match="does not match its sha256"):
        Model(sdk_ws, name="pytorch-birds").download(target_dir=str(tmp_path))
    assert not (tmp_path / "model.pt").exists()
    assert not (tmp_path / "model.pt.part").exists()


def test_a_folder_version_downloads_file_by_file(sdk_ws, stored, tmp_path):
    path = Model(sdk_ws, name="bundle").download(target_dir=str(tmp_path))
    assert path == str(tmp_path / "bundle")
    assert (tmp_path / "bundle" / "config.json").read_bytes() == b'{"layers": 2}'
    assert (tmp_path / "bundle" / "weights" / "part-1.bin").read_bytes() == WEIGHTS[1000:5000]


def test_range_requests_resume_a_single_file(live_url, owner_token, stored):
    url = f"{live_url}/api/v1/workspaces/birds/models/pytorch-birds/versions/1/file"
    headers = {"Authorization": f"Bearer {owner_token}"}
    whole = requests.get(url, params={"path": "model.pt"}, headers=headers, timeout=30)
    assert whole.status_code == 200
    assert whole.headers["X-Checksum-Sha256"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert whole.headers["Accept-Ranges"] == "bytes"
    part = requests.get(url, params={"path": "model.pt"}, headers=dict(headers, Range="bytes=1000-1999"), timeout=30)
    assert part.status_code == 206
    assert part.content == WEIGHTS[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(WEIGHTS)}"
    tail = requests.get(url, params={"path": "model.pt"}, headers=dict(headers, Range="bytes=-10"), timeout=30)
    assert tail.content == WEIGHTS[-10:]
    beyond = requests.get(
        url,
        params={"path": "model.pt"},
        headers=dict(headers, Range=f"bytes={len(WEIGHTS)}-"),
        timeout=30,
    )
    assert beyond.status_code == 416


def test_the_portal_sends_a_single_file_version_as_itself(live_url, client_for, owner, stored):
    session = requests.Session()
    session.cookies.set("sessionid", client_for(owner).cookies["sessionid"].value)
    response = session.get(f"{live_url}/w/birds/models/pytorch-birds/1/download", timeout=30)
    assert response.status_code == 200
    assert response.content == WEIGHTS
    assert 'filename="model.pt"' in response.headers["Content-Disposition"]
    assert response.headers["X-Checksum-Sha256"] == hashlib.sha256(WEIGHTS).hexdigest()


def test_a_folder_version_streams_as_a_zip(live_url, client_for, owner, stored):
    session = requests.Session()
    session.cookies.set("sessionid", client_for(owner).cookies["sessionid"].value)
    response = session.get(f"{live_url}/w/birds/models/bundle/1/download", stream=True, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/zip"
    assert 'filename="bundle-1.zip"' in response.headers["Content-Disposition"]
    declared = int(response.headers["Content-Length"])
    pieces = list(response.iter_content(chunk_size=None))
    body = b"".join(pieces)
    assert len(body) == declared
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == [
            "bundle/config.json",
            "bundle/weights/part-0.bin",
            "bundle/weights/part-1.bin",
        ]
        assert archive.read("bundle/weights/part-1.bin") == WEIGHTS[1000:5000]


def test_registering_from_a_run_copies_nothing(workspace, stored):
    """The version's files are the run's stored files, referenced: no second copy in storage."""
    run_files = {f.storage_name for f in stored.files.all()}
    version_files = set(ModelFile.objects.values_list("storage_name", flat=True))
    assert version_files <= run_files
    from django.conf import settings

    stored_names = {
        str(path.relative_to(settings.STORAGES["default"]["OPTIONS"]["location"]))
        for path in (settings.DATA_DIR / "files").rglob("*")
        if path.is_file()
    }
    # Other tests of the session may have stored model files: none may hold this run's content.
    shas = {f.sha256 for f in stored.files.all()}
    models = [name for name in stored_names if name.startswith("models/")]
    assert not [name for name in models if any(sha in name for sha in shas)]


def test_a_slow_reader_does_not_pile_the_file_up_in_server_memory(
    live_url, live_server_process, owner_token, workspace, owner, tmp_path
):
    """Daphne alone would buffer the whole body for a client that reads slowly."""
    from registry import services
    from runs.services import run_file_store
    from tests.registry.builders import access_of
    from tests.runs.builders import make_run

    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        for _ in range(160):
            handle.write(os.urandom(1 << 20))
    run = make_run(workspace, status="Completed")
    run_file_store(run=run, path="outputs/big.bin", local_path=big)
    services.version_register_from_run(
        access=access_of(workspace, owner),
        user=owner,
        run=run,
        model_name="big",
        model_path="outputs/big.bin",
    )
    pid = live_server_process.process.pid

    def rss_mb() -> float:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

    before = rss_mb()
    response = requests.get(
        f"{live_url}/api/v1/workspaces/birds/models/big/versions/1/file",
        params={"path": "big.bin"},
        headers={"Authorization": f"Bearer {owner_token}"},
        stream=True,
        timeout=60,
    )
    digest, peak = hashlib.sha256(), before
    for chunk in response.iter_content(chunk_size=1 << 20):
        digest.update(chunk)
        peak = max(peak, rss_mb())
        time.sleep(0.005)
    assert digest.hexdigest() == hashlib.sha256(big.read_bytes()).hexdigest()
    assert peak - before < 64, f"the server grew by {peak - before:.0f} MB for a 160 MB download"


def test_a_large_partial_download_resumes_from_any_byte_and_is_byte_identical(sdk_ws, workspace, owner, tmp_path):
    """A file of more receive buffers than the SDK keeps (each filled again once hashed and
    written), resumed from a byte that is not on a page boundary (the SDK writes whole pages past
    the page cache, the rest through it)."""
    from trainhub.sdk import _downloads

    large = os.urandom((_downloads.BUFFERS + 2) * _downloads.BUFFER_BYTES + 12345)
    register(
        workspace,
        owner,
        run_with_outputs(workspace, {"outputs/large.pt": large}),
        name="large",
        path="outputs/large.pt",
    )
    (tmp_path / "large.pt.part").write_bytes(large[:1_000_003])

    Model(sdk_ws, name="large").download(target_dir=str(tmp_path))

    assert (tmp_path / "large.pt").read_bytes() == large
    assert not list(tmp_path.glob("*.part"))
