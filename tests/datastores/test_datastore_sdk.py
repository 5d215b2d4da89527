"""Datastores and datasets from the SDK against a live server: uploads (skipped when the same
content is there, kept unless overwrite, resumed after a cut), several datastores, dataset versions."""

from __future__ import annotations

import hashlib
import os

import pytest

from trainhub.sdk import Dataset, Datastore
from trainhub.sdk.exceptions import NotFoundError, UserErrorException

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ws(live_url, workspace, owner_token):
    from trainhub.sdk import Workspace

    return Workspace.get("birds", url=live_url, token=owner_token)


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "train" / "a.csv").write_text("x,y\n1,2\n")
    (root / "train" / "b.csv").write_text("x,y\n3,4\n")
    (root / "labels.txt").write_text("chicken\nturkey\n")
    return root


def listing(ds, prefix=""):
    return {f["path"]: f["sha256"] for f in ds.list_files(prefix)}


def test_it_uploads_a_folder_and_skips_what_is_there(ws, data_dir, capsys):
    ds = ws.get_default_datastore()
    assert ds.name == "workspaceblobstore" and ds.is_default
    ds.upload(src_dir=str(data_dir), target_path="fowl", overwrite=False, show_progress=True)
    assert "3 stored" in capsys.readouterr().out
    assert listing(ds) == {
        "fowl/labels.txt": hashlib.sha256(b"chicken\nturkey\n").hexdigest(),
        "fowl/train/a.csv": hashlib.sha256(b"x,y\n1,2\n").hexdigest(),
        "fowl/train/b.csv": hashlib.sha256(b"x,y\n3,4\n").hexdigest(),
    }

    (data_dir / "train" / "a.csv").write_text("changed\n")
    ds.upload(src_dir=str(data_dir), target_path="fowl", show_progress=True)
    assert "0 stored, 2 skipped (same content already there), 1 kept" in capsys.readouterr().out
    assert listing(ds)["fowl/train/a.csv"] == hashlib.sha256(b"x,y\n1,2\n").hexdigest()

    ds.upload(src_dir=str(data_dir), target_path="fowl", overwrite=True, show_progress=True)
    assert "1 stored, 2 skipped" in capsys.readouterr().out
    assert listing(ds)["fowl/train/a.csv"] == hashlib.sha256(b"changed\n").hexdigest()


def test_it_uploads_listed_files_and_never_a_symlink(ws, data_dir, tmp_path, capsys):
    (data_dir / "escape").symlink_to("/etc/passwd")
    (data_dir / "linked-folder").symlink_to(tmp_path, target_is_directory=True)
    ds = ws.get_default_datastore()
    ds.upload(src_dir=str(data_dir), target_path="fowl", show_progress=False)
    assert "Not uploaded (symlinks and special files never are)" in capsys.readouterr().err
    assert sorted(listing(ds)) == ["fowl/labels.txt", "fowl/train/a.csv", "fowl/train/b.csv"]

    ds.upload_files(
        [str(data_dir / "train" / "a.csv")], relative_root=str(data_dir), target_path="extra", show_progress=False
    )
    assert "extra/train/a.csv" in listing(ds, "extra")
    with pytest.raises(UserErrorException, match="not a regular file"):
        ds.upload_files([str(data_dir / "escape")], show_progress=False)

    (tmp_path / "empty.txt").write_bytes(b"")
    ds.upload_files([str(tmp_path / "empty.txt")], target_path="extra", show_progress=False)
    sizes = [(f["path"], f["size"]) for f in ds.list_files("extra")]
    assert sizes == [("extra/empty.txt", 0), ("extra/train/a.csv", 8)]


def test_a_workspace_has_several_named_datastores(ws, data_dir):
    other = Datastore.register(ws, "raw-images")
    other.upload(src_dir=str(data_dir), show_progress=False)
    assert Datastore.get(ws, "raw-images").name == "raw-images"
    assert sorted(ws.datastores) == ["raw-images", "workspaceblobstore"]
    assert "labels.txt" in listing(other)
    assert listing(ws.get_default_datastore()) == {}
    with pytest.raises(UserErrorException, match="already has a datastore named 'raw-images'"):
        Datastore.register(ws, "raw-images")
    with pytest.raises(NotFoundError, match="No datastore named 'nope'"):
        Datastore.get(ws, "nope")


def test_a_cut_off_upload_resumes(ws, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    sha = hashlib.sha256(big.read_bytes()).hexdigest()
    first = big.read_bytes()[: 1024 * 1024]
    path = ws.api(f"data-blobs/{sha}")
    size = big.stat().st_size
    answer = ws._http.request("PUT", path, data=first, headers={"Content-Range": f"bytes 0-{len(first) - 1}/{size}"})
    assert answer.json()["received"] == len(first)

    ws.get_default_datastore().upload_files([str(big)], target_path="blobs", show_progress=False)
    assert listing(ws.get_default_datastore()) == {"blobs/big.bin": sha}


def test_a_dataset_is_registered_in_numbered_versions(ws, data_dir):
    ds = ws.get_default_datastore()
    ds.upload(src_dir=str(data_dir), target_path="fowl", show_progress=False)
    first = Dataset.File.from_files(path=(ds, "fowl/**")).register(ws, "fowl", create_new_version=True)
    assert (first.name, first.version, first.details["file_count"]) == ("fowl", 1, 3)

    (data_dir / "train" / "c.csv").write_text("x,y\n5,6\n")
    ds.upload(src_dir=str(data_dir), target_path="fowl", show_progress=False)
    second = Dataset.File.from_files(path=(ds, "fowl/train/*.csv")).register(ws, "fowl", create_new_version=True)
    assert second.version == 2
    assert Dataset.get_by_name(ws, "fowl").version == 2
    assert Dataset.get_by_name(ws, "fowl", version=1).details["file_count"] == 3
    files = ws._http.get(ws.api("datasets/fowl/versions/2/files"))
    assert [f["path"] for f in files] == ["a.csv", "b.csv", "c.csv"]
    with pytest.raises(UserErrorException, match="pass create_new_version=True"):
        Dataset.File.from_files(path=(ds, "fowl/**")).register(ws, "fowl")
    with pytest.raises(UserErrorException, match="matches no file"):
        Dataset.File.from_files(path=(ds, "geese/**")).register(ws, "geese")
    with pytest.raises(NotFoundError, match="has no version 7"):
        Dataset.get_by_name(ws, "fowl", version=7)


def test_it_downloads_a_datastore_folder_and_a_dataset_version(ws, data_dir, tmp_path):
    ds = ws.get_default_datastore()
    ds.upload(src_dir=str(data_dir), target_path="fowl", show_progress=False)
    ds.upload(src_dir=str(data_dir / "train"), target_path="geese", show_progress=False)

    assert ds.download(tmp_path / "got", prefix="fowl", show_progress=False) == 3
    got = {
        str(path.relative_to(tmp_path / "got")): path.read_bytes()
        for path in (tmp_path / "got").rglob("*")
        if path.is_file()
    }
    assert got == {
        "fowl/labels.txt": b"chicken\nturkey\n",
        "fowl/train/a.csv": b"x,y\n1,2\n",
        "fowl/train/b.csv": b"x,y\n3,4\n",
    }

    # A file already there is kept unless overwrite.
    (tmp_path / "got" / "fowl" / "labels.txt").write_text("mine")
    assert ds.download(tmp_path / "got", prefix="fowl", show_progress=False) == 0
    assert (tmp_path / "got" / "fowl" / "labels.txt").read_text() == "mine"
    assert ds.download(tmp_path / "got", prefix="fowl", overwrite=True, show_progress=False) == 3
    assert (tmp_path / "got" / "fowl" / "labels.txt").read_text() == "chicken\nturkey\n"

    dataset = Dataset.File.from_files(path=(ds, "fowl/train/*.csv"))
    with pytest.raises(UserErrorException, match="Register the dataset first"):
        dataset.download(str(tmp_path / "unregistered"))
    registered = dataset.register(ws, "fowl-train")
    paths = registered.download(str(tmp_path / "set"))
    assert sorted(os.path.relpath(path, tmp_path / "set") for path in paths) == ["a.csv", "b.csv"]
    assert open(paths[0], "rb").read() in (b"x,y\n1,2\n", b"x,y\n3,4\n")
    assert sorted(registered.to_path()) == ["/a.csv", "/b.csv"]
    assert not list((tmp_path / "set").glob("*.part"))


def test_a_large_file_to_a_new_path_is_sent_unhashed_and_one_to_a_taken_path_hashed_first(ws, tmp_path, workspace):
    from django.conf import settings

    from datastores.models import DataBlob
    from trainhub import uploads

    size = settings.TRAINHUB_UPLOAD_CHUNK_BYTES + 100
    big = tmp_path / "new" / "big.bin"
    other = tmp_path / "other" / "big.bin"
    for path in (big, other):
        path.parent.mkdir()
        path.write_bytes(os.urandom(size))
    sha, other_sha = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (big, other))
    datastore = ws.get_default_datastore()

    datastore.upload_files([str(big)], target_path="large", show_progress=False)
    datastore.upload_files([str(other)], target_path="large", show_progress=False)

    assert listing(datastore) == {"large/big.bin": sha}
    assert DataBlob.objects.get(workspace=workspace, sha256=sha).size == size
    # The file for a taken path was hashed first and, kept out, never sent; nothing is left staged.
    assert not DataBlob.objects.filter(sha256=other_sha).exists()
    staged = uploads.upload_root() / str(workspace.pk)
    assert not staged.exists() or not [
        p for p in staged.rglob("*") if p.is_file() and not p.name.endswith(uploads.COMMITTED_SUFFIX)
    ]


def test_a_large_file_sent_for_a_path_another_client_took_meanwhile_is_deleted_once_stale(ws, tmp_path, workspace):
    """The SDK sends a large file to a free path (the server names it), then sets the path; when another
    client took the path in between, the content is held by nothing. Once as old as an abandoned
    upload it goes, when the next content is stored; contents a path or a queued run's input
    holds stay."""
    from datetime import timedelta

    from django.conf import settings
    from django.core.files.storage import default_storage
    from django.utils import timezone

    from datastores.models import DataBlob, RunInput
    from tests.runs.builders import make_run

    def large(name: str) -> tuple:
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(settings.TRAINHUB_UPLOAD_CHUNK_BYTES + 100))
        return path, hashlib.sha256(path.read_bytes()).hexdigest()

    mine, mine_sha = large("mine.bin")
    theirs, theirs_sha = large("theirs/mine.bin")
    queued, queued_sha = large("queued.bin")
    datastore = ws.get_default_datastore()
    ws._store.upload_data_blob_keyed(mine)  # the path was free when this client looked
    datastore.upload_files([str(theirs)], target_path="large", show_progress=False)  # another client
    assert datastore._put_files({"large/mine.bin": (mine, mine_sha)}, overwrite=False) == {"large/mine.bin": "kept"}
    ws._store.upload_data_blob_keyed(queued)
    RunInput.objects.create(
        run=make_run(workspace), name="data", mode="mount", files=[["queued.bin", queued_sha, queued.stat().st_size]]
    )
    forgotten = DataBlob.objects.get(sha256=mine_sha).storage_name
    DataBlob.objects.update(created_at=timezone.now() - timedelta(seconds=settings.TRAINHUB_UPLOAD_STALE_SECONDS + 1))

    (tmp_path / "next.csv").write_text("the next upload\n")
    datastore.upload_files([str(tmp_path / "next.csv")], target_path="small", show_progress=False)

    assert not DataBlob.objects.filter(sha256=mine_sha).exists()
    assert not default_storage.exists(forgotten)
    assert set(DataBlob.objects.values_list("sha256", flat=True)) == {
        theirs_sha,
        queued_sha,
        hashlib.sha256(b"the next upload\n").hexdigest(),
    }
    assert listing(datastore)["large/mine.bin"] == theirs_sha
