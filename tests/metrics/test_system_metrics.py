"""Every rank's CPU and memory, sampled by its node while it runs, kept as the run's system/ metrics."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from metrics.models import MetricSeries
from runs.system_metrics import CPU, MEMORY, Sampler, tree_usage
from tests.helpers.processes import NodeProcess
from tests.metrics.test_metrics_on_node import config
from trainhub.sdk import Experiment

HOLD = (
    "import sys; x = bytearray(64 * 2**20); x[::4096] = b'1' * len(x[::4096]); "
    "print('ready', flush=True); sys.stdin.read()"
)


def test_a_process_tree_is_measured_whole():
    child = subprocess.Popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        assert tree_usage(child.pid)[1] >= 64 * 2**20
        assert tree_usage(os.getpid())[1] >= tree_usage(child.pid)[1]  # the child counts in its parent's tree
        sampler = Sampler()
        assert set(sampler.sample({0: os.getpid()})[0]) == {MEMORY}  # the first sample starts the CPU clock
        sum(range(2_000_000))
        assert set(sampler.sample({0: os.getpid()})[0]) == {CPU, MEMORY}
    finally:
        child.communicate(b"")


@pytest.mark.slow
def test_a_runs_cpu_and_memory_are_charted_as_system_metrics(ws, cluster, live_url, tmp_path):
    node = NodeProcess(cluster, tmp_path, TRAINHUB_NODE_SERVER_URL=live_url, TRAINHUB_SYSTEM_METRICS_SECONDS="1")
    node.start()
    try:
        run = Experiment(ws, name="system").submit(config(ws, "busy.py"), show_progress=False)
        assert run.wait_for_completion()["status"] == "Completed"
    finally:
        node.stop()
    series = {s.name: s for s in MetricSeries.objects.filter(run__run_id=run.id, rank=0)}
    assert series[MEMORY].max_value >= 150  # MB: the script held 150 MB
    assert series[CPU].count >= 1 and series[CPU].max_value > 0
    metrics = run.get_metrics()
    assert CPU in metrics and MEMORY in metrics
