"""The base of every live socket: open to members of one workspace, fed by this process's hub, closed
when it falls behind or when its user loses access (removed, signed out, password changed)."""

from __future__ import annotations

import asyncio
import logging
from importlib import import_module
from typing import Any

from asgiref.typing import WebSocketConnectEvent
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare

from trainhub.live import hub as live
from trainhub.live.publish import members_group, user_group

logger = logging.getLogger(__name__)

# Published events a socket may have waiting before it counts as too far behind (at 20 batches a
# second, 100 s; they are shared by all sockets, so a long inbox costs little). Events merged by the
# hub count as the events they hold.
INBOX_LIMIT = 2000
# The socket fell behind, or events may have been lost while Redis was away: the page reconnects
# (as on any close) and replays from storage what it has not got, by sequence number.
RESYNC_CLOSE_CODE = 4429
# The user is no longer a member of the workspace: the page stops reconnecting.
REMOVED_CLOSE_CODE = 4403
# The socket's session no longer signs its user in (signed out, or the password changed): the page
# stops reconnecting, as for a socket opened without a session.
SIGNED_OUT_CLOSE_CODE = 4401
# The object does not exist, or not in a workspace of the user's.
NOT_FOUND_CLOSE_CODE = 4404
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


class LiveSocket(AsyncJsonWebsocketConsumer):
    """A socket that follows one group, open to members of the group's workspace only.

    Live events come from this process's hub (trainhub.live.hub), one Redis subscription per group
    for all the process's sockets, rather than from a channel layer per socket. Each socket sends
    from a bounded inbox of its own: one that falls too far behind is closed with RESYNC_CLOSE_CODE.
    A subclass says what its URL names (`find`) and handles its events (`log_lines` for
    "log.lines", …); its `connect` calls `open_for_member` first.
    """

    channel_layer_alias = None  # type: ignore[assignment]  # see trainhub.live.hub; channels takes None, its stubs a str only

    group: str | None = None
    members: str | None = None
    sessions: str | None = None
    _inbox: asyncio.Queue[live.Event] | None = None
    _waiting = 0  # published events in the inbox
    _pump: asyncio.Task[None] | None = None
    _resyncing = False

    def find(self, user: Any) -> tuple[Any, int, str] | None:
        """Run in a thread: the object the URL names, its workspace's pk and the group to follow,
        or None when it does not exist or the user is not a member of its workspace."""
        raise NotImplementedError

    async def open_for_member(self) -> Any:
        """Accept a member and join the object's group; close for anyone else (4401, 4404).
        Returns the object, or None when the socket was closed."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=SIGNED_OUT_CLOSE_CODE)
            return None
        found = await database_sync_to_async(self.find)(user)
        if found is None:
            await self.close(code=NOT_FOUND_CLOSE_CODE)
            return None
        thing, workspace_pk, group = found
        self._inbox = asyncio.Queue()
        try:
            await live.hub().join(user_group(user.pk), self)
            self.sessions = user_group(user.pk)
            await live.hub().join(members_group(workspace_pk), self)
            self.members = members_group(workspace_pk)
            await live.hub().join(group, self)
        except Exception:
            logger.warning("live events of %s unavailable", group, exc_info=True)
            await self.close(code=RESYNC_CLOSE_CODE)
            return None
        self.group = group
        # Removed or signed out between the checks above and the joins: no event will say so any more.
        if not await self._session_signs_in(user):
            await self.close(code=SIGNED_OUT_CLOSE_CODE)
            return None
        if await database_sync_to_async(self.find)(user) is None:
            await self.close(code=REMOVED_CLOSE_CODE)
            return None
        await self.accept()
        return thing

    async def websocket_connect(self, message: WebSocketConnectEvent) -> None:
        # Live events wait in the inbox until connect() (access, replay) is done, as a channel
        # layer's did: the replay comes first, then what was published since the join.
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
        self._waiting += event.batches
        if self._waiting > INBOX_LIMIT:
            self.resync()
            return
        self._inbox.put_nowait(event)

    def resync(self) -> None:
        if self._resyncing:
            return
        self._resyncing = True
        asyncio.ensure_future(self.close(code=RESYNC_CLOSE_CODE))

    async def _send_live(self, buffer: _SendBuffer | None) -> None:
        assert self._inbox is not None
        while not self._resyncing:
            event = await self._inbox.get()
            self._waiting -= event.batches
            if buffer is not None:
                await buffer.drained.wait()  # while the client does not read, the inbox fills up
            if self._resyncing:
                return
            try:
                await getattr(self, get_handler_name(event))(event)
            except Exception:
                logger.exception("live event %s for %s failed", event.get("type"), self.group)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen."""

    def _closed_by(self, event: live.Event) -> int | None:
        """The close code an access event means for this socket, or None when it is about another."""
        kind = event["type"]
        if kind == "member.removed":
            user = self.scope["user"]
            return REMOVED_CLOSE_CODE if user is not None and event["user_id"] == user.pk else None
        if kind == "session.ended":
            return SIGNED_OUT_CLOSE_CODE if event["session_key"] == self.scope["session"].session_key else None
        return SIGNED_OUT_CLOSE_CODE  # password.changed, heard in this user's own group only

    @database_sync_to_async
    def _session_signs_in(self, user: Any) -> bool:
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
