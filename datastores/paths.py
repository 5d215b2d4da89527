"""The paths users give a datastore: relative, inside the datastore, and glob patterns over them."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

from registry.paths import clean_relative_path

GLOB_CHARACTERS = re.compile(r"[*?]")
ANY_DEPTH, ANY_NAME = "\ue000", "\ue001"  # stand-ins while the path checks run
PATTERN_EMPTY = "Give a path pattern inside the datastore, e.g. 'fowl/**' or 'fowl/*.csv'."


def clean_path(raw: str | None, *, what: str = "path") -> str:
    """A normalised relative path inside a datastore ('' is its root); `..`, absolute paths and
    odd characters are refused with a ValidationError naming `what`."""
    if raw is None or str(raw).strip() in ("", ".", "./"):
        return ""
    return clean_relative_path(str(raw), what=what)


def static_prefix(pattern: str) -> str:
    """The folder part of a pattern before its first wildcard ('fowl/**' -> 'fowl'); the files a
    pattern matches are named relative to it. A plain file path's prefix is its folder."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if GLOB_CHARACTERS.search(part):
            break
        fixed.append(part)
    return "/".join(fixed)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob over '/'-separated paths: `**` spans folders, `*` and `?` stay in one
    name, a pattern naming a folder matches everything under it."""
    if not pattern:
        raise ValidationError(PATTERN_EMPTY)
    clean = clean_relative_path(pattern.replace("**", ANY_DEPTH).replace("*", ANY_NAME), what="pattern")
    out = []
    for char in clean:
        if char == ANY_DEPTH:
            out.append(".*")
        elif char == ANY_NAME:
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out) + "(?:/.*)?")
