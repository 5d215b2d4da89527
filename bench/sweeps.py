"""Sweep figures: the scheduling overhead per child (from one child ending to the next being made,
placed on a node and Running) at concurrency 1, and the wall time of a 20-child sweep of a trivial
script at concurrency 4 on 4 nodes."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from _harness import Harness, percentile

TRIVIAL = "import sys\nfrom trainhub.sdk import Run\nRun.get_context().log('score', float(sys.argv[-1]))\n"


def sweep(ws, folder: Path, *, total: int, concurrent: int, experiment: str):
    from trainhub.sdk import Environment, Experiment, ScriptRunConfig
    from trainhub.sdk.train.hyperdrive import GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, choice

    config = HyperDriveConfig(
        run_config=ScriptRunConfig(
            source_directory=str(folder),
            script="trivial.py",
            compute_target="cpu",
            environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
        ),
        hyperparameter_sampling=GridParameterSampling({"x": choice(list(range(total)))}),
        primary_metric_name="score",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=total,
        max_concurrent_runs=concurrent,
    )
    began = time.perf_counter()
    hd_run = Experiment(ws, experiment).submit(config, show_progress=False)
    hd_run.wait_for_completion()
    return hd_run, time.perf_counter() - began


def overhead(ws, folder: Path) -> None:
    from runs.models import Run

    hd_run, _ = sweep(ws, folder, total=11, concurrent=1, experiment="overhead")
    children = list(Run.objects.filter(parent__run_id=hd_run.id).order_by("id"))
    assert all(child.status == "Completed" for child in children), [c.status_reason for c in children]
    made, placed, running = [], [], []
    for ended, following in zip(children, children[1:], strict=False):
        made.append((following.created_at - ended.ended_at).total_seconds())
        placed.append((following.dispatched_at - ended.ended_at).total_seconds())
        running.append((following.started_at - ended.ended_at).total_seconds())
    for label, values in (
        ("child end -> next child made", made),
        ("child end -> next child placed on a node", placed),
        ("child end -> next child Running", running),
    ):
        print(
            f"{label}: median {statistics.median(values) * 1000:.0f} ms, p95 {percentile(values, 0.95) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms (10 children, concurrency 1)"
        )


def wall_time(ws, folder: Path) -> None:
    from runs.models import Run

    hd_run, seconds = sweep(ws, folder, total=20, concurrent=4, experiment="twenty")
    children = Run.objects.filter(parent__run_id=hd_run.id)
    completed = children.filter(status="Completed").count()
    durations = [child.duration_seconds for child in children]
    print(
        f"20-child sweep of a trivial script, concurrency 4 on 4 nodes: {seconds:.1f} s wall from submit to the "
        f"sweep's end ({completed} children Completed; a child's own Running -> end median "
        f"{statistics.median(durations):.2f} s)"
    )


def main() -> int:
    import os

    from trainhub.sdk import Workspace

    with Harness() as harness:
        _, _, cluster, token = harness.workspace(max_nodes=4)
        server = harness.server()
        for _ in range(4):
            # The children log their metric: their nodes must name the server they send it to.
            harness.node(cluster, TRAINHUB_NODE_SERVER_URL=server.url)
        ws = Workspace.get("bench", url=server.url, token=token)
        folder = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
        (folder / "trivial.py").write_text(TRIVIAL)
        print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        overhead(ws, folder)
        wall_time(ws, folder)
        print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
