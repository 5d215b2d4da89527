"""Documentation pages (the tutorial), for signed-in users."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.safestring import mark_safe

from trainhub.docs.pages import rendered_page


@login_required
def page(request: HttpRequest, name: str) -> HttpResponse:
    title, html = rendered_page(name)
    # Safe to mark: render_markdown escapes every piece of HTML the Markdown holds.
    return render(request, "docs/page.html", {"title": title, "body": mark_safe(html)})  # noqa: S308
