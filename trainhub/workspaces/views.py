"""Workspace pages: the list, the overview, members, tokens and config.json."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from trainhub.forms import add_service_errors
from trainhub.workspaces import selectors, services
from trainhub.workspaces.forms import ConfigForm, MemberForm, RoleForm, TokenForm, WorkspaceForm
from trainhub.workspaces.models import Membership, Role
from trainhub.workspaces.pages import workspace_page
from trainhub.workspaces.permissions import Access, signed_in_user


def server_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/").rstrip("/")


@login_required
def workspace_list(request: HttpRequest) -> HttpResponse:
    form = WorkspaceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            workspace = services.workspace_create(
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                user=signed_in_user(request),
            )
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            messages.success(request, f"Workspace {workspace.name} created.")
            return redirect("workspace-overview", workspace_name=workspace.name)
    memberships = selectors.memberships_for_user(signed_in_user(request))
    return render(request, "workspaces/list.html", {"memberships": memberships, "form": form})


@login_required
def member_list(request: HttpRequest, workspace_name: str) -> HttpResponse:
    access = selectors.access_for(request.user, workspace_name)
    form = MemberForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                services.member_add(access=access, **form.cleaned_data)
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                messages.success(request, f"{form.cleaned_data['username']} added.")
                return redirect("workspaces:members", workspace_name=workspace_name)
    return workspace_page(
        request,
        access,
        "workspaces/members.html",
        "members",
        members=selectors.members_of(access.workspace),
        form=form,
        role_choices=Role.choices,
    )


def _membership(access: Access, membership_id: int) -> Membership:
    return selectors.membership_get(access.workspace, membership_id)


@login_required
@require_POST
def member_role(request: HttpRequest, workspace_name: str, membership_id: int) -> HttpResponse:
    access = selectors.access_for(request.user, workspace_name)
    membership = _membership(access, membership_id)
    form = RoleForm(request.POST)
    if form.is_valid():
        try:
            services.member_set_role(access=access, membership=membership, role=form.cleaned_data["role"])
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, f"{membership.user} is now {membership.role}.")
    return redirect("workspaces:members", workspace_name=workspace_name)


@login_required
@require_POST
def member_remove(request: HttpRequest, workspace_name: str, membership_id: int) -> HttpResponse:
    access = selectors.access_for(request.user, workspace_name)
    membership = _membership(access, membership_id)
    try:
        services.member_remove(access=access, membership=membership)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"{membership.user} removed.")
    return redirect("workspaces:members", workspace_name=workspace_name)


@login_required
def token_list(request: HttpRequest, workspace_name: str) -> HttpResponse:
    access = selectors.access_for(request.user, workspace_name)
    form = TokenForm(request.POST or None)
    issued = None
    if request.method == "POST" and form.is_valid():
        try:
            issued = services.token_create(access=access, user=signed_in_user(request), name=form.cleaned_data["name"])
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            form = TokenForm()
    return workspace_page(
        request,
        access,
        "workspaces/tokens.html",
        "tokens",
        tokens=selectors.tokens_of(workspace=access.workspace, user=signed_in_user(request)),
        issued=issued,
        form=form,
    )


@login_required
@require_POST
def token_revoke(request: HttpRequest, workspace_name: str, token_id: int) -> HttpResponse:
    access = selectors.access_for(request.user, workspace_name)
    token = get_object_or_404(
        selectors.tokens_of(workspace=access.workspace, user=signed_in_user(request)), pk=token_id
    )
    services.token_revoke(token=token)
    messages.success(request, f"Token {token.name} revoked.")
    return redirect("workspaces:tokens", workspace_name=workspace_name)


@login_required
def config_download(request: HttpRequest, workspace_name: str) -> HttpResponse:
    """GET: config.json without a token (the SDK then reads TRAINHUB_TOKEN or
    ~/.trainhub/credentials). POST with include_token: with a token made for this download."""
    access = selectors.access_for(request.user, workspace_name)
    token = None
    if request.method == "POST":
        form = ConfigForm(request.POST)
        if form.is_valid() and form.cleaned_data["include_token"]:
            stamp = timezone.now().strftime("%Y-%m-%d %H:%M")
            token = services.token_create(
                access=access, user=signed_in_user(request), name=f"config.json download {stamp}"
            ).secret
    config = services.config_json(
        workspace=access.workspace,
        server_url=getattr(settings, "TRAINHUB_PUBLIC_URL_OVERRIDE", None) or server_url(request),
        token=token,
    )
    response = HttpResponse(json.dumps(config, indent=2) + "\n", content_type="application/json")
    response["Content-Disposition"] = 'attachment; filename="config.json"'
    response["Cache-Control"] = "no-store"
    return response
