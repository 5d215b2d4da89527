"""`Workspace`: the top-level resource, found from config.json as in the guide."""

from __future__ import annotations

import os
from typing import Any

from trainhub.sdk import exceptions
from trainhub.sdk._config import find_config, find_token, read_config
from trainhub.sdk._store import RestStore
from trainhub.sdk._transport import Transport


class Workspace:
    """A TrainHub workspace the caller is a member of. Checked against the server on creation."""

    def __init__(self, name: str, *, url: str, token: str | None = None, _details: dict | None = None):
        self.name = name
        self.url = url.rstrip("/")
        self._token = token if token is not None else find_token(self.url)
        if not self._token:
            raise exceptions.AuthenticationError(
                f"No API token for {self.url}: put one in config.json, set TRAINHUB_TOKEN, "
                "or add it to ~/.trainhub/credentials (a [server URL] section with a token key)."
            )
        self._http = Transport(self.url, self._token)
        self._store = RestStore(self._http, self.name)
        self._details = _details if _details is not None else self._fetch()

    def _fetch(self) -> dict[str, Any]:
        try:
            return self._store.get_workspace()
        except exceptions.NotFoundError as error:
            raise exceptions.WorkspaceNotFoundError(
                f"No workspace named {self.name!r} on {self.url} that this token can reach.",
                status=error.status,
                code=error.code,
            ) from None

    @classmethod
    def from_config(
        cls, path: str | os.PathLike[str] | None = None, auth: Any = None, _file_name: str | None = None
    ) -> Workspace:
        config_path = find_config(path if _file_name is None else os.path.join(path or ".", _file_name))
        config = read_config(config_path)
        token = config.get("token") or find_token(config["server_url"])
        return cls(config["workspace_name"], url=config["server_url"], token=token)

    @classmethod
    def get(cls, name: str, *, url: str, token: str | None = None) -> Workspace:
        return cls(name, url=url, token=token)

    def get_details(self) -> dict[str, Any]:
        self._details = self._fetch()
        return dict(self._details, url=self.url)

    # Each accessor imports its facade when called: every script and CLI command loads Workspace
    # first, and importing all of them would take about half a second.
    def get_default_datastore(self) -> Any:
        from trainhub.sdk.datastore import Datastore

        return Datastore.get_default(self)

    @property
    def location(self) -> str:
        """The region label the server is configured with (TRAINHUB_REGION)."""
        return self._details["location"]

    @property
    def subscription_id(self) -> str:
        """The server this workspace lives on (TrainHub has no subscriptions)."""
        return self._details["subscription_id"]

    @property
    def resource_group(self) -> str:
        """Who the workspace belongs to: its owners."""
        return self._details["resource_group"]

    @property
    def datastores(self) -> dict[str, Any]:
        from trainhub.sdk.datastore import Datastore

        return Datastore.list(self)

    @property
    def compute_targets(self) -> dict[str, Any]:
        from trainhub.sdk.compute import ComputeTarget

        return {target.name: target for target in ComputeTarget.list(self)}

    @property
    def environments(self) -> dict[str, Any]:
        from trainhub.sdk.environment import Environment

        return Environment.list(self)

    @property
    def experiments(self) -> dict[str, Any]:
        from trainhub.sdk.experiment import Experiment

        return {experiment.name: experiment for experiment in Experiment.list(self)}

    @property
    def models(self) -> dict[str, Any]:
        """The latest version of each registered model, by name."""
        from trainhub.sdk.model import Model

        return {model.name: model for model in Model.list(self, latest=True)}

    def api(self, path: str) -> str:
        """The API path of something inside this workspace."""
        return f"workspaces/{self.name}/{path.lstrip('/')}".rstrip("/")

    def __repr__(self) -> str:
        return f"Workspace(name={self.name!r}, url={self.url!r})"
