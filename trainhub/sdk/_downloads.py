"""Checked file downloads for the SDK: each file resumes from `<target>.part` with a Range request,
is checked against its sha256 and only then takes its name; targets never leave their folder."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from typing import Any

from trainhub.sdk import exceptions


class TargetExistsError(exceptions.UserErrorException):
    """A file of the download is already in the target folder (and exist_ok is False)."""

    def __init__(self, path: str):
        super().__init__(f"{path} already exists: pass exist_ok=True to replace it.")
        self.path = path


class ChecksumMismatchError(exceptions.TrainHubError):
    """A downloaded file does not match the sha256 it was registered with."""


def target_inside(target_dir: str, relative: str) -> str:
    """Where `relative` (a server's '/'-separated path) lands under `target_dir`; refused when it
    would land elsewhere."""
    target = os.path.normpath(os.path.join(target_dir, *relative.split("/")))
    root, absolute = os.path.abspath(target_dir), os.path.abspath(target)
    if os.path.commonpath([root, absolute]) != root or absolute == root:
        raise exceptions.UserErrorException(f"The file path {relative!r} leads outside {target_dir!r}.")
    return target


def download_checked(
    open_file: Callable[[dict[str, str]], Any],
    target: str,
    *,
    size: int,
    sha256: str,
    label: str,
    show_progress: bool = False,
) -> None:
    """Fetch one file to `target` through `open_file(headers)` (a store's streamed GET of it);
    `label` names it in the progress bar and in errors."""
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    partial = target + ".part"
    digest = hashlib.sha256()
    offset = 0
    if os.path.exists(partial) and os.path.getsize(partial) < size:
        with open(partial, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                offset += len(chunk)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    response = open_file(headers)
    if offset and response.status_code != 206:
        digest, offset = hashlib.sha256(), 0  # the server sent the whole file again
    bar = None
    if show_progress:
        from tqdm import tqdm  # only where a bar is shown: the in-run SDK has no tqdm

        bar = tqdm(total=size, initial=offset, unit="B", unit_scale=True, desc=label, leave=False, file=sys.stderr)
    try:
        with response, open(partial, "ab" if offset else "wb") as handle:
            for chunk in response.iter_content(chunk_size=4 << 20):
                digest.update(chunk)
                handle.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    announced = response.headers.get("X-Checksum-Sha256")
    if digest.hexdigest() != sha256 or (announced and announced != sha256):
        os.unlink(partial)
        raise ChecksumMismatchError(
            f"The download of {label} does not match its sha256 {sha256[:12]}…: it was damaged on the way; try again."
        )
    os.replace(partial, target)
