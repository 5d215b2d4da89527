"""The sweep page: children ranked by the primary metric, parameters as columns, and its charts,
which follow the sweep live through data.json."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from sweeps import selectors, services
from sweeps.models import Sweep
from trainhub.workspaces import selectors as workspace_selectors
from trainhub.workspaces.pages import workspace_page


def _rows(sweep: Sweep) -> tuple[list[selectors.ChildRow], selectors.ChildRow | None]:
    rows = selectors.child_rows(sweep)
    return selectors.sorted_by_primary_metric(sweep, rows), selectors.best_row(sweep, rows)


@login_required
def sweep_detail(request: HttpRequest, workspace_name: str, run_id: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    sweep = selectors.sweep_get(access.workspace, run_id)
    ranked, best = _rows(sweep)
    return workspace_page(
        request,
        access,
        "sweeps/sweep.html",
        "experiments",
        sweep=sweep,
        run=sweep.parent,
        names=sweep.sampling["order"],
        rows=[{"row": row, "values": [row.parameters.get(name) for name in sweep.sampling["order"]]} for row in ranked],
        best=best,
    )


@login_required
def sweep_data(request: HttpRequest, workspace_name: str, run_id: str) -> JsonResponse:
    """What the page's charts and table draw: each child, its parameters and its primary metric's values."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    sweep = selectors.sweep_get(access.workspace, run_id)
    ranked, best = _rows(sweep)
    values = selectors.primary_metric_values(sweep, list(sweep.children.select_related("run")))
    children: list[dict[str, Any]] = [
        {
            "index": row.index,
            "run_id": row.run.run_id,
            "number": row.run.number,
            "url": f"/w/{access.workspace.name}/runs/{row.run.run_id}/",
            "status": row.run.status,
            "status_reason": row.run.status_reason,
            "parameters": row.parameters,
            "best": row.best_primary_metric,
            "values": values.get(row.index, []),
        }
        for row in ranked
    ]
    return JsonResponse(
        {
            "status": sweep.parent.status,
            "end_reason": sweep.end_reason,
            "metric": sweep.primary_metric_name,
            "goal": sweep.primary_metric_goal,
            "names": sweep.sampling["order"],
            "best_run_id": best.run.run_id if best else None,
            "children": children,
        }
    )


@login_required
@require_POST
def sweep_cancel(request: HttpRequest, workspace_name: str, run_id: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    sweep = selectors.sweep_get(access.workspace, run_id)
    services.sweep_cancel(access=access, sweep=sweep)
    messages.success(request, f"Sweep {run_id} canceled: no child starts any more, and the running ones stop.")
    return redirect("sweeps:detail", workspace_name=workspace_name, run_id=run_id)
