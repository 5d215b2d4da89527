"""Reads about clusters and nodes."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from django.http import Http404

from trainhub.compute.models import LIVE_NODE_STATES, ComputeCluster, Node
from trainhub.workspaces.models import Workspace

CLUSTER_NOT_FOUND = "No compute target named {name!r} in workspace {workspace!r}."


def clusters_of(workspace: Workspace) -> QuerySet[ComputeCluster]:
    return workspace.clusters.annotate(
        live_nodes=Count("nodes", filter=Q(nodes__state__in=LIVE_NODE_STATES)),
        busy_nodes=Count("nodes", filter=Q(nodes__state="busy")),
    ).order_by("name")


def cluster_get(workspace: Workspace, name: str) -> ComputeCluster:
    cluster = workspace.clusters.filter(name=name).first()
    if cluster is None:
        raise Http404(CLUSTER_NOT_FOUND.format(name=name, workspace=workspace.name))
    return cluster


def live_nodes(cluster: ComputeCluster) -> QuerySet[Node]:
    return cluster.nodes.filter(state__in=LIVE_NODE_STATES).select_related("current_run__experiment")


def recent_nodes(cluster: ComputeCluster, limit: int = 50) -> QuerySet[Node]:
    return cluster.nodes.select_related("current_run__experiment").order_by("-id")[:limit]
