"""The run a training script is inside of (from the variables its node set), or an offline one.

Standard library only.
"""

from __future__ import annotations

import os
from typing import Any


class _ExperimentRef:
    def __init__(self, workspace: Any, name: str):
        self.workspace = workspace
        self.name = name


class _RunWorkspace:
    """Just enough of a Workspace for a run to talk to its server with its own token."""

    def __init__(self, name: str, url: str, token: str):
        self.name = name
        self.url = url.rstrip("/")
        self._token = token
        self.__http = None

    @property
    def _http(self) -> Any:
        if self.__http is None:
            from trainhub.sdk._http import HttpClient

            self.__http = HttpClient(self.url, self._token)
        return self.__http

    def api(self, path: str) -> str:
        return f"workspaces/{self.name}/{path.lstrip('/')}".rstrip("/")


class OfflineRun:
    """What `Run.get_context()` returns outside TrainHub: values are printed and kept here."""

    id = "OfflineRun"

    def __repr__(self) -> str:
        return "OfflineRun()"


def current_run(allow_offline: bool = True) -> Any:
    from trainhub.sdk.run import Run

    run_id = os.environ.get("TRAINHUB_RUN_ID")
    if not run_id:
        if not allow_offline:
            raise RuntimeError("Not inside a TrainHub run (TRAINHUB_RUN_ID is not set).")
        return OfflineRun()
    workspace = _RunWorkspace(
        os.environ["TRAINHUB_WORKSPACE"], os.environ["TRAINHUB_SERVER_URL"], os.environ["TRAINHUB_RUN_TOKEN"]
    )
    return Run(_ExperimentRef(workspace, os.environ.get("TRAINHUB_EXPERIMENT", "")), run_id)
