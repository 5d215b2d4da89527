"""Workspace endpoints of the JSON API."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Schema

from trainhub.workspaces import selectors
from trainhub.workspaces.api_access import access
from trainhub.workspaces.models import ApiToken

router = Router(tags=["workspaces"])


class WorkspaceOut(Schema):
    name: str
    description: str
    role: str
    created_at: datetime
    member_count: int
    # The names the cloud SDK's notebooks print first, with TrainHub's honest values.
    location: str
    subscription_id: str
    resource_group: str


class WorkspaceSummary(Schema):
    name: str
    description: str


@router.get("/", response=list[WorkspaceSummary])
def list_workspaces(request: HttpRequest) -> list[WorkspaceSummary]:
    token = request.auth if isinstance(request.auth, ApiToken) else None  # type: ignore[attr-defined]
    workspaces = selectors.workspaces_for_user(request.user)
    if token is not None:
        workspaces = workspaces.filter(pk=token.workspace_id)
    return [WorkspaceSummary(name=w.name, description=w.description) for w in workspaces]


@router.get("/{workspace_name}", response=WorkspaceOut)
def get_workspace(request: HttpRequest, workspace_name: str) -> WorkspaceOut:
    member = access(request, workspace_name)
    return WorkspaceOut(
        name=member.workspace.name,
        description=member.workspace.description,
        role=member.role,
        created_at=member.workspace.created_at,
        member_count=selectors.members_of(member.workspace).count(),
        location=settings.TRAINHUB_REGION,
        subscription_id=request.build_absolute_uri("/").rstrip("/"),
        resource_group=selectors.resource_group(member.workspace),
    )
