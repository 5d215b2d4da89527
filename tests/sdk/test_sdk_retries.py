"""The SDK's one retry policy against a real server behind a proxy that loses one answer after
the server processed the request: keyed POSTs are sent again and stored once, others are not."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import pytest

from datastores.models import Datastore as DatastoreRow
from metrics.models import MetricSeries
from registry.models import ModelBlob, ModelVersion
from tests.helpers.processes import BASE_DIR
from tests.helpers.proxy import DROP, GATEWAY_TIMEOUT, LosingProxy
from tests.metrics.builders import running_run
from trainhub.sdk import Datastore, Model, Workspace, exceptions

LOG_THOUSAND_POINTS = textwrap.dedent(
    """
    from trainhub.sdk import Run

    run = Run.get_context()
    for step in range(1000):
        run.log("loss", float(step))
    run.flush()
    print("stored", run.get_metrics("loss")["loss"][-1])
    """
)


def keys_of(proxy: LosingProxy, method: str, fragment: str) -> list[str | None]:
    return [key for seen_method, path, key in proxy.seen if seen_method == method and fragment in path]


def test_a_metric_batch_whose_answer_was_lost_is_sent_again_and_stored_once(workspace, live_url, tmp_path):
    run, token = running_run(workspace)
    script = tmp_path / "train.py"
    script.write_text(LOG_THOUSAND_POINTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINHUB_", "DJANGO_", "DATABASE_URL"))}
    with LosingProxy(live_url, r"^POST .*/metrics$", mode=DROP) as proxy:
        env.update(
            PYTHONPATH=str(BASE_DIR),
            TRAINHUB_RUN_ID=run.run_id,
            TRAINHUB_RUN_TOKEN=token,
            TRAINHUB_SERVER_URL=proxy.url,
            TRAINHUB_WORKSPACE=run.workspace.name,
            TRAINHUB_EXPERIMENT=run.experiment.name,
        )
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert "stored 999.0" in done.stdout
    assert "could not be sent" not in done.stderr and "refused" not in done.stderr
    ((_, _, status),) = proxy.lost
    assert status == 200  # the server stored the first attempt; its answer never arrived
    sent = keys_of(proxy, "POST", "/metrics")
    assert sent[0] is not None and sent.count(sent[0]) == 2
    series = MetricSeries.objects.get(run=run, name="loss")
    assert series.count == 1000 and series.last_step == 999 and series.last_value == 999.0


def test_a_model_registration_answered_504_by_a_gateway_makes_one_version(workspace, live_url, owner_token, tmp_path):
    local = tmp_path / "model.pt"
    local.write_bytes(b"weights" * 1000)
    with LosingProxy(live_url, r"^POST .*/models/heron/versions$", mode=GATEWAY_TIMEOUT) as proxy:
        ws = Workspace.get("birds", url=proxy.url, token=owner_token)
        model = Model.register(ws, str(local), "heron", tags={"try": "1"}, show_progress=False)

    assert (model.name, model.version, model.tags) == ("heron", 1, {"try": "1"})
    ((_, _, status),) = proxy.lost
    assert status == 201
    sent = keys_of(proxy, "POST", "/models/heron/versions")
    assert len(sent) == 2 and sent[0] is not None and sent[0] == sent[1]
    assert list(ModelVersion.objects.filter(model__name="heron").values_list("version", flat=True)) == [1]


@pytest.mark.postgres  # make test runs it against PostgreSQL too: deleting unheld files locks rows
def test_an_upload_chunk_whose_answer_was_lost_is_sent_again_and_the_file_stored_once(
    workspace, live_url, owner_token, tmp_path
):
    local = tmp_path / "model.pt"
    local.write_bytes(b"chunked" * 1000)
    sha256 = hashlib.sha256(local.read_bytes()).hexdigest()
    # The first PUT asks how much the server holds; the second carries the bytes and commits them.
    with LosingProxy(live_url, r"^PUT .*/model-blobs/", mode=DROP, nth=2) as proxy:
        ws = Workspace.get("birds", url=proxy.url, token=owner_token)
        model = Model.register(ws, str(local), "egret", show_progress=False)
        target = tmp_path / "back"
        model.download(target_dir=str(target))

    ((_, _, status),) = proxy.lost
    assert status == 201
    assert [method for method, path, _ in proxy.seen if "/model-blobs/" in path] == ["PUT"] * 3
    assert ModelBlob.objects.filter(workspace=workspace, sha256=sha256).count() == 1
    assert (target / "model.pt").read_bytes() == local.read_bytes()


def test_a_post_without_an_idempotency_key_is_sent_once(workspace, live_url, owner_token):
    with LosingProxy(live_url, r"^POST .*/datastores$", mode=DROP) as proxy:
        ws = Workspace.get("birds", url=proxy.url, token=owner_token)
        with pytest.raises(exceptions.ServerUnreachableError, match="Cannot reach"):
            Datastore.register(ws, "feathers")

    assert keys_of(proxy, "POST", "/datastores") == [None]
    assert DatastoreRow.objects.filter(workspace=workspace, name="feathers").count() == 1


def test_a_submit_whose_answer_was_lost_is_sent_again_and_makes_one_run(
    workspace, owner, live_url, owner_token, tmp_path
):
    from runs.models import Run
    from tests.runs.builders import make_cluster
    from trainhub.environments.services import seed_demo
    from trainhub.sdk import Experiment, ScriptRunConfig

    seed_demo(workspace=workspace, user=owner)
    make_cluster(workspace, name="cpu-cluster")
    (tmp_path / "train.py").write_text("print('hello')\n")
    config = ScriptRunConfig(str(tmp_path), "train.py", compute_target="cpu-cluster")
    with LosingProxy(live_url, r"^POST .*/experiments/lost/runs$", mode=DROP, nth=2) as proxy:
        ws = Workspace.get("birds", url=proxy.url, token=owner_token)
        run = Experiment(ws, "lost").submit(config, show_progress=False)  # the first POST: snapshot unknown

    ((_, _, status),) = proxy.lost
    assert status == 201  # the server made the run; its answer never arrived
    sent = keys_of(proxy, "POST", "/experiments/lost/runs")
    assert len(sent) == 3 and sent[1] is not None and sent[1] == sent[2] and sent[0] != sent[1]
    assert list(Run.objects.values_list("run_id", flat=True)) == [run.id]


def test_a_sweep_submit_whose_answer_was_lost_is_sent_again_and_makes_one_sweep(
    workspace, owner, live_url, owner_token, tmp_path
):
    from runs.models import Run
    from sweeps.models import Sweep
    from tests.runs.builders import make_cluster
    from trainhub.environments.services import seed_demo
    from trainhub.sdk import Experiment, ScriptRunConfig
    from trainhub.sdk.train.hyperdrive import GridParameterSampling, HyperDriveConfig, PrimaryMetricGoal, choice

    seed_demo(workspace=workspace, user=owner)
    make_cluster(workspace, name="cpu-cluster")
    (tmp_path / "train.py").write_text("print('hello')\n")
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(str(tmp_path), "train.py", compute_target="cpu-cluster"),
        hyperparameter_sampling=GridParameterSampling({"lr": choice(0.01, 0.1)}),
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=2,
        max_concurrent_runs=1,
    )
    with LosingProxy(live_url, r"^POST .*/experiments/lost/sweeps$", mode=DROP, nth=2) as proxy:
        ws = Workspace.get("birds", url=proxy.url, token=owner_token)
        hd_run = Experiment(ws, "lost").submit(config, show_progress=False)  # the first POST: snapshot unknown

    ((_, _, status),) = proxy.lost
    assert status == 201  # the server made the sweep; its answer never arrived
    sent = keys_of(proxy, "POST", "/experiments/lost/sweeps")
    assert len(sent) == 3 and sent[1] is not None and sent[1] == sent[2] and sent[0] != sent[1]
    assert list(Sweep.objects.values_list("parent__run_id", flat=True)) == [hd_run.id]
    assert Run.objects.filter(parent__isnull=True).count() == 1
