"""Registering a real run's outputs, from outside the run and from inside the running script,
with lineage back to the run; the run page lists what was registered from it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from registry import services
from registry.models import ModelVersion
from runs.models import Run as RunRow
from trainhub.sdk import Environment, Experiment, Model, ScriptRunConfig
from trainhub.sdk.exceptions import UserErrorException

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).parent / "projects" / "export"


def submit_export_project(ws):
    src = ScriptRunConfig(
        source_directory=str(PROJECT),
        script="train.py",
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )
    run = Experiment(ws, name="pytorch-birds").submit(src, show_progress=False)
    details = run.wait_for_completion(show_output=True)
    assert details["status"] == "Completed"
    return run


def test_a_real_runs_outputs_are_registered_with_lineage(ws, node, client_for, reader, tmp_path, capsys):
    run = submit_export_project(ws)
    assert "registered in run in-run-model:1" in capsys.readouterr().out
    row = RunRow.objects.get(run_id=run.id)

    model = run.register_model(
        model_name="pytorch-birds",
        model_path="outputs/model.pt",
        tags={"area": "birds"},
        properties={"epochs": 5},
        description="A small classifier",
    )
    assert (model.id, model.run_id, model.experiment_name) == (
        "pytorch-birds:1",
        run.id,
        "pytorch-birds",
    )
    assert model.environment == {
        "name": "TrainHub-PyTorch-2.13-CPU",
        "version": row.environment_version,
    }
    assert model.snapshot == row.snapshot.sha256
    assert model.model_framework_version == "2.13.0"
    stored = row.files.get(path="outputs/model.pt")
    assert model.files == [{"path": "model.pt", "size": stored.size, "sha256": stored.sha256}]
    assert ModelVersion.objects.get(model__name="pytorch-birds").files.get().storage_name == stored.storage_name

    run.download_file("outputs/model.pt", str(tmp_path / "from-run.pt"))
    model.download(str(tmp_path / "from-registry"))
    assert (tmp_path / "from-registry" / "model.pt").read_bytes() == (tmp_path / "from-run.pt").read_bytes()

    in_run = Model(ws, name="in-run-model")
    assert in_run.run_id == run.id and in_run.tags == {"phase": "in-run"}
    assert in_run.files[0]["sha256"] == stored.sha256

    bundle = run.register_model(model_name="bundle", model_path="outputs/bundle")
    assert [f["path"] for f in bundle.files] == ["bundle/config.json", "bundle/weights.pt"]

    with pytest.raises(UserErrorException) as refused:
        run.register_model(model_name="evil", model_path="outputs/evil-link.pt")
    assert refused.value.message.startswith(
        services.NOT_IN_RUN.split("{some}")[0].format(run_id=run.id, path="outputs/evil-link.pt")
    )
    folder = run.register_model(model_name="all-outputs", model_path="outputs")
    assert "outputs/evil-link.pt" not in [f["path"] for f in folder.files]

    page = client_for(reader).get(f"/w/birds/runs/{run.id}/").content.decode()
    for link in ("pytorch-birds/1/", "in-run-model/1/", "bundle/1/"):
        assert f'href="/w/birds/models/{link}"' in page
    version_page = client_for(reader).get("/w/birds/models/pytorch-birds/1/").content.decode()
    assert f'href="/w/birds/runs/{run.id}/" id="lineage-run"' in version_page
    assert hashlib.sha256((tmp_path / "from-run.pt").read_bytes()).hexdigest() in version_page
