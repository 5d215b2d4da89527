"""Many viewers of one run's live log on the real server: each gets every line in order, the web
process follows the run over one Redis subscription whatever their number, and a viewer that stops
reading or vanishes costs the others nothing."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from runs.models import RunStatus
from runs.services import log_append
from tests.runs.builders import make_run
from tests.runs.test_run_log_consumer import session_cookie
from trainhub.live import run_logs_group
from trainhub.live.hub import channel_of
from trainhub.live.sockets import INBOX_LIMIT, RESYNC_CLOSE_CODE

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class Viewer:
    """What one socket got: the lines in the order they came, the client dropping a batch it has
    already seen (replayed and live at once) by sequence number, as the page does."""

    def __init__(self) -> None:
        self.next_seq = 1
        self.lines: list[str] = []
        self.jumps: list[tuple[int, int]] = []  # (expected, got): a gap or a batch out of order
        self.replayed = asyncio.Event()
        self.close_code: int | None = None

    def take(self, message: dict) -> None:
        if message["type"] == "replayed":
            self.replayed.set()
        if message["type"] != "lines":
            return
        first, lines = message["first_seq"], message["lines"]
        if first + len(lines) <= self.next_seq:
            return
        if first != self.next_seq:
            self.jumps.append((self.next_seq, first))
        self.lines += lines[max(0, self.next_seq - first) :]
        self.next_seq = first + len(lines)


def socket_url(server_url: str, run) -> str:
    return f"ws://{urlsplit(server_url).netloc}/ws/runs/{run.run_id}/logs/"


def opening(server_url: str, run, user, **options):
    return connect(
        socket_url(server_url, run),
        additional_headers={"Cookie": session_cookie(user).decode(), "Origin": server_url},
        max_size=None,
        **options,
    )


async def follow(connection, viewer: Viewer, total: int) -> None:
    async for raw in connection:
        viewer.take(json.loads(raw))
        if len(viewer.lines) >= total:
            return


def subscribers(run) -> int:
    """Redis subscriptions to the run's live log, over every web process."""
    return dict(redis.Redis.from_url(settings.REDIS_URL).pubsub_numsub(channel_of(run_logs_group(run.pk))))[
        channel_of(run_logs_group(run.pk)).encode()
    ]


def numbered(start: int, count: int, padding: str = "") -> list[str]:
    return [f"line {n}{padding}" for n in range(start, start + count)]


async def print_lines(run, batches: int, per_batch: int, start: int = 0, padding: str = "") -> None:
    """The node's side: store and broadcast batches of numbered lines, as a printing run does."""
    for batch in range(batches):
        lines = numbered(start + batch * per_batch, per_batch, padding)
        await asyncio.to_thread(log_append, run.pk, "std_log_process_0", lines)


def test_fifty_viewers_each_get_every_line_in_order_over_one_subscription(live_url, workspace, reader):
    run = make_run(workspace, status=RunStatus.RUNNING)
    log_append(run.pk, "std_log_process_0", ["stored before anyone looked"])
    batches, per_batch = 150, 20
    total = 1 + batches * per_batch
    viewers = [Viewer() for _ in range(50)]

    async def scenario() -> int:
        connections = [await opening(live_url, run, reader) for _ in viewers]
        following = [asyncio.create_task(follow(c, v, total)) for c, v in zip(connections, viewers, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(v.replayed.wait() for v in viewers)), 60)
        subscriptions = await asyncio.to_thread(subscribers, run)
        await print_lines(run, batches, per_batch)
        await asyncio.wait_for(asyncio.gather(*following), 120)
        for connection in connections:
            await connection.close()
        return subscriptions

    subscriptions = asyncio.run(scenario())
    assert subscriptions == 1  # one per web process, not one per viewer
    expected = ["stored before anyone looked"] + numbered(0, batches * per_batch)
    for viewer in viewers:
        assert viewer.jumps == [] and viewer.lines == expected
    deadline = time.monotonic() + 10
    while subscribers(run) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert subscribers(run) == 0  # the last viewer gone, the process unsubscribed


def test_a_viewer_that_stops_reading_or_vanishes_costs_the_others_nothing(live_url, workspace, reader):
    """The stalled socket fills its buffers, falls behind and is closed for a resync; the vanished
    one is forgotten; the others get every line in order all along."""
    run = make_run(workspace, status=RunStatus.RUNNING)
    # Big lines first, past the socket buffers the kernel grants (4 MB here), then more small
    # batches than a socket may have waiting.
    big, small, padding = 400, INBOX_LIMIT * 2, " " + "x" * 16_000
    batches = big + small
    healthy = [Viewer() for _ in range(5)]
    stalled, vanished = Viewer(), Viewer()

    async def scenario() -> None:
        connections = [await opening(live_url, run, reader) for _ in healthy]
        following = [asyncio.create_task(follow(c, v, batches)) for c, v in zip(connections, healthy, strict=True)]
        # A client that reads nothing: a tiny receive buffer, and no more than one frame queued.
        host, port = urlsplit(live_url).hostname, urlsplit(live_url).port
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect((host, port))
        stuck = await opening(live_url, run, reader, sock=raw, max_queue=1)
        gone = await opening(live_url, run, reader)
        for connection, viewer in ((stuck, stalled), (gone, vanished)):
            while not viewer.replayed.is_set():
                viewer.take(json.loads(await connection.recv()))
        await asyncio.wait_for(asyncio.gather(*(v.replayed.wait() for v in healthy)), 60)

        producing = asyncio.create_task(print_lines(run, big, 1, padding=padding))
        while len(vanished.lines) < 10:
            vanished.take(json.loads(await gone.recv()))
        gone.transport.abort()  # no close frame: the connection just drops
        await producing
        await print_lines(run, small, 1, start=big)
        await asyncio.wait_for(asyncio.gather(*following), 120)

        # Now the stalled client reads: what was buffered for it, then the server's close.
        await read_until_closed(stuck, stalled, 60)
        for connection in connections:
            await connection.close()

    asyncio.run(scenario())
    expected = numbered(0, big, padding) + numbered(big, small)
    for viewer in healthy:
        assert viewer.jumps == [] and viewer.lines == expected
    # Closed by the server before the end, without a gap in what it had got.
    assert stalled.close_code in (RESYNC_CLOSE_CODE, 1006), stalled.close_code
    assert stalled.jumps == [] and stalled.lines == expected[: len(stalled.lines)] and len(stalled.lines) < batches


async def read_until_closed(connection, viewer: Viewer, seconds: float) -> None:
    """Everything the server still sends, then the code it closed with (within `seconds`)."""
    try:
        async with asyncio.timeout(seconds):
            async for message in connection:
                viewer.take(json.loads(message))
    except ConnectionClosed:
        pass
    viewer.close_code = connection.close_code


def test_a_viewer_following_while_redis_restarts_resyncs_and_misses_nothing(live_url, workspace, reader):
    """Redis restarts without persistence: the web process subscribes again, closes the sockets
    that were following for a resync, and a viewer reconnecting from its last line (as the page
    does) gets every line in order."""
    from tests.faults.test_redis_restart import restart_redis

    run = make_run(workspace, status=RunStatus.RUNNING)
    viewer = Viewer()

    async def scenario() -> None:
        connection = await opening(live_url, run, reader)
        while not viewer.replayed.is_set():
            viewer.take(json.loads(await connection.recv()))
        await print_lines(run, 10, 5)
        while len(viewer.lines) < 50:
            viewer.take(json.loads(await connection.recv()))
        await asyncio.to_thread(restart_redis)
        await print_lines(run, 10, 5, start=50)  # while the web process may still be away
        await read_until_closed(connection, viewer, 30)
        url = socket_url(live_url, run) + f"?after={viewer.next_seq - 1}"
        headers = {"Cookie": session_cookie(reader).decode(), "Origin": live_url}
        async with connect(url, additional_headers=headers) as again:
            await print_lines(run, 10, 5, start=100)
            await asyncio.wait_for(follow(again, viewer, 150), 30)

    asyncio.run(scenario())
    assert viewer.close_code == RESYNC_CLOSE_CODE
    assert viewer.jumps == [] and viewer.lines == numbered(0, 150)


def test_batches_published_while_the_hub_is_busy_reach_it_merged_in_order_with_nothing_lost(live_url):
    """A burst of batches (here 500 in one pipeline, as a loaded web process reads a backlog)
    becomes fewer, larger events: every line still there once, in order, with its numbering."""
    from trainhub.live.hub import Hub, encode

    group = "run-987654.logs"
    got: list = []

    class Collect:
        def deliver(self, event) -> None:
            got.append(event)

        def resync(self) -> None:
            raise AssertionError("nothing was lost")

    async def scenario() -> None:
        hub, listener = Hub(settings.REDIS_URL), Collect()
        await hub.join(group, listener)
        sender = redis.Redis.from_url(settings.REDIS_URL).pipeline()
        for batch in range(500):
            lines = numbered(batch * 2, 2)
            sender.publish(
                channel_of(group),
                encode({"type": "log.lines", "stream": "s", "first_seq": batch * 2 + 1, "lines": lines}),
            )
        sender.publish(channel_of(group), encode({"type": "run.status", "status": "Completed"}))
        await asyncio.to_thread(sender.execute)
        async with asyncio.timeout(30):
            while not got or got[-1]["type"] != "run.status":
                await asyncio.sleep(0.01)
        await hub.leave(group, listener)

    asyncio.run(scenario())
    lines = [event for event in got if event["type"] == "log.lines"]
    assert len(lines) < 500  # merged
    assert sum(event.batches for event in lines) == 500
    assert [line for event in lines for line in event["lines"]] == numbered(0, 1000)
    firsts = [event["first_seq"] for event in lines]
    assert firsts == [1] + [first + len(event["lines"]) for first, event in zip(firsts, lines, strict=True)][:-1]


def test_a_batch_replayed_and_merged_live_with_the_next_comes_once_and_the_next_whole(live_url, workspace, reader):
    """A batch stored before a viewer's replay and published after it joined, which the hub merged
    with the batch after it: the page knows a batch by its first line, so sent again under that
    number it would drop the batch after it too. The socket sends only the lines it has not sent."""
    from runs.models import LogChunk
    from trainhub.live.publish import publish_log_lines

    run = make_run(workspace, status=RunStatus.RUNNING)
    LogChunk.objects.create(
        run=run, stream="std_log_process_0", first_seq=1, line_count=5, text="\n".join(numbered(0, 5))
    )
    first = numbered(5, 5)
    LogChunk.objects.create(run=run, stream="std_log_process_0", first_seq=6, line_count=5, text="\n".join(first))
    messages: list[tuple[int, list[str]]] = []

    async def scenario() -> None:
        async with opening(live_url, run, reader) as connection:
            while (message := json.loads(await connection.recv()))["type"] != "replayed":
                if message["type"] == "lines":
                    messages.append((message["first_seq"], message["lines"]))
            second = numbered(10, 5)
            await asyncio.to_thread(
                LogChunk.objects.create,
                run=run,
                stream="std_log_process_0",
                first_seq=11,
                line_count=5,
                text="\n".join(second),
            )
            # As the hub delivers the two batches when they reach it together (trainhub/live/hub.py).
            await asyncio.to_thread(publish_log_lines, run.pk, "std_log_process_0", 6, first + second)
            message = json.loads(await asyncio.wait_for(connection.recv(), 30))
            messages.append((message["first_seq"], message["lines"]))

    asyncio.run(scenario())
    assert messages == [(1, numbered(0, 5)), (6, numbered(5, 5)), (11, numbered(10, 5))]
