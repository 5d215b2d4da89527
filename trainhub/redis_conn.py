"""The site's Redis clients, from REDIS_URL: one per process, and one per event loop for asyncio.

redis-py 8 changed what a client does unless told (reads time out after 5 s, retries, TCP
keepalives, RESP3): every client of the site says here what it needs rather than taking the
library's defaults, so that a quiet Redis is not an error and a gone one is noticed.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import weakref
from typing import Any

import redis
import redis.asyncio
from django.conf import settings
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

# A restarted Redis answers again within seconds: commands wait for it (about 20 s at most)
# rather than failing the run whose log line or heartbeat they carry.
RECONNECT = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=15)
# An answer that takes longer means Redis is stuck or gone: the read fails and the retries
# reconnect. Every blocking command of the site (BLPOP) waits at most MAX_BLOCK_SECONDS in one
# call, well under it: a longer wait is a loop of shorter ones.
READ_TIMEOUT_SECONDS = 10.0
MAX_BLOCK_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5.0
# A Redis host that vanished without closing its connections is noticed within about 25 s,
# even by a subscription, whose read waits for the next message however long that takes.
KEEPALIVE = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}
HEALTH_CHECK_SECONDS = 30


def client_options() -> dict[str, Any]:
    """For commands that answer at once, or block for at most MAX_BLOCK_SECONDS."""
    return {
        "socket_timeout": READ_TIMEOUT_SECONDS,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_keepalive": True,
        "socket_keepalive_options": KEEPALIVE,
        "health_check_interval": HEALTH_CHECK_SECONDS,
    }


def subscriber_options() -> dict[str, Any]:
    """For a subscription: quiet for as long as nothing is published, so no read timeout; the
    keepalives notice a gone host."""
    return {
        "socket_timeout": None,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_keepalive": True,
        "socket_keepalive_options": KEEPALIVE,
    }


@functools.cache
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, retry=RECONNECT, **client_options())


def wake(key: str) -> None:
    """Push a wake-up onto `key`, a list of at most one item that a loop blocks on between its
    passes (BLPOP): the loop runs its next pass now; wake-ups sent meanwhile make one pass."""
    pipe = get_redis().pipeline()
    pipe.lpush(key, 1)
    pipe.ltrim(key, 0, 0)
    pipe.expire(key, 60)
    pipe.execute()


_async_clients: weakref.WeakKeyDictionary[Any, redis.asyncio.Redis] = weakref.WeakKeyDictionary()


def get_async_redis() -> redis.asyncio.Redis:
    """An asyncio client for the running event loop (one per loop: its connections belong to it)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = redis.asyncio.Redis.from_url(settings.REDIS_URL, **client_options())
    return client
