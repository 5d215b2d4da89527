"""The workspace overview page (/w/<name>/): its recent runs, clusters and model versions. It
shows what the apps built on workspaces hold, so it lives above them rather than in workspaces."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse

from registry.selectors import recent_versions
from runs.selectors import recent_runs
from trainhub.compute.selectors import clusters_of
from trainhub.workspaces import selectors
from trainhub.workspaces.pages import workspace_page


@login_required
def workspace_overview(request: HttpRequest, workspace_name: str) -> HttpResponse:
    access = selectors.access_for(request.user, workspace_name)
    return workspace_page(
        request,
        access,
        "workspaces/detail.html",
        "overview",
        runs=recent_runs(access.workspace),
        clusters=clusters_of(access.workspace),
        versions=recent_versions(access.workspace),
    )
