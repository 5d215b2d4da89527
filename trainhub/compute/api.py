"""Compute target endpoints of the JSON API, and the VM size catalog."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema, Status

from trainhub.compute import catalog, selectors, services
from trainhub.compute.models import ComputeCluster
from trainhub.workspaces.api_access import access
from trainhub.workspaces.permissions import signed_in_user

router = Router(tags=["compute"])
catalog_router = Router(tags=["compute"])


class VmSizeOut(Schema):
    name: str
    vcpus: int
    gpus: int
    memory_gb: float
    description: str


class NodeOut(Schema):
    name: str
    hostname: str
    address: str
    state: str
    cpus: int
    gpus: int
    docker: bool
    current_run: str | None
    last_heartbeat_at: datetime | None


class ClusterIn(Schema):
    name: str
    vm_size: str
    min_nodes: int = 0
    max_nodes: int = 4
    idle_seconds_before_scaledown: int = 1800
    provisioner: str = "local"
    slurm_partition: str = ""


class ClusterUpdateIn(Schema):
    min_nodes: int | None = None
    max_nodes: int | None = None
    idle_seconds_before_scaledown: int | None = None


class ClusterOut(Schema):
    name: str
    vm_size: str
    vcpus: int
    gpus: int
    memory_gb: float
    min_nodes: int
    max_nodes: int
    idle_seconds_before_scaledown: int
    provisioner: str
    slurm_partition: str
    provisioning_state: str
    current_node_count: int
    target_node_count: int
    idle_node_count: int
    running_node_count: int
    preparing_node_count: int
    leaving_node_count: int
    allocation_state: str
    created_at: datetime
    nodes: list[NodeOut]


def _out(cluster: ComputeCluster) -> ClusterOut:
    size = catalog.get_size(cluster.vm_size)
    if cluster.is_slurm:
        # Slurm's nodes of the partition and their states, as sinfo reports them.
        partition = selectors.slurm_partition(cluster)
        status = partition.status
        nodes = [
            NodeOut(
                name=n.name,
                hostname=n.name,
                address=n.address,
                state=n.state,
                cpus=int(n.cpus or 0),
                gpus=selectors.gres_gpus(n.gres),
                docker=False,
                current_run=None,
                last_heartbeat_at=None,
            )
            for n in partition.nodes
        ]
        provisioning_state = "Failed" if partition.error else "Succeeded"
    else:
        status = selectors.cluster_status(cluster)
        provisioning_state = "Succeeded"
        nodes = [
            NodeOut(
                name=n.name,
                hostname=n.hostname,
                address=n.address,
                state=n.state,
                cpus=n.cpus,
                gpus=n.gpus,
                docker=n.docker,
                current_run=n.current_run.run_id if n.current_run else None,
                last_heartbeat_at=n.last_heartbeat_at,
            )
            for n in selectors.live_nodes(cluster)
        ]
    return ClusterOut(
        name=cluster.name,
        vm_size=cluster.vm_size,
        vcpus=size.vcpus if size else 0,
        gpus=size.gpus if size else 0,
        memory_gb=size.memory_gb if size else 0,
        min_nodes=cluster.min_nodes,
        max_nodes=cluster.max_nodes,
        idle_seconds_before_scaledown=cluster.idle_seconds_before_scaledown,
        provisioner=cluster.provisioner,
        slurm_partition=cluster.slurm_partition,
        provisioning_state=provisioning_state,
        current_node_count=status.current_node_count,
        target_node_count=status.target_node_count,
        idle_node_count=status.idle_node_count,
        running_node_count=status.running_node_count,
        preparing_node_count=status.preparing_node_count,
        leaving_node_count=status.leaving_node_count,
        allocation_state=status.allocation_state,
        created_at=cluster.created_at,
        nodes=nodes,
    )


@catalog_router.get("/", response=list[VmSizeOut], auth=None)
def list_vm_sizes(request: HttpRequest) -> list[VmSizeOut]:
    return [VmSizeOut(**size.__dict__) for size in catalog.SIZES.values()]


@router.get("/{workspace_name}/computes", response=list[ClusterOut])
def list_clusters(request: HttpRequest, workspace_name: str) -> list[ClusterOut]:
    member = access(request, workspace_name)
    return [_out(c) for c in selectors.clusters_of(member.workspace)]


@router.get("/{workspace_name}/computes/{name}", response=ClusterOut)
def get_cluster(request: HttpRequest, workspace_name: str, name: str) -> ClusterOut:
    member = access(request, workspace_name)
    return _out(selectors.cluster_get(member.workspace, name))


@router.post("/{workspace_name}/computes", response={201: ClusterOut})
def create_cluster(request: HttpRequest, workspace_name: str, payload: ClusterIn) -> Status[ClusterOut]:
    member = access(request, workspace_name)
    cluster = services.cluster_create(access=member, user=signed_in_user(request), **payload.dict())
    return Status(201, _out(cluster))


@router.patch("/{workspace_name}/computes/{name}", response=ClusterOut)
def update_cluster(request: HttpRequest, workspace_name: str, name: str, payload: ClusterUpdateIn) -> ClusterOut:
    member = access(request, workspace_name)
    cluster = selectors.cluster_get(member.workspace, name)
    return _out(services.cluster_update(access=member, cluster=cluster, **payload.dict()))


@router.delete("/{workspace_name}/computes/{name}", response={204: None})
def delete_cluster(request: HttpRequest, workspace_name: str, name: str) -> Status[None]:
    member = access(request, workspace_name)
    services.cluster_delete(access=member, cluster=selectors.cluster_get(member.workspace, name))
    return Status(204, None)
