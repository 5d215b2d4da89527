"""Backpressure for streamed HTTP responses under daphne.

Daphne writes every body chunk an application sends into Twisted's transport at once and never
waits for the socket to drain, so a fast producer (a 1 GB model read from storage) piles the
whole file up in the server's memory. This ASGI wrapper registers a push producer on the
Twisted request: Twisted pauses it when the send buffer fills, resumes it when it empties,
and the wrapper holds the application's next chunk until then. Under any other server (no
Twisted request behind `send`) it passes everything through untouched.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from django.core.handlers.asgi import ASGIHandler

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


class _DrainSignal:
    """The producer Twisted pauses and resumes as its send buffer fills and drains."""

    def __init__(self) -> None:
        self.drained = asyncio.Event()
        self.drained.set()

    def pauseProducing(self) -> None:  # noqa: N802  (Twisted's IPushProducer)
        self.drained.clear()

    def resumeProducing(self) -> None:  # noqa: N802
        self.drained.set()

    def stopProducing(self) -> None:  # noqa: N802  (the client went away: stop waiting)
        self.drained.set()


def _twisted_request(send: Send) -> Any:
    """Daphne's `send` is partial(server.handle_reply, request); the request is a Twisted one."""
    for argument in getattr(send, "args", ()):
        if hasattr(argument, "registerProducer") and hasattr(argument, "unregisterProducer"):
            return argument
    return None


# Twisted pauses a producer once 64 KB are buffered, then waits for the buffer to empty, and
# sends 128 KB per write: for a 1 GB body that is tens of thousands of turns of the event loop.
HIGH_WATER_BYTES = 8 * 1024 * 1024
SEND_BYTES = 1024 * 1024


def _widen(transport: Any) -> None:
    if transport is not None and hasattr(transport, "bufferSize"):
        transport.bufferSize = HIGH_WATER_BYTES
        transport.SEND_LIMIT = SEND_BYTES


def _narrow(transport: Any) -> None:
    for name in ("bufferSize", "SEND_LIMIT"):
        if transport is not None and name in vars(transport):
            delattr(transport, name)  # back to the class's value for the next request


class _PacedResponse:
    """The sends of one response: each body chunk waits until the socket took the earlier ones."""

    def __init__(self, request: Any, send: Send):
        self.request = request
        self.send = send
        self.signal: _DrainSignal | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            more = message.get("more_body", False)
            if more and self.signal is None and getattr(self.request, "producer", None) is None:
                self.signal = _DrainSignal()
                _widen(self.request.transport)
                self.request.registerProducer(self.signal, True)
            if self.signal is not None:
                # Waiting before the write, not after it: the application prepares its next
                # chunk while this one drains.
                await self.signal.drained.wait()
            if not more:
                self.release()
        await self.send(message)

    def release(self) -> None:
        if self.signal is not None and getattr(self.request, "producer", None) is self.signal:
            if getattr(self.request, "channel", None) is None:
                # The client dropped the connection: Twisted let go of the request's channel, and
                # with it whatever was registered there.
                self.request.producer = None
            else:
                self.request.unregisterProducer()
            _narrow(self.request.transport)
        self.signal = None


class ResponseFlowControl:
    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]], send: Send) -> None:
        request = _twisted_request(send) if scope["type"] == "http" else None
        if request is None:
            await self.app(scope, receive, send)
            return
        paced = _PacedResponse(request, send)
        try:
            await self.app(scope, receive, paced)
        finally:
            paced.release()


class MemoryFile:
    """A body read as views of the memory it came in, without a copy."""

    def __init__(self, memory: memoryview) -> None:
        self.memory = memory
        self.position = 0

    def read(self, size: int | None = -1) -> memoryview:
        end = len(self.memory) if size is None or size < 0 else min(len(self.memory), self.position + size)
        piece = self.memory[self.position : end]
        self.position = end
        return piece

    def close(self) -> None:
        self.memory = memoryview(b"")


class WideASGIHandler(ASGIHandler):
    """Django's ASGI handler, sending a response in messages of up to 4 MB instead of 64 KB, and
    taking a body that came in one message as it is.

    Django cuts every streamed part into 64 KB messages; for a 1 GB download that is 16,384 trips
    through this wrapper, daphne and Twisted, which cost more CPU than moving the bytes. And it
    copies every body into a temporary file of its own, which the view then copies out again: an
    upload chunk (daphne hands up to one whole chunk in one message, trainhub/ops/request_limits.py)
    is read by the view from the message's own bytes (or aligned memory) instead."""

    chunk_size = 4 * 1024 * 1024

    async def read_body(self, receive: Callable[[], Awaitable[Mapping[str, Any]]]) -> Any:
        first = await receive()
        if first["type"] == "http.request" and not first.get("more_body", False):
            body = first.get("body", b"")
            if isinstance(body, memoryview):  # an upload chunk in aligned memory (request_limits.py)
                return MemoryFile(body)
            # BytesIO shares a bytes object until it is written to: reading it whole is no copy.
            return io.BytesIO(body)
        replayed = False

        async def again() -> Mapping[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return first

        return await super().read_body(again)
