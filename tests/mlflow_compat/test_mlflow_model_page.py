"""The registry page of a version that is an MLflow model: its flavors and signature, read from the
member's MLmodel file as plain data (a hostile one is shown as no MLflow model, and runs nothing)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from tests.registry.builders import register, run_with_outputs

pytestmark = pytest.mark.django_db

SIGNATURE_INPUTS = json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}])
MLMODEL = f"""
artifact_path: model
flavors:
  python_function:
    loader_module: mlflow.pytorch
  pytorch:
    pytorch_version: 2.13.0
mlflow_version: 3.17.2
signature:
  inputs: '{SIGNATURE_INPUTS}'
  outputs: '[{{"type": "tensor", "tensor-spec": {{"dtype": "float32", "shape": [-1, 1]}}}}]'
  params: null
""".encode()


def page_of(workspace, owner, files: dict[str, bytes]) -> str:
    version = register(workspace, owner, run_with_outputs(workspace, files), name="net", path="outputs/model")
    client = Client()
    client.force_login(owner)
    response = client.get(f"/w/{workspace.name}/models/net/{version.version}/")
    assert response.status_code == 200
    return response.content.decode()


def test_it_says_the_version_is_an_mlflow_model_and_shows_its_signature(workspace, owner):
    html = page_of(workspace, owner, {"outputs/model/MLmodel": MLMODEL, "outputs/model/data/model.pth": b"w"})
    assert 'id="mlflow-model"' in html and "Logged with MLflow 3.17.2" in html
    assert "<code>python_function</code>, <code>pytorch</code>" in html
    assert "<td>input</td><td>#0</td><td>tensor of float32</td><td>(-1, 4)</td>" in html
    assert "<td>output</td><td>#0</td><td>tensor of float32</td><td>(-1, 1)</td>" in html


def test_a_model_without_signature_says_so(workspace, owner):
    html = page_of(workspace, owner, {"outputs/model/MLmodel": b"flavors:\n  pytorch: {}\n"})
    assert 'id="mlflow-model"' in html and "No signature was logged with it." in html


def test_a_hostile_mlmodel_is_read_as_data_only(workspace, owner, tmp_path):
    marker = tmp_path / "pwned"
    hostile = f'flavors: !!python/object/apply:os.system ["touch {marker}"]\n'.encode()
    html = page_of(workspace, owner, {"outputs/model/MLmodel": hostile})
    assert 'id="mlflow-model"' not in html
    assert not marker.exists()


def test_other_versions_show_no_mlflow_section(workspace, owner):
    html = page_of(workspace, owner, {"outputs/model/weights.pt": b"w"})
    assert 'id="mlflow-model"' not in html
