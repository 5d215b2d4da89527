"""`HyperDriveRun`: a sweep's parent run, seen from outside: its children, the best of them, cancel."""

from __future__ import annotations

import sys
import time
from typing import Any

from trainhub.sdk.exceptions import RunFailedError
from trainhub.sdk.run import FINAL_STATUSES, Run

# The cloud SDK defines PrimaryMetricGoal beside HyperDriveRun; notebooks import it from here too.
from trainhub.sdk.train.hyperdrive.runconfig import PrimaryMetricGoal

__all__ = ["HyperDriveRun", "PrimaryMetricGoal"]


class HyperDriveRun(Run):
    def _sweep(self) -> dict[str, Any]:
        return self._ws._store.get_sweep(self.id)

    def _child(self, child: dict[str, Any]) -> Run:
        return Run(self.experiment, child["run_id"])

    @property
    def hyperparameter_sampling(self) -> dict[str, Any]:
        return self._sweep()["sampling"]

    def get_children(
        self, recursive: bool = False, tags: Any = None, properties: Any = None, **_ignored: Any
    ) -> list[Run]:
        """The children in the order the sweep made them."""
        return [self._child(child) for child in self._sweep()["children"]]

    def get_children_sorted_by_primary_metric(
        self, top: int = 0, reverse: bool = False, discard_no_metric: bool = False
    ) -> list[dict[str, Any]]:
        """Children best first by their best logged primary metric (worst first with `reverse`);
        those without the metric come last, or not at all with `discard_no_metric`."""
        sweep = self._sweep()
        ranked = [dict(child) for child in sweep["children"] if child["best_primary_metric"] is not None]
        ranked.sort(key=lambda child: child["best_primary_metric"], reverse=sweep["primary_metric_goal"] == "MAXIMIZE")
        if reverse:
            ranked.reverse()
        if not discard_no_metric:
            ranked += [dict(child) for child in sweep["children"] if child["best_primary_metric"] is None]
        entries = [
            {
                "run_id": child["run_id"],
                "hyperparameters": child["parameters"],
                "best_primary_metric": child["best_primary_metric"],
                "status": child["status"],
            }
            for child in ranked
        ]
        return entries[:top] if top else entries

    def get_best_run_by_primary_metric(
        self, include_failed: bool = True, include_canceled: bool = True, include_resume_from_runs: bool = True
    ) -> Run | None:
        """The child with the best logged primary metric (None while no child logged it)."""
        for entry in self.get_children_sorted_by_primary_metric(discard_no_metric=True):
            if entry["status"] == "Failed" and not include_failed:
                continue
            if entry["status"] == "Canceled" and not include_canceled:
                continue
            return Run(self.experiment, entry["run_id"])
        return None

    def get_metrics(
        self, name: str | None = None, rank: int | None = None, *, recursive: bool = False
    ) -> dict[str, Any]:
        """Each child's metrics, by child run id (`recursive` is accepted as the cloud SDK's is:
        a sweep's metrics are always its children's)."""
        return {child.id: child.get_metrics(name=name, rank=rank) for child in self.get_children()}

    def cancel(self) -> None:
        """Stops the sweep: no child is started any more, and every running child is canceled."""
        self._ws._store.cancel_sweep(self.id)

    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
        poll_seconds: float = 0.5,
    ) -> dict[str, Any]:
        """Waits for the sweep to end; with `show_output`, prints each child's start, its end and its
        primary metric as they happen."""
        started: set[str] = set()
        ended: set[str] = set()
        while True:
            sweep = self._sweep()
            if show_output:
                _print_changes(sweep, started, ended)
            if sweep["run"]["status"] in FINAL_STATUSES and all(
                c["status"] in FINAL_STATUSES for c in sweep["children"]
            ):
                break
            time.sleep(poll_seconds)
        details = self.get_details()
        if show_output:
            best = sweep["best_run_id"]
            print("\nExecution Summary\n=================")
            print(f"RunId: {self.id}\nStatus: {details['status']}")
            if sweep["end_reason"]:
                print(f"Reason: {sweep['end_reason']}")
            print(f"Best run: {best or '(no child logged ' + sweep['primary_metric_name'] + ')'}")
            print(f"Web View: {self.get_portal_url()}")
            sys.stdout.flush()
        if details["status"] == "Failed" and raise_on_error:
            raise RunFailedError(f"Sweep {self.id} failed: {details['status_reason']}")
        return details

    def __repr__(self) -> str:
        return f"HyperDriveRun(experiment={getattr(self.experiment, 'name', None)!r}, id={self.id!r})"


def _print_changes(sweep: dict[str, Any], started: set[str], ended: set[str]) -> None:
    metric = sweep["primary_metric_name"]
    for child in sweep["children"]:
        parameters = " ".join(f"{name}={value}" for name, value in child["parameters"].items())
        if child["run_id"] not in started and (child["started_at"] or child["status"] in FINAL_STATUSES):
            started.add(child["run_id"])
            print(f"Child {child['index']} ({child['run_id']}) started: {parameters}")
        if child["run_id"] not in ended and child["status"] in FINAL_STATUSES:
            ended.add(child["run_id"])
            value = child["best_primary_metric"]
            shown = "not logged" if value is None else f"{value:.6g}"
            reason = f" ({child['status_reason']})" if child["status"] != "Completed" and child["status_reason"] else ""
            print(f"Child {child['index']} ({child['run_id']}) ended {child['status']}{reason}: {metric} {shown}")
    sys.stdout.flush()
