"""The SDK's log follower against the real server."""

from __future__ import annotations

from runs.models import LogChunk, Run, RunStatus
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
