"""The SDK's log follower against the real server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from runs.models import LogChunk, Run, RunStatus
from runs.services import log_append, run_transition
from tests.runs.builders import make_run
from tests.runs.conftest import cluster, curated_env, ws  # noqa: F401  (fixtures used here)
from trainhub.sdk import Experiment
from trainhub.sdk.run import Run as SdkRun


def test_following_a_finished_runs_log_ends_even_with_a_hole_in_its_numbering(ws, workspace):  # noqa: F811
    run = make_run(workspace, experiment="holes")
    LogChunk.objects.create(run=run, stream="std_log_process_0", first_seq=1, line_count=1, text="one")
    LogChunk.objects.create(run=run, stream="std_log_process_0", first_seq=3, line_count=1, text="three")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)
    assert list(SdkRun(Experiment(ws, "holes"), run.run_id).iter_log(follow=True)) == ["one", "three"]


def test_a_follower_waits_on_the_server_and_is_woken_by_the_next_line_and_by_the_end(ws, workspace):  # noqa: F811
    """The long poll: a request for lines the run has not printed yet is held until it prints, and
    the next one until it ends; neither waits out its (long) wait, and nothing is polled."""
    run = make_run(workspace, experiment="follow", status=RunStatus.RUNNING)
    store = ws._store
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(store.get_run_logs, run.run_id, 0, wait=300)
        time.sleep(0.5)
        assert not waiting.done()  # held: nothing to say yet
        log_append(run.pk, "std_log_process_0", ["first line"])
        answer = waiting.result(timeout=60)
        assert (answer["status"], [c["lines"] for c in answer["chunks"]]) == ("Running", [["first line"]])

        run_transition(run.pk, RunStatus.FINALIZING)
        waiting = pool.submit(store.get_run_logs, run.run_id, 1, wait=300)
        time.sleep(0.5)
        assert not waiting.done()
        run_transition(run.pk, RunStatus.COMPLETED)
        assert waiting.result(timeout=60) == {"status": "Completed", "chunks": [], "complete": True}


def test_wait_for_completion_prints_every_line_and_returns_once_the_run_ends(ws, workspace, capsys):  # noqa: F811
    run = make_run(workspace, experiment="follow", status=RunStatus.RUNNING)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(SdkRun(Experiment(ws, "follow"), run.run_id).wait_for_completion, show_output=True)
        for n in range(5):
            log_append(run.pk, "std_log_process_0", [f"line {n}"])
            time.sleep(0.05)
        run_transition(run.pk, RunStatus.FINALIZING)
        run_transition(run.pk, RunStatus.COMPLETED)
        assert waiting.result(timeout=60)["status"] == "Completed"
    printed = capsys.readouterr().out
    assert printed.startswith("line 0\nline 1\nline 2\nline 3\nline 4\n\nExecution Summary")


def test_a_run_asked_for_with_wait_is_answered_when_it_ends(ws, workspace):  # noqa: F811
    """wait_for_completion() without output: one request held on the server until the run ended
    (not by a status that is not final), answered with the run's details."""
    run = make_run(workspace, experiment="follow", status=RunStatus.RUNNING)
    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(ws._store.get_run, run.run_id, wait=300)
        waiting_sdk = pool.submit(SdkRun(Experiment(ws, "follow"), run.run_id).wait_for_completion)
        run_transition(run.pk, RunStatus.FINALIZING)
        time.sleep(0.5)
        assert not waiting.done() and not waiting_sdk.done()
        run_transition(run.pk, RunStatus.COMPLETED)
        answer = waiting.result(timeout=60)
        details = waiting_sdk.result(timeout=60)
    assert answer["status"] == "Completed" and answer["status_history"][-1]["status"] == "Completed"
    assert (details["status"], details["runId"]) == ("Completed", run.run_id)
