"""Checking the paths that name a model's files: relative, inside their root, nothing odd."""

from __future__ import annotations

from pathlib import PurePosixPath

from django.core.exceptions import ValidationError

PATH_EMPTY = "Give model_path: a file or folder of the run's outputs, e.g. 'outputs/model.pt'."
PATH_ABSOLUTE = "model_path {path!r} is absolute; name a path inside the run, e.g. 'outputs/model.pt'."
PATH_CLIMBS = "model_path {path!r} climbs out with '..'; name a path inside the run."
PATH_BAD_CHARACTERS = "The path {path!r} holds characters a file name cannot have."
PATH_TOO_LONG = "The path {path!r} is too long."
MAX_PATH = 1024


def clean_relative_path(raw: str, *, what: str = "model_path") -> str:
    """`raw` as a normalised relative POSIX path ('a/b'), or a ValidationError saying why not."""
    path = (raw or "").strip()
    if path in ("", ".", "./"):
        raise ValidationError(PATH_EMPTY)
    if len(path) > MAX_PATH:
        raise ValidationError(PATH_TOO_LONG.format(path=path[:80] + "…"))
    if "\x00" in path or "\\" in path or any(ord(c) < 32 for c in path):
        raise ValidationError(PATH_BAD_CHARACTERS.format(path=path))
    pure = PurePosixPath(path)
    if pure.is_absolute() or (len(path) > 1 and path[1] == ":"):
        raise ValidationError(PATH_ABSOLUTE.format(path=path).replace("model_path", what, 1))
    if ".." in pure.parts:
        raise ValidationError(PATH_CLIMBS.format(path=path).replace("model_path", what, 1))
    parts = [part for part in pure.parts if part != "."]
    if not parts:
        raise ValidationError(PATH_EMPTY)
    return "/".join(parts)
