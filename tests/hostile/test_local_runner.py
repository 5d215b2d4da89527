"""The server's side of compute_target="local" (runs/local_runs.py, runs/local_api.py): only the member
who submitted a run to the submitting machine claims it, once; what its runner reports goes through
the same checks as a node's; a run's own token reaches none of it; a silent runner fails its run. On
the runner's side, a user-managed environment's interpreter shows the box nothing the box hides."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from runs.local_runs import RUNNER_SILENT, reap_silent_local_runs
from runs.models import RunFile, RunProcess, RunStatus
from tests.conftest import api_client, issue_token
from tests.runs.builders import make_run
from trainhub import redis_keys
from trainhub.compute.services import submitting_machine_target
from trainhub.redis_conn import get_redis
from trainhub.sandbox import SandboxUnavailable, interpreter_folders

pytestmark = pytest.mark.django_db


@pytest.fixture
def local_run(workspace, contributor):
    return make_run(workspace, cluster=submitting_machine_target(workspace), created_by=contributor)


@pytest.fixture
def runner(workspace, contributor):
    """The submitter's API client, as the runner on their machine holds it."""
    return api_client(issue_token(workspace, contributor))


def url(run, end: str) -> str:
    return f"/api/v1/workspaces/{run.workspace.name}/runs/{run.run_id}/local/{end}"


def report(client, run, **body):
    return client.post(url(run, "report"), body, content_type="application/json")


def put_file(client, run, path: str, content: bytes):
    sha = hashlib.sha256(content).hexdigest()
    return client.put(url(run, f"files/{sha}") + f"?path={path}", content, content_type="application/octet-stream")


def test_only_its_submitter_claims_a_local_run_and_only_once(workspace, owner, local_run, runner):
    assert api_client(issue_token(workspace, owner)).post(url(local_run, "claim")).status_code == 404
    claimed = runner.post(url(local_run, "claim"))
    assert claimed.status_code == 200
    assert claimed.json()["token"] and claimed.json()["run_id"] == local_run.run_id
    again = runner.post(url(local_run, "claim"))
    assert again.status_code == 400 and again.json()["code"] == "already_claimed"


def test_outsiders_and_readers_reach_nothing(workspace, other_workspace, outsider, reader, local_run):
    outsider_client = api_client(issue_token(other_workspace, outsider))
    assert outsider_client.post(url(local_run, "claim")).status_code == 404
    assert api_client(issue_token(workspace, reader)).post(url(local_run, "claim")).status_code == 403


def test_a_runs_own_token_reaches_none_of_the_runner_endpoints(local_run, runner):
    token = runner.post(url(local_run, "claim")).json()["token"]
    as_run = api_client(token)
    assert as_run.post(url(local_run, "claim")).status_code in (401, 403)
    assert report(as_run, local_run, status={"status": "Preparing"}).status_code in (401, 403)
    assert put_file(as_run, local_run, "outputs/x.txt", b"x").status_code in (401, 403)
    local_run.refresh_from_db()
    assert local_run.status == RunStatus.QUEUED


def test_a_cluster_run_is_no_runners_to_claim(workspace, contributor, runner):
    on_cluster = make_run(workspace, created_by=contributor)
    refused = runner.post(url(on_cluster, "claim"))
    assert refused.status_code == 400 and refused.json()["code"] == "not_local"


def test_reports_go_through_run_transition_and_store_lines_and_processes(local_run, runner):
    assert report(runner, local_run, status={"status": "Preparing"}).status_code == 400  # not claimed yet
    runner.post(url(local_run, "claim"))
    assert report(runner, local_run, status={"status": "Completed"}).json() == {"stop": ""}
    local_run.refresh_from_db()
    assert local_run.status == RunStatus.QUEUED  # Queued -> Completed is no move a run makes
    for status in ("Preparing", "Starting", "Running"):
        report(runner, local_run, status={"status": status})
    answer = report(
        runner,
        local_run,
        logs=[{"stream": "std_log_process_0", "lines": ["epoch 1", "epoch 2"]}],
        processes=[{"event": "started", "rank": 0, "local_rank": 0, "pid": 42}],
    )
    assert answer.json() == {"stop": ""}
    local_run.refresh_from_db()
    assert local_run.status == RunStatus.RUNNING
    assert [chunk.text for chunk in local_run.log_chunks.all()] == ["epoch 1\nepoch 2"]
    process = RunProcess.objects.get(run=local_run, rank=0)
    assert (process.node_name, process.state) == ("the submitting machine", "running")
    refused = report(runner, local_run, logs=[{"stream": "../../x", "lines": ["y"]}])
    assert refused.status_code == 400 and "log stream" in refused.json()["detail"]
    assert report(runner, local_run, status={"status": "Queued"}).status_code == 400


def test_files_go_only_under_outputs_and_logs(local_run, runner):
    runner.post(url(local_run, "claim"))
    for path in ("../secret", "/etc/passwd", "outputs/../../x", "model.pt", "outputs"):
        assert put_file(runner, local_run, path, b"weights").status_code == 400, path
    assert put_file(runner, local_run, "outputs/model.pt", b"weights").status_code == 201
    assert [f.path for f in RunFile.objects.filter(run=local_run)] == ["outputs/model.pt"]


def test_a_cancel_reaches_the_runner_and_ends_the_run_canceled(workspace, owner, local_run, runner):
    runner.post(url(local_run, "claim"))
    for status in ("Preparing", "Starting", "Running"):
        report(runner, local_run, status={"status": status})
    api_client(issue_token(workspace, owner)).post(f"/api/v1/workspaces/birds/runs/{local_run.run_id}/cancel")
    assert report(runner, local_run).json() == {"stop": "Canceled"}
    report(runner, local_run, status={"status": "Finalizing"})
    report(runner, local_run, status={"status": "Canceled"})
    local_run.refresh_from_db()
    assert (local_run.status, local_run.status_reason) == (RunStatus.CANCELED, "Canceled by the user.")


def test_a_runner_gone_silent_fails_its_run(local_run, runner):
    runner.post(url(local_run, "claim"))
    report(runner, local_run, status={"status": "Preparing"})
    assert reap_silent_local_runs() == []
    get_redis().delete(redis_keys.run_local_runner(local_run.pk))
    assert reap_silent_local_runs() == [local_run.pk]
    local_run.refresh_from_db()
    assert local_run.status == RunStatus.FAILED
    assert local_run.status_reason == RUNNER_SILENT.format(seconds=60)


def test_the_run_page_says_where_it_ran(client_for, reader, local_run):
    page = client_for(reader).get(f"/w/birds/runs/{local_run.run_id}/").content.decode()
    assert "local: the machine of carl, which submitted it" in page


def test_a_user_managed_interpreter_never_uncovers_what_the_box_hides(tmp_path, settings):
    """python.interpreter_path is the submitter's to choose, but its folders are put back in the box:
    one holding a folder the box hides (the runner's work folder here, the home folder at worst) is
    refused, and so is a path that is no executable."""
    holder = tmp_path / "holder"
    (holder / "bin").mkdir(parents=True)
    (holder / "work").mkdir()
    python = holder / "bin" / "python"
    python.symlink_to(sys.executable)
    settings.TRAINHUB_NODE_WORK_DIR = str(holder / "work")
    with pytest.raises(SandboxUnavailable, match=f"belongs to {holder}, which holds {holder / 'work'}"):
        interpreter_folders(python)
    (holder / "work" / "script.py").write_text("print(1)")
    for not_python in (holder / "bin", holder / "nothing", holder / "work" / "script.py"):
        with pytest.raises(SandboxUnavailable, match="is no executable file"):
            interpreter_folders(not_python)
    settings.TRAINHUB_NODE_WORK_DIR = str(tmp_path / "elsewhere")
    assert interpreter_folders(python) == [holder, Path(sys.executable).resolve().parent.parent]
