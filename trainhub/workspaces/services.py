"""Writes about workspaces, members and tokens."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from trainhub import live
from trainhub.workspaces.models import ApiToken, Membership, Role, Workspace
from trainhub.workspaces.permissions import Access, Action
from trainhub.workspaces.selectors import hash_token

WORKSPACE_NAME_TAKEN = "A workspace named {name!r} already exists."
UNKNOWN_USER = "No user named {username!r}. They need an account before they can be added."
ALREADY_MEMBER = "{username} is already a member of this workspace."
LAST_OWNER = "A workspace needs at least one owner: make someone else an owner first."
TOKEN_NAME_REQUIRED = "Give the token a name, so you can tell it apart later."
TOKEN_PREFIX = "th_"
# Recording the time of every request would write to the database on every call.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str


@transaction.atomic
def workspace_create(*, name: str, user: User, description: str = "") -> Workspace:
    workspace = Workspace(name=name, description=description, created_by=user)
    workspace.full_clean(validate_unique=False)
    if Workspace.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": WORKSPACE_NAME_TAKEN.format(name=name)})
    try:
        with transaction.atomic():
            workspace.save()
    except IntegrityError:
        raise ValidationError({"name": WORKSPACE_NAME_TAKEN.format(name=name)}) from None
    Membership.objects.create(workspace=workspace, user=user, role=Role.OWNER)
    return workspace


@transaction.atomic
def member_add(*, access: Access, username: str, role: str) -> Membership:
    access.require(Action.ADMINISTER)
    if role not in Role.values:
        raise ValidationError({"role": f"Role must be one of {', '.join(Role.values)}."})
    user = get_user_model().objects.filter(username=username.strip()).first()
    if user is None:
        raise ValidationError({"username": UNKNOWN_USER.format(username=username)})
    if Membership.objects.filter(workspace=access.workspace, user=user).exists():
        raise ValidationError({"username": ALREADY_MEMBER.format(username=user.get_username())})
    return Membership.objects.create(workspace=access.workspace, user=user, role=role)


@transaction.atomic
def member_set_role(*, access: Access, membership: Membership, role: str) -> Membership:
    access.require(Action.ADMINISTER)
    if role not in Role.values:
        raise ValidationError({"role": f"Role must be one of {', '.join(Role.values)}."})
    if membership.role == Role.OWNER and role != Role.OWNER:
        _ensure_another_owner(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def member_remove(*, access: Access, membership: Membership) -> None:
    access.require(Action.ADMINISTER)
    if membership.role == Role.OWNER:
        _ensure_another_owner(membership)
    ApiToken.objects.filter(workspace=membership.workspace, user=membership.user, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    membership.delete()
    members_removed([membership])


def members_removed(memberships: Iterable[Membership]) -> None:
    """Once the removal is committed, the removed members' open sockets on the workspace close."""
    gone = [(membership.workspace_id, membership.user_id) for membership in memberships]

    def close() -> None:
        for workspace_pk, user_pk in gone:
            live.close_member_sockets(workspace_pk, user_pk)

    transaction.on_commit(close)


def _ensure_another_owner(membership: Membership) -> None:
    owners = Membership.objects.select_for_update().filter(workspace=membership.workspace, role=Role.OWNER)
    if not owners.exclude(pk=membership.pk).exists():
        raise ValidationError(LAST_OWNER)


def token_create(*, access: Access, user: User, name: str) -> IssuedToken:
    """Any member may make tokens for themselves; a token acts with its owner's role."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": TOKEN_NAME_REQUIRED})
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        workspace=access.workspace,
        user=user,
        name=name[:100],
        prefix=secret[:10],
        token_hash=hash_token(secret),
    )
    return IssuedToken(token=token, secret=secret)


def token_revoke(*, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


def token_touch(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


def config_json(*, workspace: Workspace, server_url: str, token: str | None) -> dict[str, str]:
    """The file `Workspace.from_config()` reads."""
    config = {"server_url": server_url.rstrip("/"), "workspace_name": workspace.name}
    if token:
        config["token"] = token
    return config
