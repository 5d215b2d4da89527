"""The site's Redis clients wait as long as a blocking command asks: a standby node waits 20 s at a
time for its order, a subscription for as long as nothing is published. redis-py 8's default read
timeout of 5 s broke both (a standby died about every 2 minutes on `make run`)."""

from __future__ import annotations

import asyncio
import threading

from trainhub.redis_conn import get_async_redis, get_redis

WAIT_SECONDS = 6  # past redis-py's default read timeout


def test_a_blocking_wait_past_redis_pys_default_read_timeout_ends_at_its_own_timeout():
    key = "test:nothing-is-pushed-here"
    answers: dict[str, object] = {}

    def wait_in_a_thread() -> None:
        answers["sync"] = get_redis().blpop([key], timeout=WAIT_SECONDS)

    async def wait_in_the_loop() -> object:
        return await get_async_redis().blpop([key], timeout=WAIT_SECONDS)

    thread = threading.Thread(target=wait_in_a_thread)
    thread.start()
    answers["async"] = asyncio.run(wait_in_the_loop())
    thread.join()
    assert answers == {"sync": None, "async": None}
