"""The live log stream of a run: replay what is stored after the client's sequence number, then follow."""

from __future__ import annotations

import asyncio
import logging
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare

from runs import live, selectors
from runs.broadcast import members_group, run_group, user_group
from runs.models import Run
from trainhub.workspaces.models import Membership

logger = logging.getLogger(__name__)

REPLAY_LINES = 5000
# Live events a socket may have waiting before it counts as too far behind (at 20 batches a
# second, 100 s; they are shared by all sockets, so a long inbox costs little).
INBOX_LIMIT = 2000
# The socket fell behind, or events may have been lost while Redis was away: the page reconnects
# (as on any close) and replays from storage what it has not got, by sequence number.
RESYNC_CLOSE_CODE = 4429
# The user is no longer a member of the run's workspace: the page stops reconnecting.
REMOVED_CLOSE_CODE = 4403
# The socket's session no longer signs its user in (signed out, or the password changed): the page
# stops reconnecting, as for a socket opened without a session.
SIGNED_OUT_CLOSE_CODE = 4401
# Events that only ever close sockets: acted on as they arrive, not queued behind what the client
# has not read yet.
ACCESS_EVENTS = frozenset({"member.removed", "session.ended", "password.changed"})


class _SendBuffer:
    """Whether a daphne WebSocket's client reads what was sent: Twisted pauses the producer of a
    TCP transport while more than its buffer size (64 KB) waits to be written, and resumes it once
    all is written. This stands in for that producer (daphne's HTTP channel), passing every call on.
    """

    def __init__(self, transport: Any) -> None:
        self.drained = asyncio.Event()
        if not getattr(transport, "producerPaused", False):
            self.drained.set()
        self._inner = transport.producer
        transport.producer = self
        transport.streamingProducer = True

    def pauseProducing(self) -> None:  # noqa: N802  (Twisted's IPushProducer)
        self.drained.clear()
        if self._inner is not None:
            self._inner.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        self.drained.set()
        if self._inner is not None:
            self._inner.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802
        self.drained.set()
        if self._inner is not None:
            self._inner.stopProducing()

    @classmethod
    def of(cls, send: Any) -> _SendBuffer | None:
        """Under daphne `send` is partial(server.handle_reply, protocol), wrapped by Channels' session
        middleware (`real_send`), and the protocol's transport is the HTTP channel's, over TCP.
        Elsewhere (tests' communicators): None, and sends go out unchecked."""
        for _ in range(4):
            for protocol in getattr(send, "args", ()):
                transport = getattr(protocol, "transport", None)
                for _ in range(4):
                    if transport is None:
                        break
                    if hasattr(transport, "producerPaused"):
                        return cls(transport)
                    transport = getattr(transport, "transport", None)
            send = getattr(getattr(send, "__self__", None), "real_send", None)
        return None


class MemberRunConsumer(AsyncJsonWebsocketConsumer):
    """A socket that follows one run's group, open to members of the run's workspace only.

    Live events come from this process's hub (runs.live), one Redis subscription per group for
    all the process's sockets, rather than from a channel layer per socket. Each socket sends from
    a bounded inbox of its own: one that falls too far behind is closed with RESYNC_CLOSE_CODE.
    """

    channel_layer_alias = None  # see runs.live

    group: str | None = None
    members: str | None = None
    sessions: str | None = None
    _inbox: asyncio.Queue[live.Event] | None = None
    _pump: asyncio.Task[None] | None = None
    _resyncing = False

    @staticmethod
    def group_of(run_pk: int) -> str:
        raise NotImplementedError

    async def join_run(self) -> Run | None:
        """Accept a member and join the run's group; close for anyone else (4401, 4404)."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return None
        run = await self._run_for(user, self.scope["url_route"]["kwargs"]["run_id"])
        if run is None:
            await self.close(code=4404)
            return None
        self._inbox = asyncio.Queue(INBOX_LIMIT)
        try:
            await live.hub().join(user_group(user.pk), self)
            self.sessions = user_group(user.pk)
            await live.hub().join(members_group(run.workspace_id), self)
            self.members = members_group(run.workspace_id)
            await live.hub().join(self.group_of(run.pk), self)
        except Exception:
            logger.warning("live events of run %s unavailable", run.pk, exc_info=True)
            await self.close(code=RESYNC_CLOSE_CODE)
            return None
        self.group = self.group_of(run.pk)
        # Removed or signed out between the checks above and the joins: no event will say so any more.
        if not await self._session_signs_in(user):
            await self.close(code=SIGNED_OUT_CLOSE_CODE)
            return None
        if await self._run_for(user, run.run_id) is None:
            await self.close(code=REMOVED_CLOSE_CODE)
            return None
        await self.accept()
        return run

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        # Live events wait in the inbox until connect() (access, replay) is done, as a channel
        # layer's did: the replay comes first, then what was broadcast since the join.
        await super().websocket_connect(message)
        if self.group is not None and not self._resyncing:
            self._pump = asyncio.create_task(self._send_live(_SendBuffer.of(self.base_send)))

    async def disconnect(self, code: int) -> None:
        if self._pump is not None:
            self._pump.cancel()
        for group in (self.group, self.members, self.sessions):
            if group is not None:
                await live.hub().leave(group, self)

    def deliver(self, event: live.Event) -> None:
        if self._resyncing or self._inbox is None:
            return
        if event.get("type") in ACCESS_EVENTS:
            code = self._closed_by(event)
            if code is not None:
                self._resyncing = True  # nothing more goes out
                asyncio.ensure_future(self.close(code=code))
            return
        try:
            self._inbox.put_nowait(event)
        except asyncio.QueueFull:
            self.resync()

    def resync(self) -> None:
        if self._resyncing:
            return
        self._resyncing = True
        asyncio.ensure_future(self.close(code=RESYNC_CLOSE_CODE))

    async def _send_live(self, buffer: _SendBuffer | None) -> None:
        assert self._inbox is not None
        while not self._resyncing:
            event = await self._inbox.get()
            if buffer is not None:
                await buffer.drained.wait()  # while the client does not read, the inbox fills up
            if self._resyncing:
                return
            try:
                await getattr(self, get_handler_name(event))(event)
            except Exception:
                logger.exception("live event %s for %s failed", event.get("type"), self.group)

    async def receive_json(self, content, **kwargs) -> None:
        """Clients only listen."""

    def _closed_by(self, event: live.Event) -> int | None:
        """The close code an access event means for this socket, or None when it is about another."""
        kind = event["type"]
        if kind == "member.removed":
            return REMOVED_CLOSE_CODE if event["user_id"] == self.scope["user"].pk else None
        if kind == "session.ended":
            return SIGNED_OUT_CLOSE_CODE if event["session_key"] == self.scope["session"].session_key else None
        return SIGNED_OUT_CLOSE_CODE  # password.changed, heard in this user's own group only

    @database_sync_to_async
    def _session_signs_in(self, user) -> bool:
        """Whether the socket's session still signs `user` in, as a new request with it would."""
        session = self.scope.get("session")
        if session is None or not session.session_key:
            return False
        stored = import_module(settings.SESSION_ENGINE).SessionStore(session.session_key).load()
        current = get_user_model().objects.filter(pk=user.pk, is_active=True).first()
        return (
            current is not None
            and str(stored.get(SESSION_KEY)) == str(user.pk)
            and constant_time_compare(stored.get(HASH_SESSION_KEY, ""), current.get_session_auth_hash())
        )

    @database_sync_to_async
    def _run_for(self, user, run_id: str) -> Run | None:
        run = Run.objects.filter(run_id=run_id).first()
        if run is None or not Membership.objects.filter(workspace_id=run.workspace_id, user=user).exists():
            return None
        return run


class RunLogConsumer(MemberRunConsumer):
    group_of = staticmethod(run_group)

    async def connect(self) -> None:
        # Join before replaying: a batch stored during the replay then arrives live too, and
        # the client drops what it already has by sequence number.
        self.run = await self.join_run()
        if self.run is None:
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            after = int(query.get("after", ["0"])[0])
        except ValueError:
            after = 0
        await self.send_json({"type": "status", "status": self.run.status, "reason": self.run.status_reason})
        await self._replay(after)

    async def _replay(self, after: int) -> None:
        while not self._resyncing and (
            chunks := await database_sync_to_async(selectors.log_chunks_after)(self.run, after, max_lines=REPLAY_LINES)
        ):
            for chunk in chunks:
                await self.send_json({"type": "lines", **chunk.as_message()})
                after = max(after, chunk.first_seq + chunk.line_count - 1)
        await self.send_json({"type": "replayed"})

    async def log_lines(self, event: live.Event) -> None:
        await self.send(text_data=event.text(_lines_message))

    async def run_status(self, event: live.Event) -> None:
        await self.send(text_data=event.text(_status_message))


def _lines_message(event: live.Event) -> dict[str, Any]:
    return {"type": "lines", "stream": event["stream"], "first_seq": event["first_seq"], "lines": event["lines"]}


def _status_message(event: live.Event) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "type"} | {"type": "status"}
