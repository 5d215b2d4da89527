"""The web process's request threads, kept from one request to the next with their database
connection.

Django's ASGI handler runs each request's synchronous code (middleware, views, the ORM) in a thread
started for that request alone (asgiref's ThreadSensitiveContext), and a database connection
belongs to its thread: every request opened a new one whatever CONN_MAX_AGE said (SQLite: the
file, its PRAGMAs and Django's functions, about 1.4 ms of CPU; PostgreSQL: a new server process).
Here a request that has ended hands its thread to the next request, so its connection is kept as
CONN_MAX_AGE and CONN_HEALTH_CHECKS say, checked by Django at each request's start and end in that
same thread. A request still has a thread nobody else uses while it runs: there are as many as
requests at once, and at most KEPT_IDLE wait for the next.

A request for a synchronous view (all but the long polls) goes through the middleware and its view
in that thread in one go, as under WSGI. Django's ASGI handler runs the middleware in async mode
instead: every middleware passed the request to the thread and back before and after the view
(twice for most of them, and WhiteNoise, synchronous only, once more each way), about 15 trips
between daphne's loop and the thread for each request. The URL that chose the way is resolved once:
the middleware and view are handed its match instead of resolving it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, ResolverMatch, get_resolver

Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

KEPT_IDLE = 8


def _nothing() -> None:
    return None


# Where a request keeps the match of its path, for the handler that runs its view.
_MATCH = "_trainhub_resolved"


def _has_sync_view(request: HttpRequest) -> bool:
    """Whether the request's path leads to a synchronous view, or to none (answered 404 by the
    middleware and the resolver in the thread). The match is kept on the request."""
    try:
        match = get_resolver().resolve(request.path_info)
    except Resolver404:
        return True
    setattr(request, _MATCH, (request.path_info, match))
    return not iscoroutinefunction(match.func)


class _ResolvedOnce(BaseHandler):
    """A handler taking the match the request's way was chosen by rather than resolving the same
    path again (unless a middleware changed the request's URLconf or path since)."""

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        kept = getattr(request, _MATCH, None)
        if kept is None or hasattr(request, "urlconf") or kept[0] != request.path_info:
            return super().resolve_request(request)
        request.resolver_match = kept[1]
        return kept[1]


class KeptThreadsHandler(_ResolvedOnce, ASGIHandler):
    """Django's ASGI handler, each request run in a kept thread (see the module's docstring)."""

    def __init__(self) -> None:
        self._idle: list[ThreadSensitiveContext] = []
        super().__init__()
        # The same middleware, in sync mode, for the requests whose view is synchronous.
        self._in_thread = _ResolvedOnce()
        self._in_thread.load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        if _has_sync_view(request):
            return await sync_to_async(self._in_thread.get_response, thread_sensitive=True)(request)
        return await super().get_response_async(request)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        context = self._idle.pop() if self._idle else ThreadSensitiveContext()
        token = SyncToAsync.thread_sensitive_context.set(context)
        free = False
        try:
            await self.handle(scope, receive, send)
            # A request whose client went away may have left its view running in the thread: the
            # next request gets the thread once that is done, not behind it.
            await sync_to_async(_nothing)()
            free = True
        finally:
            SyncToAsync.thread_sensitive_context.reset(token)
            if not free:
                # As Django does with every request's thread: it ends, and its connection with it.
                _let_end(context)
        if len(self._idle) < KEPT_IDLE:
            self._idle.append(context)
        else:
            await _retire(context)

    async def close_idle(self) -> None:
        """Close the database connections of the threads kept idle, and let those threads end."""
        while self._idle:
            await _retire(self._idle.pop())


async def _retire(context: ThreadSensitiveContext) -> None:
    token = SyncToAsync.thread_sensitive_context.set(context)
    try:
        await sync_to_async(connections.close_all)()
    finally:
        SyncToAsync.thread_sensitive_context.reset(token)
        _let_end(context)


def _let_end(context: ThreadSensitiveContext) -> None:
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)
