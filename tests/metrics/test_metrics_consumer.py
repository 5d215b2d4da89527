"""The live metrics WebSocket: members get each stored batch (strangers: tests/hostile/test_identity.py)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from tests.conftest import api_client
from tests.metrics.builders import post_batch, running_run, series_body
from tests.runs.test_run_log_consumer import headers
from trainhub.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def run_scenario(scenario) -> None:
    """In a thread of its own: a session's Playwright leaves an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result()


def test_a_member_gets_each_batch_live(workspace, reader):
    run, token = running_run(workspace)

    async def scenario():
        communicator = WebsocketCommunicator(application, f"/ws/runs/{run.run_id}/metrics/", headers=headers(reader))
        connected, _ = await communicator.connect()
        assert connected
        assert (await communicator.receive_json_from(timeout=5))["type"] == "subscribed"
        body = series_body("loss", [0.9, 0.8], steps=[0, 1])
        body["tags"] = {"optimizer": "sgd"}
        response = await sync_to_async(post_batch)(api_client(token), run, body)
        assert response.status_code == 200
        message = await communicator.receive_json_from(timeout=5)
        assert message["type"] == "batch" and message["rank"] == 0
        (series,) = message["series"]
        assert (series["name"], series["first"], series["count"]) == ("loss", 0, 2)
        assert series["values"] == [0.9, 0.8] and series["steps"] == [0, 1]
        assert message["tags"] == {"optimizer": "sgd"}
        await communicator.disconnect()

    run_scenario(scenario)


def test_a_large_batch_reaches_viewers_sampled_with_positions(workspace, reader):
    run, token = running_run(workspace)

    async def scenario():
        communicator = WebsocketCommunicator(application, f"/ws/runs/{run.run_id}/metrics/", headers=headers(reader))
        assert (await communicator.connect())[0]
        await communicator.receive_json_from(timeout=5)
        values = [float(i % 97) for i in range(50_000)]
        await sync_to_async(post_batch)(api_client(token), run, series_body("noise", values))
        (series,) = (await communicator.receive_json_from(timeout=10))["series"]
        assert series["count"] == 50_000
        assert len(series["values"]) == 1000
        assert series["index"][0] == 0 and series["index"][-1] == 49_999
        assert series["values"][-1] == values[-1]
        await communicator.disconnect()

    run_scenario(scenario)
