"""Asking for an ONNX export (checks, the run it submits) and the export run's report: only that
run's token may report, the tolerance decides, a passing report registers `<name>-onnx`."""

from __future__ import annotations

import hashlib
import json

import pytest

from registry import exports
from registry.models import OnnxExport
from runs.models import RunStatus
from tests.conftest import api_client
from tests.registry.builders import access_of, register, run_with_outputs
from tests.runs.builders import make_cluster
from trainhub.workspaces.selectors import hash_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(workspace, owner):
    from trainhub.environments.services import seed_demo

    seed_demo(workspace=workspace, user=owner)
    cluster = make_cluster(workspace, name="cpu-cluster")
    run = run_with_outputs(
        workspace,
        {
            "outputs/model.pt": b"pickled module",
            "outputs/b/c.pt": b"other",
            "outputs/b/c.json": b"{}",
        },
        cluster=cluster,
    )
    return register(workspace, owner, run)


def start(version, owner, **extra):
    values = {"sample_input_shape": [1, 8]}
    values.update(extra)
    return exports.onnx_export_start(
        access=access_of(version.model.workspace, owner), user=owner, version=version, **values
    )


def running_with_token(export, token: str) -> str:
    """What the dispatcher does for a node: a run token (the test plays the node)."""
    type(export.run).objects.filter(pk=export.run.pk).update(status=RunStatus.RUNNING, token_hash=hash_token(token))
    return token


def test_an_export_is_a_run_in_the_models_environment_plus_onnx(version, owner):
    export = start(version, owner, opset=13)
    run = export.run
    assert run.experiment.name == exports.EXPORT_EXPERIMENT
    assert run.command[:3] == ["python", "-m", "trainhub.sdk._onnx_export"]
    assert run.command[run.command.index("--file") + 1] == "model.pt"
    assert run.command[run.command.index("--opset") + 1] == "13"
    assert run.environment_name == "TrainHub-PyTorch-2.13-CPU + onnx"
    assert run.environment_spec["pip"] == ["onnx>=1.17", "onnxruntime>=1.20"]
    assert run.snapshot == version.run.snapshot  # the model's own source, so its classes import
    assert run.cluster.name == "cpu-cluster"
    assert export.state == "Queued"


def test_an_export_never_takes_the_variables_of_the_models_run(version, owner):
    """#16: `PYTHONPATH: "."` in the run's environment and a shadowing module in its snapshot would
    run the member's code wherever the export's variables reach; the export keeps the run's
    packages and drops its variables."""
    type(version.run).objects.filter(pk=version.run.pk).update(
        environment_spec={
            **version.run.environment_spec,
            "pip": ["six"],
            "environment_variables": {"PYTHONPATH": ".", "LD_PRELOAD": "./evil.so"},
        }
    )
    version.run.refresh_from_db()
    run = start(version, owner).run
    assert run.environment_spec["environment_variables"] == {}
    assert run.environment_spec["pip"] == ["six", "onnx>=1.17", "onnxruntime>=1.20"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"sample_input_shape": []}, exports.BAD_SHAPE),
        ({"sample_input_shape": [1, 0]}, exports.BAD_SHAPE),
        (
            {"sample_input_shape": [1024, 1024, 1024]},
            exports.SHAPE_TOO_LARGE.format(limit=exports.MAX_INPUT_ELEMENTS),
        ),
        ({"opset": 99}, exports.BAD_OPSET),
        ({"tolerance": -1}, exports.BAD_TOLERANCE),
        ({"compute_target": "nowhere"}, exports.UNKNOWN_COMPUTE.format(name="nowhere")),
    ],
)
def test_bad_export_requests_are_refused(version, owner_token, values, message):
    body = {"sample_input_shape": [1, 8]}
    body.update(values)
    answer = api_client(owner_token).post(
        "/api/v1/workspaces/birds/models/pytorch-birds/versions/1/onnx-exports",
        data=json.dumps(body),
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == message
    assert not OnnxExport.objects.exists()


def test_a_folder_needs_exactly_one_model_file(version, workspace, owner):
    from django.core.exceptions import ValidationError

    two = register(workspace, owner, version.run, name="two", path="outputs")
    with pytest.raises(ValidationError) as error:
        start(two, owner)
    assert error.value.messages == [
        exports.NO_MODEL_FILE.format(name="two", version=1, suffixes=", ".join(exports.MODEL_SUFFIXES))
    ]
    one = register(workspace, owner, version.run, name="one", path="outputs/b")
    command = start(one, owner).run.command
    assert command[command.index("--file") + 1] == "b/c.pt"


def test_only_the_export_runs_token_may_report(version, owner, owner_token):
    export = start(version, owner)
    other = start(version, owner)
    running_with_token(export, "thr_the-export-run")
    intruder = running_with_token(other, "thr_another-run")
    url = f"/api/v1/workspaces/birds/onnx-exports/{export.pk}/report"
    body = json.dumps({"passed": False, "max_abs_diff": 0.5, "message": "forged"})
    for token in (intruder, owner_token):
        answer = api_client(token).post(url, data=body, content_type="application/json")
        assert answer.status_code == 403
        assert answer.json()["detail"] == exports.NOT_THIS_EXPORT
    export.refresh_from_db()
    assert export.passed is None and export.message == ""


def test_a_difference_above_the_tolerance_fails_whatever_the_job_says(version, owner):
    export = start(version, owner, tolerance=1e-4)
    client = api_client(running_with_token(export, "thr_export"))
    url = f"/api/v1/workspaces/birds/onnx-exports/{export.pk}/report"
    answer = client.post(
        url,
        data=json.dumps({"passed": True, "max_abs_diff": 2e-3}),
        content_type="application/json",
    )
    assert answer.status_code == 200
    assert answer.json()["state"] == "Failed" and answer.json()["max_abs_diff"] == 2e-3
    assert answer.json()["result"] is None
    again = client.post(url, data=json.dumps({"passed": True, "max_abs_diff": 0}), content_type="application/json")
    assert again.json()["detail"] == exports.ALREADY_REPORTED.format(pk=export.pk)


def test_a_passing_report_registers_the_onnx_version(version, owner, client_for, reader):
    export = start(version, owner)
    client = api_client(running_with_token(export, "thr_export"))
    onnx = b"\x08\x07onnx bytes"
    sha = hashlib.sha256(onnx).hexdigest()
    assert (
        client.put(
            f"/api/v1/workspaces/birds/model-blobs/{sha}",
            data=onnx,
            content_type="application/octet-stream",
        ).status_code
        == 201
    )
    answer = client.post(
        f"/api/v1/workspaces/birds/onnx-exports/{export.pk}/report",
        data=json.dumps(
            {
                "passed": True,
                "max_abs_diff": 3.5e-8,
                "onnx_sha256": sha,
                "onnx_size": len(onnx),
                "details": {"onnx": "1.23.1", "loader": "TorchScript"},
            }
        ),
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.json()
    assert answer.json()["state"] == "Succeeded" and answer.json()["result"] == "pytorch-birds-onnx:1"
    export.refresh_from_db()
    result = export.result
    assert (result.framework, result.framework_version, result.run_id) == (
        "Onnx",
        "1.23.1",
        export.run_id,
    )
    assert result.properties["parity_max_abs_diff"] == "3.5e-08"
    assert result.properties["source_model"] == "pytorch-birds" and result.properties["source_version"] == "1"
    assert [f.path for f in result.files.all()] == ["model.onnx"]
    page = client_for(reader).get("/w/birds/models/pytorch-birds/1/").content.decode()
    assert "3.5e-08" in page and "Succeeded" in page
    onnx_page = client_for(reader).get("/w/birds/models/pytorch-birds-onnx/1/").content.decode()
    assert 'href="/w/birds/models/pytorch-birds/1/">pytorch-birds:1</a> · max |Δ| 3.5e-08' in onnx_page
    assert 'id="export-form"' not in onnx_page
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="already an ONNX model"):
        start(result, owner)


def test_the_version_page_starts_an_export(version, client_for, contributor):
    client = client_for(contributor)
    response = client.post(
        "/w/birds/models/pytorch-birds/1/export-onnx/",
        {"sample_input_shape": "1, 8", "opset": "17"},
    )
    assert response.status_code == 302
    export = OnnxExport.objects.get()
    assert export.sample_input_shape == [1, 8] and export.created_by == contributor
    page = client.get(response["Location"]).content.decode()
    assert f"ONNX export started as run {export.run.run_id}." in page
    assert "Queued" in page
    client.post("/w/birds/models/pytorch-birds/1/export-onnx/", {"sample_input_shape": "one by eight"})
    assert OnnxExport.objects.count() == 1
