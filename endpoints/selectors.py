"""Reading endpoints: the ones of a workspace, one by name, the replica whose log is the service's."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from endpoints.models import Endpoint, Replica, ReplicaState
from trainhub.workspaces.models import Workspace

ENDPOINT_NOT_FOUND = "No endpoint named {name!r} in this workspace."


def endpoints_of(workspace: Workspace) -> QuerySet[Endpoint]:
    return (
        Endpoint.objects.filter(workspace=workspace)
        .select_related("cluster", "workspace", "snapshot")
        .prefetch_related("model_versions__model")
    )


def endpoint_get(workspace: Workspace, name: str) -> Endpoint:
    endpoint = endpoints_of(workspace).filter(name=name).first()
    if endpoint is None:
        raise Http404(ENDPOINT_NOT_FOUND.format(name=name))
    return endpoint


def replicas_of(endpoint: Endpoint) -> QuerySet[Replica]:
    return endpoint.replicas.select_related("run").prefetch_related("run__run_nodes__node").order_by("-id")


def replica_get(workspace: Workspace, endpoint_name: str, replica_pk: int) -> Replica:
    found = Replica.objects.filter(pk=replica_pk, endpoint__workspace=workspace, endpoint__name=endpoint_name).first()
    if found is None:
        raise Http404(ENDPOINT_NOT_FOUND.format(name=endpoint_name))
    return found


def log_replica(endpoint: Endpoint) -> Replica | None:
    """The replica whose log the service's log shows: the newest that answered, else the newest."""
    replicas = endpoint.replicas.select_related("run").order_by("-id")
    return replicas.filter(state=ReplicaState.READY).first() or replicas.first()


def serving_replicas(endpoint: Endpoint) -> list[Replica]:
    return list(endpoint.replicas.filter(state=ReplicaState.READY, port__isnull=False).order_by("-generation", "id"))


def scoring_path(endpoint: Endpoint) -> str:
    return f"/endpoints/{endpoint.workspace.name}/{endpoint.name}/score"
