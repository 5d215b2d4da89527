"""Who an API call acts for in a workspace: the credential a running script sends, and `access`,
which every endpoint calls first (its own routers import this, not the API root, which mounts them)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from trainhub.workspaces import selectors
from trainhub.workspaces.models import ApiToken, Role
from trainhub.workspaces.permissions import Access


class RunCredential:
    """What a running script authenticates with: the token its node gave it."""

    def __init__(self, run: Any):
        self.run = run
        self.workspace = run.workspace


def access(request: HttpRequest, workspace_name: str) -> Access:
    """The caller's access to a workspace; a token only ever reaches its own workspace."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiToken):
        return selectors.token_access(auth, workspace_name)
    if isinstance(auth, RunCredential):
        role = getattr(auth.run, "member_role", selectors.NOT_READ)
        member = selectors.credential_access(auth.workspace, request.user, workspace_name, role)
        if member.role == Role.OWNER:
            # A run's token acts for the run, never as an owner of the workspace.
            return Access(workspace=member.workspace, role=Role.CONTRIBUTOR)
        return member
    return selectors.access_for(request.user, workspace_name)
