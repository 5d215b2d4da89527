"""Small builders for registry tests: runs with stored outputs, versions registered from them."""

from __future__ import annotations

import tempfile
from pathlib import Path

from registry import services
from registry.models import ModelVersion
from runs.models import Run, RunStatus
from runs.services import run_file_store
from tests.runs.builders import make_run
from trainhub.workspaces.models import Membership, Workspace
from trainhub.workspaces.permissions import Access


def access_of(workspace: Workspace, user) -> Access:
    return Access(workspace, Membership.objects.get(workspace=workspace, user=user).role)


def run_with_outputs(workspace: Workspace, files: dict[str, bytes], **extra) -> Run:
    """A completed run whose history holds `files` ({'outputs/model.pt': b'...'}) for real."""
    run = make_run(workspace, status=RunStatus.COMPLETED, **extra)
    with tempfile.TemporaryDirectory() as folder:
        for path, content in files.items():
            local = Path(folder) / path.replace("/", "_")
            local.write_bytes(content)
            run_file_store(run=run, path=path, local_path=local)
    return run


def register(
    workspace: Workspace,
    user,
    run: Run,
    name: str = "pytorch-birds",
    path: str = "outputs/model.pt",
    **extra,
) -> ModelVersion:
    return services.version_register_from_run(
        access=access_of(workspace, user),
        user=user,
        run=run,
        model_name=name,
        model_path=path,
        **extra,
    )
