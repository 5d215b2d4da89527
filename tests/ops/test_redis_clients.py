"""The site's Redis clients wait out the longest blocking command the site sends: a quiet list is
an empty answer, not an error (redis-py 8's default 5 s read timeout ended such a wait with an
error after its retries)."""

from __future__ import annotations

import asyncio
import secrets

from trainhub.redis_conn import MAX_BLOCK_SECONDS, get_async_redis, get_redis


def test_a_blocking_wait_as_long_as_the_sites_longest_ends_empty():
    key = f"test:quiet:{secrets.token_hex(6)}"
    assert get_redis().blpop([key], timeout=MAX_BLOCK_SECONDS) is None


def test_the_asyncio_client_waits_as_long():
    key = f"test:quiet:{secrets.token_hex(6)}"

    async def wait() -> object:
        return await get_async_redis().blpop([key], timeout=MAX_BLOCK_SECONDS)

    assert asyncio.run(wait()) is None
