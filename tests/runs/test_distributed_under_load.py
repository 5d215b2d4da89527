"""The distributed launches of tests/runs/test_distributed.py while busy loops keep every core of
the machine busy: every rank still logs its result and the run completes (a per-node torchrun job
once failed only under load)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runs.models import RunProcess
from tests.runs.test_distributed import ddp_config, per_node_config, stream_text, two_nodes  # noqa: F401  (fixture)
from trainhub.sdk import Experiment
from trainhub.sdk.runconfig import PyTorchConfiguration

pytestmark = pytest.mark.slow

TORCHRUN = (
    "torchrun --nproc_per_node 2 --nnodes 2 --node_rank ${NODE_RANK} --master_addr ${MASTER_ADDR} "
    "--master_port ${MASTER_PORT} ddp_check.py --epochs 1"
)


@pytest.fixture
def busy_cores():
    """One busy loop per core, at the nodes' own priority, for as long as the test runs."""
    loops = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(os.cpu_count() or 1)
    ]
    yield
    for loop in loops:
        loop.kill()
        loop.wait()


@pytest.mark.usefixtures("two_nodes", "busy_cores")
@pytest.mark.parametrize("launch", ["per-node torchrun", "per-process"])
def test_ddp_completes_on_busy_cores(ws, launch):
    if launch == "per-process":
        config = ddp_config(ws, distributed_job_config=PyTorchConfiguration(process_count=4, node_count=2))
    else:
        config = per_node_config(ws, TORCHRUN)
    run = Experiment(ws, "ddp-under-load").submit(config)
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Completed", (details.get("status_reason"), details.get("error_traceback"))
    for rank in range(4):
        own = stream_text(run, f"std_log_process_{rank}")
        assert f"rank {rank}/4 " in own and "all_reduce sum 10.0 expected 10.0" in own, own
    states = list(RunProcess.objects.filter(run__run_id=run.id).order_by("rank").values_list("rank", "state"))
    assert states == [(rank, "completed") for rank in range(4)]
