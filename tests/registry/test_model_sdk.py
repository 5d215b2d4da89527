"""The SDK's Model as the guide uses it: register local files, get, list, tags, delete."""

from __future__ import annotations

import hashlib

import pytest

from registry.models import ModelBlob, ModelVersion
from tests.registry.builders import register, run_with_outputs
from trainhub.sdk import Model, Run
from trainhub.sdk.exceptions import NotFoundError, PermissionDeniedError


def test_a_local_file_is_registered_with_a_progress_bar(sdk_ws, tmp_path, capsys):
    local = tmp_path / "model.pt"
    local.write_bytes(b"\x00weights" * 50_000)
    model = Model.register(
        workspace=sdk_ws,
        model_path=str(local),
        model_name="pytorch-birds",
        tags={"area": "birds", "type": "cnn"},
        properties={"accuracy": 0.91},
        description="Birds, first try",
    )
    assert "Uploading model.pt" in capsys.readouterr().err
    assert (model.name, model.version, model.id) == ("pytorch-birds", 1, "pytorch-birds:1")
    assert model.tags == {"area": "birds", "type": "cnn"}
    assert model.properties == {"accuracy": "0.91"}
    assert model.description == "Birds, first try"
    assert model.files[0]["sha256"] == hashlib.sha256(local.read_bytes()).hexdigest()
    assert model.model_framework == "PyTorch" and model.model_framework_version.startswith("2.13")
    assert model.created_by == "olivia" and model.run_id is None
    assert model.url.endswith("/w/birds/models/pytorch-birds/1/")


def test_an_identical_file_is_uploaded_once(sdk_ws, tmp_path, capsys):
    local = tmp_path / "model.pt"
    local.write_bytes(b"same bytes")
    Model.register(sdk_ws, str(local), "first")
    capsys.readouterr()
    second = Model.register(sdk_ws, str(local), "second")
    assert "Uploading" not in capsys.readouterr().err
    assert second.version == 1
    assert ModelBlob.objects.count() == 1


def test_a_local_folder_keeps_its_layout_and_skips_symlinks(sdk_ws, tmp_path):
    folder = tmp_path / "export"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"w" * 10)
    (folder / "passwd").symlink_to("/etc/passwd")
    model = Model.register(sdk_ws, str(folder), "folder-model", show_progress=False)
    assert model.is_folder and model.root == "export"
    assert [f["path"] for f in model.files] == ["export/config.json", "export/sub/weights.bin"]
    target = tmp_path / "down"
    assert model.download(str(target)) == str(target / "export")
    assert (target / "export" / "sub" / "weights.bin").read_bytes() == b"w" * 10


def test_versions_are_numbered_and_fetched_by_number_or_latest(sdk_ws, tmp_path):
    local = tmp_path / "model.pt"
    for content in (b"one", b"two", b"three"):
        local.write_bytes(content)
        Model.register(sdk_ws, str(local), "pytorch-birds", show_progress=False)
    assert Model(sdk_ws, name="pytorch-birds").version == 3
    assert Model(sdk_ws, name="pytorch-birds", version=2).files[0]["sha256"] == hashlib.sha256(b"two").hexdigest()
    assert Model(sdk_ws, id="pytorch-birds:1").version == 1
    with pytest.raises(NotFoundError, match="has no version 9"):
        Model(sdk_ws, name="pytorch-birds", version=9)
    with pytest.raises(NotFoundError, match="No model 'nope'"):
        Model(sdk_ws, name="nope")


def test_list_filters_by_name_and_tags(sdk_ws, tmp_path):
    local = tmp_path / "model.pt"
    local.write_bytes(b"x")
    Model.register(sdk_ws, str(local), "a", tags={"stage": "dev"}, show_progress=False)
    Model.register(sdk_ws, str(local), "a", tags={"stage": "prod"}, show_progress=False)
    Model.register(sdk_ws, str(local), "b", tags={"stage": "prod", "team": "vision"}, show_progress=False)
    assert [m.id for m in Model.list(sdk_ws)] == ["a:2", "a:1", "b:1"]
    assert [m.id for m in Model.list(sdk_ws, name="a")] == ["a:2", "a:1"]
    assert [m.id for m in Model.list(sdk_ws, tags=[["stage", "prod"]])] == ["a:2", "b:1"]
    assert [m.id for m in Model.list(sdk_ws, tags=["team"])] == ["b:1"]
    assert [m.id for m in Model.list(sdk_ws, latest=True)] == ["a:2", "b:1"]


def test_tags_change_but_nothing_else_does(sdk_ws, tmp_path):
    local = tmp_path / "model.pt"
    local.write_bytes(b"x")
    model = Model.register(sdk_ws, str(local), "m", tags={"stage": "dev"}, show_progress=False)
    model.add_tags({"stage": "prod", "owner": "olivia"})
    assert model.tags == {"stage": "prod", "owner": "olivia"}
    model.remove_tags(["stage"])
    assert Model(sdk_ws, name="m").tags == {"owner": "olivia"}


def test_a_deleted_number_is_never_given_again(sdk_ws, tmp_path):
    local = tmp_path / "model.pt"
    local.write_bytes(b"one")
    Model.register(sdk_ws, str(local), "m", show_progress=False)
    local.write_bytes(b"two")
    Model.register(sdk_ws, str(local), "m", show_progress=False).delete()
    assert ModelBlob.objects.count() == 1  # the deleted version's upload went with it
    Model(sdk_ws, name="m", version=1).delete()
    local.write_bytes(b"three")
    assert Model.register(sdk_ws, str(local), "m", show_progress=False).version == 3
    assert list(ModelVersion.objects.values_list("version", flat=True)) == [3]


def test_a_reader_cannot_register(live_url, workspace, reader, tmp_path):
    from tests.conftest import issue_token
    from trainhub.sdk import Workspace

    local = tmp_path / "model.pt"
    local.write_bytes(b"x")
    ws = Workspace.get("birds", url=live_url, token=issue_token(workspace, reader))
    with pytest.raises(PermissionDeniedError, match="reader"):
        Model.register(ws, str(local), "m", show_progress=False)


def test_run_register_model_references_the_runs_stored_file(sdk_ws, workspace, owner):
    from trainhub.sdk import Experiment

    run = run_with_outputs(workspace, {"outputs/model.pt": b"trained", "outputs/tok/vocab.txt": b"a b"})
    sdk_run = Run(Experiment(sdk_ws, run.experiment.name), run.run_id)
    model = sdk_run.register_model(
        model_name="pytorch-birds",
        model_path="outputs/model.pt",
        tags={"area": "birds"},
        properties={"epochs": 3},
        description="from a run",
    )
    assert (model.version, model.run_id, model.experiment_name) == (
        1,
        run.run_id,
        run.experiment.name,
    )
    assert model.environment == {"name": "TrainHub-PyTorch-2.13-CPU", "version": None}
    assert model.snapshot == run.snapshot.sha256
    stored = run.files.get(path="outputs/model.pt")
    version = ModelVersion.objects.get(model__name="pytorch-birds")
    assert version.files.get().storage_name == stored.storage_name
    folder = sdk_run.register_model("tokenizer", "outputs/tok/")
    assert folder.is_folder and [f["path"] for f in folder.files] == ["tok/vocab.txt"]
    assert register(workspace, owner, run).version == 2
