"""Sign-in throttling (django-axes): the client address it counts by, and the locked-out page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

LOCKED_OUT = (
    "Too many failed sign-ins for this account or from this address: signing in is locked for "
    "{minutes} minutes. Every attempt meanwhile starts the {minutes} minutes again."
)


def client_address(request: HttpRequest) -> str | None:
    """The address daphne gives the request: the peer's, or behind a proxy (TRAINHUB_BEHIND_PROXY)
    the one the proxy put in X-Forwarded-For. Never a header read here, which any client could set."""
    return request.META.get("REMOTE_ADDR")


def locked_out(request: HttpRequest, original_response: Any, credentials: Any) -> HttpResponse:
    """The sign-in page again, saying why and for how long (429)."""
    message = LOCKED_OUT.format(minutes=settings.TRAINHUB_SIGNIN_LOCKOUT_MINUTES)
    form = AuthenticationForm(request)
    return render(
        request,
        "registration/login.html",
        {"form": form, "locked_out": message, "next": request.POST.get("next", "")},
        status=429,
    )
