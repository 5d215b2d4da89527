"""The data directory's private parts: the folder 0700, its secrets and database 0600, and the
Redis credential every TrainHub process of a site reads from it.

No Django here: the Redis launcher and the test session use it before any settings exist.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

REDIS_USER = "trainhub"
REDIS_PASSWORD_FILE = "redis-password"


def private_dir(path: Path) -> Path:
    """`path` made if missing, and readable by its owner only (an older one is narrowed too)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """`path` made empty if missing, and readable by its owner only."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    path.chmod(0o600)
    return path


def private_secret(path: Path) -> str:
    """The secret kept in `path`, made once (0600). Processes starting together all read the
    first one written: it is written whole under another name and then linked into place."""
    if not path.exists():
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    path.chmod(0o600)
    return path.read_text().strip()


def redis_url_with_credentials(url: str, data_dir: Path) -> str:
    """`url` itself when it names a password (an administrator's Redis); otherwise the site's own
    credential, user `trainhub` with the password kept in the data directory, is added to it."""
    parts = urlsplit(url)
    if parts.password:
        return url
    password = private_secret(private_dir(data_dir) / REDIS_PASSWORD_FILE)
    where = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{REDIS_USER}:{quote(password, safe='')}@{where}"))


def redacted(url: str) -> str:
    """`url` fit for a log line or a terminal: its password replaced by `***`."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = f"{parts.username or ''}:***@{parts.netloc.rsplit('@', 1)[1]}"
    return urlunsplit(parts._replace(netloc=netloc))
