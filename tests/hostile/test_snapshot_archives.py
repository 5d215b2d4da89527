"""Hostile snapshots: a node unpacks only regular files and folders inside its working folder.

Each case names the attack; nothing may be written outside the target, whatever the member.
"""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from runs.archives import UnsafeArchiveError, extract_snapshot


def archive_with(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def file_member(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def test_it_extracts_files_and_folders(tmp_path):
    count = extract_snapshot(
        archive_with(file_member("train.py", b"print(1)"), file_member("pkg/mod.py")), tmp_path, max_bytes=1000
    )
    assert count == 2
    assert (tmp_path / "train.py").read_bytes() == b"print(1)"


@pytest.mark.parametrize(
    "member, message",
    [
        pytest.param(file_member("../escape.py"), "climbs out", id="dot-dot"),
        pytest.param(file_member("a/../../escape.py"), "climbs out", id="dot-dot-inside"),
        pytest.param(file_member("/etc/evil"), "absolute", id="absolute"),
        pytest.param(file_member("C:/evil"), "absolute", id="drive-letter"),
        pytest.param(file_member("c:evil"), "absolute", id="drive-relative"),
        pytest.param(file_member("..\\escape.py"), "bad characters", id="backslash-dot-dot"),
        pytest.param(file_member("C:\\evil"), "bad characters", id="drive-backslash"),
        pytest.param(special("link", tarfile.SYMTYPE, "/etc/passwd"), "symlink", id="symlink"),
        pytest.param(special("hard", tarfile.LNKTYPE, "/etc/passwd"), "hardlink", id="hardlink-outside"),
        pytest.param(special("dev", tarfile.CHRTYPE), "device", id="char-device"),
        pytest.param(special("blk", tarfile.BLKTYPE), "device", id="block-device"),
        pytest.param(special("fifo", tarfile.FIFOTYPE), "device or FIFO", id="fifo"),
        pytest.param(file_member("a" * 10_000), "too long", id="name-10000"),
    ],
)
def test_it_refuses_hostile_members(tmp_path, member, message):
    """A member that climbs out, is absolute, is a link or a device, or has a 10,000-character name."""
    target = tmp_path / "work"
    target.mkdir()
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_snapshot(archive_with(file_member("ok.py"), member), target, max_bytes=100_000)
    assert not (tmp_path / "escape.py").exists()
    assert not (target / "ok.py").exists(), "nothing is unpacked from a refused archive"


def test_a_file_written_through_a_symlink_member_never_lands(tmp_path):
    """A symlink `d -> ..` then a file `d/escape.py`: the file would land beside the working folder."""
    target = tmp_path / "work"
    target.mkdir()
    archive = archive_with(special("d", tarfile.SYMTYPE, ".."), file_member("d/escape.py"))
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        extract_snapshot(archive, target, max_bytes=100_000)
    assert not (tmp_path / "escape.py").exists()


def test_a_hardlink_to_a_symlink_member_is_refused(tmp_path):
    """A symlink to /etc/passwd, then a hardlink to that symlink and a write through it."""
    target = tmp_path / "work"
    target.mkdir()
    archive = archive_with(
        special("s", tarfile.SYMTYPE, "/etc/passwd"), special("h", tarfile.LNKTYPE, "s"), file_member("h", b"pwned")
    )
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        extract_snapshot(archive, target, max_bytes=100_000)
    assert list(target.iterdir()) == []


def test_a_zip_with_climbing_members_is_not_a_snapshot(tmp_path):
    """A zip whose members are `../escape.py`, `/etc/evil` and `..\\escape.py`: zips are never unpacked."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("../escape.py", "/etc/evil", "..\\escape.py", "C:/evil"):
            archive.writestr(name, b"x")
    target = tmp_path / "work"
    target.mkdir()
    with pytest.raises(UnsafeArchiveError, match="damaged or truncated"):
        extract_snapshot(io.BytesIO(buffer.getvalue()), target, max_bytes=100_000)
    assert list(tmp_path.iterdir()) == [target]
    assert list(target.iterdir()) == []


def test_millions_of_empty_folders_count_against_the_limit(tmp_path):
    """Folders cost memory and inodes too: an archive of empty folders past the limit is refused."""
    folders = [special(f"d{i}", tarfile.DIRTYPE) for i in range(30)]
    with pytest.raises(UnsafeArchiveError, match="more than 20 files and folders"):
        extract_snapshot(archive_with(*folders), tmp_path, max_bytes=100_000, max_files=20)
    assert list(tmp_path.iterdir()) == []


def test_it_refuses_an_archive_that_expands_past_the_limit(tmp_path):
    """A decompression bomb: 200 KB of zeros compress to a few hundred bytes; the limit is on what it expands to."""
    bomb = file_member("zeros.bin", b"\0" * 200_000)
    with pytest.raises(UnsafeArchiveError, match="expands to more than"):
        extract_snapshot(archive_with(bomb), tmp_path, max_bytes=100_000)
    assert not (tmp_path / "zeros.bin").exists()


def test_it_refuses_a_truncated_archive(tmp_path):
    """Half of an archive: refused as damaged, not half unpacked."""
    data = archive_with(file_member("a.py", b"y" * 50_000)).getvalue()
    with pytest.raises(UnsafeArchiveError, match="damaged or truncated"):
        extract_snapshot(io.BytesIO(data[: len(data) // 2]), tmp_path, max_bytes=1_000_000)
