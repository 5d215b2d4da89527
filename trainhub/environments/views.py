"""Environment pages: the list (curated and the workspace's own), one environment, one version."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from trainhub.environments import selectors, services
from trainhub.environments.curated import RESERVED_PREFIX
from trainhub.environments.forms import CloneForm
from trainhub.environments.spec import normalise_spec, to_conda_yaml
from trainhub.workspaces import selectors as workspace_selectors
from trainhub.workspaces.pages import workspace_page
from trainhub.workspaces.permissions import signed_in_user


@login_required
def environment_list(request: HttpRequest, workspace_name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    versions = selectors.latest_versions(access.workspace)
    return workspace_page(
        request,
        access,
        "environments/list.html",
        "environments",
        curated=[v for v in versions if v.environment.is_curated],
        custom=[v for v in versions if not v.environment.is_curated],
        reserved_prefix=RESERVED_PREFIX,
    )


@login_required
def environment_detail(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    environment = selectors.environment_get(access.workspace, name)
    return _detail(request, access, environment, CloneForm())


def _detail(request, access, environment, clone_form: CloneForm, status: int = 200) -> HttpResponse:
    versions = list(selectors.versions_of(environment))
    return workspace_page(
        request,
        access,
        "environments/detail.html",
        "environments",
        environment=environment,
        versions=versions,
        latest=versions[0] if versions else None,
        clone_form=clone_form,
        http_status=status,
    )


@login_required
@require_POST
def environment_clone(request: HttpRequest, workspace_name: str, name: str) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    environment = selectors.environment_get(access.workspace, name)
    form = CloneForm(request.POST)
    if form.is_valid():
        source = selectors.version_get(environment, form.cleaned_data["version"])
        try:
            registration = services.environment_clone(
                access=access,
                user=signed_in_user(request),
                source=source,
                new_name=form.cleaned_data["new_name"],
            )
        except ValidationError as error:
            form.add_error(None, " ".join(error.messages))
        else:
            clone = registration.version
            messages.success(request, f"{clone.environment.name} version {clone.version} made from {name}.")
            return redirect("environments:detail", workspace_name=workspace_name, name=clone.environment.name)
    return _detail(request, access, environment, form, status=400)


@login_required
def version_detail(request: HttpRequest, workspace_name: str, name: str, version: int) -> HttpResponse:
    access = workspace_selectors.access_for(request.user, workspace_name)
    environment = selectors.environment_get(access.workspace, name)
    found = selectors.version_get(environment, version)
    spec = normalise_spec(found.spec, allow_direct_urls=True)
    return workspace_page(
        request,
        access,
        "environments/version.html",
        "environments",
        environment=environment,
        version=found,
        spec=spec,
        conda_yaml=to_conda_yaml(spec, environment.name),
        builds=selectors.builds_of(found),
    )
