"""ONNX export through a real node job: parity figure stored, pages show it (a hostile pickle:
tests/hostile/test_pickles.py)."""

from __future__ import annotations

import os

import numpy
import pytest

from registry.exports import DEFAULT_TOLERANCE, EXPORT_EXPERIMENT
from registry.models import OnnxExport
from runs.models import Run as RunRow
from tests.registry.test_register_from_run import submit_export_project
from trainhub.sdk._onnx_export import STATE_DICT
from trainhub.sdk.model import ExportFailedError

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1200)  # a training run and three export runs, each a real node job
def test_a_trained_model_exports_to_onnx_with_its_parity_checked(ws, node, client_for, reader, tmp_path):
    run = submit_export_project(ws)
    model = run.register_model(model_name="pytorch-birds", model_path="outputs/model.pt")

    exported = model.export_onnx(sample_input_shape=[4, 8], opset=17)

    assert (exported.name, exported.version, exported.model_framework) == (
        "pytorch-birds-onnx",
        1,
        "Onnx",
    )
    assert [f["path"] for f in exported.files] == ["model.onnx"]
    export = OnnxExport.objects.get()
    assert export.passed and export.result.model.name == "pytorch-birds-onnx"
    assert 0 <= export.max_abs_diff <= DEFAULT_TOLERANCE
    assert float(exported.properties["parity_max_abs_diff"]) == export.max_abs_diff
    assert exported.properties["source_model"] == "pytorch-birds" and exported.properties["source_version"] == "1"
    assert export.details["loader"] == "pickled nn.Module"
    export_run = RunRow.objects.get(pk=export.run_id)
    assert export_run.experiment.name == EXPORT_EXPERIMENT and export_run.status == "Completed"
    assert export_run.environment_name == "TrainHub-PyTorch-2.13-CPU + onnx"
    assert {"onnx>=1.17", "onnxruntime>=1.20"} <= set(export_run.environment_spec["pip"])
    assert exported.run_id == export_run.run_id

    # The exported file really is the model: same answers as the PyTorch original, here.
    import onnxruntime
    import torch

    onnx_path = exported.download(str(tmp_path))
    model.download(str(tmp_path))
    import sys

    sys.path.insert(0, str(os.path.dirname(__file__) + "/projects/export"))
    try:
        original = torch.load(tmp_path / "model.pt", weights_only=False).eval()
    finally:
        sys.path.pop(0)
    sample = torch.randn(4, 8)
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: sample.numpy()})
    numpy.testing.assert_allclose(got, original(sample).detach().numpy(), atol=1e-5)

    page = client_for(reader).get("/w/birds/models/pytorch-birds/1/").content.decode()
    assert "Succeeded" in page
    assert f"{export.max_abs_diff:.3g}" in page
    assert f'href="/w/birds/runs/{export_run.run_id}/log.txt" class="export-log"' in page
    assert 'href="/w/birds/models/pytorch-birds-onnx/1/"' in page
    logs = ws._http.get(ws.api(f"runs/{export_run.run_id}/logs"))["chunks"]
    text = "\n".join(line for chunk in logs for line in chunk["lines"])
    assert "onnx.checker: model.onnx is valid (opset 17)" in text
    assert f"Parity: max absolute difference {export.max_abs_diff:.3g}" in text

    scripted = run.register_model(model_name="scripted", model_path="outputs/scripted.pt")
    assert scripted.export_onnx(sample_input_shape=[1, 8]).name == "scripted-onnx"
    assert OnnxExport.objects.get(source__model__name="scripted").details["loader"] == "TorchScript"

    weights = run.register_model(model_name="weights-only", model_path="outputs/weights.pt")
    with pytest.raises(ExportFailedError, match="holds a state_dict"):
        weights.export_onnx(sample_input_shape=[1, 8])
    failed = OnnxExport.objects.get(source__model__name="weights-only")
    assert failed.state == "Failed"
    assert failed.message == STATE_DICT.format(file="weights-only:1 weights.pt")
