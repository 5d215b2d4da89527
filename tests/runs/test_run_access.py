"""Run pages, endpoints and downloads answer 404 to outsiders; readers cannot submit or cancel."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.base import ContentFile

from runs.models import RunFile, RunStatus
from runs.services import log_append
from tests.conftest import api_client, issue_token
from tests.runs.builders import make_cluster, make_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(workspace):
    run = make_run(workspace, status=RunStatus.COMPLETED)
    from django.core.files.storage import default_storage

    name = default_storage.save(f"runs/{run.run_id}/outputs/model.pt", ContentFile(b"weights"))
    RunFile.objects.create(
        run=run, path="outputs/model.pt", size=7, sha256=hashlib.sha256(b"weights").hexdigest(), storage_name=name
    )
    return run


def page_urls(run) -> list[str]:
    base = f"/w/{run.workspace.name}"
    return [
        f"{base}/experiments/",
        f"{base}/experiments/{run.experiment.name}/",
        f"{base}/runs/{run.run_id}/",
        f"{base}/runs/{run.run_id}/file?path=outputs/model.pt",
        f"{base}/runs/{run.run_id}/log.txt",
        f"{base}/compute/",
        f"{base}/compute/{run.cluster.name}/",
    ]


def api_urls(run) -> list[str]:
    base = f"/api/v1/workspaces/{run.workspace.name}"
    return [
        f"{base}/runs/{run.run_id}",
        f"{base}/runs/{run.run_id}/logs",
        f"{base}/runs/{run.run_id}/files",
        f"{base}/runs/{run.run_id}/file?path=outputs/model.pt",
        f"{base}/experiments",
        f"{base}/experiments/{run.experiment.name}/runs",
        f"{base}/computes",
        f"{base}/computes/{run.cluster.name}",
    ]


def test_members_see_every_page(client_for, reader, run):
    client = client_for(reader)
    for url in page_urls(run):
        assert client.get(url).status_code == 200, url


def test_outsiders_get_404_on_every_page(client_for, outsider, run):
    client = client_for(outsider)
    for url in page_urls(run):
        assert client.get(url).status_code == 404, url


def test_outsiders_get_404_on_every_endpoint(other_workspace, outsider, run):
    client = api_client(issue_token(other_workspace, outsider))
    for url in api_urls(run):
        assert client.get(url).status_code == 404, url


def test_a_run_of_another_workspace_is_not_found_through_my_workspace(owner, workspace, other_workspace, outsider):
    foreign = make_run(other_workspace)
    client = api_client(issue_token(workspace, owner))
    assert client.get(f"/api/v1/workspaces/birds/runs/{foreign.run_id}").status_code == 404


def test_members_download_a_file_byte_for_byte(client_for, reader, run):
    response = client_for(reader).get(f"/w/birds/runs/{run.run_id}/file?path=outputs/model.pt")
    assert b"".join(response) == b"weights"
    assert response["X-Checksum-Sha256"] == hashlib.sha256(b"weights").hexdigest()


def test_a_download_resumes_with_a_range(client_for, reader, run):
    response = client_for(reader).get(f"/w/birds/runs/{run.run_id}/file?path=outputs/model.pt", HTTP_RANGE="bytes=3-")
    assert response.status_code == 206
    assert response["Content-Range"] == "bytes 3-6/7"
    assert b"".join(response) == b"ghts"


@pytest.mark.parametrize("path", ["../../secret_key", "/etc/passwd", "outputs/../../x", "outputs/model.pt\x00"])
def test_a_file_that_is_not_the_runs_is_not_found(client_for, reader, run, path):
    assert client_for(reader).get(f"/w/birds/runs/{run.run_id}/file", {"path": path}).status_code == 404


def test_readers_cannot_cancel(client_for, reader, workspace):
    queued = make_run(workspace)
    response = client_for(reader).post(f"/w/birds/runs/{queued.run_id}/cancel/")
    assert response.status_code == 403
    queued.refresh_from_db()
    assert queued.status == RunStatus.QUEUED
    api = api_client(issue_token(workspace, reader))
    assert api.post(f"/api/v1/workspaces/birds/runs/{queued.run_id}/cancel").status_code == 403


def test_cancelling_a_queued_run_ends_it_at_once(client_for, contributor, workspace):
    queued = make_run(workspace)
    client_for(contributor).post(f"/w/birds/runs/{queued.run_id}/cancel/")
    queued.refresh_from_db()
    assert queued.status == RunStatus.CANCELED


def test_the_full_log_downloads_in_order(client_for, reader, workspace):
    run = make_run(workspace)
    log_append(run.pk, "std_log_process_0", ["one", "two"])
    log_append(run.pk, "std_log_process_0", ["three"])
    response = client_for(reader).get(f"/w/birds/runs/{run.run_id}/log.txt")
    assert b"".join(response) == b"one\ntwo\nthree\n"


def test_log_lines_are_escaped_on_the_page(client_for, reader, workspace):
    run = make_run(workspace)
    log_append(run.pk, "std_log_process_0", ["<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>"])
    body = client_for(reader).get(f"/w/birds/runs/{run.run_id}/").content.decode()
    assert "<img src=x" not in body
    assert "</script><script>alert(2)" not in body


def test_the_experiment_page_pages_by_keyset(client_for, reader, workspace):
    cluster = make_cluster(workspace)
    runs = [make_run(workspace, cluster, experiment="many") for _ in range(55)]
    client = client_for(reader)
    first = client.get("/w/birds/experiments/many/").content.decode()
    assert f"#{runs[-1].number}<" in first and f"#{runs[5].number}<" in first
    assert f"#{runs[4].number}<" not in first
    second = client.get(f"/w/birds/experiments/many/?before={runs[5].pk}").content.decode()
    assert f"#{runs[4].number}<" in second and f"#{runs[0].number}<" in second
    completed = client.get("/w/birds/experiments/many/?status=Completed").content.decode()
    assert "No runs with status Completed" in completed
