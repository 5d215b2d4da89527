"""The Channels group of a run's live metrics (sent through `runs.broadcast.broadcast`)."""

from __future__ import annotations


def metrics_group(run_pk: int) -> str:
    return f"run-{run_pk}.metrics"
