"""A run's parameters as people read them, from its arguments: `--lr 0.01`, `--lr=0.01`, and a
flag alone (`--shuffle`, read "true"), and what its runs-table columns show of them and of its
tags. Pure: the migrations that fill old runs use it too."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

PARAM = "param"
TAG = "tag"
# Longer keys are not kept as table values: a column's name in the URL is at most 300 characters.
TABLE_KEY_LENGTH = 255
# What of a value that is not a number its sort reads (runs.models.RunValue.text).
TEXT_LENGTH = 100
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parameters_of(arguments: Iterable[Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    words = [str(argument) for argument in arguments]
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("-") and len(word) > 1 and not _is_number(word):
            name, equals, value = word.lstrip("-").partition("=")
            if not equals:
                following = words[index + 1] if index + 1 < len(words) else None
                if following is not None and (not following.startswith("-") or _is_number(following)):
                    value = following
                    index += 1
                else:
                    value = "true"
            if name:
                found[name[:200]] = value[:1000]
        index += 1
    return found


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def number_in(text: str) -> float | None:
    """The number a value writes (`0.01`, `-3`, `1e-4`), else None (`auto`, `nan`, `1e999`)."""
    if NUMBER.fullmatch(text) is None:
        return None
    number = float(text)
    return number if math.isfinite(number) else None


class TableValue(NamedTuple):
    """A RunValue row's own fields (runs.models.RunValue)."""

    kind: str
    key: str
    value: str
    number: float | None
    text: str


def table_values(parameters: Mapping[str, Any], tags: Mapping[str, Any]) -> list[TableValue]:
    """Each `params.<key>` and `tags.<key>` cell of a run's table row: a `params.` column shows the
    parameter, else the tag of that name (a tag is a parameter too)."""
    tagged = {str(key): str(value) for key, value in tags.items()}
    shown = {PARAM: {**tagged, **{str(key): str(value) for key, value in parameters.items()}}, TAG: tagged}
    return [
        TableValue(kind, key, value, number_in(value), value[:TEXT_LENGTH])
        for kind, values in shown.items()
        for key, value in values.items()
        if 0 < len(key) <= TABLE_KEY_LENGTH
    ]
