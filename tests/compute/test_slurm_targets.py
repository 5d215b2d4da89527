"""Attaching a Slurm partition as a compute target (portal, API, admin), on the session's real Slurm,
and its page listing the partition's nodes as Slurm reports them."""

from __future__ import annotations

import pytest

from tests.conftest import api_client, issue_token
from trainhub.compute import services
from trainhub.compute.models import ComputeCluster

pytestmark = pytest.mark.django_db


def slurm_form(**extra) -> dict:
    return {
        "name": "hpc",
        "vm_size": "LOCAL_CPU",
        "min_nodes": 0,
        "max_nodes": 4,
        "idle_seconds_before_scaledown": 0,
        "provisioner": "slurm",
        "slurm_partition": "debug",
        **extra,
    }


def test_a_contributor_attaches_a_partition_and_its_page_shows_slurms_nodes(
    slurm_cluster, client_for, contributor, workspace
):
    client = client_for(contributor)
    response = client.post("/w/birds/compute/", slurm_form())
    assert response.status_code == 302, response.content.decode()[:2000]
    cluster = ComputeCluster.objects.get(name="hpc")
    assert (cluster.provisioner, cluster.slurm_partition) == ("slurm", "debug")
    page = client.get("/w/birds/compute/hpc/").content.decode()
    assert "Nodes of partition debug" in page
    states = slurm_cluster.node_states()
    for name in ("n1", "n2"):
        assert f'<td>{name}</td><td>127.0.0.1</td><td><span class="status">{states[name]}</span>' in page
    assert "<td>n3</td>" not in page  # configured in Slurm, but in no partition of this target
    # Each node's load as slurmd reports it (this machine's: both run here), and its free memory.
    loads = [cell.split("</td>", 1)[0] for cell in page.split('<td class="load">')[1:]]
    assert len(loads) == 2 and all(float(load) >= 0 for load in loads), loads
    memory = [cell.split("</td>", 1)[0].split(" / ") for cell in page.split('<td class="memory">')[1:]]
    assert all(0 < int(free) for free, _ in memory), memory
    assert "Slurm partition <code>debug</code>" in client.get("/w/birds/compute/").content.decode()


def test_the_slurm_docs_page_maps_azure_ml_compute_to_slurm(client_for, reader, workspace):
    page = client_for(reader).get("/docs/slurm/").content.decode()
    assert "Azure ML compute on Slurm" in page and "PyTorchJob" in page
    assert "<td>One Slurm <strong>partition</strong>" in page


@pytest.mark.parametrize(
    "partition, message",
    [
        ("nosuch", "Slurm has no partition named 'nosuch'."),
        ("debug;touch /tmp/x", "A Slurm partition is named with letters"),
        ("", services.SLURM_PARTITION_NEEDED),
    ],
)
def test_a_partition_slurm_does_not_have_is_refused_and_nothing_is_made(
    slurm_cluster, workspace, owner, partition, message
):
    api = api_client(issue_token(workspace, owner))
    response = api.post(
        "/api/v1/workspaces/birds/computes", slurm_form(slurm_partition=partition), content_type="application/json"
    )
    assert response.status_code == 400 and message in response.content.decode(), response.content
    assert not ComputeCluster.objects.exists()


def test_a_local_cluster_names_no_partition(workspace, owner):
    api = api_client(issue_token(workspace, owner))
    payload = slurm_form(provisioner="manual")
    response = api.post("/api/v1/workspaces/birds/computes", payload, content_type="application/json")
    assert response.status_code == 400 and services.SLURM_PARTITION_ONLY in response.content.decode()


def test_an_administrator_attaches_one_in_the_admin_site(slurm_cluster, client_for, owner, workspace):
    owner.is_staff = owner.is_superuser = True
    owner.save()
    form = slurm_form(workspace=workspace.pk, slurm_partition="nosuch")
    client = client_for(owner)
    refused = client.post("/admin/compute/computecluster/add/", form)
    assert refused.status_code == 200 and "Slurm has no partition named" in refused.content.decode()
    assert client.post("/admin/compute/computecluster/add/", dict(form, slurm_partition="debug")).status_code == 302
    assert ComputeCluster.objects.get(name="hpc").slurm_partition == "debug"


def test_an_outsider_gets_404_for_a_slurm_targets_page(slurm_cluster, client_for, outsider, workspace):
    ComputeCluster.objects.create(
        workspace=workspace, name="hpc", vm_size="LOCAL_CPU", provisioner="slurm", slurm_partition="debug"
    )
    assert client_for(outsider).get("/w/birds/compute/hpc/").status_code == 404
