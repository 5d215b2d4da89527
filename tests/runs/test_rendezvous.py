"""How a run's ranks meet: node 0's choice of MASTER_PORT when several runs start on one host at
once, and the rendezvous store's port listening before the ranks start."""

from __future__ import annotations

import uuid

import pytest

from runs.rendezvous import reserve_master_port
from tests.runs.conftest import script_config
from tests.runs.test_distributed import stream_text
from trainhub.redis_conn import get_redis
from trainhub.sdk import Experiment
from trainhub.sdk.runconfig import PyTorchConfiguration


def test_two_runs_starting_at_once_on_one_host_get_different_ports():
    """Both ranks 0 find 6105 free (neither has bound it yet): the second must not take it too."""
    redis = get_redis()
    address = f"host-{uuid.uuid4().hex}"  # a host of this test's own: no other run holds its ports
    first = reserve_master_port(redis, address, 1)
    second = reserve_master_port(redis, address, 2)
    assert first != second


@pytest.mark.slow
def test_the_rendezvous_port_answers_before_the_ranks_start(ws, node):
    """A per-process launch's store port listens before any rank starts (the node binds it for the
    store, which imports torch while the ranks do): a rank knocking first is let in at once, and
    none waits out torch's retry backoff (refused, then hundreds of milliseconds before the next try)."""
    config = script_config(
        ws, "ddp", "knock_first.py", distributed_job_config=PyTorchConfiguration(process_count=2, node_count=1)
    )
    run = Experiment(ws, "rendezvous").submit(config)
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Completed", (details.get("status_reason"), details.get("error_traceback"))
    for rank in range(2):
        own = stream_text(run, f"std_log_process_{rank}")
        assert "the rendezvous port answered" in own and "all_reduce sum 3.0" in own, own
