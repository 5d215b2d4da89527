"""Where the SDK finds config.json and a token, as the guide's SDK does."""

from __future__ import annotations

import configparser
import json
import os
from pathlib import Path
from typing import Any

from trainhub.sdk.exceptions import ConfigNotFoundError

CONFIG_NAMES = ("config.json", os.path.join(".trainhub", "config.json"))


def find_config(path: str | os.PathLike[str] | None = None) -> Path:
    """`path` may be a file or a folder; without it, the current folder and its parents."""
    if path is not None:
        given = Path(path).expanduser()
        if given.is_file():
            return given.resolve()
        if given.is_dir():
            for name in CONFIG_NAMES:
                if (given / name).is_file():
                    return (given / name).resolve()
        raise ConfigNotFoundError(f"No TrainHub config.json at {given}.")
    searched = []
    for folder in [Path.cwd(), *Path.cwd().parents]:
        for name in CONFIG_NAMES:
            candidate = folder / name
            searched.append(str(candidate))
            if candidate.is_file():
                return candidate.resolve()
    raise ConfigNotFoundError(
        "No config.json found in the current folder or its parents. Download it from your "
        "workspace's page in TrainHub and put it next to your script."
    )


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigNotFoundError(f"{path} is not a readable JSON file: {error}") from None
    missing = [key for key in ("server_url", "workspace_name") if not config.get(key)]
    if missing:
        raise ConfigNotFoundError(f"{path} lacks {', '.join(missing)}.")
    return config


def credentials_path() -> Path:
    return Path(os.environ.get("TRAINHUB_CREDENTIALS", "~/.trainhub/credentials")).expanduser()


def find_token(server_url: str) -> str | None:
    """TRAINHUB_TOKEN, else ~/.trainhub/credentials ([server URL] section, then [default])."""
    token = os.environ.get("TRAINHUB_TOKEN")
    if token:
        return token
    path = credentials_path()
    if not path.is_file():
        return None
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error:
        return None
    for section in (server_url.rstrip("/"), "default"):
        if parser.has_option(section, "token"):
            return parser.get(section, "token")
    return None


def save_token(server_url: str, token: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    parser = configparser.ConfigParser()
    if path.is_file():
        parser.read(path)
    section = server_url.rstrip("/")
    if not parser.has_section(section):
        parser.add_section(section)
    parser.set(section, "token", token)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        parser.write(handle)
    return path
