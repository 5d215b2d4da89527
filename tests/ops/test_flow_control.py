"""The streamed responses' backpressure (trainhub/ops/flow_control.py) on a real Twisted request, as
daphne hands it over: a client that leaves mid-download ends the response quietly."""

from __future__ import annotations

import asyncio
import functools

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request

from trainhub.ops.flow_control import ResponseFlowControl


def twisted_request() -> Request:
    channel = HTTPChannel()
    channel.makeConnection(StringTransport())
    request = Request(channel)
    channel.requests.append(request)
    return request


async def daphne_send(request: Request, message: dict) -> None:
    """What daphne's send does with a body part: write it to the request, if it is still connected."""
    if message["type"] == "http.response.body" and request.channel is not None:
        request.write(message.get("body", b""))


def streamed_download(request: Request, leaves_after: int):
    """An application streaming five parts; the client leaves after `leaves_after` of them."""

    async def application(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in range(5):
            if part == leaves_after:
                request.channel.connectionLost(Failure(ConnectionDone()))
            await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": part < 4})

    return application


def serve(request: Request, application) -> None:
    asyncio.run(ResponseFlowControl(application)({"type": "http"}, None, functools.partial(daphne_send, request)))


def test_a_download_whose_client_left_ends_without_an_error():
    request = twisted_request()

    serve(request, streamed_download(request, leaves_after=2))

    assert request.producer is None


def test_a_download_read_to_its_end_lets_go_of_the_connection():
    request = twisted_request()

    serve(request, streamed_download(request, leaves_after=5))

    assert request.producer is None
    assert len(request.channel.transport.value()) >= 5 * 1024
