"""Reads about clusters and nodes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet
from django.http import Http404

from trainhub.compute import slurm
from trainhub.compute.models import LIVE_NODE_STATES, ComputeCluster, Node, NodeState, Provisioner
from trainhub.workspaces.models import Workspace

CLUSTER_NOT_FOUND = "No compute target named {name!r} in workspace {workspace!r}."


def clusters_of(workspace: Workspace) -> QuerySet[ComputeCluster]:
    """The workspace's compute targets; "local" (the submitting machine) is no cluster to list."""
    return (
        workspace.clusters.exclude(provisioner=Provisioner.SUBMITTER)
        .annotate(
            live_nodes=Count("nodes", filter=Q(nodes__state__in=LIVE_NODE_STATES)),
            busy_nodes=Count("nodes", filter=Q(nodes__state=NodeState.BUSY)),
        )
        .order_by("name")
    )


def cluster_get(workspace: Workspace, name: str) -> ComputeCluster:
    cluster = workspace.clusters.exclude(provisioner=Provisioner.SUBMITTER).filter(name=name).first()
    if cluster is None:
        raise Http404(CLUSTER_NOT_FOUND.format(name=name, workspace=workspace.name))
    return cluster


def live_nodes(cluster: ComputeCluster) -> QuerySet[Node]:
    return cluster.nodes.filter(state__in=LIVE_NODE_STATES).select_related("current_run__experiment")


def recent_nodes(cluster: ComputeCluster, limit: int = 50) -> QuerySet[Node]:
    return cluster.nodes.select_related("current_run__experiment").order_by("-id")[:limit]


@dataclass(frozen=True)
class ClusterStatus:
    """How many nodes a cluster has and is heading for, as `ComputeTarget.get_status()` shows it."""

    current_node_count: int
    target_node_count: int
    idle_node_count: int
    running_node_count: int
    preparing_node_count: int
    leaving_node_count: int

    @property
    def allocation_state(self) -> str:
        return "Steady" if self.current_node_count == self.target_node_count else "Resizing"


@dataclass(frozen=True)
class SlurmPartitionView:
    """A Slurm cluster's partition as Slurm reports it now, or why Slurm could not say."""

    nodes: list
    error: str = ""

    @property
    def status(self) -> ClusterStatus:
        states = [node.state.rstrip("*~#!%$@^-") for node in self.nodes]
        answering = [n for n in self.nodes if not n.state.endswith("*")]
        idle = sum(1 for state in states if state == "idle")
        busy = sum(1 for state in states if state.startswith(("alloc", "mix", "completing")))
        current = len(answering)
        return ClusterStatus(
            current_node_count=current,
            target_node_count=current,
            idle_node_count=idle,
            running_node_count=busy,
            preparing_node_count=0,
            leaving_node_count=sum(1 for state in states if state.startswith(("drain", "down", "fail"))),
        )


def slurm_partition(cluster: ComputeCluster) -> SlurmPartitionView:
    try:
        return SlurmPartitionView(nodes=slurm.partition_nodes(cluster.slurm_partition))
    except (slurm.SlurmError, ValueError) as error:
        return SlurmPartitionView(nodes=[], error=str(error))


def gres_gpus(gres: str) -> int:
    """GPUs of a node's generic resources as sinfo prints them (gpu:2, gpu:a100:4(S:0-1), (null))."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def _no_node_demand(cluster: ComputeCluster) -> int:
    return 0


# How many nodes the runs waiting for a cluster ask for. Compute knows nothing of runs: the runs
# app registers its selector here as it starts (runs/apps.py).
_node_demand: list[Callable[[ComputeCluster], int]] = [_no_node_demand]


def register_node_demand(source: Callable[[ComputeCluster], int]) -> None:
    _node_demand[0] = source


def cluster_status(cluster: ComputeCluster) -> ClusterStatus:
    """Live nodes by state, and the size the local provisioner steers to: between min and max
    nodes, enough for the busy nodes and the runs waiting (what the controller starts nodes for).
    A manually provisioned cluster's target is the nodes people started."""
    counts = dict(
        cluster.nodes.filter(state__in=[*LIVE_NODE_STATES, NodeState.STOPPING])
        .values_list("state")
        .annotate(count=Count("id"))
    )
    idle, busy = counts.get(NodeState.IDLE, 0), counts.get(NodeState.BUSY, 0)
    current = idle + busy
    if cluster.provisioner == Provisioner.LOCAL:
        waiting = _node_demand[0](cluster)
        target = max(current, min(cluster.max_nodes, max(cluster.min_nodes, busy + waiting)))
    else:
        target = current
    return ClusterStatus(
        current_node_count=current,
        target_node_count=target,
        idle_node_count=idle,
        running_node_count=busy,
        preparing_node_count=target - current,
        leaving_node_count=counts.get(NodeState.STOPPING, 0),
    )
