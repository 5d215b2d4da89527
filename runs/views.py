"""Experiment and run pages: lists, the run page with its live log, files and log downloads."""

from __future__ import annotations

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from runs import selectors, services
from runs.models import RunStatus
from trainhub.downloads import file_response
from trainhub.workspaces import selectors as workspace_selectors
from trainhub.workspaces.pages import workspace_page


@login_required
def experiment_list(request: HttpRequest, workspace_name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    return workspace_page(
        request,
        access,
        "runs/experiments.html",
        "experiments",
        experiments=selectors.experiments_of(access.workspace),
    )


@login_required
def experiment_detail(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    experiment = selectors.experiment_get(access.workspace, name)
    status = request.GET.get("status") or None
    if status not in RunStatus.values:
        status = None
    try:
        before = int(request.GET.get("before", "")) or None
    except ValueError:
        before = None
    page = selectors.runs_page(experiment, status=status, before_id=before, limit=selectors.PAGE_SIZE + 1)
    has_more = len(page) > selectors.PAGE_SIZE
    runs = page[: selectors.PAGE_SIZE]
    return workspace_page(
        request,
        access,
        "runs/experiment.html",
        "experiments",
        experiment=experiment,
        runs=runs,
        status=status,
        statuses=RunStatus.values,
        next_before=runs[-1].pk if has_more and runs else None,
    )


@login_required
def run_states(request: HttpRequest, workspace_name: str) -> JsonResponse:
    """?runs=a,b,c: what the run lists of the workspace's pages show of each run, to follow them."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    run_ids = [run_id for run_id in request.GET.get("runs", "").split(",") if run_id]
    return JsonResponse(selectors.run_states(access.workspace, run_ids))


@login_required
def run_detail(request: HttpRequest, workspace_name: str, run_id: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    run = selectors.run_get(access.workspace, run_id)
    tail = selectors.log_tail(run)
    changes = list(run.status_changes.all())
    processes = list(run.processes.all())
    layout, launch = selectors.launch_summary(run, len(processes))
    history = [
        {"change": change, "seconds": (following.at - change.at).total_seconds() if following else None}
        for change, following in zip(changes, changes[1:] + [None], strict=True)
    ]
    return workspace_page(
        request,
        access,
        "runs/run.html",
        "experiments",
        run=run,
        history=history,
        processes=processes,
        layout=layout,
        launch=launch,
        files=selectors.run_files(run),
        snapshot_files=run.snapshot.files,
        tail=[c.as_message() for c in tail],
        streams=selectors.log_streams(run),
        slurm_job=selectors.slurm_job_of(run),
    )


@login_required
@require_POST
def run_edit(request: HttpRequest, workspace_name: str, run_id: str) -> HttpResponse:
    """The run page's name-and-notes form: tags as one `key=value` per line."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    run = selectors.run_get(access.workspace, run_id)
    tags: dict[str, str] = {}
    for line in request.POST.get("tags", "").splitlines():
        key, _, value = line.partition("=")
        if key.strip():
            tags[key.strip()] = value.strip()
    try:
        services.run_update(
            access=access,
            run=run,
            display_name=request.POST.get("display_name", ""),
            description=request.POST.get("description", ""),
            tags=tags,
            removed_tags=[key for key in run.tags if key not in tags],
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, "Saved.")
    return redirect("runs:detail", workspace_name=workspace_name, run_id=run_id)


@login_required
@require_POST
def run_cancel(request: HttpRequest, workspace_name: str, run_id: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    run = selectors.run_get(access.workspace, run_id)
    services.run_cancel(access=access, run=run)
    messages.success(request, f"Cancel requested for {run.run_id}.")
    return redirect("runs:detail", workspace_name=workspace_name, run_id=run_id)


@login_required
def run_file(request: HttpRequest, workspace_name: str, run_id: str) -> HttpResponseBase:
    access = workspace_selectors.access_for(request.user, workspace_name)
    run = selectors.run_get(access.workspace, run_id)
    found = selectors.run_file_get(run, request.GET.get("path", ""))
    return file_response(
        request,
        storage_name=found.storage_name,
        filename=found.path.rsplit("/", 1)[-1],
        size=found.size,
        sha256=found.sha256,
    )


async def _log_text(run_pk: int, stream: str | None) -> AsyncIterator[bytes]:
    after = -1

    while True:
        rows = await sync_to_async(selectors.log_lines_after)(run_pk, after, stream=stream)
        if not rows:
            return
        for first_seq, text in rows:
            yield (text + "\n").encode()
            after = first_seq


@login_required
def run_log_download(request: HttpRequest, workspace_name: str, run_id: str) -> HttpResponseBase:
    access = workspace_selectors.access_for(request.user, workspace_name)
    run = selectors.run_get(access.workspace, run_id)
    stream = request.GET.get("stream") or None
    if stream is not None and stream not in selectors.log_streams(run):
        raise Http404(f"No log stream {stream!r}.")
    response = StreamingHttpResponse(_log_text(run.pk, stream), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{run.run_id}-{stream or "all"}.txt"'
    return response
