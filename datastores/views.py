"""Data pages: the workspace's datastores and datasets, a datastore's files, a dataset's versions,
and a version's files, each with the runs that used it."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from datastores import selectors, services
from datastores.downloads import blob_download
from trainhub.workspaces import selectors as workspace_selectors
from trainhub.workspaces.pages import workspace_page

MAX_LISTED = 2000


@login_required
def data_list(request: HttpRequest, workspace_name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    # Every workspace has its default datastore, as on Azure, even before anything is uploaded.
    services.datastore_default(access.workspace)
    return workspace_page(
        request,
        access,
        "datastores/data.html",
        "data",
        datastores=selectors.datastores_with_totals(access.workspace),
        datasets=selectors.datasets_with_latest(access.workspace),
    )


@login_required
def datastore_detail(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    datastore = selectors.datastore_get(access.workspace, name)
    files = selectors.datastore_files(datastore)
    return workspace_page(
        request,
        access,
        "datastores/datastore.html",
        "data",
        datastore=datastore,
        files=files[:MAX_LISTED],
        file_count=files.count(),
        inputs=selectors.inputs_using_datastore(datastore)[:200],
    )


@login_required
def data_file(request: HttpRequest, workspace_name: str, sha256: str) -> HttpResponseBase:
    """A file of a datastore or dataset, by content, saved under the name of its `path`."""
    access = workspace_selectors.access_for(request.user, workspace_name)
    return blob_download(request, access.workspace, sha256, request.GET.get("path", "")[:1024])


@login_required
def dataset_detail(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    dataset = selectors.dataset_get(access.workspace, name)
    return workspace_page(
        request,
        access,
        "datastores/dataset.html",
        "data",
        dataset=dataset,
        versions=selectors.versions_with_use(dataset),
    )


@login_required
def dataset_version_detail(request: HttpRequest, workspace_name: str, name: str, version: int) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    found = selectors.dataset_version_get(access.workspace, name, version)
    return workspace_page(
        request,
        access,
        "datastores/dataset_version.html",
        "data",
        version=found,
        files=selectors.dataset_version_files(found)[:MAX_LISTED],
        inputs=selectors.inputs_using_version(found)[:200],
    )
