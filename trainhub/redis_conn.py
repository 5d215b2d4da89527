"""One Redis connection per process, from REDIS_URL."""

from __future__ import annotations

import asyncio
import functools
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


@functools.cache
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30, retry=RECONNECT)


_async_clients: weakref.WeakKeyDictionary[Any, redis.asyncio.Redis] = weakref.WeakKeyDictionary()


def get_async_redis() -> redis.asyncio.Redis:
    """An asyncio client for the running event loop (one per loop: its connections belong to it)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = redis.asyncio.Redis.from_url(settings.REDIS_URL, health_check_interval=30)
    return client
