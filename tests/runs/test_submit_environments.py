"""A submit is one request: the server looks up the environment the run names (the SDK fetches
nothing first), or registers the spec the SDK sends with it; unknown names and refused submits
leave nothing behind."""

from __future__ import annotations

import json

import pytest

from runs.models import Run
from tests.conftest import api_client
from tests.helpers.proxy import LosingProxy
from tests.runs.builders import make_cluster, make_snapshot
from trainhub.environments.models import Environment as EnvironmentRow
from trainhub.environments.models import EnvironmentVersion
from trainhub.environments.selectors import ENVIRONMENT_NOT_FOUND
from trainhub.sdk import Environment, Experiment, ScriptRunConfig, Workspace
from trainhub.sdk.exceptions import NotFoundError, UserErrorException

CURATED = "TrainHub-PyTorch-2.13-CPU"
NEVER_LOSE = r"(?!)"


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "hello.py").write_text("print('hello from the run')\n")
    return folder


def requests_of(proxy: LosingProxy) -> list[tuple[str, str]]:
    return [(method, path.split("?")[0]) for method, path, _ in proxy.seen]


@pytest.mark.slow
def test_a_submit_naming_no_environment_is_one_request_and_runs_in_the_curated_one(
    ws, node, live_url, owner_token, source
):
    Experiment(ws, "warm").submit(ScriptRunConfig(str(source), "hello.py", compute_target="cpu-cluster"))
    with LosingProxy(live_url, NEVER_LOSE) as proxy:
        proxied = Workspace.get("birds", url=proxy.url, token=owner_token)
        seen_before = len(proxy.seen)
        config = ScriptRunConfig(str(source), "hello.py", compute_target="cpu-cluster")
        run = Experiment(proxied, "warm").submit(config, show_progress=False)
        submitted = requests_of(proxy)[seen_before:]
        details = run.wait_for_completion()
        printed = "\n".join(run.iter_log())

    assert submitted == [("POST", "/api/v1/workspaces/birds/experiments/warm/runs")]
    assert details["status"] == "Completed"
    assert details["environment"] == {"name": CURATED, "version": 1}
    assert "hello from the run" in printed


def test_an_environment_spec_is_registered_by_the_submit_itself(ws, cluster, live_url, owner_token, source):
    env = Environment("bird-env")
    env.python.conda_dependencies.add_pip_package("six")
    env.environment_variables = {"SPECIES": "heron"}
    with LosingProxy(live_url, NEVER_LOSE) as proxy:
        proxied = Workspace.get("birds", url=proxy.url, token=owner_token)
        config = ScriptRunConfig(str(source), "hello.py", compute_target="cpu-cluster", environment=env)
        experiment = Experiment(proxied, "custom")
        experiment.submit(config, show_progress=False)  # uploads the snapshot
        seen_before = len(proxy.seen)
        first = experiment.submit(config, show_progress=False)
        again = experiment.submit(config, show_progress=False)
        env.python.conda_dependencies.add_pip_package("idna")
        changed = experiment.submit(config, show_progress=False)
        submits = requests_of(proxy)[seen_before:]
        recorded = [run.get_details()["environment"] for run in (first, again, changed)]

    assert submits == [("POST", "/api/v1/workspaces/birds/experiments/custom/runs")] * 3
    assert recorded == [{"name": "bird-env", "version": 1}] * 2 + [{"name": "bird-env", "version": 2}]
    assert (env.name, env.version) == ("bird-env", 2)
    first_spec = EnvironmentVersion.objects.get(environment__name="bird-env", version=1).spec
    assert first_spec["pip"] == ["six"] and first_spec["environment_variables"] == {"SPECIES": "heron"}
    assert Run.objects.get(run_id=first.id).environment_spec == first_spec


def test_a_refused_submit_registers_no_environment(ws, source):
    env = Environment("bird-env")
    env.python.conda_dependencies.add_pip_package("six")
    config = ScriptRunConfig(str(source), "hello.py", compute_target="no-such-cluster", environment=env)

    with pytest.raises(UserErrorException, match="No compute target named 'no-such-cluster'"):
        Experiment(ws, "custom").submit(config, show_progress=False)
    assert not EnvironmentRow.objects.filter(name="bird-env").exists()
    assert not Run.objects.exists()
    assert env.version is None


def test_a_submit_naming_an_environment_the_workspace_lacks_is_refused_and_records_nothing(
    live_url, workspace, owner_token, source
):
    make_cluster(workspace, name="cpu-cluster")  # and no curated environment seeded
    bare = Workspace.get("birds", url=live_url, token=owner_token)
    config = ScriptRunConfig(str(source), "hello.py", compute_target="cpu-cluster")

    with pytest.raises(NotFoundError) as refused:
        Experiment(bare, "nothing").submit(config, show_progress=False)
    assert str(refused.value) == ENVIRONMENT_NOT_FOUND.format(name=CURATED, workspace="birds")
    assert not Run.objects.exists()


def test_another_workspaces_environment_is_not_found(db, workspace, other_workspace, outsider, owner_token):
    from trainhub.environments.services import environment_register
    from trainhub.workspaces.models import Role
    from trainhub.workspaces.permissions import Access

    environment_register(
        access=Access(other_workspace, Role.OWNER), user=outsider, name="their-env", spec={"pip": ["six"]}
    )
    make_cluster(workspace, name="cpu-cluster")
    payload = {
        "snapshot": make_snapshot(workspace).sha256,
        "compute_target": "cpu-cluster",
        "environment": {"name": "their-env"},
        "script": "train.py",
    }
    answer = api_client(owner_token).post(
        "/api/v1/workspaces/birds/experiments/exp/runs",
        data=json.dumps(payload),
        content_type="application/json",
        HTTP_HOST="localhost",
    )

    assert answer.status_code == 404
    assert ENVIRONMENT_NOT_FOUND.format(name="their-env", workspace="birds") in answer.content.decode()
    assert not Run.objects.exists()


def test_a_reserved_name_sent_with_a_spec_is_refused_and_records_nothing(db, workspace, owner_token):
    make_cluster(workspace, name="cpu-cluster")
    payload = {
        "snapshot": make_snapshot(workspace).sha256,
        "compute_target": "cpu-cluster",
        "environment": {"name": "TrainHub-Mine", "spec": {"pip": ["six"]}},
        "script": "train.py",
    }
    answer = api_client(owner_token).post(
        "/api/v1/workspaces/birds/experiments/exp/runs",
        data=json.dumps(payload),
        content_type="application/json",
        HTTP_HOST="localhost",
    )

    assert answer.status_code in (400, 422)
    assert "reserved for curated environments" in answer.content.decode()
    assert not EnvironmentRow.objects.filter(name="TrainHub-Mine").exists()
    assert not Run.objects.exists()
