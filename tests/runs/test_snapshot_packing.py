"""The client packs a source directory: ignore files, limits with a useful message, stable hashes."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from trainhub.sdk._snapshot import pack_source_directory
from trainhub.sdk.exceptions import SnapshotTooLargeError


@pytest.fixture(autouse=True)
def temporary_folder(tmp_path_factory, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("packs")))


def names(packed) -> list[str]:
    with tarfile.open(packed.path, "r:gz") as archive:
        return sorted(archive.getnames())


@pytest.fixture
def project(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"x" * 1000)
    (tmp_path / "notes.log").write_text("log\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref\n")
    return tmp_path


def test_it_honours_gitignore(project):
    (project / ".gitignore").write_text("data/\n*.log\n")
    assert names(pack_source_directory(project)) == [".gitignore", "train.py"]


def test_amlignore_replaces_gitignore(project):
    (project / ".gitignore").write_text("train.py\n")
    (project / ".amlignore").write_text("data/\n")
    assert names(pack_source_directory(project)) == [".amlignore", ".gitignore", "notes.log", "train.py"]


def test_trainhubignore_wins(project):
    (project / ".amlignore").write_text("train.py\n")
    (project / ".trainhubignore").write_text("*.log\ndata/big.bin\n")
    assert names(pack_source_directory(project)) == [".amlignore", ".trainhubignore", "train.py"]


def test_the_git_folder_is_never_packed(project):
    assert ".git/HEAD" not in names(pack_source_directory(project))


def test_the_same_content_packs_to_the_same_hash(project):
    first = pack_source_directory(project)
    os.utime(project / "train.py", (1, 1))
    second = pack_source_directory(project)
    assert first.sha256 == second.sha256
    (project / "train.py").write_text("print('changed')\n")
    assert pack_source_directory(project).sha256 != first.sha256


def test_it_refuses_past_the_size_limit_naming_the_largest_files(project):
    with pytest.raises(SnapshotTooLargeError) as error:
        pack_source_directory(project, max_bytes=500)
    assert "data/big.bin (1000 B)" in str(error.value)
    assert ".trainhubignore" in str(error.value)


def test_it_refuses_past_the_file_count_limit(project):
    with pytest.raises(SnapshotTooLargeError, match="3 files"):
        pack_source_directory(project, max_files=2)


def test_symlinks_are_left_out(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text("secret")
    (project / "link.txt").symlink_to(outside)
    packed = pack_source_directory(project)
    assert "link.txt" not in names(packed)
    assert packed.skipped_links == ["link.txt"]
    with tarfile.open(packed.path, "r:gz") as archive:
        assert all(m.isfile() for m in archive.getmembers())
        assert b"secret" not in b"".join(archive.extractfile(m).read() for m in archive.getmembers())


def test_a_missing_folder_is_a_clear_error(tmp_path):
    from trainhub.sdk.exceptions import UserErrorException

    with pytest.raises(UserErrorException, match="is not a folder"):
        pack_source_directory(tmp_path / "nope")


def test_a_config_json_holding_a_token_stays_on_the_members_machine(project, capsys):
    """The workspace page's config.json may carry an API token; every member of the workspace (and
    the run's own code) reads a snapshot, so it is left out, and the member is told."""
    (project / "config.json").write_text('{"server_url": "http://x", "workspace_name": "w", "token": "thr_secret"}')
    (project / ".trainhub").mkdir()
    (project / ".trainhub" / "config.json").write_text('{"workspace_name": "w", "token": "thr_other"}')
    (project / "settings").mkdir()
    (project / "settings" / "config.json").write_text('{"lr": 0.1}')
    packed = pack_source_directory(project)
    packed.say_left_out()
    assert "config.json" not in names(packed)
    assert ".trainhub/config.json" not in names(packed)
    assert "settings/config.json" in names(packed)
    assert packed.skipped_tokens == [".trainhub/config.json", "config.json"]
    with tarfile.open(packed.path, "r:gz") as archive:
        assert b"thr_" not in b"".join(archive.extractfile(m).read() for m in archive.getmembers() if m.isfile())
    said = capsys.readouterr().err
    assert "Left out of the snapshot: .trainhub/config.json (it holds an API token), config.json (it holds" in said


def test_a_small_snapshot_is_written_to_a_file_only_when_one_is_needed(project):
    """A warm submit (the server has the snapshot) writes and removes no file; an upload or a
    local run gets one, with the same bytes."""
    import hashlib
    import tempfile

    packed = pack_source_directory(project)
    assert list(Path(tempfile.gettempdir()).iterdir()) == []
    path = packed.path
    assert path.parent == Path(tempfile.gettempdir())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == packed.sha256
    assert len(path.read_bytes()) == packed.size
    packed.discard()
    assert not path.exists()


def test_a_large_snapshot_is_packed_into_a_file(project, monkeypatch):
    import hashlib
    import tempfile

    from trainhub.sdk import _snapshot

    in_memory = pack_source_directory(project)
    monkeypatch.setattr(_snapshot, "IN_MEMORY_BYTES", 100)
    packed = pack_source_directory(project)
    written = list(Path(tempfile.gettempdir()).iterdir())
    assert written == [packed.path]
    assert hashlib.sha256(packed.path.read_bytes()).hexdigest() == packed.sha256 == in_memory.sha256
    packed.discard()
    assert list(Path(tempfile.gettempdir()).iterdir()) == []
