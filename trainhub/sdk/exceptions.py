"""Typed errors of the SDK, each with a message a person understands. Standard library only."""

from __future__ import annotations


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
