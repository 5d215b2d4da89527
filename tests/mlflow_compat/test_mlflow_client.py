"""The stock `mlflow` client against TrainHub's MLflow endpoints, as a run's script and as a member
reading back: a real server, the real client in a subprocess with the variables a node sets."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import requests

from metrics.models import MetricSeries
from mlflow_compat.access import OTHER_RUN, READ_ONLY
from mlflow_compat.services import ARTIFACT_EXISTS, NOT_IN_OUTPUTS
from runs.models import Run
from tests.conftest import issue_token
from tests.metrics.builders import running_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def mlflow_env(live_url: str, workspace_name: str, token: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINHUB_", "DJANGO_", "DATABASE_URL", "MLFLOW_"))}
    env.update(
        MLFLOW_TRACKING_URI=f"{live_url}/mlflow/{workspace_name}",
        MLFLOW_TRACKING_TOKEN=token,
        # A refused call fails at once instead of being retried for minutes.
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        **extra,
    )
    return env


def run_python(code: str, env: dict[str, str], cwd) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True, text=True, timeout=240
    )


def in_run_env(live_url: str, run: Run, token: str) -> dict[str, str]:
    """What the node sets (runs/execution.py) for MLflow."""
    return mlflow_env(
        live_url,
        run.workspace.name,
        token,
        MLFLOW_RUN_ID=run.run_id,
        MLFLOW_EXPERIMENT_NAME=run.experiment.name,
        MLFLOW_EXPERIMENT_ID=str(run.experiment_id),
    )


def test_a_script_logs_params_tags_metrics_and_files_into_its_run(workspace, owner, live_url, tmp_path):
    run, token = running_run(workspace)
    (tmp_path / "notes.txt").write_text("hello\n")
    done = run_python(
        """
        import mlflow
        active = mlflow.start_run()
        print("RUN", active.info.run_id)
        mlflow.log_params({"lr": 0.01, "epochs": 3})
        mlflow.set_tags({"team": "birds", "stage": "dev"})
        for step in range(50):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        # A diverging score: MLflow keeps NaN and inf, and so does TrainHub.
        for step, value in enumerate([0.5, float("inf"), float("-inf"), float("nan")]):
            mlflow.log_metric("score", value, step=step)
        mlflow.log_artifact("notes.txt", artifact_path="docs")
        mlflow.log_dict({"a": 1}, "config/settings.json")
        mlflow.end_run(status="FAILED")
        """,
        in_run_env(live_url, run, token),
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"RUN {run.run_id}" in done.stdout
    run.refresh_from_db()
    assert run.parameters["lr"] == "0.01" and run.parameters["epochs"] == "3"
    assert run.tags == {"team": "birds", "stage": "dev"}
    # end_run's FAILED is recorded and shown; the run's status stays its processes' to decide.
    assert run.status == "Running" and run.properties["mlflow.endRunStatus"] == "FAILED"
    loss = MetricSeries.objects.get(run=run, name="loss")
    assert loss.count == 50 and loss.last_step == 49 and loss.last_value == pytest.approx(1 / 50)
    score = MetricSeries.objects.get(run=run, name="score")
    assert (score.count, score.min_value, score.max_value) == (4, -math.inf, math.inf)
    assert math.isnan(score.final_value)
    assert set(run.files.values_list("path", flat=True)) == {"outputs/docs/notes.txt", "outputs/config/settings.json"}

    # The run page shows them: NaN as NaN in the values table, and the status MLflow asked for.
    from django.test import Client

    page = Client()
    page.force_login(owner)
    html = page.get(f"/w/{workspace.name}/runs/{run.run_id}/").content.decode()
    assert "team=birds" in html and "lr=0.01" in html and "outputs/docs/notes.txt" in html
    assert '<td class="value">NaN</td><td>3</td><td>4</td><td>-inf / inf</td>' in html
    assert 'id="mlflow-end-status"><span class="status">FAILED</span>' in html

    # The JSON the charts read stays JSON (no bare NaN): the chart leaves out what it cannot draw
    # and says how many; the summary and the points name them as strings, which the SDK reads back.
    api = f"/api/v1/workspaces/{workspace.name}/runs/{run.run_id}/metrics"

    def strict(response) -> dict:  # noqa: ANN001
        assert response.status_code == 200, response.content
        return json.loads(response.content, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))

    chart = next(s for s in strict(page.get(f"{api}/chart"))["series"] if s["name"] == "score")
    assert (chart["count"], chart["skipped"], chart["x"], chart["values"]) == (4, 3, [0], [0.5])
    assert chart["last_value"] == "NaN"
    summary = next(s for s in strict(page.get(f"{api}/summary"))["series"] if s["name"] == "score")
    assert (summary["last_value"], summary["min_value"], summary["max_value"]) == ("NaN", "-Infinity", "Infinity")
    assert strict(page.get(api, {"name": "score"}))["metrics"]["score"]["values"] == [
        0.5,
        "Infinity",
        "-Infinity",
        "NaN",
    ]


def test_a_member_reads_runs_and_metric_history_back(workspace, owner, live_url, tmp_path):
    run, token = running_run(workspace)
    logged = run_python(
        """
        import mlflow
        mlflow.start_run()
        for step in range(20):
            mlflow.log_metric("acc", step / 20, step=step)
        mlflow.log_metric("grad", float("nan"))
        mlflow.log_param("batch", 64)
        mlflow.log_text("kept", "notes/a.txt")
        """,
        in_run_env(live_url, run, token),
        tmp_path,
    )
    assert logged.returncode == 0, logged.stderr[-3000:]
    member = issue_token(workspace, owner)
    read = run_python(
        f"""
        import json, mlflow
        from mlflow import MlflowClient
        frame = mlflow.search_runs(experiment_names=["{run.experiment.name}"])
        history = MlflowClient().get_metric_history("{run.run_id}", "acc")
        grad = [m.value for m in MlflowClient().get_metric_history("{run.run_id}", "grad")]
        local = MlflowClient().download_artifacts("{run.run_id}", "")
        listed = [f.path for f in MlflowClient().list_artifacts("{run.run_id}", "notes")]
        print(json.dumps({{
            "ids": list(frame["run_id"]),
            "acc": float(frame["metrics.acc"][0]),
            "grad": [repr(grad), repr(float(frame["metrics.grad"][0]))],
            "batch": frame["params.batch"][0],
            "history": [[m.step, m.value] for m in history],
            "listed": listed,
            "downloaded": open(local + "/notes/a.txt").read(),
        }}))
        """,
        mlflow_env(live_url, workspace.name, member),
        tmp_path,
    )
    assert read.returncode == 0, read.stderr[-3000:]
    found = json.loads(read.stdout.strip().splitlines()[-1])
    assert found["ids"] == [run.run_id]
    assert found["acc"] == pytest.approx(19 / 20) and found["batch"] == "64"
    assert found["grad"] == ["[nan]", "nan"]
    assert found["history"] == [[step, pytest.approx(step / 20)] for step in range(20)]
    assert found["listed"] == ["notes/a.txt"] and found["downloaded"] == "kept"


def test_a_batch_of_a_thousand_metrics_then_another(workspace, live_url, tmp_path):
    run, token = running_run(workspace)
    done = run_python(
        """
        import time, mlflow
        from mlflow import MlflowClient
        from mlflow.entities import Metric
        run = mlflow.start_run()
        now = int(time.time() * 1000)
        client = MlflowClient()
        client.log_batch(run.info.run_id, metrics=[Metric("x", float(i), now, i) for i in range(1000)])
        client.log_batch(run.info.run_id, metrics=[Metric("x", float(i), now, i) for i in range(1000, 1500)])
        """,
        in_run_env(live_url, run, token),
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    series = MetricSeries.objects.get(run=run, name="x")
    assert series.count == 1500 and series.last_step == 1499 and series.last_value == 1499.0
    # MLflow's client splits larger batches itself; one sent whole is refused as MLflow's server does.
    too_many = [{"key": "x", "value": 0, "timestamp": 0, "step": 0}] * 1001
    answer = requests.post(
        f"{live_url}/mlflow/{workspace.name}/api/2.0/mlflow/runs/log-batch",
        json={"run_id": run.run_id, "metrics": too_many},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 400 and answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "at most 1000 metrics" in answer.json()["message"]
    assert MetricSeries.objects.get(run=run, name="x").count == 1500


def test_another_runs_id_is_refused(workspace, live_url, tmp_path):
    run, token = running_run(workspace)
    other, _ = running_run(workspace)
    done = run_python(
        f"""
        import mlflow
        from mlflow import MlflowClient
        mlflow.start_run()
        client = MlflowClient()
        for call in (
            lambda: client.log_metric("{other.run_id}", "loss", 1.0),
            lambda: client.get_run("{other.run_id}"),
            lambda: client.set_tag("{other.run_id}", "k", "v"),
        ):
            try:
                call()
                print("ACCEPTED")
            except Exception as error:
                print("REFUSED", error)
        """,
        in_run_env(live_url, run, token),
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ACCEPTED" not in done.stdout
    assert done.stdout.count("RESOURCE_DOES_NOT_EXIST") == 3
    assert OTHER_RUN.format(run_id=other.run_id, own=run.run_id) in done.stdout
    other.refresh_from_db()
    assert other.tags == {} and not MetricSeries.objects.filter(run=other).exists()


def test_artifact_paths_stay_in_outputs_and_member_tokens_only_read(workspace, owner, live_url):
    run, token = running_run(workspace)
    base = f"{live_url}/mlflow/{workspace.name}/api/2.0/mlflow-artifacts/artifacts/{run.run_id}"
    as_run = {"Authorization": f"Bearer {token}"}
    for path in ("logs/evil.txt", "outputs/../logs/x", "outputs/%2e%2e/%2e%2e/x", "../other/outputs/x"):
        answer = requests.put(f"{base}/{path}", data=b"x", headers=as_run, timeout=30)
        assert answer.status_code in (400, 404), (path, answer.text)
        assert set(answer.json()) == {"error_code", "message"}
    assert requests.put(f"{base}/logs/evil.txt", data=b"x", headers=as_run, timeout=30).json()["message"] == (
        NOT_IN_OUTPUTS.format(path="logs/evil.txt")
    )
    assert requests.put(f"{base}/outputs/a.txt", data=b"one", headers=as_run, timeout=30).status_code == 200
    again = requests.put(f"{base}/outputs/a.txt", data=b"two", headers=as_run, timeout=30)
    assert again.status_code == 400
    assert again.json()["message"] == ARTIFACT_EXISTS.format(run_id=run.run_id, path="outputs/a.txt")
    member = {"Authorization": f"Bearer {issue_token(workspace, owner)}"}
    refused = requests.put(f"{base}/outputs/b.txt", data=b"x", headers=member, timeout=30)
    assert refused.status_code == 403 and refused.json() == {"error_code": "PERMISSION_DENIED", "message": READ_ONLY}
    got = requests.get(f"{base}/outputs/a.txt", headers=member, timeout=30)
    assert got.content == b"one", (got.status_code, got.text[-2000:])
    assert list(run.files.values_list("path", flat=True)) == ["outputs/a.txt"]


def test_a_param_logged_as_the_script_reads_its_argument_replaces_the_typed_one(workspace):
    """`--lr 1e-3` on the command line is logged by the script as 0.001: that must not stop it."""
    from tests.conftest import api_client

    run, token = running_run(workspace, arguments=["--lr", "1e-3", "--epochs", "3"])
    answer = api_client(token).post(
        f"/mlflow/{workspace.name}/api/2.0/mlflow/runs/log-parameter",
        {"run_id": run.run_id, "key": "lr", "value": "0.001"},
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    run.refresh_from_db()
    assert run.parameters == {"lr": "0.001", "epochs": "3"}


def test_search_runs_filters_orders_and_pages_as_mlflow_does(workspace, owner, live_url, tmp_path):
    from metrics.services import metrics_ingest, parse_batch
    from trainhub.workspaces.permissions import Access

    runs = []
    for number, (acc, lr, team) in enumerate([(0.7, "0.1", "birds"), (0.9, "0.01", "fish"), (0.95, "0.01", "birds")]):
        run, _ = running_run(workspace, experiment="search", arguments=["--lr", lr], display_name=f"try-{number}")
        batch = parse_batch({"metrics": [{"name": "acc", "values": [acc]}], "tags": {"team": team}})
        metrics_ingest(access=Access(workspace, "owner"), run=run, batch=batch)
        runs.append(run.run_id)
    member = issue_token(workspace, owner)
    read = run_python(
        """
        import json, mlflow
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        def ids(**given):
            return list(mlflow.search_runs(experiment_names=["search"], **given)["run_id"])

        found = {
            "good": ids(filter_string="metrics.acc > 0.8 AND params.lr = '0.01'"),
            "birds": ids(filter_string="tags.team != 'fish' and metrics.`acc` <= 0.95", order_by=["metrics.acc ASC"]),
            "named": ids(filter_string="attributes.run_name LIKE 'try-%' AND attributes.status = 'RUNNING'",
                         order_by=["params.lr DESC", "metrics.acc DESC"]),
            "none": ids(filter_string="metrics.acc >= 1"),
        }
        client = MlflowClient()
        experiment = client.get_experiment_by_name("search").experiment_id
        first = client.search_runs([experiment], order_by=["metrics.acc DESC"], max_results=2)
        second = client.search_runs([experiment], order_by=["metrics.acc DESC"], max_results=2,
                                    page_token=first.token)
        found["pages"] = [[r.info.run_id for r in first], [r.info.run_id for r in second], second.token]
        try:
            ids(filter_string="metrics.acc > 'high'")
        except MlflowException as error:
            found["error"] = [error.error_code, error.message]
        print(json.dumps(found))
        """,
        mlflow_env(live_url, workspace.name, member),
        tmp_path,
    )
    assert read.returncode == 0, read.stderr[-3000:]
    found = json.loads(read.stdout.strip().splitlines()[-1])
    low, middle, high = runs
    assert found["good"] == [high, middle]  # newest first
    assert found["birds"] == [low, high]
    assert found["named"] == [low, high, middle]
    assert found["none"] == []
    assert found["pages"] == [[high, middle], [low], None]
    code, message = found["error"]
    assert code == "INVALID_PARAMETER_VALUE"
    assert "metrics.acc compares with a number, not \"'high'\"" in message and "joined by AND" in message


def test_a_runs_artifacts_stop_at_the_per_run_total_and_nothing_of_the_refused_one_is_kept(workspace, settings):
    from django.core.files.storage import default_storage

    from mlflow_compat.services import RUN_TOO_LARGE
    from tests.conftest import api_client

    settings.TRAINHUB_MLFLOW_MAX_RUN_BYTES = 10
    run, token = running_run(workspace)
    base = f"/mlflow/{workspace.name}/api/2.0/mlflow-artifacts/artifacts/{run.run_id}/outputs"
    client = api_client(token)
    assert client.put(f"{base}/a.txt", b"123456", content_type="application/octet-stream").status_code == 200
    refused = client.put(f"{base}/b.txt", b"12345", content_type="application/octet-stream")
    assert refused.status_code == 400
    assert refused.json() == {
        "error_code": "RESOURCE_LIMIT_EXCEEDED",
        "message": RUN_TOO_LARGE.format(run_id=run.run_id, held=6, size=5, limit=10),
    }
    assert list(run.files.values_list("path", flat=True)) == ["outputs/a.txt"]
    assert not default_storage.exists(f"runs/{run.run_id}/outputs/b.txt")
    assert client.put(f"{base}/c.txt", b"1234", content_type="application/octet-stream").status_code == 200
