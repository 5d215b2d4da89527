"""A script instrumented with MLflow only, run by a real node in an environment the node built with
`mlflow` as a pip requirement: everything it logs is the TrainHub run's, and its model registers."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import mlflow
import pytest
import torch
from django.test import Client

from metrics.models import MetricSeries
from runs.models import Run
from trainhub.sdk import Environment, Experiment, Model, ScriptRunConfig
from trainhub.sdk.compute import ComputeTarget

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PROJECT = Path(__file__).parent / "projects" / "mlflow_train"
LIGHTNING = "2.6.6"


def test_an_mlflow_script_logs_into_its_run_and_its_model_registers(ws, node, owner, tmp_path):
    requirements = tmp_path / "requirements.txt"
    # The same mlflow and matplotlib as the test's own, and the Lightning that mlflow.pytorch.autolog
    # instruments: one environment for the module, built from the warm cache.
    requirements.write_text(
        f"torch==2.13.0\nmlflow=={mlflow.__version__}\nmatplotlib=={matplotlib.__version__}\n"
        f"pytorch-lightning=={LIGHTNING}\n"
    )
    src = ScriptRunConfig(
        source_directory=str(PROJECT),
        script="train.py",
        compute_target=ComputeTarget(workspace=ws, name="cpu-cluster"),
        environment=Environment.from_pip_requirements(name="mlflow-env", file_path=str(requirements)),
    )
    run = Experiment(ws, name="mlflow-script").submit(src, show_progress=False)
    details = run.wait_for_completion()
    assert details["status"] == "Completed", "\n".join(run.iter_log())[-4000:]
    stored = Run.objects.get(run_id=run.id)
    log = "\n".join(run.iter_log())

    # mlflow.start_run() resumed this run, in its experiment; another run's id was refused.
    assert f"mlflow run {run.id} experiment {stored.experiment_id}" in log
    assert "another run refused: RestException RESOURCE_DOES_NOT_EXIST" in log
    assert stored.parameters["lr"] == "0.05" and stored.parameters["hidden"] == "8"
    # Lightning's fit, autologged: its params, its per-epoch metric and its model.
    assert stored.parameters["epochs"] == "3" and stored.parameters["optimizer_name"] == "SGD"
    assert MetricSeries.objects.get(run=stored, name="train_loss").count == 3
    # end_run(status="KILLED") is recorded; the run completed, as its process exited 0.
    assert stored.properties["mlflow.endRunStatus"] == "KILLED"
    assert stored.tags["framework"] == "torch" and stored.tags["source"] == "mlflow-script"
    loss = MetricSeries.objects.get(run=stored, name="loss")
    assert loss.count == 30 and loss.last_step == 29
    batch = MetricSeries.objects.get(run=stored, name="batch_metric")
    assert (batch.count, batch.last_step, batch.last_value) == (1200, 1199, 1199.0)
    assert len(run.get_metrics()["loss"]) == 30
    files = set(run.get_file_names())
    assert {
        "outputs/reports/summary.txt",
        "outputs/model/MLmodel",
        "outputs/model-2/MLmodel",  # autolog's model, beside the one log_model named "model"
        "outputs/plots/loss.png",
        "outputs/notes/readme.txt",
        "outputs/config.yaml",
    } <= files, sorted(files)
    figure = Path(run.download_file("outputs/plots/loss.png", str(tmp_path / "loss.png")))
    assert figure.read_bytes().startswith(b"\x89PNG")
    config = Path(run.download_file("outputs/config.yaml", str(tmp_path / "config.yaml"))).read_text()
    assert "hidden: 8" in config and "lr: 0.05" in config

    # The run page shows what the script logged.
    page = Client()
    page.force_login(owner)
    html = page.get(f"/w/birds/runs/{run.id}/").content.decode()
    assert "lr=0.05" in html and "framework=torch" in html and "outputs/model/MLmodel" in html

    # Its model registers like any other output, says it is an MLflow model, and comes back whole.
    version = run.register_model(model_name="mlflow-net", model_path="outputs/model")
    shown = page.get(f"/w/birds/models/mlflow-net/{version.version}/").content.decode()
    assert 'id="mlflow-model"' in shown and "<code>pytorch</code>" in shown
    assert 'id="mlflow-signature"' in shown and "tensor of float32" in shown and "(-1, 4)" in shown
    folder = Path(Model(ws, name="mlflow-net").download(target_dir=str(tmp_path / "download")))
    assert (folder / "MLmodel").exists(), sorted(str(p) for p in (tmp_path / "download").rglob("*"))
    loaded = mlflow.pytorch.load_model(str(folder))  # the test trusts this model: it made it
    assert loaded(torch.zeros(1, 4)).shape == (1, 1)
