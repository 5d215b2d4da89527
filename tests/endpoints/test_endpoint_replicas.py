"""An endpoint of two replicas on real nodes: both answer, one killed under traffic fails no request
and is replaced, an update rolls both without a failed request, a replica past its memory_gb is
stopped by the kernel and its reason says so; `trainhub endpoint show` and the portal (in
Chromium) show the replicas and their states, the URL, a key shown once, a tried request's answer
and the live log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

import pytest
import requests
from playwright.sync_api import expect

from endpoints.proxy import REPLICA_ANSWERED
from endpoints.services import BAD_REPLICAS, TOO_MANY_REPLICAS
from tests.browser.test_workspace_flows import sign_in
from tests.endpoints.test_endpoint_serving import ROWS, register_version, trainhub_cli
from tests.helpers.processes import wait_until
from tests.helpers.site import module_site

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SCORE_PY = """
import json
import os

import torch


def init():
    global model
    model = torch.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model.pt"), weights_only=False)
    model.eval()


def run(raw_data):
    data = json.loads(raw_data)
    if "hold_bytes" in data:
        held = bytearray(b"x") * data["hold_bytes"]
        return {"held": len(held)}
    with torch.no_grad():
        output = model(torch.tensor(data["data"]))
    print("scored", len(data["data"]), "rows")
    return {"output": output.tolist(), "version": os.path.basename(os.getenv("AZUREML_MODEL_DIR"))}
"""
NAME = "twin-birds"


@pytest.fixture(scope="module")
def site(django_db_blocker, live_server_process, tmp_path_factory):
    folder = tmp_path_factory.mktemp("replicas")
    with module_site(django_db_blocker, live_server_process, folder) as site:
        from trainhub.sdk import ComputeTarget, Workspace
        from trainhub.sdk.compute import AmlCompute

        ws = Workspace.get("birds", url=site.url, token=site.token)
        ComputeTarget.create(ws, "twin-cluster", AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2"))
        site.start_cluster_nodes({"twin-cluster": 3})
        yield site, ws, folder


@pytest.fixture(scope="module")
def service(site):
    from trainhub.sdk import Environment
    from trainhub.sdk.model import InferenceConfig, Model
    from trainhub.sdk.webservice import AksWebservice

    _, ws, folder = site
    source = folder / "deploy"
    source.mkdir()
    (source / "score.py").write_text(SCORE_PY)
    first, _ = register_version(ws, folder, seed=1)
    config = InferenceConfig(
        entry_script="./score.py",
        environment=Environment.get(ws, name="TrainHub-PyTorch-2.13-CPU"),
        source_directory=str(source),
    )
    deployment = AksWebservice.deploy_configuration(num_replicas=2, cpu_cores=1, memory_gb=1)
    service = Model.deploy(ws, NAME, [first], config, deployment)
    service.wait_for_deployment()
    return service


def score(service, key: str, body: dict) -> requests.Response:
    return requests.post(service.scoring_uri, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


class Traffic:
    """Requests sent one after another from a thread until stopped: (status, replica, version) each."""

    def __init__(self, service, key: str):
        self.answers: list[tuple[int, str, object]] = []
        self.stop = threading.Event()

        def loop():
            while not self.stop.is_set():
                answer = score(service, key, {"data": ROWS})
                body = answer.json()
                self.answers.append((answer.status_code, answer.headers.get(REPLICA_ANSWERED, ""), body))

        self.thread = threading.Thread(target=loop)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def failed(self) -> list:
        return [a for a in self.answers if a[0] != 200]


def ready(service) -> list[dict]:
    return [r for r in service.get_details()["replicas"] if r["state"] == "ready"]


def kill_replica(replica_id: int) -> None:
    found = subprocess.run(
        ["pgrep", "-f", f"_scoring_server --endpoint {NAME} .*--replica {replica_id}$"], capture_output=True, text=True
    ).stdout.split()
    assert found, "the replica's process"
    for pid in found:
        os.kill(int(pid), signal.SIGKILL)


def test_no_endpoint_answers_before_the_deployment(site, db):
    site_, _, _ = site
    answer = requests.post(
        f"{site_.url}/endpoints/birds/{NAME}/score", json={}, headers={"Authorization": f"Bearer {site_.token}"}
    )
    assert answer.status_code == 404 and answer.json()["code"] == "not_found"


def test_more_replicas_than_the_cluster_has_nodes_are_refused(site):
    from trainhub.sdk import Model
    from trainhub.sdk.exceptions import TrainHubError
    from trainhub.sdk.model import InferenceConfig
    from trainhub.sdk.webservice import AciWebservice

    _, ws, folder = site
    (folder / "refused").mkdir()
    (folder / "refused" / "score.py").write_text(SCORE_PY)
    version, _ = register_version(ws, folder, seed=5)
    config = InferenceConfig(entry_script="score.py", source_directory=str(folder / "refused"))
    with pytest.raises(TrainHubError) as refused:
        Model.deploy(ws, "too-many", [version], config, AciWebservice.deploy_configuration(replicas=5))
    assert str(refused.value) == TOO_MANY_REPLICAS.format(count=5, cluster="twin-cluster", most=4)
    with pytest.raises(TrainHubError) as refused:
        Model.deploy(ws, "too-many", [version], config, AciWebservice.deploy_configuration(replicas=0))
    assert str(refused.value) == BAD_REPLICAS.format(most=16, value=0)


def test_two_replicas_both_answer_and_show_in_the_cli(site, service):
    site_, _, folder = site
    assert service.state == "Healthy"
    serving = ready(service)
    assert len(serving) == 2 and len({r["node"] for r in serving}) == 2
    key = service.get_keys()[0]
    answered = {score(service, key, {"data": ROWS}).headers[REPLICA_ANSWERED] for _ in range(8)}
    assert answered == {str(r["id"]) for r in serving}
    log = service.get_logs()
    assert "Replicas: 2; requests go to the least busy one that answers." in log
    assert "Each replica is limited to cpu_cores=1 (a CPU quota) and memory_gb=1" in log
    assert "Limits of this run's processes on node" in log and "cpu_cores=1, memory_gb=1 (cgroup" in log

    shown = trainhub_cli(site_.write_config(folder), "endpoint", "show", NAME)
    assert shown.returncode == 0, shown.stderr
    details = json.loads(shown.stdout)
    assert details["replica_count"] == 2
    assert sorted((r["id"], r["state"]) for r in details["replicas"]) == sorted((r["id"], "ready") for r in serving)


def test_a_killed_replica_fails_no_request_and_is_replaced(service):
    key = service.get_keys()[1]
    victim = ready(service)[0]
    with Traffic(service, key) as traffic:
        wait_until(lambda: len(traffic.answers) > 5, 30, message="traffic flowing")
        kill_replica(victim["id"])
        wait_until(lambda: service.get_details()["restarts"] == 1, 60, message="the endpoint counts a restart")
        service.wait_for_deployment()
        wait_until(lambda: len(ready(service)) == 2, 120, message="two replicas answering again")
        sent = len(traffic.answers)
        wait_until(lambda: len(traffic.answers) > sent + 5, 30, message="traffic after the replacement")
    assert traffic.failed() == []
    states = {r["id"]: r["state"] for r in service.get_details()["replicas"]}
    assert states[victim["id"]] == "stopped"
    assert f"Replica {victim['id']} (run {victim['run_id']}) stopped while serving" in service.get_logs()


def test_an_update_rolls_both_replicas_without_a_failed_request(site, service):
    _, ws, folder = site
    second, _ = register_version(ws, folder, seed=2)
    key = service.get_keys()[0]
    (serving_version,) = (model.rpartition(":")[2] for model in service.models)
    before = {r["id"] for r in ready(service)}
    with Traffic(service, key) as traffic:
        service.update(models=[second])
        service.wait_for_deployment()
        wait_until(lambda: {r["id"] for r in ready(service)}.isdisjoint(before), 120, message="the old ones stopped")
        sent = len(traffic.answers)
        wait_until(lambda: len(traffic.answers) > sent + 5, 30, message="traffic after the roll")
    assert traffic.failed() == []
    assert {a[2]["version"] for a in traffic.answers} == {serving_version, str(second.version)}
    assert traffic.answers[-1][2]["version"] == str(second.version)
    assert len(ready(service)) == 2


def test_a_replica_past_its_memory_is_stopped_saying_why_and_replaced(service):
    key = service.get_keys()[0]
    restarts = service.get_details()["restarts"]
    answer = score(service, key, {"hold_bytes": 3 << 30})
    # Sent once more after its replica died, as any request whose replica stopped: it kills that
    # one too, and is not sent a third time.
    assert answer.status_code == 502 and "closed the connection" in answer.json()["detail"]
    wait_until(lambda: service.get_details()["restarts"] >= restarts + 1, 60, message="a restart counted")
    assert (
        "it used more than its memory limit (memory_gb=1) and the kernel's OOM killer stopped it"
        in (service.get_details()["error"])
    )
    service.wait_for_deployment()
    wait_until(lambda: len(ready(service)) == 2, 120, message="two replicas answering again")
    assert score(service, key, {"data": ROWS}).status_code == 200


def test_the_endpoint_page_in_a_browser(site, service, page):
    site_, _, _ = site
    sign_in(page, site_.url, "olivia")
    page.goto(f"{site_.url}/w/birds/endpoints/{NAME}/")
    expect(page.locator("#endpoint-state")).to_have_text("Healthy")
    expect(page.locator("#scoring-url")).to_have_text(service.scoring_uri)
    expect(page.locator("#replica-count")).to_have_text("2 wanted, 2 answering")
    rows = page.locator("#replicas tbody tr")
    expect(rows.filter(has_text="ready")).to_have_count(2)
    expect(rows).to_have_count(len(service.get_details()["replicas"]))  # those that stopped too
    expect(page.locator("#replica-limits")).to_have_text("cpu_cores=1, memory_gb=1")

    page.get_by_role("button", name="New secondary key").click()
    key = page.locator("#new-key code").inner_text()
    assert key.startswith("the_") and service.get_keys()[1] == key
    page.goto(f"{site_.url}/w/birds/endpoints/{NAME}/")
    expect(page.locator("#new-key")).to_have_count(0)
    expect(page.get_by_text(key)).to_have_count(0)

    page.locator("#try-form textarea").fill(json.dumps({"data": ROWS}))
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#try-status")).to_have_text("200")
    tried = json.loads(page.locator("#try-answer").inner_text())
    assert tried["version"] == service.models[0].rpartition(":")[2] and len(tried["output"]) == 2

    # The serving replica's log, live: requests scored now show without a reload.
    expect(page.locator("#log")).not_to_contain_text("scored 3 rows")
    for _ in range(8):  # requests take turns: the replica the page follows gets some
        assert score(service, key, {"data": ROWS + ROWS[:1]}).status_code == 200
    expect(page.locator("#log")).to_contain_text("scored 3 rows")
