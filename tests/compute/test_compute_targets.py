"""Compute targets from the portal and the SDK, the VM size catalog, and who may create them."""

from __future__ import annotations

import pytest

from tests.conftest import api_client, issue_token
from trainhub.compute.models import ComputeCluster

pytestmark = pytest.mark.django_db


def test_the_catalog_has_the_guides_sizes(client_for, reader, workspace):
    body = client_for(reader).get("/w/birds/compute/").content.decode()
    for name in ["STANDARD_D2_V2", "STANDARD_D3_V2", "STANDARD_NC6", "STANDARD_NC12", "LOCAL_CPU"]:
        assert name in body
    sizes = {s["name"]: s for s in api_client(issue_token(workspace, reader)).get("/api/v1/vm-sizes/").json()}
    assert sizes["STANDARD_NC6"]["gpus"] == 1 and sizes["STANDARD_NC12"]["gpus"] == 2


def test_a_contributor_creates_a_cluster_in_the_portal(client_for, contributor, workspace):
    response = client_for(contributor).post(
        "/w/birds/compute/",
        {
            "name": "gpu-cluster",
            "vm_size": "STANDARD_NC6",
            "min_nodes": 0,
            "max_nodes": 4,
            "idle_seconds_before_scaledown": 120,
            "provisioner": "manual",
        },
    )
    assert response.status_code == 302
    cluster = ComputeCluster.objects.get(name="gpu-cluster")
    assert (cluster.vm_size, cluster.max_nodes, cluster.idle_seconds_before_scaledown) == ("STANDARD_NC6", 4, 120)


def test_a_reader_cannot_create_a_cluster(client_for, reader, workspace):
    form = {
        "name": "x",
        "vm_size": "STANDARD_D2_V2",
        "min_nodes": 0,
        "max_nodes": 1,
        "idle_seconds_before_scaledown": 1,
        "provisioner": "manual",
    }
    assert client_for(reader).post("/w/birds/compute/", form).status_code == 403
    api = api_client(issue_token(workspace, reader))
    assert api.post("/api/v1/workspaces/birds/computes", form, content_type="application/json").status_code == 403
    assert not ComputeCluster.objects.exists()


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"name": "c", "vm_size": "STANDARD_Z99"}, "Unknown vm_size 'STANDARD_Z99'"),
        ({"name": "c", "vm_size": "STANDARD_D2_V2", "min_nodes": 3, "max_nodes": 2}, "min_nodes (3) must be at most"),
        ({"name": "../c", "vm_size": "STANDARD_D2_V2"}, "letters, digits"),
    ],
)
def test_bad_clusters_get_clear_errors(workspace, owner_token, payload, message):
    response = api_client(owner_token).post(
        "/api/v1/workspaces/birds/computes", payload, content_type="application/json"
    )
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert not ComputeCluster.objects.exists()


def test_a_duplicate_name_is_refused(workspace, owner_token):
    payload = {"name": "c", "vm_size": "STANDARD_D2_V2"}
    client = api_client(owner_token)
    assert client.post("/api/v1/workspaces/birds/computes", payload, content_type="application/json").status_code == 201
    response = client.post("/api/v1/workspaces/birds/computes", payload, content_type="application/json")
    assert "already exists" in response.json()["detail"]


def test_the_cluster_page_shows_each_live_nodes_load(client_for, reader, workspace):
    import os

    from tests.runs.builders import make_cluster
    from trainhub.compute.services import node_register

    cluster = make_cluster(workspace, name="loaded")
    node = node_register(cluster=cluster, address="127.0.0.1", name="loaded-node-1")
    body = client_for(reader).get("/w/birds/compute/loaded/").content.decode()
    cell = body.split(f"<td>{node.name}</td>", 1)[1].split('<td class="load">', 1)[1].split("</td>", 1)[0]
    one, five, fifteen = (float(part) for part in cell.split(" / "))
    assert abs(fifteen - os.getloadavg()[2]) < 1.0 and one >= 0 and five >= 0
