"""The scoring proxy follows route changes on one Redis subscription: a quiet channel is not an
error (redis-py 8.0 ended a subscription's read at its 5 s default read timeout, and the proxy
then subscribed again and dropped every route it kept)."""

from __future__ import annotations

import asyncio
import logging
import secrets

import redis
from django.conf import settings

from endpoints.proxy import ROUTES_CHANNEL, Route, ScoringProxy
from trainhub import redis_keys

QUIET_SECONDS = 7  # longer than redis-py 8's default read timeout (5 s)


async def _no_app(scope, receive, send):
    raise AssertionError("only the proxy's background work runs here")


async def _until(condition, seconds: float, message: str) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.05)
    assert condition(), message


def test_a_route_change_after_a_quiet_spell_reaches_the_proxy_without_a_resubscription(caplog):
    publisher = redis.Redis.from_url(settings.REDIS_URL)
    endpoint_pk = 2_000_000_000 + secrets.randbelow(1_000_000)
    key = ("quiet-workspace", f"quiet-{endpoint_pk}")
    change = secrets.token_hex(8)
    acks = redis_keys.endpoint_route_acks(change)

    async def scenario() -> tuple[int, int, bool, bool]:
        proxy = ScoringProxy(_no_app)
        proxy._start_background()
        try:
            await _until(lambda: proxy.following, 20, "the proxy never followed the routes channel")
            proxy.routes[key] = Route(endpoint_pk, 1, key[1], "Healthy", ("",), True, [])
            subscribed = proxy.changes
            await asyncio.sleep(QUIET_SECONDS)
            changes_after_quiet, kept = proxy.changes, key in proxy.routes
            receivers = await asyncio.to_thread(publisher.publish, ROUTES_CHANNEL, f"{endpoint_pk} {change}")
            acknowledged = await asyncio.to_thread(publisher.blpop, [acks], 4)
            await _until(lambda: key not in proxy.routes, 4, "the change did not drop the route")
            return subscribed, changes_after_quiet, kept, receivers >= 1 and acknowledged is not None
        finally:
            for task in list(proxy.tasks):
                task.cancel()
            await asyncio.gather(*proxy.tasks, return_exceptions=True)

    with caplog.at_level(logging.WARNING, logger="endpoints.proxy"):
        subscribed, changes_after_quiet, kept, acknowledged = asyncio.run(scenario())
    publisher.delete(acks)

    assert "not following" not in caplog.text, "the subscription ended while the channel was quiet"
    assert changes_after_quiet == subscribed, "the proxy subscribed again during the quiet spell"
    assert kept, "the proxy dropped the routes it kept during the quiet spell"
    assert acknowledged, "the change published after the quiet spell was not acknowledged"
