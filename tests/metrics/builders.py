"""Small builders for metric tests: runs that hold a token, and batches sent as a run sends them."""

from __future__ import annotations

import secrets

from django.test import Client

from runs.models import Run, RunStatus
from tests.runs.builders import make_run
from trainhub.workspaces.models import Membership, Role, Workspace
from trainhub.workspaces.selectors import hash_token


def running_run(workspace: Workspace, experiment: str = "exp", **extra) -> tuple[Run, str]:
    """A Running run and the token its node would have given it."""
    token = "thr_" + secrets.token_urlsafe(24)
    owner = Membership.objects.filter(workspace=workspace, role=Role.OWNER).first()
    extra.setdefault("created_by", owner.user if owner else None)
    run = make_run(workspace, experiment=experiment, status=RunStatus.RUNNING, **extra)
    Run.objects.filter(pk=run.pk).update(token_hash=hash_token(token))
    run.refresh_from_db()
    return run, token


def metrics_url(run: Run) -> str:
    return f"/api/v1/workspaces/{run.workspace.name}/runs/{run.run_id}/metrics"


def post_batch(client: Client, run: Run, body, **headers):
    import json

    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(metrics_url(run), data=data, content_type="application/json", **headers)


def series_body(name: str, values: list, steps: list | None = None, rank: int = 0) -> dict:
    entry: dict = {"name": name, "values": values}
    if steps is not None:
        entry["steps"] = steps
    return {"rank": rank, "metrics": [entry]}
