"""Data pages: the workspace's datastores and datasets, a datastore's files, a dataset's versions,
and a version's files, each with the runs that used it."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from datastores import selectors
from trainhub.workspaces import selectors as workspace_selectors

MAX_LISTED = 2000


@login_required
def data_list(request: HttpRequest, workspace_name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    return render(
        request,
        "datastores/data.html",
        {
            "access": access,
            "workspace": access.workspace,
            "datastores": selectors.datastores_with_totals(access.workspace),
            "datasets": selectors.datasets_with_latest(access.workspace),
            "section": "data",
        },
    )


@login_required
def datastore_detail(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    datastore = selectors.datastore_get(access.workspace, name)
    files = selectors.datastore_files(datastore)
    return render(
        request,
        "datastores/datastore.html",
        {
            "access": access,
            "workspace": access.workspace,
            "datastore": datastore,
            "files": files[:MAX_LISTED],
            "file_count": files.count(),
            "inputs": selectors.inputs_using_datastore(datastore)[:200],
            "section": "data",
        },
    )


@login_required
def dataset_detail(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    dataset = selectors.dataset_get(access.workspace, name)
    return render(
        request,
        "datastores/dataset.html",
        {
            "access": access,
            "workspace": access.workspace,
            "dataset": dataset,
            "versions": selectors.versions_with_use(dataset),
            "section": "data",
        },
    )


@login_required
def dataset_version_detail(request: HttpRequest, workspace_name: str, name: str, version: int) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    found = selectors.dataset_version_get(access.workspace, name, version)
    return render(
        request,
        "datastores/dataset_version.html",
        {
            "access": access,
            "workspace": access.workspace,
            "version": found,
            "files": selectors.dataset_version_files(found)[:MAX_LISTED],
            "inputs": selectors.inputs_using_version(found)[:200],
            "section": "data",
        },
    )
