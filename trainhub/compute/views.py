"""Compute pages: the clusters of a workspace with the size catalog, and one cluster's nodes."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from trainhub.compute import catalog, selectors, services
from trainhub.compute.forms import ClusterForm
from trainhub.forms import add_service_errors
from trainhub.workspaces import selectors as workspace_selectors
from trainhub.workspaces.pages import workspace_page
from trainhub.workspaces.permissions import signed_in_user


@login_required
def cluster_list(request: HttpRequest, workspace_name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    form = ClusterForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                cluster = services.cluster_create(access=access, user=signed_in_user(request), **form.cleaned_data)
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                messages.success(request, f"Compute target {cluster.name} created.")
                return redirect("compute:detail", workspace_name=workspace_name, name=cluster.name)
    return workspace_page(
        request,
        access,
        "compute/list.html",
        "compute",
        clusters=selectors.clusters_of(access.workspace),
        sizes=catalog.SIZES.values(),
        form=form,
    )


@login_required
def cluster_detail(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    cluster = selectors.cluster_get(access.workspace, name)
    if cluster.is_slurm:
        return workspace_page(
            request,
            access,
            "compute/slurm_detail.html",
            "compute",
            cluster=cluster,
            size=catalog.get_size(cluster.vm_size),
            partition=selectors.slurm_partition(cluster),
        )
    nodes = list(selectors.recent_nodes(cluster))
    loads = services.node_loads([node.pk for node in nodes])
    usages = services.node_usages([node.pk for node in nodes])
    for node in nodes:
        node.load = loads.get(node.pk)  # type: ignore[attr-defined]
        node.usage = usages.get(node.pk)  # type: ignore[attr-defined]
    return workspace_page(
        request,
        access,
        "compute/detail.html",
        "compute",
        cluster=cluster,
        size=catalog.get_size(cluster.vm_size),
        nodes=nodes,
    )
