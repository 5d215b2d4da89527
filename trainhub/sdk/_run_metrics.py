"""`run.log`, `log_list`, `log_row`, `tag`, `set_tags`, `get_metrics`, `flush`: metrics of a run.

Standard library only. `log()` appends to an in-memory buffer (about a microsecond); a daemon
thread sends the buffer in batches every half second (or sooner when it grows), and whatever is
left is sent at exit — after an uncaught exception too — and on SIGTERM. Only SIGKILL and
`os._exit()` lose points logged in the last half second.

NaN and infinite values: TrainHub stores finite numbers only. Inside a script they are dropped
with one warning per metric on stderr instead of raising, so a diverging loss never kills a
training run; the server refuses them outright. Names are 1 to 255 characters.
"""

from __future__ import annotations

import array
import atexit
import base64
import collections
import math
import operator
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from trainhub.sdk import exceptions

MAX_NAME_LENGTH = 255
MAX_TAG_VALUE_LENGTH = 5000
MAX_CELL_TEXT_LENGTH = 1000
FLUSH_SECONDS = float(os.environ.get("TRAINHUB_METRICS_FLUSH_SECONDS", "0.5"))
BATCH_ITEMS = 20_000
SEND_ATTEMPTS_SECONDS = 60.0
EXIT_FLUSH_SECONDS = 30.0
SIGTERM_FLUSH_SECONDS = 2.5  # the node gives a stopped rank 3 s before SIGKILL

_ROW = object()
_TAG = object()

NOT_A_NUMBER = "run.log({name!r}, ...): the value must be a number (int or float) or a string, not {kind}."
NOT_A_LIST = "run.log_list({name!r}, ...) takes a list of values, not a single {kind}."
MIXED_KINDS = (
    "run.log({name!r}, ...): {name!r} already holds {has} in this run, and {given} cannot join "
    "them; log it under another name."
)
BAD_NAME = "A metric name must be a string of 1 to 255 characters, not {got}."
NOT_FINITE_WARNING = (
    "TrainHub: metric {name!r} got {value!r}, which is not finite; TrainHub keeps finite numbers "
    "only, so this and later non-finite values of {name!r} are not logged."
)


def run_rank() -> int:
    """This process's rank in a distributed run (0 when not distributed)."""
    for variable in ("TRAINHUB_RANK", "RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        value = os.environ.get(variable, "")
        if value.isdigit():
            return int(value)
    return 0


# ---------------------------------------------------------------- validation (OfflineRun too)


def check_name(name: Any) -> str:
    if type(name) is not str:
        raise TypeError(BAD_NAME.format(got=type(name).__name__))
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(BAD_NAME.format(got=f"a name of {len(name)} characters"))
    return name


def as_number(name: str, value: Any) -> float:
    """A float from anything number-like (int, bool, numpy scalar, one-element tensor)."""
    if type(value) is float:
        return value
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(NOT_A_NUMBER.format(name=name, kind=type(value).__name__))
    item = getattr(value, "item", None)
    if callable(item):
        try:
            value = item()
        except (ValueError, RuntimeError):
            raise TypeError(NOT_A_NUMBER.format(name=name, kind=f"{type(value).__name__} of many values")) from None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return math.inf
    raise TypeError(NOT_A_NUMBER.format(name=name, kind=type(value).__name__))


def as_step(name: str, step: Any) -> int:
    if type(step) is not int:
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        elif hasattr(step, "__index__") and not isinstance(step, bool):
            step = step.__index__()
        else:
            raise TypeError(
                f"run.log({name!r}, ..., step=...): the step must be an integer, not {type(step).__name__}."
            )
    if not 0 <= step < 2**63:
        raise ValueError(f"run.log({name!r}, ..., step={step}): the step must be from 0 to 2**63-1.")
    return step


def as_cell(name: str, key: str, value: Any) -> Any:
    if value is None or type(value) in (bool, int, str, float):
        pass
    elif callable(getattr(value, "item", None)):
        value = value.item()
    if type(value) is str and len(value) > MAX_CELL_TEXT_LENGTH:
        raise ValueError(f"run.log_row({name!r}): cell {key!r} is longer than {MAX_CELL_TEXT_LENGTH} characters.")
    if type(value) is float and not math.isfinite(value):
        return None
    if value is None or type(value) in (bool, int, float, str):
        return value
    raise TypeError(
        f"run.log_row({name!r}): cell {key!r} is {type(value).__name__}; cells are numbers, strings, booleans or None."
    )


def as_tag_value(key: str, value: Any) -> str:
    """Tags are text; numbers and booleans are kept as their text."""
    check_name(key)
    if value is None:
        return ""
    if type(value) in (int, float, bool):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"run.tag({key!r}, ...): a tag value is a string, not {type(value).__name__}.")
    if len(value) > MAX_TAG_VALUE_LENGTH:
        raise ValueError(f"run.tag({key!r}, ...): a tag value is at most {MAX_TAG_VALUE_LENGTH} characters.")
    return value


def table_view(name: str, rows: list[dict[str, Any]]) -> Any:
    """A table's columns; the texts `run.log(name, 'text')` kept, when its one column is its name."""
    columns: dict[str, list[Any]] = {}
    for key in {key: None for row in rows for key in row}:
        columns[key] = [row.get(key) for row in rows]
    if list(columns) == [name]:
        texts = columns[name]
        return texts[0] if len(texts) == 1 else texts
    return columns


def metrics_view(answer: dict[str, Any]) -> dict[str, Any]:
    """The server's series as `get_metrics()` gives them: a value, a list, or table columns."""
    found: dict[str, Any] = {}
    for name, series in answer["metrics"].items():
        if series["kind"] == "table":
            found[name] = table_view(name, [row["cells"] for row in series["rows"]])
        else:
            # NaN and ±inf (which MLflow's client may log) arrive as "NaN", "Infinity", "-Infinity".
            values = [float(v) if type(v) is str else v for v in series["values"]]
            found[name] = values[0] if len(values) == 1 else values
    return found


def _packed(typecode: str, items: Any) -> str:
    """Numbers as base64 of little-endian 8-byte items: far cheaper to write and read than JSON
    lists, which matters because the sending thread shares the GIL with the training loop.
    Step -1 means "the previous step + 1"."""
    packed = items if isinstance(items, array.array) else array.array(typecode, items)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


# ---------------------------------------------------------------- the buffer


class MetricsBuffer:
    """Points, rows and tags waiting to be sent, and the thread that sends them."""

    def __init__(self, store: Any, run_id: str, rank: int):
        self.store = store
        self.run_id = run_id
        self.rank = rank
        self.items: collections.deque[tuple[Any, Any, Any, float]] = collections.deque()
        self.names: set[str] = set()
        self.text_names: set[str] = set()
        self.non_finite: set[str] = set()
        self.descriptions: dict[str, str] = {}
        self.wake = threading.Event()
        self.send_lock = threading.Lock()
        self.closed = False
        self.sent = 0
        # A forked child (a DataLoader worker) inherits a copy of the buffer but not the thread:
        # it must not send the parent's points a second time when it exits or is stopped.
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._loop, name="trainhub-metrics", daemon=True)
        self.thread.start()
        atexit.register(self.close)
        self._previous_sigterm: Any = None
        self._watch_sigterm()

    # ------------------------------------------------------------ producer side

    def add_name(self, name: Any) -> None:
        self.names.add(check_name(name))

    def drop_non_finite(self, name: str, value: float) -> None:
        if name not in self.non_finite:
            self.non_finite.add(name)
            print(NOT_FINITE_WARNING.format(name=name, value=value), file=sys.stderr, flush=True)

    # ------------------------------------------------------------ sending

    def _loop(self) -> None:
        while not self.closed:
            self.wake.wait(FLUSH_SECONDS)
            self.wake.clear()
            if self.closed:
                return
            try:
                self.flush(time.monotonic() + SEND_ATTEMPTS_SECONDS)
            except Exception as error:  # the sender must outlive any one failure
                print(f"TrainHub: sending metrics failed: {error}", file=sys.stderr, flush=True)

    def flush(self, deadline: float | None = None) -> None:
        """Send everything logged so far, in order, before returning."""
        deadline = deadline if deadline is not None else time.monotonic() + SEND_ATTEMPTS_SECONDS
        remaining = deadline - time.monotonic()
        if not self.send_lock.acquire(timeout=max(0.0, remaining)):
            return
        try:
            while self.items:
                payload, count = self._take()
                self._send(payload, count, deadline)
        finally:
            self.send_lock.release()

    def _take(self) -> tuple[dict[str, Any], int]:
        """The oldest items (up to a batch) as one request body.

        Columns are built with zip and itemgetter rather than item by item: this thread shares
        the GIL with the training loop, so its Python-level work per point must stay small.
        """
        popleft = self.items.popleft
        taken = [popleft() for _ in range(min(len(self.items), BATCH_ITEMS))]
        payload: dict[str, Any] = {"rank": self.rank}
        if not taken:
            return payload, 0
        names, firsts, thirds, times = zip(*taken, strict=True)
        groups: dict[Any, list[int]] = {}
        if len(set(names)) == 1:
            groups[names[0]] = list(range(len(names)))
        else:
            for index, name in enumerate(names):
                groups.setdefault(name, []).append(index)
        tag_positions = groups.pop(_TAG, [])
        row_positions = groups.pop(_ROW, [])
        if groups:
            payload["metrics"] = [
                self._series_payload(name, positions, firsts, thirds, times) for name, positions in groups.items()
            ]
        if row_positions:
            payload["rows"] = [
                {"name": firsts[i][0], "step": thirds[i], "time": times[i], "cells": firsts[i][1]}
                for i in row_positions
            ]
        if tag_positions:
            payload["tags"] = {firsts[i]: thirds[i] for i in tag_positions}
        return payload, len(taken)

    def _series_payload(
        self, name: str, positions: list[int], values: tuple, steps: tuple, times: tuple
    ) -> dict[str, Any]:
        if len(positions) == len(values):
            chosen_values, chosen_steps, chosen_times = values, steps, times
        else:
            pick = operator.itemgetter(*positions)
            if len(positions) == 1:
                chosen_values, chosen_steps, chosen_times = (
                    (values[positions[0]],),
                    (steps[positions[0]],),
                    (times[positions[0]],),
                )
            else:
                chosen_values, chosen_steps, chosen_times = pick(values), pick(steps), pick(times)
        # A step left as None (-1 on the wire) is the previous step + 1, counted by the server so
        # that a series goes on across processes (a resumed script, several scripts of one run).
        if set(chosen_steps) == {None}:
            wire_steps: Any = array.array("q", [-1]) * len(chosen_steps)
        else:
            wire_steps = [-1 if step is None else step for step in chosen_steps]
        return {
            "name": name,
            "description": self.descriptions.get(name, ""),
            "values_f64": _packed("d", chosen_values),
            "times_f64": _packed("d", chosen_times),
            "steps_i64": _packed("q", wire_steps),
        }

    def _send(self, payload: dict[str, Any], count: int, deadline: float) -> None:
        """One batch, under one idempotency key: the transport sends it again until `deadline`
        when the server does not answer, and the server stores it once however often it came."""
        try:
            self.store.log_metrics(self.run_id, payload, retry_seconds=max(0.0, deadline - time.monotonic()))
            self.sent += count
        except (exceptions.ServerUnreachableError, exceptions.ServerError) as error:
            print(
                f"TrainHub: {count} metric values could not be sent ({type(error).__name__}: "
                f"{error}); the server did not answer in time.",
                file=sys.stderr,
                flush=True,
            )
        except exceptions.TrainHubError as error:
            print(
                f"TrainHub: {count} metric values were refused by the server ({error.status}: {error}).",
                file=sys.stderr,
                flush=True,
            )

    # ------------------------------------------------------------ the end

    def close(self, seconds: float = EXIT_FLUSH_SECONDS) -> None:
        self.closed = True
        self.wake.set()
        if os.getpid() == self.pid:
            self.flush(time.monotonic() + seconds)

    def _watch_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        try:
            self._previous_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._on_sigterm)
        except (ValueError, OSError):
            pass

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.close(SIGTERM_FLUSH_SECONDS)
        previous = self._previous_sigterm
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


# ---------------------------------------------------------------- the mixin


class RunMetricsMixin:
    """The metric methods of `Run`, with the names and signatures of the guide's API."""

    _metrics_buffer: MetricsBuffer | None = None
    _metrics_rank: int = 0
    _metrics_lock = threading.Lock()

    def _metrics(self) -> MetricsBuffer:
        with RunMetricsMixin._metrics_lock:
            if self._metrics_buffer is None:
                self._metrics_buffer = MetricsBuffer(self._ws._store, self.id, self._metrics_rank)  # type: ignore[attr-defined]
            return self._metrics_buffer

    def log(self, name: str, value: Any, step: int | None = None, description: str = "") -> None:
        """Record one value of a metric (`step` defaults to the metric's previous step + 1)."""
        buffer = self._metrics_buffer or self._metrics()
        if type(value) is not float:
            if isinstance(value, str):
                self._log_text(buffer, name, value, step, description)
                return
            value = as_number(name, value)
        try:
            known = name in buffer.names
        except TypeError:
            known = False
        if not known:
            if name in buffer.text_names:
                raise TypeError(MIXED_KINDS.format(name=name, has="text", given="a number"))
            buffer.add_name(name)
        if value - value != 0.0:  # NaN or ±inf, without a function call
            buffer.drop_non_finite(name, value)
            return
        if step is not None and type(step) is not int:
            step = as_step(name, step)
        if description:
            buffer.descriptions[name] = str(description)[:1000]
        buffer.items.append((name, value, step, time.time()))
        if len(buffer.items) >= BATCH_ITEMS:
            buffer.wake.set()

    def _log_text(self, buffer: MetricsBuffer, name: str, value: str, step: Any, description: str) -> None:
        """`run.log(name, 'text')`: kept as a one-column table named after the metric, which
        `get_metrics()` reads back as the text (or the list of texts)."""
        check_name(name)
        if name in buffer.names:
            raise TypeError(MIXED_KINDS.format(name=name, has="numbers", given="text"))
        cells = {name: as_cell(name, name, value)}
        if step is not None:
            step = as_step(name, step)
        buffer.text_names.add(name)
        if description:
            buffer.descriptions[name] = str(description)[:1000]
        buffer.items.append((_ROW, (name, cells), step, time.time()))

    def log_list(self, name: str, value: Iterable[Any], description: str = "") -> None:
        """Record a list of values of a metric, at consecutive steps."""
        if isinstance(value, (str, bytes)):
            raise TypeError(NOT_A_LIST.format(name=name, kind=type(value).__name__))
        for item in value:
            self.log(name, item, description=description)

    def log_row(self, name: str, description: str = "", **kwargs: Any) -> None:
        """Add a row to a table metric: `run.log_row('per_class', cls=3, precision=0.9)`."""
        buffer = self._metrics_buffer or self._metrics()
        check_name(name)
        cells = {check_name(key): as_cell(name, key, value) for key, value in kwargs.items()}
        if description:
            buffer.descriptions[name] = str(description)[:1000]
        buffer.items.append((_ROW, (name, cells), None, time.time()))

    def tag(self, key: str, value: Any = None) -> None:
        """Tag the run: `value` is text (numbers are kept as their text; None is an empty tag)."""
        buffer = self._metrics_buffer or self._metrics()
        buffer.items.append((_TAG, key, as_tag_value(key, value), time.time()))

    def set_tags(self, tags: dict[str, Any]) -> None:
        if not isinstance(tags, dict):
            raise TypeError(f"run.set_tags() takes a dict of tags, not {type(tags).__name__}.")
        for key, value in tags.items():
            self.tag(key, value)

    def flush(self) -> None:
        """Send every value logged so far to the server now."""
        if self._metrics_buffer is not None:
            self._metrics_buffer.flush()

    def get_metrics(self, name: str | None = None, rank: int | None = None) -> dict[str, Any]:
        """The run's metrics: {name: value} for one value, {name: [values]} for several, and for
        tables {name: {column: [values]}}. Rank 0's unless `rank` is given (in a run: its own)."""
        self.flush()
        answer = self._ws._store.get_metrics(self.id, name, self._metrics_rank if rank is None else rank)  # type: ignore[attr-defined]
        return metrics_view(answer)

    def get_tags(self) -> dict[str, str]:
        """The run's tags, including those set by this script."""
        self.flush()
        return self._ws._store.get_metrics_summary(self.id)["tags"]  # type: ignore[attr-defined]
