"""Metric figures: ingest points/s from one run, run.log() cost, chart data of 1,000,000 points, and
points/s through MLflow's client (log_metric in a loop, log_batch) against TrainHub and against a
real `mlflow server` (SQLite backend) started here (`--mlflow-only`: only those)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _harness import BASE_DIR, Harness

POINTS = 1_000_000
MLFLOW_LOOP_POINTS = 2_000
MLFLOW_BATCHES = 50  # of 1,000 metrics, MLflow's limit per log_batch
MLFLOW_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    loop_points, batches = int(sys.argv[1]), int(sys.argv[2])
    run = mlflow.start_run()
    client = MlflowClient()
    started = time.perf_counter()
    for step in range(loop_points):
        mlflow.log_metric("loop", 1.0 / (step + 1), step=step)
    loop_seconds = time.perf_counter() - started
    now = int(time.time() * 1000)
    started = time.perf_counter()
    for batch in range(batches):
        client.log_batch(run.info.run_id, metrics=[
            Metric("batch", float(i), now, batch * 1000 + i) for i in range(1000)
        ])
    batch_seconds = time.perf_counter() - started
    history = len(client.get_metric_history(run.info.run_id, "batch"))
    print(json.dumps({"loop_seconds": loop_seconds, "batch_seconds": batch_seconds, "stored": history}))
    """
)
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
    from trainhub.workspaces.selectors import RUN_TOKEN_PREFIX, hash_token

    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    workspace = services.workspace_create(name="bench", user=user)
    run = make_run(workspace, experiment="bench", status=RunStatus.RUNNING, created_by=user)
    token = RUN_TOKEN_PREFIX + secrets.token_urlsafe(24)
    Run.objects.filter(pk=run.pk).update(token_hash=hash_token(token))
    return run, token


def main() -> None:
    with Harness() as harness:
        server = harness.server()
        run, token = setup(harness)
        if "--mlflow-only" in sys.argv[1:]:
            mlflow_figures(harness, server.url, run, token)
            print(f"(load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
            return
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
        mlflow_figures(harness, server.url, run, token)
        load = os.getloadavg()[0]
        print(f"(load average during the run: {load:.1f} on {os.cpu_count()} CPUs)")


def mlflow_figures(harness: Harness, server_url: str, run, token: str) -> None:  # noqa: ANN001
    """The same MLflow script against TrainHub (as inside a run) and against `mlflow server`."""
    from runs.models import Run, RunStatus
    from tests.runs.builders import make_run
    from trainhub.workspaces.selectors import hash_token

    mlflow_run = make_run(run.workspace, experiment="bench", status=RunStatus.RUNNING, created_by=run.created_by)
    Run.objects.filter(pk=mlflow_run.pk).update(token_hash=hash_token(token + "-mlflow"))
    folder = Path(tempfile.mkdtemp(dir=harness.data_dir))
    (folder / "mlflow_log.py").write_text(MLFLOW_SCRIPT)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINHUB_", "DJANGO_", "MLFLOW_"))}
    base["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    trainhub = mlflow_script(
        folder,
        {
            **base,
            "MLFLOW_TRACKING_URI": f"{server_url}/mlflow/{run.workspace.name}",
            "MLFLOW_TRACKING_TOKEN": token + "-mlflow",
            "MLFLOW_RUN_ID": mlflow_run.run_id,
            "MLFLOW_EXPERIMENT_NAME": mlflow_run.experiment.name,
        },
    )
    with mlflow_server(folder) as url:
        reference = mlflow_script(folder, {**base, "MLFLOW_TRACKING_URI": url})
    for label, figures in (("TrainHub", trainhub), ("mlflow server (SQLite, 1 worker)", reference)):
        print(
            f"MLflow client against {label}: log_metric loop {MLFLOW_LOOP_POINTS / figures['loop_seconds']:,.0f} "
            f"points/s ({MLFLOW_LOOP_POINTS:,} calls); log_batch "
            f"{MLFLOW_BATCHES * 1000 / figures['batch_seconds']:,.0f} points/s ({MLFLOW_BATCHES} batches of 1,000)"
        )


def mlflow_script(folder: Path, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, str(folder / "mlflow_log.py"), str(MLFLOW_LOOP_POINTS), str(MLFLOW_BATCHES)],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    # mlflow prints links to its UI when the run ends: the figures are the line of JSON.
    figures = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert figures["stored"] == MLFLOW_BATCHES * 1000, figures
    return figures


@contextlib.contextmanager
def mlflow_server(folder: Path):
    """`mlflow server` with a SQLite backend on a free port, stopped afterwards."""
    import requests

    from tests.helpers.ports import free_port

    port = free_port()
    log = open(folder / "mlflow-server.log", "ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder}/mlflow.db",
            "--artifacts-destination",
            str(folder / "mlartifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((folder / "mlflow-server.log").read_text(errors="replace")[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


if __name__ == "__main__":
    main()
