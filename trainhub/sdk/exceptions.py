"""Typed errors of the SDK, each with a message a person understands. Standard library only."""

from __future__ import annotations

import json


class TrainHubError(Exception):
    """Base of every error the SDK raises."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class ServerUnreachableError(TrainHubError):
    """The TrainHub server did not answer (wrong URL, server down, network)."""


class AuthenticationError(TrainHubError):
    """No token, or the token is unknown or revoked."""


class PermissionDeniedError(TrainHubError):
    """The token's user may not do that in this workspace (e.g. a reader writing)."""


class NotFoundError(TrainHubError):
    """The object does not exist, or belongs to a workspace the user is not a member of."""


class WorkspaceNotFoundError(NotFoundError):
    """No workspace of that name that the user is a member of."""


class UserErrorException(TrainHubError):
    """The server refused the input; the message says why."""


class ConfigNotFoundError(TrainHubError):
    """No config.json where `Workspace.from_config()` looked."""


class ServerError(TrainHubError):
    """The server failed (5xx) even after retries."""


class ComputeTargetException(TrainHubError):
    """The compute target does not exist or cannot be created (as in the guide)."""


class SnapshotTooLargeError(UserErrorException):
    """The source directory is past the snapshot size or file-count limit."""


class RunFailedError(TrainHubError):
    """`wait_for_completion` saw the run end Failed."""


ActivityFailedException = RunFailedError


def from_answer(status: int, body: bytes, reason: str = "") -> TrainHubError:
    """The typed error for a server's error answer, whichever HTTP client read it."""
    try:
        answer = json.loads(body)
        message, code = str(answer.get("detail") or answer), answer.get("code")
    except (ValueError, AttributeError):
        message, code = body[:300].decode(errors="replace") or reason, None
    kind: type[TrainHubError] = TrainHubError
    if status == 401:
        kind = AuthenticationError
    elif status == 403:
        kind = PermissionDeniedError
    elif status == 404:
        kind = NotFoundError
    elif status in (400, 409, 413, 422):
        kind = UserErrorException
    elif status >= 500:
        kind = ServerError
        message = f"The TrainHub server failed ({status}): {message}"
    return kind(message, status=status, code=code)
