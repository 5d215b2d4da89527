"""Node 0's choice of MASTER_PORT when several runs start on one host at once."""

from __future__ import annotations

import uuid

from runs.rendezvous import reserve_master_port
from trainhub.redis_conn import get_redis


def test_two_runs_starting_at_once_on_one_host_get_different_ports():
    """Both ranks 0 find 6105 free (neither has bound it yet): the second must not take it too."""
    redis = get_redis()
    address = f"host-{uuid.uuid4().hex}"  # a host of this test's own: no other run holds its ports
    first = reserve_master_port(redis, address, 1)
    second = reserve_master_port(redis, address, 2)
    assert first != second
