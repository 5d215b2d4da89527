"""The fan-out inside a web process: one Redis pub/sub subscription per group per process, however
many sockets follow it, and the process hands each event to its sockets itself.

`trainhub.live.publish` PUBLISHes an event once; every web process subscribed to the group gets
it once over its one connection and offers it to each local listener without waiting, so a slow
listener never holds the others up. After Redis went away, the listeners that were following a
group are told to resync once it is subscribed again (what was published meanwhile is lost).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from django.conf import settings
from redis.asyncio.connection import ConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from trainhub import redis_keys
from trainhub.redis_conn import subscriber_options

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = redis_keys.LIVE_CHANNEL_PREFIX
JOIN_TIMEOUT_SECONDS = 10
RECONNECT_MAX_SECONDS = 2.0
# How long an event may wait to be merged with the next of its run (0: until the loop has handled
# what arrived with it).
COALESCE_SECONDS = 0.0


def channel_of(group: str) -> str:
    return redis_keys.live_channel(group)


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


class Event(dict[str, Any]):
    """An event as this process's listeners get it: one object for all of them, to read, never
    change; what a socket sends of it is rendered once, whatever the number of sockets."""

    __slots__ = ("_texts", "_batches")
    _batches: int

    @property
    def batches(self) -> int:
        """How many published events this one holds (merged while the process was busy)."""
        return getattr(self, "_batches", 1)

    def text(self, build: Callable[[Event], dict[str, Any]]) -> str:
        texts: dict[Any, str] = getattr(self, "_texts", None) or {}
        if build not in texts:
            texts[build] = encode(build(self))
            self._texts = texts
        return texts[build]


class Listener(Protocol):
    def deliver(self, event: Event) -> None:
        """Take one event of a joined group without waiting."""

    def resync(self) -> None:
        """Events of a joined group may have been lost: catch up from storage."""


class Hub:
    """The groups this event loop's listeners follow, over one Redis connection."""

    def __init__(self, url: str) -> None:
        self._pool = ConnectionPool.from_url(
            url,
            # No retries inside redis-py: a silent reconnect would hide the events lost meanwhile.
            retry=Retry(NoBackoff(), 0),
            **subscriber_options(),
        )
        self._groups: dict[str, set[Listener]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._awaiting: Counter[str] = Counter()  # channel -> SUBSCRIBE replies not read yet
        self._stale: dict[str, set[Listener]] = {}  # to resync once their group is subscribed again
        self._connection: Any = None
        self._writes = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._held: dict[str, list[Event]] = {}  # events waiting for the loop to be free, per group

    async def join(self, group: str, listener: Listener) -> None:
        """Returns once Redis has the subscription: whatever is published from then on arrives."""
        listeners = self._groups.setdefault(group, set())
        listeners.add(listener)
        ready = self._ready.setdefault(group, asyncio.Event())
        try:
            if len(listeners) == 1:
                await self._command("SUBSCRIBE", group)
            if self._reader is None:
                self._reader = asyncio.create_task(self._read())
            await asyncio.wait_for(ready.wait(), JOIN_TIMEOUT_SECONDS)
        except BaseException:
            await self.leave(group, listener)
            raise

    async def leave(self, group: str, listener: Listener) -> None:
        listeners = self._groups.get(group)
        self._stale.get(group, set()).discard(listener)
        if listeners is None or listener not in listeners:
            return
        listeners.discard(listener)
        if not listeners:
            del self._groups[group]
            del self._ready[group]
            self._stale.pop(group, None)
            await self._command("UNSUBSCRIBE", group)

    async def _command(self, command: str, group: str) -> None:
        connection = self._connection
        if connection is None:
            return  # the reader subscribes every group as soon as it is connected
        channel = channel_of(group)
        if command == "SUBSCRIBE":
            self._awaiting[channel] += 1
        try:
            async with self._writes:  # in call order, on the connection the reader reads
                await connection.send_command(command, channel)
        except (RedisError, OSError):
            pass  # the reader fails on the same connection and subscribes everything again

    async def _read(self) -> None:
        delay = 0.1
        while True:
            connection = self._pool.make_connection()
            try:
                await connection.connect()
                if not self._groups:
                    self._reader = None
                    break
                # Nothing awaits between here and the send: a group that joins from now on
                # sends its own SUBSCRIBE, one that joined before is in this one.
                self._connection = connection
                channels = [channel_of(group) for group in self._groups]
                self._awaiting = Counter(channels)
                async with self._writes:
                    await connection.send_command("SUBSCRIBE", *channels)
                delay = 0.1
                while not self._handle(await connection.read_response(push_request=True)):
                    pass
                break
            except Exception as error:  # any surprise on the connection: start over, and resync
                logger.warning("live events: Redis connection lost (%r); subscribing again", error)
                for group, ready in self._ready.items():
                    if ready.is_set():
                        self._stale.setdefault(group, set()).update(self._groups[group])
                    ready.clear()
            finally:
                if self._connection is connection:
                    self._connection = None
                await connection.disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)
            if not self._groups:
                self._reader = None
                break

    def _coalesce(self, group: str, event: Event) -> None:
        """Hold the event until the loop is free again (or COALESCE_SECONDS passed), merged with the
        group's held lines it continues: while this process is busy, its sockets get fewer, larger
        messages (each rendered once for all of them) instead of falling behind."""
        held = self._held.setdefault(group, [])
        last = held[-1] if held else None
        if (
            last is not None
            and event.get("type") == last.get("type") == "log.lines"
            and event["stream"] == last["stream"]
            and event["first_seq"] == last["first_seq"] + len(last["lines"])
        ):
            merged = Event(last, lines=last["lines"] + event["lines"])
            merged._batches = last.batches + 1
            held[-1] = merged
        else:
            held.append(event)
        if last is None:
            asyncio.get_running_loop().call_later(COALESCE_SECONDS, self._deliver, group)

    def _deliver(self, group: str) -> None:
        for event in self._held.pop(group, []):
            for listener in list(self._groups.get(group, ())):
                try:
                    listener.deliver(event)
                except Exception:  # one broken viewer must not cost the others their events
                    logger.exception("live events: a listener of %s failed", group)

    def _handle(self, reply: Any) -> bool:
        """Act on one reply of the subscribed connection; True once no group is left to follow."""
        kind, channel = reply[0], reply[1].decode()
        group = channel.removeprefix(CHANNEL_PREFIX)
        if kind == b"message":
            if group in self._groups:
                self._coalesce(group, Event(json.loads(reply[2])))
        elif kind == b"subscribe":
            self._awaiting[channel] -= 1
            if self._awaiting[channel] <= 0 and group in self._groups:
                del self._awaiting[channel]
                self._ready[group].set()
                for listener in self._stale.pop(group, set()) & self._groups[group]:
                    listener.resync()
        elif kind == b"unsubscribe" and reply[2] == 0 and not self._groups:
            # The last group left: this reader ends (a join from now on starts another).
            self._connection = None
            self._reader = None
            return True
        return False


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The hub of the running event loop (daphne runs one per process)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub(settings.REDIS_URL)
    return found


class _Waker:
    def __init__(self, types: frozenset[str] | None) -> None:
        self.woken = asyncio.Event()
        self.types = types

    def deliver(self, event: Event) -> None:
        if self.types is None or event.get("type") in self.types:
            self.woken.set()

    def resync(self) -> None:
        self.woken.set()


@asynccontextmanager
async def watching(group: str, types: frozenset[str] | None = None) -> AsyncIterator[asyncio.Event]:
    """An event that is set when the group's next event (of one of `types`, when given) reaches this
    process, or when events may have been lost; whatever is published after entering counts. Raises
    when Redis is away."""
    waker = _Waker(types)
    await hub().join(group, waker)
    try:
        yield waker.woken
    finally:
        await hub().leave(group, waker)
