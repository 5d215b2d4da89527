"""Prints what each data argument (`--label PATH`) holds, as a training script would read it:
every file under the path with a digest of its content, and whether any of it is writable."""

import hashlib
import os
import stat
import sys


def files_under(path):
    if os.path.isfile(path):
        return {os.path.basename(path): path}
    return {
        os.path.relpath(os.path.join(folder, name), path): os.path.join(folder, name)
        for folder, _, names in os.walk(path)
        for name in names
    }


arguments = sys.argv[1:]
rank = os.environ.get("RANK", "0")
for label, path in zip(arguments[::2], arguments[1::2], strict=True):
    files = files_under(path)
    listing = ",".join(
        f"{name}:{hashlib.sha256(open(full, 'rb').read()).hexdigest()[:8]}" for name, full in sorted(files.items())
    )
    writable = any(os.stat(full).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) for full in files.values())
    print(f"rank {rank} {label} files={listing} writable={writable} path={path}", flush=True)
