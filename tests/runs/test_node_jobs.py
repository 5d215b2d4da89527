"""A node's jobs on its own Redis list (runs/node_worker.py): a node asked to stop while a run is on
it stops the run and then itself; one asked while its job still waits in its list gives the job
back, and the controller places the run on another node. Real nodes, real controller, real Redis."""

from __future__ import annotations

import signal

import pytest
import redis
from django.conf import settings

from runs.models import Run
from tests.helpers.processes import NodeProcess, wait_until
from tests.runs.conftest import script_config
from trainhub import redis_keys
from trainhub.compute.models import Node
from trainhub.sdk import Experiment

pytestmark = pytest.mark.slow


def test_a_node_asked_to_stop_while_running_stops_the_run_then_itself(ws, node):
    run = Experiment(ws, "node-stop").submit(script_config(ws, "scripts", "print_slowly.py", ["never"]))
    wait_until(lambda: Run.objects.get(run_id=run.id).status == "Running", 90, message="the run running")
    node.process.send_signal(signal.SIGTERM)
    node.process.wait(30)
    details = run.get_details()
    assert details["status"] == "Failed" and details["status_reason"] == "Stopped: node stopped", details
    assert Node.objects.get(name=node.name).state == "stopped"


def test_a_job_left_in_a_stopped_nodes_list_is_placed_on_another_node(
    ws, cluster, node, controller, live_server_process, tmp_path
):
    """The node is paused, its pop cancelled, so that the job waits in its list; asked to stop, it
    gives the job back (its key goes) and the controller places the run again, on a new node."""
    connection = redis.Redis.from_url(settings.REDIS_URL)
    jobs = redis_keys.node_jobs(Node.objects.get(name=node.name).pk)
    node.process.send_signal(signal.SIGSTOP)
    try:
        for client in connection.client_list():
            if client["cmd"] == "blpop":
                connection.client_kill_filter(_id=client["id"])
        run = Experiment(ws, "given-back").submit(script_config(ws, "scripts", "fail.py"))
        assert connection.llen(jobs) == 1, "the job waits in the paused node's list"
        node.process.send_signal(signal.SIGTERM)
    finally:
        node.process.send_signal(signal.SIGCONT)
    node.process.wait(30)
    assert connection.llen(jobs) == 0
    assert Run.objects.get(run_id=run.id).status == "Queued"

    second = NodeProcess(cluster, tmp_path, TRAINHUB_NODE_SERVER_URL=live_server_process.url).start()
    try:
        wait_until(lambda: Run.objects.get(run_id=run.id).is_final, 120, message="the run placed again to end")
    finally:
        second.stop()
    details = run.get_details()
    # fail.py divides by zero: it ran, on the second node.
    assert details["status"] == "Failed" and "ZeroDivisionError" in details["error_traceback"], details
    assert Run.objects.get(run_id=run.id).processes.get(rank=0).node_name == second.name
