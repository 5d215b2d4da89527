"""The scoring URL, /endpoints/<workspace>/<name>/score, served before Django: it checks the key
(or a member's API token) and passes the request's bytes to a replica's port, nothing more.

What to check and where to send is kept per endpoint in this process, and read again from the
database only when the endpoint's route number in Redis moved (a replica came or went, a key was
regenerated, the endpoint was deleted): one Redis GET per request. Connections to replicas are
kept open and reused (HTTP/1.1). A request that could not reach its replica (the connection was
refused, or a kept connection was found closed before any answer) is sent once more, after the
route is read again: this is what lets an update switch replicas without a failed request.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404

from trainhub import redis_keys

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

SCORE_PATH = re.compile(r"^/endpoints/([A-Za-z0-9][A-Za-z0-9_.-]{0,99})/([A-Za-z0-9][A-Za-z0-9_.-]{0,99})/score/?$")
NOT_AUTHENTICATED = "Send the endpoint's key or a member's API token as 'Authorization: Bearer <key>'."
NOT_FOUND = "No endpoint named {name!r} in workspace {workspace!r}."
NO_REPLICA = "Endpoint {name!r} has no replica answering ({state}): wait_for_deployment() first."
TOO_LARGE = "The request is {size} bytes; an endpoint takes at most {limit}."
TIMED_OUT = "The replica did not answer within {seconds} s."
UNREACHABLE = "The replica could not be reached: {error}"
ONLY_POST = "Score with POST."
BAD_ANSWER = "The replica's answer is not one TrainHub passes on: {why}"
REPLICA_HEADER = "X-TrainHub-Replica"
# What a replica (member code) may send back: a bounded answer of a type no browser runs on this origin.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
MAX_ANSWER_HEADERS = 100
RELAYED_TYPES = (b"application/json", b"text/plain")
IDLE_CONNECTIONS_PER_REPLICA = 32


@dataclass
class Route:
    endpoint_pk: int
    workspace_pk: int
    name: str
    state: str
    key_hashes: tuple[str, ...]
    replicas: list[tuple[str, int, str]]
    version: bytes | str | None
    turn: itertools.count = field(default_factory=itertools.count)


class ReplicaLost(Exception):
    """The request never reached the replica: it may be sent again."""


class BadAnswer(Exception):
    """The replica answered something that is not a bounded HTTP/1.1 answer."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer


class ScoringProxy:
    """ASGI: the scoring URL here, anything else to `app` (Django)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]):
        self.app = app
        self.routes: dict[tuple[str, str], Route] = {}
        self.idle: dict[tuple[str, int], list[_Connection]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = SCORE_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        _no_delay(send)
        status, content_type, body, endpoint_pk = await self.score(scope, receive, match.group(1), match.group(2))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-content-type-options", b"nosniff"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        if endpoint_pk is not None:
            from endpoints.services import endpoint_record_request

            endpoint_record_request(endpoint_pk, time.perf_counter() - started, status < 400)

    async def score(
        self, scope: Scope, receive: Receive, workspace: str, name: str
    ) -> tuple[int, bytes, bytes, int | None]:
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        token = _bearer(headers.get("authorization", b""))
        route = await self.route(workspace, name)
        allowed = route is not None and token is not None and _is_key(token, route.key_hashes)
        if not allowed:
            if token is None or token.startswith("the_"):
                return _error(401, NOT_AUTHENTICATED, "not_authenticated")
            valid, member = await sync_to_async(_member_workspace_pk)(token, workspace)
            if not valid:
                return _error(401, NOT_AUTHENTICATED, "not_authenticated")
            if route is None or route.workspace_pk != member:
                return _error(404, NOT_FOUND.format(name=name, workspace=workspace), "not_found")
        assert route is not None
        if scope.get("method") != "POST":
            return _error(405, ONLY_POST, "method_not_allowed")
        limit = settings.TRAINHUB_ENDPOINT_MAX_REQUEST_BYTES
        declared = int(headers.get("content-length", b"0") or 0)
        if declared > limit:
            return _error(413, TOO_LARGE.format(size=declared, limit=limit), "too_large")
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > limit:
                return _error(413, TOO_LARGE.format(size=len(body), limit=limit), "too_large")
            if not message.get("more_body"):
                break
        content_type = headers.get("content-type", b"application/json")
        timeout = settings.TRAINHUB_ENDPOINT_TIMEOUT_SECONDS
        for attempt in range(3):
            if not route.replicas:
                return _error(503, NO_REPLICA.format(name=name, state=route.state), "no_replica", route.endpoint_pk)
            address, port, secret = route.replicas[next(route.turn) % len(route.replicas)]
            try:
                status, answer_type, answer = await asyncio.wait_for(
                    self.forward(address, port, secret, content_type, bytes(body)), timeout
                )
                return status, answer_type, answer, route.endpoint_pk
            except ReplicaLost as lost:
                if attempt == 2:
                    return _error(502, UNREACHABLE.format(error=lost), "unreachable", route.endpoint_pk)
                await asyncio.sleep(0.05 * attempt)
                route = await self.route(workspace, name, fresh=True) or route
            except TimeoutError:
                return _error(504, TIMED_OUT.format(seconds=timeout), "timeout", route.endpoint_pk)
            except BadAnswer as bad:
                return _error(502, BAD_ANSWER.format(why=bad), "bad_answer", route.endpoint_pk)
        raise AssertionError("unreachable")

    async def route(self, workspace: str, name: str, fresh: bool = False) -> Route | None:
        cached = self.routes.get((workspace, name))
        if cached is not None and not fresh:
            from trainhub.redis_conn import get_redis

            if get_redis().get(redis_keys.endpoint_route_version(cached.endpoint_pk)) == cached.version:
                return cached
        route = await sync_to_async(_load_route)(workspace, name)
        if route is None:
            self.routes.pop((workspace, name), None)
        else:
            self.routes[(workspace, name)] = route
        return route

    async def forward(
        self, address: str, port: int, secret: str, content_type: bytes, body: bytes
    ) -> tuple[int, bytes, bytes]:
        connection = await self._connect(address, port)
        request = (
            b"POST /score HTTP/1.1\r\nHost: replica\r\nContent-Type: "
            + content_type
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n"
            + REPLICA_HEADER.encode()
            + b": "
            + secret.encode()
            + b"\r\n\r\n"
            + body
        )
        try:
            connection.writer.write(request)
            await connection.writer.drain()
            status_line = await connection.reader.readline()
        except (ConnectionError, OSError) as error:
            connection.writer.close()
            raise ReplicaLost(str(error)) from None
        if not status_line:
            connection.writer.close()
            # A kept connection the replica had closed (it stopped): the request never reached it.
            raise ReplicaLost("the replica closed the connection")
        try:
            status, answer_type, length, keep = await _answer_head(status_line, connection.reader)
            answer = await connection.reader.readexactly(length)
        except (ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
            connection.writer.close()
            raise BadAnswer(f"{type(error).__name__}: {error}"[:300]) from None
        except BaseException:
            connection.writer.close()
            raise
        if keep:
            idle = self.idle.setdefault((address, port), [])
            if len(idle) < IDLE_CONNECTIONS_PER_REPLICA:
                idle.append(connection)
            else:
                connection.writer.close()
        else:
            connection.writer.close()
        return status, answer_type, answer

    async def _connect(self, address: str, port: int) -> _Connection:
        idle = self.idle.get((address, port))
        while idle:
            connection = idle.pop()
            if not connection.reader.at_eof():
                return connection
            connection.writer.close()
        try:
            reader, writer = await asyncio.open_connection(address, port)
        except OSError as error:
            raise ReplicaLost(str(error)) from None
        return _Connection(reader, writer)


async def _answer_head(status_line: bytes, reader: asyncio.StreamReader) -> tuple[int, bytes, int, bool]:
    """(status, content type, body length, keep the connection) of an answer, checked."""
    status = int(status_line.split(b" ", 2)[1])
    if not 100 <= status <= 599:
        raise ValueError(f"status {status}")
    length = 0
    answer_type = b"application/json"
    keep = True
    for _ in range(MAX_ANSWER_HEADERS):
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value.strip())
        elif key == b"content-type":
            answer_type = value.strip()
        elif key == b"connection" and value.strip().lower() == b"close":
            keep = False
    else:
        raise ValueError(f"more than {MAX_ANSWER_HEADERS} header lines")
    if not 0 <= length <= MAX_ANSWER_BYTES:
        raise ValueError(f"a body of {length} bytes (at most {MAX_ANSWER_BYTES})")
    if not answer_type.lower().startswith(RELAYED_TYPES):
        answer_type = b"application/octet-stream"
    return status, answer_type, length, keep


def _no_delay(send: Send) -> None:
    """Answers go out at once under daphne: with Nagle's algorithm a small answer written after
    another write waits for the client's delayed ACK."""
    from trainhub.ops.flow_control import _twisted_request

    transport = getattr(_twisted_request(send), "transport", None)
    if transport is not None and hasattr(transport, "setTcpNoDelay"):
        transport.setTcpNoDelay(True)


def _bearer(value: bytes) -> str | None:
    text = value.decode("latin-1")
    if not text.lower().startswith("bearer "):
        return None
    token = text[7:].strip()
    return token if 0 < len(token) <= 200 else None


def _is_key(token: str, key_hashes: tuple[str, ...]) -> bool:
    from trainhub.workspaces.selectors import hash_token

    digest = hash_token(token)
    return any(hmac.compare_digest(digest, known) for known in key_hashes)


def _error(
    status: int, message: str, code: str, endpoint_pk: int | None = None
) -> tuple[int, bytes, bytes, int | None]:
    return status, b"application/json", json.dumps({"detail": message, "code": code}).encode(), endpoint_pk


def _member_workspace_pk(token: str, workspace: str) -> tuple[bool, int | None]:
    """(whether the API token is live, the workspace's pk when its user is a member of `workspace`
    and the token is that workspace's: a token reaches only its own workspace)."""
    from trainhub.workspaces import selectors

    api_token = selectors.active_token(token)
    if api_token is None:
        return False, None
    if api_token.workspace.name != workspace:
        return True, None
    try:
        return True, selectors.access_for(api_token.user, workspace).workspace.pk
    except Http404:
        return True, None


def _load_route(workspace: str, name: str) -> Route | None:
    from endpoints.models import Endpoint, ReplicaState
    from trainhub.redis_conn import get_redis

    pk = Endpoint.objects.filter(workspace__name=workspace, name=name).values_list("pk", flat=True).first()
    if pk is None:
        return None
    # Read before the rows: a change after this read bumps it again, and the next request reloads.
    version = get_redis().get(redis_keys.endpoint_route_version(pk))
    endpoint = Endpoint.objects.filter(pk=pk).first()
    if endpoint is None:
        return None
    replicas = list(
        endpoint.replicas.filter(state=ReplicaState.READY, port__isnull=False)
        .order_by("-generation", "id")
        .values_list("generation", "address", "port", "secret")
    )
    newest = replicas[0][0] if replicas else None
    return Route(
        endpoint_pk=endpoint.pk,
        workspace_pk=endpoint.workspace_id,
        name=endpoint.name,
        state=endpoint.state,
        key_hashes=(endpoint.primary_key_hash, endpoint.secondary_key_hash),
        replicas=[(a, p, s) for g, a, p, s in replicas if g == newest and p is not None],
        version=version,
    )
