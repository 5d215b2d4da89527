"""Endpoint routes of the JSON API: deploy, update, list, logs, keys (made again, or read by
contributors and owners), delete, and the replica's report that it answers (with its run's token)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from ninja import Router, Schema, Status

from endpoints import selectors, services
from endpoints.models import Endpoint
from runs.api import EnvironmentRef, LogChunkOut, LogsOut, resolve_environment
from runs.selectors import log_chunks_after
from trainhub.api_auth import IN_RUN
from trainhub.workspaces.api_access import RunCredential, access
from trainhub.workspaces.permissions import Access, signed_in_user

router = Router(tags=["endpoints"])


class ModelRef(Schema):
    name: str
    version: int | None = None


class ServingIn(Schema):
    models: list[ModelRef]
    entry_script: str | None = None
    snapshot: str | None = None
    environment: EnvironmentRef | None = None


class DeployIn(ServingIn):
    name: str
    deployment_config: dict[str, Any] = {}
    overwrite: bool = False
    description: str = ""
    tags: dict[str, Any] = {}


class ReplicaOut(Schema):
    id: int
    run_id: str
    run_status: str
    generation: int
    state: str
    node: str | None
    ready_at: datetime | None


class EndpointOut(Schema):
    name: str
    state: str
    error: str
    scoring_path: str
    portal_url: str
    compute_target: str
    models: list[str]
    entry_script: str
    snapshot: str
    environment: dict[str, Any]
    deployment_config: dict[str, Any]
    description: str
    tags: dict[str, str]
    generation: int
    restarts: int
    replica_count: int
    auth_enabled: bool
    replicas: list[ReplicaOut]
    stats: dict[str, float]
    created_at: datetime
    keys: dict[str, str] | None = None


class KeyIn(Schema):
    key_type: str = "Primary"


class ReadyIn(Schema):
    address: str = ""
    port: int
    secret: str


def endpoint_out(endpoint: Endpoint, keys: services.NewKeys | None = None) -> EndpointOut:
    replicas = []
    for replica in selectors.replicas_of(endpoint)[:20]:
        nodes = list(replica.run.run_nodes.all())
        replicas.append(
            ReplicaOut(
                id=replica.pk,
                run_id=replica.run.run_id,
                run_status=replica.run.status,
                generation=replica.generation,
                state=replica.state,
                node=nodes[0].node.name if nodes else None,
                ready_at=replica.ready_at,
            )
        )
    return EndpointOut(
        name=endpoint.name,
        state=endpoint.state,
        error=endpoint.error,
        scoring_path=selectors.scoring_path(endpoint),
        portal_url=f"/w/{endpoint.workspace.name}/endpoints/{endpoint.name}/",
        compute_target=endpoint.cluster.name,
        models=[f"{v.model.name}:{v.version}" for v in endpoint.model_versions.all()],
        entry_script=endpoint.entry_script,
        snapshot=endpoint.snapshot.sha256,
        environment={"name": endpoint.environment_name, "version": endpoint.environment_version},
        deployment_config=endpoint.deployment_config,
        description=endpoint.description,
        tags=endpoint.tags,
        generation=endpoint.generation,
        restarts=endpoint.restarts,
        replica_count=endpoint.replica_count,
        auth_enabled=endpoint.auth_enabled,
        replicas=replicas,
        stats=services.endpoint_stats(endpoint.pk),
        created_at=endpoint.created_at,
        keys={"primary": keys.primary, "secondary": keys.secondary} if keys else None,
    )


def _serving(member: Access, payload: ServingIn) -> services.Serving:
    environment = resolve_environment(member.workspace, payload.environment) if payload.environment else None
    return services.serving_check(
        access=member,
        models=[m.dict() for m in payload.models],
        entry_script=payload.entry_script,
        snapshot_sha256=payload.snapshot,
        environment=environment,
    )


@router.post("/{workspace_name}/endpoints", response={201: EndpointOut})
def deploy(request: HttpRequest, workspace_name: str, payload: DeployIn) -> Status[EndpointOut]:
    member = access(request, workspace_name)
    endpoint, keys = services.endpoint_deploy(
        access=member,
        user=signed_in_user(request),
        name=payload.name,
        serving=_serving(member, payload),
        deployment_config=payload.deployment_config,
        overwrite=payload.overwrite,
        description=payload.description,
        tags=payload.tags,
    )
    return Status(201, endpoint_out(selectors.endpoint_get(member.workspace, endpoint.name), keys))


@router.get("/{workspace_name}/endpoints", response=list[EndpointOut])
def list_endpoints(request: HttpRequest, workspace_name: str) -> list[EndpointOut]:
    member = access(request, workspace_name)
    return [endpoint_out(e) for e in selectors.endpoints_of(member.workspace)]


@router.get("/{workspace_name}/endpoints/{name}", response=EndpointOut)
def get_endpoint(request: HttpRequest, workspace_name: str, name: str) -> EndpointOut:
    member = access(request, workspace_name)
    return endpoint_out(selectors.endpoint_get(member.workspace, name))


@router.patch("/{workspace_name}/endpoints/{name}", response=EndpointOut)
def update_endpoint(request: HttpRequest, workspace_name: str, name: str, payload: ServingIn) -> EndpointOut:
    member = access(request, workspace_name)
    endpoint = selectors.endpoint_get(member.workspace, name)
    services.endpoint_update(
        access=member, user=signed_in_user(request), endpoint=endpoint, serving=_serving(member, payload)
    )
    return endpoint_out(selectors.endpoint_get(member.workspace, name))


@router.delete("/{workspace_name}/endpoints/{name}", response={204: None})
def delete_endpoint(request: HttpRequest, workspace_name: str, name: str) -> Status[None]:
    member = access(request, workspace_name)
    services.endpoint_delete(access=member, endpoint=selectors.endpoint_get(member.workspace, name))
    return Status(204, None)


@router.post("/{workspace_name}/endpoints/{name}/keys", response=dict[str, str])
def regenerate_key(request: HttpRequest, workspace_name: str, name: str, payload: KeyIn) -> dict[str, str]:
    member = access(request, workspace_name)
    endpoint = selectors.endpoint_get(member.workspace, name)
    key = services.endpoint_regenerate_key(access=member, endpoint=endpoint, key_type=payload.key_type)
    return {"key_type": payload.key_type, "key": key}


@router.get("/{workspace_name}/endpoints/{name}/keys", response=dict[str, str])
def read_keys(request: HttpRequest, workspace_name: str, name: str) -> dict[str, str]:
    """The endpoint's two keys, for contributors and owners (a reader is refused, 403)."""
    member = access(request, workspace_name)
    keys = services.endpoint_keys(access=member, endpoint=selectors.endpoint_get(member.workspace, name))
    return {"primary": keys.primary, "secondary": keys.secondary}


@router.get("/{workspace_name}/endpoints/{name}/logs", response=LogsOut)
def endpoint_logs(request: HttpRequest, workspace_name: str, name: str, after: int = 0) -> LogsOut:
    """The log of the serving replica (the newest one while none answers yet)."""
    member = access(request, workspace_name)
    replica = selectors.log_replica(selectors.endpoint_get(member.workspace, name))
    if replica is None:
        return LogsOut(status="", chunks=[])
    status = replica.run.status
    chunks = log_chunks_after(replica.run, after)
    return LogsOut(status=status, chunks=[LogChunkOut(**c.as_message()) for c in chunks])


@router.post("/{workspace_name}/endpoints/{name}/replicas/{replica_id}/ready", response=dict[str, str], auth=IN_RUN)
def replica_ready(
    request: HttpRequest, workspace_name: str, name: str, replica_id: int, payload: ReadyIn
) -> dict[str, str]:
    """Called by a replica's scoring server, with its run's token, once it answers on its port."""
    member = access(request, workspace_name)
    credential = getattr(request, "auth", None)
    if not isinstance(credential, RunCredential):
        raise PermissionDenied(services.NOT_THIS_REPLICA.format(pk=replica_id))
    replica = selectors.replica_get(member.workspace, name, replica_id)
    services.replica_ready(
        run=credential.run, replica=replica, address=payload.address, port=payload.port, secret=payload.secret
    )
    return {"state": "ready"}
