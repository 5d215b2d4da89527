"""A named point where one part of TrainHub tells the parts built on it that something happened,
without importing them: they subscribe once at start-up (their AppConfig.ready), so imports flow
one way, from the subscriber to what it listens to. The points themselves are listed in
runs/events.py and metrics/events.py."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class Hook(Generic[P, R]):
    """Subscribers called in the order they subscribed. With `isolate`, one that raises is logged
    and the next still runs (for notices whose sender's own work is done whatever they do);
    without, the exception reaches the sender."""

    def __init__(self, name: str, *, isolate: bool) -> None:
        self.name = name
        self.isolate = isolate
        self._subscribers: list[Callable[P, R]] = []

    def subscribe(self, subscriber: Callable[P, R]) -> None:
        if subscriber not in self._subscribers:
            self._subscribers.append(subscriber)

    @property
    def subscribers(self) -> tuple[Callable[P, R], ...]:
        return tuple(self._subscribers)

    def notify(self, *args: P.args, **kwargs: P.kwargs) -> list[R]:
        """Every subscriber's answer (those that raised left out, with `isolate`)."""
        answers: list[R] = []
        for subscriber in self._subscribers:
            if not self.isolate:
                answers.append(subscriber(*args, **kwargs))
                continue
            try:
                answers.append(subscriber(*args, **kwargs))
            except Exception:
                logger.exception("%s: subscriber %s failed", self.name, getattr(subscriber, "__qualname__", subscriber))
        return answers
