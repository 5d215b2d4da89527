"""Nodes unpack snapshots with a safe extractor: anything but files and folders inside is refused."""

from __future__ import annotations

import io
import tarfile

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
        (file_member("../escape.py"), "climbs out"),
        (file_member("a/../../escape.py"), "climbs out"),
        (file_member("/etc/evil"), "absolute"),
        (file_member("C:/evil"), "absolute"),
        (file_member("..\\evil"), "bad characters"),
        (special("link", tarfile.SYMTYPE, "/etc/passwd"), "symlink"),
        (special("hard", tarfile.LNKTYPE, "/etc/passwd"), "hardlink"),
        (special("dev", tarfile.CHRTYPE), "device"),
        (special("fifo", tarfile.FIFOTYPE), "device or FIFO"),
        (file_member("a" * 10_000), "too long"),
    ],
)
def test_it_refuses_hostile_members(tmp_path, member, message):
    target = tmp_path / "work"
    target.mkdir()
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_snapshot(archive_with(file_member("ok.py"), member), target, max_bytes=100_000)
    assert not (tmp_path / "escape.py").exists()


def test_it_refuses_an_archive_that_expands_past_the_limit(tmp_path):
    bomb = file_member("zeros.bin", b"\0" * 200_000)
    with pytest.raises(UnsafeArchiveError, match="expands to more than"):
        extract_snapshot(archive_with(bomb), tmp_path, max_bytes=100_000)
    assert not (tmp_path / "zeros.bin").exists()


def test_it_refuses_a_truncated_archive(tmp_path):
    data = archive_with(file_member("a.py", b"y" * 50_000)).getvalue()
    with pytest.raises(UnsafeArchiveError, match="damaged or truncated"):
        extract_snapshot(io.BytesIO(data[: len(data) // 2]), tmp_path, max_bytes=1_000_000)
