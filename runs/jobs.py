"""RQ jobs of the runs app: thin callers of the execution and scheduling code."""

from __future__ import annotations

from runs.execution import execute_on_node
from runs.node_worker import current_stop_event


def execute_run_on_node(run_pk: int, node_pk: int, node_rank: int) -> None:
    execute_on_node(run_pk, node_pk, node_rank, current_stop_event())
