"""One Redis connection per process, from REDIS_URL."""

from __future__ import annotations

import functools

import redis
from django.conf import settings
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

# A restarted Redis answers again within seconds: commands wait for it (about 20 s at most)
# rather than failing the run whose log line or heartbeat they carry.
RECONNECT = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=15)


@functools.cache
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30, retry=RECONNECT)
