"""The run log WebSocket: members get the stored lines then live ones (strangers: tests/hostile/test_identity.py)."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from runs.services import log_append
from tests.runs.builders import make_run
from trainhub.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def headers(user=None, origin: bytes = b"http://localhost") -> list[tuple[bytes, bytes]]:
    found = [(b"origin", origin), (b"host", b"localhost")]
    if user is not None:
        found.append((b"cookie", session_cookie(user)))
    return found


async def receive_until(communicator, predicate, limit: int = 20) -> list[dict]:
    seen = []
    for _ in range(limit):
        message = await communicator.receive_json_from(timeout=20)
        seen.append(message)
        if predicate(message):
            return seen
    raise AssertionError(f"not received: {seen}")


def test_a_member_gets_stored_lines_then_live_ones(workspace, reader):
    run = make_run(workspace)
    log_append(run.pk, "std_log_process_0", ["stored one", "stored two"])

    async def scenario():
        communicator = WebsocketCommunicator(application, f"/ws/runs/{run.run_id}/logs/", headers=headers(reader))
        connected, _ = await communicator.connect()
        assert connected
        replay = await receive_until(communicator, lambda m: m["type"] == "replayed")
        lines = [line for m in replay if m["type"] == "lines" for line in m["lines"]]
        assert lines == ["stored one", "stored two"]
        from asgiref.sync import sync_to_async

        await sync_to_async(log_append)(run.pk, "std_log_process_0", ["live three"])
        live = await receive_until(communicator, lambda m: m["type"] == "lines")
        assert live[-1]["lines"] == ["live three"] and live[-1]["first_seq"] == 3
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_a_reconnect_replays_only_what_was_missed(workspace, reader):
    run = make_run(workspace)
    for n in range(5):
        log_append(run.pk, "std_log_process_0", [f"line {n}"])

    async def scenario():
        communicator = WebsocketCommunicator(
            application, f"/ws/runs/{run.run_id}/logs/?after=3", headers=headers(reader)
        )
        assert (await communicator.connect())[0]
        replay = await receive_until(communicator, lambda m: m["type"] == "replayed")
        assert [m["lines"] for m in replay if m["type"] == "lines"] == [["line 3"], ["line 4"]]
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_numbering_continues_when_redis_forgot_the_counter(workspace):
    """A Redis restart without persistence loses the run's line counter: the next lines must
    still follow the stored ones, or readers would drop them as already seen."""
    from runs.models import LogChunk
    from runs.services import clear_run_keys

    run = make_run(workspace)
    log_append(run.pk, "std_log_process_0", ["one", "two"])
    clear_run_keys(run.pk)
    log_append(run.pk, "std_log_process_0", ["three"])
    assert list(LogChunk.objects.filter(run=run).order_by("first_seq").values_list("first_seq", "text")) == [
        (1, "one\ntwo"),
        (3, "three"),
    ]


def test_a_placement_never_numbers_lines_twice(workspace):
    """The submit may number a line (use_gpu's warning) while the dispatcher places the run: a
    writer that took its number but has not stored its line yet must not see it handed out again."""
    from runs.models import LogChunk
    from runs.services import clear_dispatch_keys
    from trainhub.redis_conn import get_redis
    from trainhub.redis_keys import run_log_sequence

    run = make_run(workspace)
    get_redis().incrby(run_log_sequence(run.pk), 1)  # the submit's warning took number 1, not yet stored
    clear_dispatch_keys(run.pk)  # the run is placed meanwhile
    log_append(run.pk, "prepare_node_0", ["Preparing environment"])
    assert list(LogChunk.objects.filter(run=run).values_list("first_seq", flat=True)) == [2]
