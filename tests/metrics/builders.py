"""Small builders for metric tests: runs that hold a token, and batches sent as a run sends them."""

from __future__ import annotations

import secrets

from django.forms.models import model_to_dict
from django.test import Client

from metrics.models import MetricSeries
from runs.models import Run, RunStatus, RunValue
from runs.run_values import run_value_rows
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


# What a copy of a run made with bulk_create does not take from model_to_dict: its own ids, and the
# foreign keys, which it takes by id.
NOT_COPIED = ["id", "run_id", "number", "workspace", "experiment", "cluster", "snapshot", "created_by", "parent"]


def copies(run: Run, count: int, accuracy: float | None = None, **changes) -> list[Run]:
    """`count` runs like `run` (with `changes`) made at once, newer than it, with their RunValue rows
    and, given `accuracy`, a rank-0 "accuracy" series ending there: enough runs for a table to walk."""
    fields = {
        **model_to_dict(run, exclude=NOT_COPIED),
        **{f"{name}_id": getattr(run, f"{name}_id") for name in NOT_COPIED[3:]},
        **changes,
    }
    last = Run.objects.filter(experiment_id=run.experiment_id).order_by("-number").values_list("number", flat=True)[0]
    made = Run.objects.bulk_create(
        Run(**fields, run_id=f"{run.run_id}-copy-{last + n}", number=last + 1 + n) for n in range(count)
    )
    made = list(Run.objects.filter(run_id__in=[copy.run_id for copy in made]).order_by("id"))
    RunValue.objects.bulk_create(row for copy in made for row in run_value_rows(copy))
    if accuracy is not None:
        MetricSeries.objects.bulk_create(
            MetricSeries(
                run=copy,
                experiment_id=copy.experiment_id,
                workspace_id=copy.workspace_id,
                name="accuracy",
                count=1,
                last_value=accuracy,
                min_value=accuracy,
                max_value=accuracy,
            )
            for copy in made
        )
    return made


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
