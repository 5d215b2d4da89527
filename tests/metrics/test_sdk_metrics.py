"""The in-run SDK as a training script uses it: real processes, a live server, and offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from metrics.models import MetricSeries
from tests.helpers.processes import BASE_DIR, wait_until
from tests.metrics.builders import running_run

pytestmark = pytest.mark.slow


def run_env(run, token: str, live_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINHUB_", "DJANGO_", "DATABASE_URL"))}
    env.update(
        PYTHONPATH=str(BASE_DIR),
        PYTHONUNBUFFERED="1",
        TRAINHUB_RUN_ID=run.run_id,
        TRAINHUB_RUN_TOKEN=token,
        TRAINHUB_SERVER_URL=live_url,
        TRAINHUB_WORKSPACE=run.workspace.name,
        TRAINHUB_EXPERIMENT=run.experiment.name,
        **extra,
    )
    return env


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def stored(run, name: str, rank: int = 0) -> int:
    found = MetricSeries.objects.filter(run=run, name=name, rank=rank).first()
    return found.count if found else 0


def test_a_script_that_crashes_after_logging_loses_nothing(workspace, live_url, tmp_path):
    run, token = running_run(workspace)
    path = script(
        tmp_path,
        """
        import sys
        from trainhub.sdk import Run
        run = Run.get_context()
        for step in range(10_000):
            run.log("loss", 1.0 / (step + 1))
        assert "requests" not in sys.modules, "the in-run SDK must need the standard library only"
        raise RuntimeError("diverged")
        """,
    )
    done = subprocess.run(
        [sys.executable, path],
        env=run_env(run, token, live_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "RuntimeError: diverged" in done.stderr
    assert stored(run, "loss") == 10_000
    series = MetricSeries.objects.get(run=run, name="loss")
    assert series.last_value == 1.0 / 10_000 and series.last_step == 9_999


def test_sigterm_flushes_what_was_logged(workspace, live_url, tmp_path):
    run, token = running_run(workspace)
    ready = tmp_path / "ready"
    path = script(
        tmp_path,
        f"""
        import time
        from trainhub.sdk import Run
        run = Run.get_context()
        run.log_list("accuracy", [i / 5000 for i in range(5000)])
        open({str(ready)!r}, "w").close()
        time.sleep(60)
        """,
    )
    # A long flush interval: only the SIGTERM handler can have sent the points.
    process = subprocess.Popen(
        [sys.executable, path],
        env=run_env(run, token, live_url, TRAINHUB_METRICS_FLUSH_SECONDS="600"),
    )
    wait_until(ready.exists, 30, message="the script to log")
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == -signal.SIGTERM
    assert stored(run, "accuracy") == 5000


def test_rows_tags_ranks_and_get_metrics_inside_a_run(workspace, live_url, tmp_path):
    run, token = running_run(workspace)
    path = script(
        tmp_path,
        """
        import json
        from trainhub.sdk import Run
        run = Run.get_context()
        assert Run.get_context() is run
        run.log("loss", 0.5, description="training loss")
        run.log("loss", 0.25)
        run.log("lr", 0.1, step=100)
        run.log_row("per_class", cls=3, precision=0.9)
        run.log_row("per_class", cls=4, precision=0.8)
        run.tag("optimizer", "sgd")
        run.set_tags({"epochs": 30, "note": None})
        print(json.dumps({"metrics": run.get_metrics(), "tags": run.get_tags()}))
        """,
    )
    done = subprocess.run(
        [sys.executable, path],
        env=run_env(run, token, live_url, TRAINHUB_RANK="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    import json

    answer = json.loads(done.stdout)
    assert answer["metrics"] == {
        "loss": [0.5, 0.25],
        "lr": 0.1,
        "per_class": {"cls": [3, 4], "precision": [0.9, 0.8]},
    }
    assert answer["tags"]["optimizer"] == "sgd" and answer["tags"]["epochs"] == "30" and answer["tags"]["note"] == ""
    assert MetricSeries.objects.get(run=run, name="loss").rank == 1
    assert MetricSeries.objects.get(run=run, name="lr").last_step == 100


def test_bad_values_inside_a_script(workspace, live_url, tmp_path):
    run, token = running_run(workspace)
    path = script(
        tmp_path,
        """
        from trainhub.sdk import Run
        run = Run.get_context()
        run.log("loss", 0.5)
        run.log("loss", float("nan"))
        run.log("loss", float("inf"))
        run.log("loss", 0.25)
        for bad in ("0.1", None, [1, 2]):
            try:
                run.log("loss", bad)
            except TypeError as error:
                print("TypeError:", error)
        try:
            run.log("x" * 256, 1.0)
        except ValueError as error:
            print("ValueError:", error)
        """,
    )
    done = subprocess.run(
        [sys.executable, path],
        env=run_env(run, token, live_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("is not finite") == 1
    assert (
        "TypeError: run.log('loss', ...): 'loss' already holds numbers in this run, and text cannot "
        "join them; log it under another name." in done.stdout
    )
    assert "TypeError: run.log('loss', ...): the value must be a number (int or float) or a string, not list." in (
        done.stdout
    )
    assert done.stdout.count("TypeError:") == 3
    assert (
        "ValueError: A metric name must be a string of 1 to 255 characters, not a name of 256 "
        "characters." in done.stdout
    )
    assert MetricSeries.objects.get(run=run, name="loss").count == 2


def test_get_metrics_from_outside_the_run(workspace, owner_token, live_url):
    from tests.conftest import api_client
    from tests.metrics.builders import post_batch, series_body
    from trainhub.sdk import Experiment, Workspace
    from trainhub.sdk.run import Run

    run, token = running_run(workspace)
    post_batch(api_client(token), run, series_body("loss", [0.3, 0.2, 0.1]))
    ws = Workspace.get("birds", url=live_url, token=owner_token)
    outside = Run(Experiment(ws, run.experiment.name), run.run_id)
    assert outside.get_metrics() == {"loss": [0.3, 0.2, 0.1]}
    assert outside.get_metrics(name="loss") == {"loss": [0.3, 0.2, 0.1]}
    outside.log("test_accuracy", 0.97)
    outside.flush()
    assert outside.get_metrics(name="test_accuracy") == {"test_accuracy": 0.97}


def test_offline_get_context_prints_and_keeps_values(tmp_path):
    path = script(
        tmp_path,
        """
        import json, sys
        from trainhub.sdk import Run
        run = Run.get_context()
        print(type(run).__name__)
        run.log("loss", 0.5)
        run.log_list("accuracy", [0.1, 0.2])
        run.log_row("per_class", cls=1, precision=0.5)
        run.tag("lr", 0.01)
        print(json.dumps(run.get_metrics()))
        print(json.dumps(run.get_tags()))
        assert "requests" not in sys.modules
        """,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")}
    env["PYTHONPATH"] = str(BASE_DIR)
    started = time.monotonic()
    done = subprocess.run([sys.executable, path], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "OfflineRun"
    assert "[offline run] loss = 0.5 (step 0)" in lines
    assert '{"loss": 0.5, "accuracy": [0.1, 0.2], "per_class": {"cls": [1], "precision": [0.5]}}' in lines
    assert '{"lr": "0.01"}' in lines
    assert time.monotonic() - started < 30


def test_a_text_value_is_kept_and_read_back_as_text(workspace, owner_token, live_url, tmp_path, client_for, owner):
    from trainhub.sdk import Experiment, Workspace
    from trainhub.sdk.run import Run

    run, token = running_run(workspace)
    path = script(
        tmp_path,
        """
        from trainhub.sdk import Run
        run = Run.get_context()
        run.log("optimizer", "sgd")
        run.log("note", "warming up")
        run.log("note", "converged")
        run.log("loss", 0.5)
        try:
            run.log("note", 1.0)
        except TypeError as error:
            print("TypeError:", error)
        print("inside", sorted(run.get_metrics().items()))
        """,
    )
    done = subprocess.run(
        [sys.executable, path], env=run_env(run, token, live_url), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "TypeError: run.log('note', ...): 'note' already holds text in this run" in done.stdout
    expected = {"optimizer": "sgd", "note": ["warming up", "converged"], "loss": 0.5}
    assert f"inside {sorted(expected.items())}" in done.stdout
    ws = Workspace.get("birds", url=live_url, token=owner_token)
    assert Run(Experiment(ws, run.experiment.name), run.run_id).get_metrics() == expected
    page = client_for(owner).get(f"/w/birds/runs/{run.run_id}/").content.decode()
    assert "converged" in page and "sgd" in page


def test_an_offline_run_keeps_text_values_too(capsys):
    from trainhub.sdk._run_context import OfflineRun

    run = OfflineRun()
    run.log("optimizer", "sgd")
    run.log("loss", 0.25)
    assert run.get_metrics() == {"optimizer": "sgd", "loss": 0.25}
    assert "[offline run] optimizer = 'sgd'" in capsys.readouterr().out
