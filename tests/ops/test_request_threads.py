"""The web process's request threads (trainhub/ops/request_threads.py): a request uses the database
connection a request before it opened, and requests at once still each have a thread of their own."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from asgiref.sync import SyncToAsync
from django.db.backends.signals import connection_created
from django.urls import URLResolver, get_resolver

from tests.runs.builders import make_run
from trainhub.ops.request_threads import KeptThreadsHandler


async def get(handler: KeptThreadsHandler, path: str, token: str) -> tuple[int, Any]:
    """(status, JSON answer, or the body of a page) of a GET through the handler, from a client that
    stays connected."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("localhost", 8000),
    }
    asked = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never goes away
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await handler(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {name.lower(): value for name, value in sent[0]["headers"]}
    is_json = headers.get(b"content-type", b"").startswith(b"application/json")
    return sent[0]["status"], json.loads(body) if is_json else body


@pytest.fixture
def connections_opened():
    """The threads in which a database connection was opened, while the test runs."""
    opened: list[int] = []

    def record(sender: Any, connection: Any, **kwargs: Any) -> None:
        opened.append(threading.get_ident())

    connection_created.connect(record)
    yield opened
    connection_created.disconnect(record)


def test_requests_one_after_another_use_one_database_connection(
    transactional_db, workspace, owner_token, connections_opened
):
    handler = KeptThreadsHandler()

    async def five_requests() -> list[tuple[int, Any]]:
        try:
            return [await get(handler, "/api/v1/workspaces/birds", owner_token) for _ in range(5)]
        finally:
            await handler.close_idle()

    answers = asyncio.run(five_requests())

    assert [(status, body["name"]) for status, body in answers] == [(200, "birds")] * 5
    assert len(connections_opened) == 1


def test_requests_at_once_each_have_a_thread_and_connection_of_their_own(
    transactional_db, workspace, owner_token, connections_opened
):
    handler = KeptThreadsHandler()

    async def two_at_once_then_one() -> list[tuple[int, Any]]:
        try:
            both = await asyncio.gather(*(get(handler, "/api/v1/workspaces/birds", owner_token) for _ in range(2)))
            return [*both, await get(handler, "/api/v1/workspaces/birds", owner_token)]
        finally:
            await handler.close_idle()

    answers = asyncio.run(two_at_once_then_one())

    assert [status for status, _ in answers] == [200, 200, 200]
    assert len(connections_opened) == 2 and len(set(connections_opened)) == 2


@pytest.fixture
def trips_to_threads(monkeypatch):
    """How many times code was handed from the event loop to a thread (asgiref's SyncToAsync)."""
    trips = [0]
    original = SyncToAsync.thread_handler

    def counted(self: SyncToAsync, *args: Any, **kwargs: Any) -> Any:
        trips[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "thread_handler", counted)
    return trips


@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/v1/workspaces/birds", 200), ("/api/v1/workspaces/not-mine", 404), ("/no/such/page/", 404)],
)
def test_a_request_goes_to_its_thread_a_few_times_not_once_per_middleware(
    transactional_db, workspace, owner_token, trips_to_threads, path, status
):
    handler = KeptThreadsHandler()

    async def one_request() -> tuple[int, Any]:
        try:
            await get(handler, path, owner_token)  # the thread and its connection are made
            trips_to_threads[0] = 0
            return await get(handler, path, owner_token)
        finally:
            await handler.close_idle()

    answer_status, _ = asyncio.run(one_request())

    assert answer_status == status
    # The request's start, its middleware and view, the response's close, its end, the thread
    # handed on: 17-18 trips in Django's async mode (each middleware went to the thread and back
    # before the view and after it).
    assert trips_to_threads[0] <= 5


@pytest.mark.parametrize("view", ["synchronous", "asynchronous"])
def test_a_requests_path_is_resolved_once(transactional_db, workspace, owner_token, monkeypatch, view):
    """The path that chose the request's way (a synchronous view; an async one, the long polls)
    is not resolved again for its middleware and view."""
    run = make_run(workspace)
    path = f"/api/v1/workspaces/birds/runs/{run.run_id}" + ("/logs" if view == "asynchronous" else "/files")
    resolved: list[str] = []
    original = URLResolver.resolve

    def counted(self: URLResolver, path: str) -> Any:
        if self is get_resolver():
            resolved.append(path)
        return original(self, path)

    monkeypatch.setattr(URLResolver, "resolve", counted)
    handler = KeptThreadsHandler()

    async def one_request() -> tuple[int, Any]:
        try:
            return await get(handler, path, owner_token)
        finally:
            await handler.close_idle()

    answer_status, _ = asyncio.run(one_request())

    assert answer_status == 200
    assert resolved == [path]
