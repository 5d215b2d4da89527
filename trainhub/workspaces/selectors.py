"""Reads about workspaces, members and tokens, always from the point of view of one user."""

from __future__ import annotations

import hashlib

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import Http404

from trainhub.workspaces.models import ApiToken, Membership, Role, Workspace
from trainhub.workspaces.permissions import Access

WORKSPACE_NOT_FOUND = "No workspace named {name!r} that you are a member of."
MEMBERSHIP_NOT_FOUND = "No such member in this workspace."
# Run tokens (made by runs.tokens.run_token) start with it; members' API tokens never do.
RUN_TOKEN_PREFIX = "thr_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def workspaces_for_user(user: User | AnonymousUser) -> QuerySet[Workspace]:
    if not user.is_authenticated:
        return Workspace.objects.none()
    return Workspace.objects.filter(memberships__user=user).order_by("name")


def memberships_for_user(user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("workspace").order_by("workspace__name")


def access_for(user: User | AnonymousUser, workspace_name: str) -> Access:
    """The user's access to the named workspace, or 404 when they are not a member of it."""
    if not user.is_authenticated:
        raise Http404(WORKSPACE_NOT_FOUND.format(name=workspace_name))
    membership = (
        Membership.objects.select_related("workspace").filter(user=user, workspace__name=workspace_name).first()
    )
    if membership is None:
        raise Http404(WORKSPACE_NOT_FOUND.format(name=workspace_name))
    return Access(workspace=membership.workspace, role=membership.role)


def members_of(workspace: Workspace) -> QuerySet[Membership]:
    return workspace.memberships.select_related("user").order_by("user__username")


def membership_get(workspace: Workspace, membership_id: int) -> Membership:
    found = members_of(workspace).filter(pk=membership_id).first()
    if found is None:
        raise Http404(MEMBERSHIP_NOT_FOUND)
    return found


def resource_group(workspace: Workspace) -> str:
    """What `Workspace.resource_group` answers: who the workspace belongs to (its owners)."""
    owners = members_of(workspace).filter(role=Role.OWNER).values_list("user__username", flat=True)
    return ", ".join(owners)


def tokens_of(*, workspace: Workspace, user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(workspace=workspace, user=user).order_by("-created_at")


def active_token(raw_token: str) -> ApiToken | None:
    """The live token matching the raw bearer string, with its user and workspace, and its user's
    role in that workspace as `member_role` (None once they are no longer a member): a call then
    needs no query of its own to know its access (token_access)."""
    if not raw_token or len(raw_token) > 200:
        return None
    role = Membership.objects.filter(workspace_id=OuterRef("workspace_id"), user_id=OuterRef("user_id")).values("role")
    return (
        ApiToken.objects.select_related("user", "workspace")
        .filter(token_hash=hash_token(raw_token), revoked_at__isnull=True, user__is_active=True)
        .annotate(member_role=Subquery(role[:1]))
        .first()
    )


# A credential's role in its workspace that was not read with it (credential_access reads it).
NOT_READ = object()


def credential_access(
    workspace: Workspace, user: User | AnonymousUser, workspace_name: str, role: object = NOT_READ
) -> Access:
    """The access of a credential bound to `workspace` and acting for `user` (an API token, a run's
    token) to the named workspace: 404 for any other workspace; `role` is the user's role read with
    the credential (None: no longer a member, 404) or, where not read, read now (access_for)."""
    if workspace.name != workspace_name:
        raise Http404(WORKSPACE_NOT_FOUND.format(name=workspace_name))
    if role is NOT_READ:
        return access_for(user, workspace_name)
    if role is None:
        raise Http404(WORKSPACE_NOT_FOUND.format(name=workspace_name))
    return Access(workspace=workspace, role=str(role))


def token_access(token: ApiToken, workspace_name: str) -> Access:
    """An API token's access to the named workspace, as access_for answers it for its user: read
    with the token where active_token found it, 404 for any other workspace."""
    return credential_access(token.workspace, token.user, workspace_name, getattr(token, "member_role", NOT_READ))
