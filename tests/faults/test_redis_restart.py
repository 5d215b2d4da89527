"""Redis restarts (without persistence: queues, heartbeats and counters are gone) while a run
prints and another waits in the queue: nodes, the controller and the web server reconnect, the
running run ends (Completed, or Failed with a clear reason), the queued one still runs, and no run
is left in a non-final state without a live node."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import warnings

import pytest
import redis
from django.conf import settings
from django.db import connection

from runs.controller import reap_lost_nodes
from runs.models import LogChunk, Run
from tests.faults.printer import assert_every_line_in_order, printer_config
from tests.helpers.processes import run_folder, wait_until
from tests.session_env import start_session_redis
from trainhub import redis_keys
from trainhub.compute.models import Node, NodeState
from trainhub.compute.services import node_register
from trainhub.redis_conn import get_redis
from trainhub.sdk import Environment, Experiment, ScriptRunConfig

pytestmark = pytest.mark.slow


def restart_redis() -> None:
    """Shut the session's Redis down without saving, and start a new one on the same port, with
    the same credential (the one in the data directory)."""
    url = settings.REDIS_URL
    try:
        redis.Redis.from_url(url).shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # the connection drops as the server goes: that is the shutdown
    process = start_session_redis(os.environ["REDIS_URL"], os.environ["TRAINHUB_DATA_DIR"])
    atexit.register(process.terminate)  # the rest of the session goes on using it


def test_a_redis_restart_loses_no_run(ws, node, controller, tmp_path):
    running = Experiment(ws, "redis-restart").submit(printer_config(ws, tmp_path, "stop"))
    wait_until(
        lambda: LogChunk.objects.filter(run__run_id=running.id, text__contains="line 3").exists(),
        90,
        message="the run printing",
    )
    queued = Experiment(ws, "redis-restart").submit(printer_config(ws, tmp_path, "stop"))

    restart_redis()
    try:
        wait_until(
            lambda: (
                LogChunk.objects.filter(run__run_id=running.id, text__contains="line 60").exists()
                or Run.objects.get(run_id=running.id).is_final
            ),
            60,
            message="the run printing after the restart",
        )
    except AssertionError as error:
        run = Run.objects.get(run_id=running.id)
        pytest.fail(f"{error}: run {run.status} {run.status_reason!r}\n{node.log()}\n{controller.log()}")
    with contextlib.suppress(FileNotFoundError):  # its folder is gone if it ended
        (run_folder(running.id) / "stop").touch()

    first = running.wait_for_completion(raise_on_error=False)
    assert first["status"] == "Completed" or (first["status"] == "Failed" and first["status_reason"]), first
    if first["status"] == "Completed":
        assert_every_line_in_order(running.id)  # the line counter, lost with Redis, went on from the stored lines
    else:  # allowed, yet not expected of a one-process run: the reason shows in pytest's warnings summary
        warnings.warn(f"the run printing failed after the restart: {first['status_reason']}", stacklevel=1)
    # Its folder, where it looks for the file, exists once it starts (the first run is done by now).
    wait_until(
        lambda: run_folder(queued.id).is_dir() or Run.objects.get(run_id=queued.id).is_final,
        90,
        message="the queued run to start",
    )
    (run_folder(queued.id) / "stop").touch()
    second = queued.wait_for_completion(raise_on_error=False)
    assert second["status"] == "Completed", second
    wait_until(lambda: Node.objects.get(name=node.name).state == "idle", 30, message="the node idle again")
    assert not Run.objects.exclude(status__in=["Completed", "Failed", "Canceled"]).exists()


def test_a_job_waiting_in_a_nodes_queue_is_not_lost_with_redis(ws, node, controller, tmp_path):
    """A run dispatched to a node whose worker has not taken the job yet (the node process is
    paused) when Redis restarts without persistence: the job is gone from the node's queue, yet
    the run must still run to the end, never stay Queued on a live node forever."""
    project = tmp_path / "hello"
    project.mkdir()
    (project / "hello.py").write_text("print('hello after the restart', flush=True)\n")
    src = ScriptRunConfig(
        source_directory=str(project),
        script="hello.py",
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )
    queue = redis_keys.node_jobs(Node.objects.get(name=node.name).pk)
    connection = redis.Redis.from_url(settings.REDIS_URL)
    node.process.send_signal(signal.SIGSTOP)
    try:
        # The paused worker's BLPOP would still take the job inside Redis: cancel it, so the job waits.
        for client in connection.client_list():
            if client["cmd"] in ("blpop", "blmove", "brpoplpush"):
                connection.client_kill_filter(_id=client["id"])
        run = Experiment(ws, "waiting-job").submit(src)
        assert Run.objects.get(run_id=run.id).dispatched_at is not None
        assert connection.llen(queue) == 1, "the job waits in the paused node's queue"
        restart_redis()
        assert connection.llen(queue) == 0, "the restarted Redis lost the queue"
    finally:
        node.process.send_signal(signal.SIGCONT)

    final = ("Completed", "Failed", "Canceled")
    wait_until(lambda: Run.objects.get(run_id=run.id).status in final, 60, message="the run to end")
    details = run.get_details()
    assert details["status"] == "Completed", details
    assert "hello after the restart" in "\n".join(c.text for c in LogChunk.objects.filter(run__run_id=run.id))
    wait_until(lambda: Node.objects.get(name=node.name).state == "idle", 30, message="the node idle again")


def test_a_redis_restart_while_the_controller_reads_heartbeats_marks_no_live_node_lost(cluster, db, monkeypatch):
    """The controller asks Redis whether it forgot every heartbeat (restarted without persistence)
    and which nodes have one. A restart between the two questions (here: what a restart loses goes
    as the controller reads the nodes from the database, where it once asked the first) must not
    read as every node gone: the live node, whose heartbeat comes within its lifetime, stays."""
    node = node_register(cluster=cluster, address="127.0.0.1", name="live-node")
    monkeypatch.setattr("runs.controller._heartbeats_unproven_until", 0.0)
    get_redis().set(redis_keys.heartbeats_kept(), 1)  # as an earlier pass of the controller left it

    def restart_first(execute, sql, params, many, context):
        get_redis().delete(redis_keys.heartbeats_kept(), redis_keys.node_alive(node.pk))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(restart_first):
        assert reap_lost_nodes() == []
    assert Node.objects.get(pk=node.pk).state == NodeState.IDLE
