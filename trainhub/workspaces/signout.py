"""Signing out (the site's page and the admin's): the sockets opened with the session that ends close."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse

from trainhub import live


def closing_sockets(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """`view` signs out; once it did (not on a refused request), that session's sockets close (4401)."""

    @wraps(view)
    def sign_out(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user_pk = request.user.pk if request.user.is_authenticated else None
        session_key = request.session.session_key
        response = view(request, *args, **kwargs)
        if user_pk is not None and session_key and not request.user.is_authenticated:
            live.close_session_sockets(user_pk, session_key)
        return response

    return sign_out
