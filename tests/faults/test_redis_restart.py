"""Redis restarts (without persistence: queues, heartbeats and counters are gone) while a run
prints and another waits in the queue: nodes, the controller and the web server reconnect, the
running run ends (Completed, or Failed with a clear reason), the queued one still runs, and no run
is left in a non-final state without a live node."""

from __future__ import annotations

import atexit
import os
import subprocess
from urllib.parse import urlsplit

import pytest
import redis

from runs.models import LogChunk, Run
from tests.faults.printer import assert_every_line_in_order, printer_config
from tests.helpers.processes import wait_until
from trainhub.compute.models import Node
from trainhub.sdk import Experiment

pytestmark = pytest.mark.slow



def restart_redis() -> None:
    """Shut the session's Redis down without saving, and start a new one on the same port."""
    url = os.environ["REDIS_URL"]
    port = urlsplit(url).port
    redis_dir = os.path.join(os.environ["TRAINHUB_DATA_DIR"], "redis")
    try:
        redis.Redis.from_url(url).shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # the connection drops as the server goes: that is the shutdown
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", redis_dir,
         "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    atexit.register(process.terminate)  # the rest of the session goes on using it

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url).ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, 20, message="Redis back")


def test_a_redis_restart_loses_no_run(ws, node, controller, tmp_path):
    first_stop, second_stop = tmp_path / "stop-1", tmp_path / "stop-2"
    running = Experiment(ws, "redis-restart").submit(printer_config(ws, tmp_path, first_stop))
    wait_until(lambda: LogChunk.objects.filter(run__run_id=running.id, text__contains="line 3").exists(), 90,
               message="the run printing")
    queued = Experiment(ws, "redis-restart").submit(printer_config(ws, tmp_path, second_stop))

    restart_redis()
    wait_until(lambda: LogChunk.objects.filter(run__run_id=running.id, text__contains="line 60").exists(), 60,
               message="the run printing after the restart")
    first_stop.touch()
    second_stop.touch()

    first = running.wait_for_completion(raise_on_error=False)
    assert first["status"] == "Completed" or (first["status"] == "Failed" and first["status_reason"]), first
    if first["status"] == "Completed":
        assert_every_line_in_order(running.id)  # the line counter, lost with Redis, went on from the stored lines
    second = queued.wait_for_completion(raise_on_error=False)
    assert second["status"] == "Completed", second
    wait_until(lambda: Node.objects.get(name=node.name).state == "idle", 30, message="the node idle again")
    assert not Run.objects.exclude(status__in=["Completed", "Failed", "Canceled"]).exists()
