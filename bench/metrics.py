"""Metric figures: ingest points/s from one run, run.log() cost, chart data of 1,000,000 points."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _harness import BASE_DIR, Harness

POINTS = 1_000_000
SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from trainhub.sdk import Run

    points = int(sys.argv[1])
    run = Run.get_context()

    # run.log() cost, each call timed (the clock pair is included: about 0.15 us here), while
    # the background thread sends what was logged; and the mean over the whole loop, which
    # also carries the sending thread's share of the GIL.
    clock = time.perf_counter_ns
    costs = []
    started = clock()
    for step in range(200_000):
        before = clock()
        run.log("overhead", 0.5)
        costs.append(clock() - before)
    mean_us = (clock() - started) / 200_000 / 1000
    run.flush()

    started = time.perf_counter()
    for step in range(points):
        run.log("loss", 1.0 / (step + 1))
    run.flush()
    elapsed = time.perf_counter() - started
    costs.sort()
    print(json.dumps({"ingest_seconds": elapsed, "median_log_us": costs[len(costs) // 2] / 1000,
                      "p99_log_us": costs[len(costs) * 99 // 100] / 1000, "mean_loop_us": mean_us}))
    """
)


def setup(harness: Harness):
    import secrets

    from django.contrib.auth import get_user_model

    from runs.models import Run, RunStatus
    from tests.runs.builders import make_run
    from trainhub.workspaces import services
    from trainhub.workspaces.selectors import hash_token

    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    workspace = services.workspace_create(name="bench", user=user)
    run = make_run(workspace, experiment="bench", status=RunStatus.RUNNING, created_by=user)
    token = "thr_" + secrets.token_urlsafe(24)
    Run.objects.filter(pk=run.pk).update(token_hash=hash_token(token))
    return run, token


def main() -> None:
    with Harness() as harness:
        server = harness.server()
        run, token = setup(harness)
        folder = Path(tempfile.mkdtemp(dir=harness.data_dir))
        (folder / "log.py").write_text(SCRIPT)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINHUB_", "DJANGO_"))}
        env.update(
            PYTHONPATH=str(BASE_DIR),
            TRAINHUB_RUN_ID=run.run_id,
            TRAINHUB_RUN_TOKEN=token,
            TRAINHUB_SERVER_URL=server.url,
            TRAINHUB_WORKSPACE=run.workspace.name,
            TRAINHUB_EXPERIMENT=run.experiment.name,
        )
        done = subprocess.run(
            [sys.executable, str(folder / "log.py"), str(POINTS)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        figures = json.loads(done.stdout.strip().splitlines()[-1])

        from metrics.models import MetricSeries

        stored = MetricSeries.objects.get(run=run, name="loss").count
        assert stored == POINTS, f"{stored} of {POINTS} points stored"
        print(
            f"ingest from one run: {POINTS / figures['ingest_seconds']:,.0f} points/s "
            f"({POINTS:,} points logged and stored in {figures['ingest_seconds']:.2f} s; "
            "target >= 100,000/s)"
        )
        print(
            f"run.log() median cost: {figures['median_log_us']:.2f} us, "
            f"p99 {figures['p99_log_us']:.2f} us (target <= 5 us); loop of 200,000 calls with "
            f"timing: {figures['mean_loop_us']:.2f} us per call"
        )

        import requests

        url = f"{server.url}/api/v1/workspaces/{run.workspace.name}/runs/{run.run_id}/metrics/chart"
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        times = []
        for _ in range(7):
            started = time.perf_counter()
            response = session.get(url, params={"name": "loss"})
            body = response.content
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, body[:300]
        series = json.loads(body)["series"][0]
        assert series["count"] == POINTS
        print(
            f"chart data of a {POINTS:,}-point series ({len(series['values'])} points drawn, "
            f"{len(body) / 1024:.0f} KiB): first read {times[0]:.0f} ms (read and LTTB), "
            f"again {statistics.median(times[1:]):.0f} ms (cached until a point is added; "
            f"target <= 200 ms)"
        )
        load = os.getloadavg()[0]
        print(f"(load average during the run: {load:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
