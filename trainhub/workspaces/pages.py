"""The one way a workspace page is rendered: every template gets the caller's access, its
workspace and the top-bar section to highlight."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from trainhub.workspaces.permissions import Access


def workspace_page(
    request: HttpRequest, access: Access, template: str, section: str, *, http_status: int = 200, **context: Any
) -> HttpResponse:
    page = {"access": access, "workspace": access.workspace, "section": section, **context}
    return render(request, template, page, status=http_status)
