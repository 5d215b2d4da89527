"""Hostile snapshots: a node unpacks only regular files and folders inside its working folder.

Each case names the attack; nothing may be written outside the target, whatever the member.
"""

from __future__ import annotations

import io
import stat
import tarfile
import warnings
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


# ---------------------------------------------------------------- zip snapshots


def zip_with(*members: tuple[zipfile.ZipInfo, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns as it writes a duplicate name: one case is that attack
        for info, data in members:
            archive.writestr(info, data)
    buffer.seek(0)
    return buffer


def zip_member(name: str, data: bytes = b"x", mode: int = stat.S_IFREG | 0o644) -> tuple[zipfile.ZipInfo, bytes]:
    """A member as a zip made on Unix records it: the file type and permissions in the external attributes."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, data


def zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    """Info-ZIP's `zip --symlinks` stores a link as a member whose data is the target's path."""
    return zip_member(name, target.encode(), stat.S_IFLNK | 0o777)


def assert_nothing_unpacked(tmp_path, target) -> None:
    assert not (tmp_path / "escape.py").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert list(target.iterdir()) == [], "nothing is unpacked from a refused archive"


@pytest.fixture
def target(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def test_it_extracts_a_zip_snapshot(target):
    """A zip made by another tool (folders as members, files in them) unpacks like a .tar.gz."""
    archive = zip_with(
        zip_member("pkg/", b"", stat.S_IFDIR | 0o755),
        zip_member("pkg/mod.py", b"X = 1"),
        zip_member("train.py", b"print(1)"),
    )
    assert extract_snapshot(archive, target, max_bytes=1000) == 2
    assert (target / "train.py").read_bytes() == b"print(1)"
    assert (target / "pkg" / "mod.py").read_bytes() == b"X = 1"


@pytest.mark.parametrize(
    "member, message",
    [
        pytest.param(zip_member("../escape.py"), "climbs out", id="dot-dot"),
        pytest.param(zip_member("a/../../escape.py"), "climbs out", id="dot-dot-inside"),
        pytest.param(zip_member("/etc/evil"), "absolute", id="absolute"),
        pytest.param(zip_member("C:/evil"), "absolute", id="drive-letter"),
        pytest.param(zip_member("c:evil"), "absolute", id="drive-relative"),
        pytest.param(zip_member("..\\escape.py"), "bad characters", id="backslash-dot-dot"),
        pytest.param(zip_member("C:\\evil"), "bad characters", id="drive-backslash"),
        pytest.param(zip_symlink("link", "/etc/passwd"), "symlink", id="symlink"),
        pytest.param(zip_member("dev", b"", stat.S_IFCHR | 0o644), "device", id="char-device"),
        pytest.param(zip_member("fifo", b"", stat.S_IFIFO | 0o644), "device or FIFO", id="fifo"),
        pytest.param(zip_member("ok.py", b"again"), "appears twice", id="duplicate-member"),
        pytest.param(zip_member("a" * 10_000), "too long", id="name-10000"),
    ],
)
def test_it_refuses_hostile_zip_members(tmp_path, target, member, message):
    """A zip member that climbs out (`../`, `..\\`), is absolute or on a drive, is a symlink or a
    device by its external attributes, repeats a name, or has a 10,000-character name."""
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_snapshot(zip_with(zip_member("ok.py"), member), target, max_bytes=100_000)
    assert_nothing_unpacked(tmp_path, target)


def test_a_file_written_through_a_zip_symlink_never_lands(tmp_path, target):
    """A symlink member `d -> ..`, then a file `d/escape.py`: the file would land beside the working folder."""
    archive = zip_with(zip_symlink("d", ".."), zip_member("d/escape.py"))
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        extract_snapshot(archive, target, max_bytes=100_000)
    assert_nothing_unpacked(tmp_path, target)


def test_an_encrypted_zip_member_is_refused(tmp_path, target):
    """A member flagged as encrypted: it cannot be read, so the archive is refused up front."""
    data = bytearray(zip_with(zip_member("secret.py")).getvalue())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    with pytest.raises(UnsafeArchiveError, match="encrypted"):
        extract_snapshot(io.BytesIO(bytes(data)), target, max_bytes=100_000)
    assert_nothing_unpacked(tmp_path, target)


def test_it_refuses_a_zip_that_expands_past_the_limit(tmp_path, target):
    """A zip bomb: 200 KB of zeros deflate to a few hundred bytes; the limit is on what it expands to."""
    archive = zip_with(zip_member("zeros.bin", b"\0" * 200_000))
    assert len(archive.getvalue()) < 1_000
    with pytest.raises(UnsafeArchiveError, match="expands to more than"):
        extract_snapshot(archive, target, max_bytes=100_000)
    assert_nothing_unpacked(tmp_path, target)


def test_a_zip_member_that_lies_about_its_size_is_refused(tmp_path, target):
    """A zip bomb that declares 1,000 bytes for a member expanding to 200,000 (both size fields
    patched): the declared sizes pass the limit, what the member holds does not land."""
    data = bytearray(zip_with(zip_member("zeros.bin", b"\0" * 200_000)).getvalue())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22 : local + 26] = (1_000).to_bytes(4, "little")
    data[central + 24 : central + 28] = (1_000).to_bytes(4, "little")
    with pytest.raises(UnsafeArchiveError, match="damaged or truncated"):
        extract_snapshot(io.BytesIO(bytes(data)), target, max_bytes=100_000)
    assert_nothing_unpacked(tmp_path, target)


def test_a_zip_of_too_many_members_is_refused_before_it_is_read(tmp_path, target):
    """Millions of empty members: refused from the count the end record declares, before the
    central directory is read into memory."""
    archive = zip_with(*(zip_member(f"f{i}", b"") for i in range(30)))
    with pytest.raises(UnsafeArchiveError, match="more than 20 files and folders"):
        extract_snapshot(archive, target, max_bytes=100_000, max_files=20)
    assert_nothing_unpacked(tmp_path, target)


def test_it_refuses_a_truncated_zip(tmp_path, target):
    """Half of a zip (it still starts like one): refused as damaged, not half unpacked."""
    data = zip_with(zip_member("a.py", bytes(range(256)) * 200)).getvalue()
    with pytest.raises(UnsafeArchiveError, match="damaged or truncated"):
        extract_snapshot(io.BytesIO(data[: len(data) // 2]), target, max_bytes=1_000_000)
    assert_nothing_unpacked(tmp_path, target)
