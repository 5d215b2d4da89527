"""The run a training script is inside of (from the variables its node set), or an offline one.

Standard library only.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from typing import Any

from trainhub.sdk._run_metrics import (
    NOT_A_LIST,
    NOT_FINITE_WARNING,
    as_cell,
    as_number,
    as_step,
    as_tag_value,
    check_name,
    run_rank,
    table_view,
)
from trainhub.sdk._store import RestStore
from trainhub.sdk._transport import Transport


class _ExperimentRef:
    def __init__(self, workspace: Any, name: str):
        self.workspace = workspace
        self.name = name


class _RunWorkspace:
    """Just enough of a Workspace for a run to talk to its server with its own token."""

    def __init__(self, name: str, url: str, token: str):
        self.name = name
        self.url = url.rstrip("/")
        self._token = token
        self._http = Transport(self.url, token)
        self._store = RestStore(self._http, name)


class OfflineRun:
    """What `Run.get_context()` returns outside TrainHub: values are printed and kept here,
    so a script written for TrainHub runs anywhere and `get_metrics()` still answers."""

    id = "OfflineRun"

    def __init__(self) -> None:
        self._series: dict[str, list[tuple[int, float]]] = {}
        self._tables: dict[str, list[dict[str, Any]]] = {}
        self._tags: dict[str, str] = {}
        self._non_finite: set[str] = set()

    def log(self, name: str, value: Any, step: int | None = None, description: str = "") -> None:
        check_name(name)
        if isinstance(value, str):
            self._tables.setdefault(name, []).append({name: as_cell(name, name, value)})
            print(f"[offline run] {name} = {value!r}")
            return
        value = as_number(name, value)
        if not math.isfinite(value):
            if name not in self._non_finite:
                self._non_finite.add(name)
                print(NOT_FINITE_WARNING.format(name=name, value=value), file=sys.stderr)
            return
        points = self._series.setdefault(name, [])
        if step is None:
            step = points[-1][0] + 1 if points else 0
        else:
            step = as_step(name, step)
        points.append((step, value))
        print(f"[offline run] {name} = {value!r} (step {step})")

    def log_list(self, name: str, value: Any, description: str = "") -> None:
        if isinstance(value, (str, bytes)):
            raise TypeError(NOT_A_LIST.format(name=name, kind=type(value).__name__))
        for item in value:
            self.log(name, item, description=description)

    def log_row(self, name: str, description: str = "", **kwargs: Any) -> None:
        check_name(name)
        cells = {check_name(key): as_cell(name, key, value) for key, value in kwargs.items()}
        self._tables.setdefault(name, []).append(cells)
        print(f"[offline run] {name} row {cells}")

    def tag(self, key: str, value: Any = None) -> None:
        self._tags[key] = as_tag_value(key, value)
        print(f"[offline run] tag {key} = {self._tags[key]!r}")

    def set_tags(self, tags: dict[str, Any]) -> None:
        if not isinstance(tags, dict):
            raise TypeError(f"run.set_tags() takes a dict of tags, not {type(tags).__name__}.")
        for key, value in tags.items():
            self.tag(key, value)

    def get_tags(self) -> dict[str, str]:
        return dict(self._tags)

    def flush(self) -> None:
        """Nothing to send offline."""

    def get_metrics(self, name: str | None = None, rank: int | None = None) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for metric, points in self._series.items():
            values = [value for _, value in points]
            found[metric] = values[0] if len(values) == 1 else values
        for table, rows in self._tables.items():
            found[table] = table_view(table, rows)
        if name is not None:
            return {name: found[name]} if name in found else {}
        return found

    def __repr__(self) -> str:
        return "OfflineRun()"


_current: Any = None
_current_lock = threading.Lock()


def current_run(run_class: type, allow_offline: bool = True) -> Any:
    """The same object on every call, so that all of a script's metrics share one buffer: a
    `run_class` (Run.get_context passes its class) inside a run, an OfflineRun outside."""
    global _current
    run_id = os.environ.get("TRAINHUB_RUN_ID")
    if not run_id and not allow_offline:
        raise RuntimeError("Not inside a TrainHub run (TRAINHUB_RUN_ID is not set).")
    with _current_lock:
        if _current is not None and _current.id == (run_id or OfflineRun.id):
            return _current
        if not run_id:
            _current = OfflineRun()
            return _current
        url, token = os.environ["TRAINHUB_SERVER_URL"], os.environ["TRAINHUB_RUN_TOKEN"]
        workspace = _RunWorkspace(os.environ["TRAINHUB_WORKSPACE"], url, token)
        run = run_class(_ExperimentRef(workspace, os.environ.get("TRAINHUB_EXPERIMENT", "")), run_id)
        run._metrics_rank = run_rank()
        _current = run
        return run
