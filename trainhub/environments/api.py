"""Environment endpoints of the JSON API: list, get (latest or one version), register, clone."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status

from trainhub.environments import selectors, services
from trainhub.environments.models import EnvironmentVersion
from trainhub.workspaces.api_access import access
from trainhub.workspaces.permissions import Action, signed_in_user

router = Router(tags=["environments"])


class EnvironmentOut(Schema):
    name: str
    version: int
    curated: bool
    deprecated: bool
    description: str
    answers_to: list[str]
    spec: dict[str, Any]
    spec_hash: str
    created_at: datetime
    created_by: str | None
    portal_url: str


class EnvironmentIn(Schema):
    name: str
    spec: dict[str, Any]
    description: str = ""


class CloneIn(Schema):
    new_name: str
    version: int | None = None


def _out(version: EnvironmentVersion, workspace_name: str) -> EnvironmentOut:
    environment = version.environment
    return EnvironmentOut(
        name=environment.name,
        version=version.version,
        curated=environment.is_curated,
        deprecated=environment.deprecated,
        description=environment.description,
        answers_to=list(environment.answers_to or []),
        spec=version.spec,
        spec_hash=version.spec_hash,
        created_at=version.created_at,
        created_by=version.created_by.get_username() if version.created_by else None,
        portal_url=f"/w/{workspace_name}/environments/{environment.name}/versions/{version.version}/",
    )


def _respond(registration: services.Registration, workspace_name: str) -> Status[EnvironmentOut]:
    return Status(201 if registration.created else 200, _out(registration.version, workspace_name))


@router.get("/{workspace_name}/environments", response=list[EnvironmentOut])
def list_environments(request: HttpRequest, workspace_name: str) -> list[EnvironmentOut]:
    member = access(request, workspace_name)
    return [_out(v, workspace_name) for v in selectors.latest_versions(member.workspace)]


@router.post("/{workspace_name}/environments", response={200: EnvironmentOut, 201: EnvironmentOut})
def register_environment(request: HttpRequest, workspace_name: str, payload: EnvironmentIn) -> Status[EnvironmentOut]:
    """201 with a new version; 200 with the latest one when its spec is exactly this one."""
    member = access(request, workspace_name)
    member.require(Action.WRITE)
    registration = services.environment_register(
        access=member,
        user=signed_in_user(request),
        name=payload.name,
        spec=payload.spec,
        description=payload.description,
    )
    return _respond(registration, workspace_name)


@router.get("/{workspace_name}/environments/{name}", response=EnvironmentOut)
def get_environment(request: HttpRequest, workspace_name: str, name: str, version: int | None = None) -> EnvironmentOut:
    member = access(request, workspace_name)
    environment = selectors.environment_get(member.workspace, name)
    return _out(selectors.version_get(environment, version), workspace_name)


@router.get("/{workspace_name}/environments/{name}/versions", response=list[EnvironmentOut])
def list_versions(request: HttpRequest, workspace_name: str, name: str) -> list[EnvironmentOut]:
    member = access(request, workspace_name)
    environment = selectors.environment_get(member.workspace, name)
    versions = selectors.versions_of(environment)
    for version in versions:
        version.environment = environment
    return [_out(v, workspace_name) for v in versions]


@router.post("/{workspace_name}/environments/{name}/clone", response={200: EnvironmentOut, 201: EnvironmentOut})
def clone_environment(request: HttpRequest, workspace_name: str, name: str, payload: CloneIn) -> Status[EnvironmentOut]:
    member = access(request, workspace_name)
    member.require(Action.WRITE)
    source = selectors.version_get(selectors.environment_get(member.workspace, name), payload.version)
    registration = services.environment_clone(
        access=member, user=signed_in_user(request), source=source, new_name=payload.new_name
    )
    return _respond(registration, workspace_name)
