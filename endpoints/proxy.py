"""The scoring URL, /endpoints/<workspace>/<name>/score, served before Django: it checks the key
(or a member's API token) and passes the request's bytes to a replica's port, nothing more.

What to check and where to send is kept per endpoint in this process and read again from the
database after a change was published on ROUTES_CHANNEL (a replica came or went, a key was
regenerated, the endpoint was deleted), or after ROUTE_KEPT_SECONDS: this process follows that
channel, and while it does not (before the subscription is confirmed, or after Redis went away)
nothing is taken from the cache. A change that names an acknowledgement list (a key regenerated,
the endpoint deleted) is acknowledged there once dropped: the service waits for every follower,
so that the old key is refused by the time regen_key() returns.
So a request touches neither Redis nor the database; request counts are added up in the process
and written to Redis once a second. Requests are spread over the endpoint's answering replicas,
the least busy first; connections to replicas are kept open and reused (HTTP/1.1). A request that
could not reach its replica (the connection was refused) is sent again to another replica after
the route is read again, and one whose replica closed the connection without an answer (a kept
connection closed as it stopped, or it died answering) is sent again once: this is what lets an
update or a replica's death go by without a failed request.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import redis.asyncio
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404
from django.http.request import split_domain_port, validate_host
from redis.exceptions import RedisError

from endpoints.models import Endpoint, ReplicaState
from endpoints.scoring_path import SCORE_PATH, TOO_LARGE
from trainhub import redis_keys
from trainhub.ops.flow_control import _twisted_request
from trainhub.redis_conn import get_async_redis, subscriber_options
from trainhub.workspaces import selectors
from trainhub.workspaces.selectors import hash_token

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

NOT_AUTHENTICATED = "Send the endpoint's key or a member's API token as 'Authorization: Bearer <key>'."
NOT_FOUND = "No endpoint named {name!r} in workspace {workspace!r}."
NO_REPLICA = "Endpoint {name!r} has no replica answering ({state}): wait_for_deployment() first."
TIMED_OUT = "The replica did not answer within {seconds} s."
UNREACHABLE = "The replica could not be reached: {error}"
BAD_CONTENT_TYPE = "The Content-Type header is not a media type: {value!r}."
ONLY_POST = "Score with POST."
BAD_LENGTH = "The Content-Length header is not a number of bytes: {value!r}."
BAD_HOST = "Invalid HTTP_HOST header: {host!r}. You may need to add {domain!r} to ALLOWED_HOSTS."
BAD_ANSWER = "The replica's answer is not one TrainHub passes on: {why}"
REPLICA_HEADER = "X-TrainHub-Replica"
# On each answer: the replica that gave it.
REPLICA_ANSWERED = "X-TrainHub-Replica-Id"
# What a replica (member code) may send back: a bounded answer of a type no browser runs on this origin.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
MAX_ANSWER_HEADERS = 100
RELAYED_TYPES = (b"application/json", b"text/plain")
IDLE_CONNECTIONS_PER_REPLICA = 32
ROUTES_CHANNEL = redis_keys.endpoint_routes_channel()
STATS_FLUSH_SECONDS = 1.0
# A replica that could not be reached is left out of this process's choices for this long, so
# that requests go to the others meanwhile (its end removes it from the route within a second).
UNREACHABLE_SECONDS = 5.0
ACCEPTED_KEYS_KEPT = 64
# A route is read again after this long even when no change was published: rows deleted by a
# cascade (a workspace deleted) publish nothing.
ROUTE_KEPT_SECONDS = 5.0
DIGITS = re.compile(rb"[0-9]{1,18}")
# A Content-Type passed on to the replica: printable ASCII only. A bare LF or CR inside it would
# start a header line of the client's own (a second Content-Length) in the request written to a
# kept connection, which every caller shares (daphne's Twisted turns them into spaces; an ASGI
# server that passes values on as they came would not).
MEDIA_TYPE = re.compile(rb"[\x20-\x7e]{1,200}")


# (status, content type, body, the endpoint's pk to count it for, the replica that answered)
Answer = tuple[int, bytes, bytes, int | None, int | None]


@dataclass(frozen=True)
class Backend:
    replica_pk: int
    address: str
    port: int
    secret: str

    @property
    def target(self) -> tuple[str, int]:
        return self.address, self.port


@dataclass
class Route:
    endpoint_pk: int
    workspace_pk: int
    name: str
    state: str
    key_hashes: tuple[str, ...]
    auth_enabled: bool
    replicas: list[Backend]
    loaded_at: float = field(default_factory=time.monotonic)
    turn: itertools.count = field(default_factory=itertools.count)
    # Keys already checked against key_hashes: the route is dropped when a key changes.
    accepted: set[str] = field(default_factory=set)


class ReplicaLost(Exception):
    """No answer came from the replica: its connection was refused (`sent` False: nothing reached
    it), or closed after the request went out (a kept connection it had closed as it stopped, or
    the replica died while answering)."""

    def __init__(self, message: str, sent: bool):
        super().__init__(message)
        self.sent = sent


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
        # Requests this process has sent to each replica and not yet had answered.
        self.busy: dict[tuple[str, int], int] = {}
        self.unreachable: dict[tuple[str, int], float] = {}
        # Whether ROUTES_CHANNEL is followed (the cache may be used), and how many changes it
        # brought: a route read from the database while one arrived is used once, not kept.
        self.following = False
        self.changes = 0
        self.stats: dict[int, list[float]] = {}
        # Routes being read from the database, with the number of changes seen when the read
        # began: requests that miss the cache together wait for one read.
        self.loading: dict[tuple[str, str], tuple[int, asyncio.Future[Route | None]]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = SCORE_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        self._start_background()
        _no_delay(send)
        status, content_type, body, endpoint_pk, replica_pk = await self.score(
            scope, receive, match.group(1), match.group(2)
        )
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        if replica_pk is not None:
            headers.append((REPLICA_ANSWERED.encode(), str(replica_pk).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if endpoint_pk is not None:
            counts = self.stats.setdefault(endpoint_pk, [0, 0, 0.0])
            counts[0] += 1
            counts[1] += status >= 400
            counts[2] += time.perf_counter() - started

    async def score(self, scope: Scope, receive: Receive, workspace: str, name: str) -> Answer:
        # ASGI servers give header names in lower case.
        headers: dict[bytes, bytes] = dict(scope.get("headers", []))
        host = _host_problem(headers.get(b"host", b""), headers.get(b"x-forwarded-host"))
        if host is not None:
            return _error(400, host, "bad_host")
        token = _bearer(headers.get(b"authorization", b""))
        route = await self.route(workspace, name)
        allowed = route is not None and (not route.auth_enabled or (token is not None and self._is_key(route, token)))
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
        length = headers.get(b"content-length", b"0").strip() or b"0"
        if not DIGITS.fullmatch(length):
            return _error(400, BAD_LENGTH.format(value=length.decode("latin-1")[:40]), "bad_length")
        declared = int(length)
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
        content_type = headers.get(b"content-type", b"application/json")
        if not MEDIA_TYPE.fullmatch(content_type):
            value = content_type.decode("latin-1")[:60]
            return _error(400, BAD_CONTENT_TYPE.format(value=value), "bad_content_type", route.endpoint_pk)
        timeout = settings.TRAINHUB_ENDPOINT_TIMEOUT_SECONDS
        tried: set[int] = set()
        resent = False
        for attempt in range(3):
            backend = self._choose(route, tried)
            if backend is None:
                return _error(503, NO_REPLICA.format(name=name, state=route.state), "no_replica", route.endpoint_pk)
            target = backend.target
            tried.add(backend.replica_pk)
            self.busy[target] = self.busy.get(target, 0) + 1
            try:
                async with asyncio.timeout(timeout):  # no task of its own, unlike wait_for
                    status, answer_type, answer = await self.forward(backend, content_type, bytes(body))
                return status, answer_type, answer, route.endpoint_pk, backend.replica_pk
            except ReplicaLost as lost:
                self.unreachable[target] = time.monotonic() + UNREACHABLE_SECONDS
                # A request that went out is sent again once only: one that kills its replica
                # (past its memory, say) must not take every replica down in turn.
                if attempt == 2 or (lost.sent and resent):
                    return _error(502, UNREACHABLE.format(error=lost), "unreachable", route.endpoint_pk)
                resent = resent or lost.sent
                await asyncio.sleep(0.05 * attempt)
                route = await self.route(workspace, name, fresh=True) or route
            except TimeoutError:
                return _error(504, TIMED_OUT.format(seconds=timeout), "timeout", route.endpoint_pk)
            except BadAnswer as bad:
                return _error(502, BAD_ANSWER.format(why=bad), "bad_answer", route.endpoint_pk)
            finally:
                self.busy[target] -= 1
        raise AssertionError("unreachable")

    def _is_key(self, route: Route, token: str) -> bool:
        if token in route.accepted:
            return True
        if not _is_key(token, route.key_hashes):
            return False
        if len(route.accepted) < ACCEPTED_KEYS_KEPT:
            route.accepted.add(token)
        return True

    def _choose(self, route: Route, tried: set[int]) -> Backend | None:
        """The least busy of the route's replicas, taking turns among equals; one this request
        already tried, or found unreachable a moment ago, only when no other is left."""
        replicas = route.replicas
        if not replicas:
            return None
        if len(replicas) == 1:
            return replicas[0]
        now = time.monotonic()
        untried = [b for b in replicas if b.replica_pk not in tried]
        live = [b for b in untried if self.unreachable.get(b.target, 0.0) <= now]
        candidates = live or untried or replicas
        start = next(route.turn)
        count = len(candidates)
        order = [candidates[(start + i) % count] for i in range(count)]
        return min(order, key=lambda b: self.busy.get(b.target, 0))

    async def route(self, workspace: str, name: str, fresh: bool = False) -> Route | None:
        key = (workspace, name)
        cached = self.routes.get(key)
        if (
            cached is not None
            and not fresh
            and self.following
            and time.monotonic() - cached.loaded_at < ROUTE_KEPT_SECONDS
        ):
            return cached
        loading = self.loading.get(key)
        # A read begun before a change was seen may hold what the change replaced: not joined.
        if loading is None or fresh or loading[0] != self.changes:
            loading = (self.changes, asyncio.ensure_future(self._load(key)))
            self.loading[key] = loading
        return await asyncio.shield(loading[1])

    async def _load(self, key: tuple[str, str]) -> Route | None:
        changes, following = self.changes, self.following
        try:
            route = await sync_to_async(_load_route)(*key)
        finally:
            if self.loading.get(key, (0, None))[1] is asyncio.current_task():
                del self.loading[key]
        if route is None:
            self.routes.pop(key, None)
        elif following and self.following and changes == self.changes:
            self.routes[key] = route
        return route

    # ------------------------------------------------------------ in the background

    def _start_background(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is loop:
            return
        self.loop = loop
        for work in (self._follow_routes, self._flush_stats):
            task = loop.create_task(work())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _follow_routes(self) -> None:
        """Drop a cached route as soon as its endpoint changed: the services publish its pk."""
        pause = 0.1
        while True:
            client = redis.asyncio.Redis.from_url(settings.REDIS_URL, **subscriber_options())
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(ROUTES_CHANNEL)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        # What changed while nobody listened is unknown: read everything again.
                        self.routes.clear()
                        self.changes += 1
                        self.following = True
                        pause = 0.1
                    elif message["type"] == "message":
                        self.changes += 1
                        pk, _, acknowledge = message["data"].decode().partition(" ")
                        for key in [k for k, r in self.routes.items() if r.endpoint_pk == int(pk)]:
                            self.routes.pop(key, None)
                        if acknowledge:
                            acks = redis_keys.endpoint_route_acks(acknowledge)
                            pipe = client.pipeline(transaction=False)
                            pipe.rpush(acks, 1)
                            pipe.expire(acks, 60)
                            await pipe.execute()
            except (RedisError, OSError, ValueError) as error:
                logger.warning("Scoring routes: not following %s (%s); retrying", ROUTES_CHANNEL, error)
            finally:
                self.following = False
                self.routes.clear()
                await pubsub.aclose()
                await client.aclose()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def _flush_stats(self) -> None:
        """Request counts and latency, added up here, go to Redis once a second."""
        while True:
            await asyncio.sleep(STATS_FLUSH_SECONDS)
            stats, self.stats = self.stats, {}
            if not stats:
                continue
            try:
                pipe = get_async_redis().pipeline(transaction=False)
                for pk, (requests, errors, seconds) in stats.items():
                    key = redis_keys.endpoint_stats(pk)
                    pipe.hincrby(key, "requests", int(requests))
                    if errors:
                        pipe.hincrby(key, "errors", int(errors))
                    pipe.hincrbyfloat(key, "seconds", seconds)
                await pipe.execute()
            except (RedisError, OSError) as error:
                logger.warning("Scoring: request counts of %d endpoints not recorded (%s)", len(stats), error)

    # ------------------------------------------------------------ to a replica

    async def forward(self, backend: Backend, content_type: bytes, body: bytes) -> tuple[int, bytes, bytes]:
        address, port = backend.address, backend.port
        connection = await self._connect(address, port)
        request = (
            b"POST /score HTTP/1.1\r\nHost: replica\r\nContent-Type: "
            + content_type
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n"
            + REPLICA_HEADER.encode()
            + b": "
            + backend.secret.encode()
            + b"\r\n\r\n"
            + body
        )
        try:
            connection.writer.write(request)
            await connection.writer.drain()
            status_line = await connection.reader.readline()
        except (ConnectionError, OSError) as error:
            connection.writer.close()
            raise ReplicaLost(str(error), sent=True) from None
        if not status_line:
            connection.writer.close()
            # A kept connection the replica had closed (it stopped): the request never reached it.
            raise ReplicaLost("the replica closed the connection", sent=True)
        try:
            status, answer_type, length, keep = await _answer_head(status_line, connection.reader)
            answer = await connection.reader.readexactly(length)
        except asyncio.IncompleteReadError:
            connection.writer.close()
            # Cut off: the replica died while it answered (killed, or past its memory).
            raise ReplicaLost("the replica closed the connection before its answer was whole", sent=True) from None
        except (ValueError, IndexError, asyncio.LimitOverrunError) as error:
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
            raise ReplicaLost(str(error), sent=False) from None
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
    another write waits for the client's delayed ACK. Once per connection."""
    transport = getattr(_twisted_request(send), "transport", None)
    if transport is not None and hasattr(transport, "setTcpNoDelay") and not getattr(transport, "no_delay", False):
        transport.setTcpNoDelay(True)
        transport.no_delay = True


def _bearer(value: bytes) -> str | None:
    text = value.decode("latin-1")
    if not text.lower().startswith("bearer "):
        return None
    token = text[7:].strip()
    return token if 0 < len(token) <= 200 else None


def _is_key(token: str, key_hashes: tuple[str, ...]) -> bool:
    digest = hash_token(token)
    return any(hmac.compare_digest(digest, known) for known in key_hashes)


def _error(status: int, message: str, code: str, endpoint_pk: int | None = None) -> Answer:
    return status, b"application/json", json.dumps({"detail": message, "code": code}).encode(), endpoint_pk, None


def _host_problem(host: bytes, forwarded_host: bytes | None) -> str | None:
    """Why the Host header is refused, as Django's HttpRequest.get_host() would refuse it (this URL
    is answered before Django), or None."""
    if settings.USE_X_FORWARDED_HOST and forwarded_host is not None:
        host = forwarded_host
    return _host_refused(host, tuple(settings.ALLOWED_HOSTS), settings.DEBUG)


@lru_cache(maxsize=64)
def _host_refused(host_header: bytes, allowed: tuple[str, ...], debug: bool) -> str | None:
    host = host_header.decode("latin-1")
    if debug and not allowed:
        allowed = (".localhost", "127.0.0.1", "[::1]")
    domain, _ = split_domain_port(host)
    if domain and validate_host(domain, allowed):
        return None
    return BAD_HOST.format(host=host[:100], domain=domain[:100])


def _member_workspace_pk(token: str, workspace: str) -> tuple[bool, int | None]:
    """(whether the API token is live, the workspace's pk when its user is a member of `workspace`
    and the token is that workspace's: a token reaches only its own workspace)."""
    api_token = selectors.active_token(token)
    if api_token is None:
        return False, None
    try:
        return True, selectors.token_access(api_token, workspace).workspace.pk
    except Http404:
        return True, None


def _load_route(workspace: str, name: str) -> Route | None:
    endpoint = Endpoint.objects.filter(workspace__name=workspace, name=name).first()
    if endpoint is None:
        return None
    replicas = endpoint.replicas.filter(state=ReplicaState.READY, port__isnull=False).order_by("id")
    return Route(
        endpoint_pk=endpoint.pk,
        workspace_pk=endpoint.workspace_id,
        name=endpoint.name,
        state=endpoint.state,
        key_hashes=(endpoint.primary_key_hash, endpoint.secondary_key_hash),
        auth_enabled=endpoint.auth_enabled,
        replicas=[
            Backend(pk, a, p, s)
            for pk, a, p, s in replicas.values_list("pk", "address", "port", "secret")
            if p is not None
        ],
    )
