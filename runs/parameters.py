"""A run's parameters as people read them, from its arguments: `--lr 0.01`, `--lr=0.01`, and a
flag alone (`--shuffle`, read "true"). Pure: the migration that fills old runs uses it too."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


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
