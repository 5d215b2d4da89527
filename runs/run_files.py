"""A run's files at its end on a node: outputs/ and logs/ of its working folder, and the node's
own logs of it, copied into the run's history (regular files only: symlinks are never followed)."""

from __future__ import annotations

from pathlib import Path

from runs import services
from runs.archives import walk_regular_files
from runs.models import Run

NOT_COPIED_LINKS = "Not copied (symlinks and special files are never copied): {names}"
NOT_COPIED_FOREIGN = "Not copied (files the run's user does not own are never copied): {names}"


def copy_run_files(run: Run, *, workdir: Path, private_logs: Path, owner: int | None, log_stream: str) -> None:
    """`owner`: the uid of the run's box where the node is root (else None). A box's files are its
    uid's: any other is a hard link to a file the run could not read itself, made where the kernel
    allows it (fs.protected_hardlinks=0). The node never copies one. What is left out is said in
    `log_stream`."""
    skipped, foreign = [], []
    for folder in ("outputs", "logs"):
        for relative, absolute, is_link in walk_regular_files(workdir / folder):
            name = f"{folder}/{relative}"
            if is_link or not absolute.is_file():
                skipped.append(name)
                continue
            if owner is not None and absolute.lstat().st_uid != owner:
                foreign.append(name)
                continue
            services.run_file_store(run=run, path=name, local_path=absolute)
    for relative, absolute, is_link in walk_regular_files(private_logs):
        if not is_link:
            services.run_file_store(run=run, path=f"logs/{relative}", local_path=absolute)
    if skipped:
        services.log_append(run.pk, log_stream, [NOT_COPIED_LINKS.format(names=", ".join(skipped[:20]))])
    if foreign:
        services.log_append(run.pk, log_stream, [NOT_COPIED_FOREIGN.format(names=", ".join(foreign[:20]))])
