"""Registry pages, endpoints and downloads answer 404 to outsiders; readers look, never change."""

from __future__ import annotations

import json

import pytest

from registry.models import ModelVersion
from tests.conftest import api_client, issue_token
from tests.registry.builders import register, run_with_outputs

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(workspace, owner) -> ModelVersion:
    run = run_with_outputs(workspace, {"outputs/model.pt": b"weights", "outputs/extra/a.txt": b"a"})
    register(workspace, owner, run, path="outputs/extra", name="folder-model")
    return register(workspace, owner, run, tags={"stage": "dev"})


def page_urls(version) -> list[str]:
    base = f"/w/{version.model.workspace.name}/models"
    name, number = version.model.name, version.version
    return [
        f"{base}/",
        f"{base}/?q=stage",
        f"{base}/{name}/",
        f"{base}/{name}/{number}/",
        f"{base}/{name}/{number}/download",
        f"{base}/{name}/{number}/file?path=model.pt",
        f"{base}/folder-model/1/download",
    ]


def api_urls(version) -> list[str]:
    base = f"/api/v1/workspaces/{version.model.workspace.name}"
    name, number = version.model.name, version.version
    blob = "0" * 64
    return [
        f"{base}/models",
        f"{base}/models/{name}",
        f"{base}/models/{name}/versions/{number}",
        f"{base}/models/{name}/versions/{number}/file?path=model.pt",
        f"{base}/models/{name}/versions/{number}/download",
        f"{base}/model-blobs/{blob}",
    ]


def test_members_see_every_page(client_for, reader, version):
    client = client_for(reader)
    for url in page_urls(version):
        assert client.get(url).status_code == 200, url


def test_outsiders_get_404_on_every_page(client_for, outsider, version):
    client = client_for(outsider)
    for url in page_urls(version):
        assert client.get(url).status_code == 404, url


def test_anonymous_visitors_are_sent_to_sign_in(client, version):
    for url in page_urls(version):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url


def test_outsiders_get_404_on_every_endpoint(other_workspace, outsider, version):
    client = api_client(issue_token(other_workspace, outsider))
    for url in api_urls(version):
        assert client.get(url).status_code == 404, url
    base = "/api/v1/workspaces/birds"
    writes = [
        (
            "post",
            f"{base}/models/pytorch-birds/versions",
            {"run_id": version.run_identifier, "model_path": "outputs/model.pt"},
        ),
        ("patch", f"{base}/models/pytorch-birds/versions/1/tags", {"add": {"x": "y"}}),
        ("delete", f"{base}/models/pytorch-birds/versions/1", None),
        (
            "post",
            f"{base}/models/pytorch-birds/versions/1/onnx-exports",
            {"sample_input_shape": [1, 8]},
        ),
        ("put", f"{base}/model-blobs/{'0' * 64}", None),
    ]
    for method, url, body in writes:
        response = getattr(client, method)(url, data=json.dumps(body) if body else b"", content_type="application/json")
        assert response.status_code == 404, url
    assert ModelVersion.objects.filter(model__name="pytorch-birds").count() == 1
    assert version.tags == {"stage": "dev"}


def test_outsiders_cannot_post_pages(client_for, outsider, version):
    client = client_for(outsider)
    base = "/w/birds/models/pytorch-birds/1"
    assert client.post(f"{base}/delete/").status_code == 404
    assert client.post(f"{base}/export-onnx/", {"sample_input_shape": "1,8"}).status_code == 404
    assert ModelVersion.objects.filter(pk=version.pk).exists()


def test_the_models_of_another_workspace_are_not_found_through_mine(owner, workspace, other_workspace, outsider):
    foreign = run_with_outputs(other_workspace, {"outputs/model.pt": b"theirs"})
    register(other_workspace, outsider, foreign, name="secret-model")
    client = api_client(issue_token(workspace, owner))
    assert client.get("/api/v1/workspaces/birds/models/secret-model").status_code == 404
    answer = client.post(
        "/api/v1/workspaces/birds/models/stolen/versions",
        data=json.dumps({"run_id": foreign.run_id, "model_path": "outputs/model.pt"}),
        content_type="application/json",
    )
    assert answer.status_code == 404


def test_a_reader_can_download_but_not_change(workspace, reader, version):
    client = api_client(issue_token(workspace, reader))
    base = "/api/v1/workspaces/birds/models/pytorch-birds/versions/1"
    assert client.get(f"{base}/file?path=model.pt").status_code == 200
    assert (
        client.patch(f"{base}/tags", data=json.dumps({"add": {"x": "1"}}), content_type="application/json").status_code
        == 403
    )
    assert client.delete(base).status_code == 403
    assert (
        client.post(
            f"{base}/onnx-exports",
            data=json.dumps({"sample_input_shape": [1, 8]}),
            content_type="application/json",
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/api/v1/workspaces/birds/models/pytorch-birds/versions",
            data=json.dumps({"run_id": version.run_identifier, "model_path": "outputs/model.pt"}),
            content_type="application/json",
        ).status_code
        == 403
    )
    assert ModelVersion.objects.filter(model__name="pytorch-birds").count() == 1


def test_a_reader_sees_no_write_buttons(client_for, reader, version):
    page = client_for(reader).get("/w/birds/models/pytorch-birds/1/").content.decode()
    assert "Export to ONNX" not in page
    assert "Delete version" not in page
    assert client_for(reader).post("/w/birds/models/pytorch-birds/1/delete/").status_code == 403
