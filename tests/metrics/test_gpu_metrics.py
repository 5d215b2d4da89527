"""GPU utilisation and memory of each rank, where its node has NVIDIA GPUs: read with nvidia-smi,
matched to the rank's process tree, kept as the run's system/ metrics and charted on the run page;
each GPU of a node on the cluster page. This machine has no GPU: the end-to-end test puts a stand-in
nvidia-smi (tests/helpers/bin/nvidia-smi, the real tool's output format) on the node's PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

from metrics.models import MetricSeries
from runs.system_metrics import CPU, GPU_MEMORY, GPU_UTILIZATION, MEMORY, Sampler
from tests.browser.test_workspace_flows import sign_in
from tests.helpers.processes import NodeProcess, wait_until
from tests.metrics.test_metrics_on_node import config
from trainhub.compute import gpus
from trainhub.sdk import Experiment

STAND_IN = Path(__file__).resolve().parents[1] / "helpers" / "bin"
NO_GPU = "no NVIDIA GPU on this machine"


def test_nvidia_smis_csv_is_read_with_what_a_gpu_cannot_give_left_out():
    found = gpus.parse_gpus("0, GPU-aa, 37, 1535, 16384\n1, GPU-bb, [Not Supported], [N/A], 16384\n")
    assert found == [gpus.Gpu(0, "GPU-aa", 37.0, 1535.0, 16384.0), gpus.Gpu(1, "GPU-bb", None, None, 16384.0)]
    assert gpus.parse_processes("") == []
    assert gpus.parse_processes("4242, GPU-aa, 1021\n4243, GPU-bb, [N/A]\n") == [
        gpus.GpuProcess(4242, "GPU-aa", 1021.0),
        gpus.GpuProcess(4243, "GPU-bb", None),
    ]


def test_the_real_nvidia_smi_sees_a_process_holding_gpu_memory():
    if gpus.nvidia_smi() is None:
        pytest.skip(NO_GPU)
    devices = gpus.gpus()
    assert devices and all(gpu.memory_total_mb for gpu in devices)
    hold = (
        "import sys, torch; x = torch.ones(64 * 2**20, device='cuda'); torch.cuda.synchronize(); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        # A sample gives what nvidia-smi said by the previous one (it is asked beside the sampling).
        sampler = Sampler()
        wait_until(lambda: GPU_MEMORY in sampler.sample({0: os.getpid()})[0], 30, message="the GPU memory sampled")
        values = sampler.sample({0: os.getpid()})[0]
        assert values[GPU_MEMORY] >= 256  # MB: the child's 256 MB tensor, in this process's tree
        assert 0 <= values[GPU_UTILIZATION] <= 100
    finally:
        child.communicate(b"")


@pytest.mark.slow
@pytest.mark.browser
def test_a_gpu_nodes_ranks_are_charted_with_their_gpu_use_and_the_cluster_page_shows_each_gpu(
    ws, cluster, live_url, tmp_path, page
):
    node = NodeProcess(
        cluster,
        tmp_path,
        TRAINHUB_NODE_SERVER_URL=live_url,
        TRAINHUB_SYSTEM_METRICS_SECONDS="1",
        PATH=f"{STAND_IN}:{os.environ['PATH']}",
        NVIDIA_SMI_STANDIN_PROGRAM="busy.py",
    )
    node.start()
    try:
        run = Experiment(ws, name="gpu").submit(config(ws, "busy.py"), show_progress=False)
        assert run.wait_for_completion()["status"] == "Completed"
        sign_in(page, live_url, "olivia")
        page.goto(f"{live_url}/w/birds/compute/cpu-cluster/")
        gpu_cells = page.locator(f'#nodes tr[data-node="{node.name}"] td.gpus .gpu')
        expect(gpu_cells).to_have_text(["GPU 0: 37 % · 1535 / 16384 MB", "GPU 1: 0 % · 0 / 16384 MB"])
        expect(page.locator(f'#nodes tr[data-node="{node.name}"] td.memory')).to_contain_text(" MB")
    finally:
        node.stop()
    # The page follows its nodes without a reload: the stopped node has no load or GPU use any more.
    expect(page.locator(f'#nodes tr[data-node="{node.name}"] .status')).to_have_text("stopped", timeout=15_000)
    expect(gpu_cells).to_have_count(0)
    series = {s.name: s for s in MetricSeries.objects.filter(run__run_id=run.id, rank=0)}
    assert series[GPU_MEMORY].max_value == 1021  # MB: what the GPU's driver says the rank's python holds
    assert series[GPU_UTILIZATION].max_value == 37  # the GPU it holds memory on
    assert {CPU, MEMORY} <= set(series)
    page.goto(f"{live_url}/w/birds/runs/{run.id}/")
    for name in (GPU_UTILIZATION, GPU_MEMORY, CPU, MEMORY):
        expect(page.locator(f'.metric-chart[data-name="{name}"] canvas')).to_be_visible()


def test_a_node_without_nvidia_smi_never_looks_for_gpu_use_again(monkeypatch, tmp_path):
    gpus.nvidia_smi.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))
    try:
        assert gpus.nvidia_smi() is None
        monkeypatch.setenv("PATH", f"{STAND_IN}:{os.environ['PATH']}")
        assert gpus.nvidia_smi() is None and gpus.gpus() == []  # probed once per process
        assert set(Sampler().sample({0: os.getpid()})[0]) == {MEMORY}
    finally:
        gpus.nvidia_smi.cache_clear()
