"""The one place that decides what a user may see and do in a workspace."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from trainhub.workspaces.models import Role, Workspace


class Action(enum.Enum):
    READ = "read"
    WRITE = "write"
    ADMINISTER = "administer"


_ALLOWED: dict[str, set[Action]] = {
    Role.READER: {Action.READ},
    Role.CONTRIBUTOR: {Action.READ, Action.WRITE},
    Role.OWNER: {Action.READ, Action.WRITE, Action.ADMINISTER},
}

NOT_SIGNED_IN_MESSAGE = "Sign in first."
READ_ONLY_MESSAGE = "Your role in this workspace is reader: you can look but not change anything."
OWNER_ONLY_MESSAGE = "Only an owner of this workspace can do that."


@dataclass(frozen=True)
class Access:
    """A member's standing in one workspace. Outsiders never get one (they get a 404)."""

    workspace: Workspace
    role: str

    def can(self, action: Action) -> bool:
        return action in _ALLOWED[self.role]

    @property
    def can_write(self) -> bool:
        return self.can(Action.WRITE)

    @property
    def can_administer(self) -> bool:
        return self.can(Action.ADMINISTER)

    def require(self, action: Action) -> None:
        if not self.can(action):
            raise PermissionDenied(OWNER_ONLY_MESSAGE if action is Action.ADMINISTER else READ_ONLY_MESSAGE)


def signed_in_user(request: HttpRequest) -> User:
    """The request's user, for callers behind sign-in (login_required pages, the API's auth, the admin)."""
    user = request.user
    if not isinstance(user, User):
        raise PermissionDenied(NOT_SIGNED_IN_MESSAGE)
    return user
