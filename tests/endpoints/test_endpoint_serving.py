"""An endpoint on the real stack: a registered PyTorch model deployed with a score.py (the guide's
notebook cells), scored through the SDK and with curl, keys checked, updated to a new version
under traffic, its replica killed and replaced, and deleted (its node free again)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.helpers.processes import wait_until
from tests.helpers.site import module_site

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SCORE_PY = """
import json
import os

import torch

from trainhub.sdk.model import Model


def init():
    global model
    # AZUREML_MODEL_DIR is the model's folder (./azureml-models/$MODEL_NAME/$VERSION)
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model.pt")
    model = torch.load(model_path, map_location=lambda storage, loc: storage, weights_only=False)
    model.eval()
    print("init: loaded", Model.get_model_path("birds"))


def run(input_data):
    input_data = torch.tensor(json.loads(input_data)["data"])
    with torch.no_grad():
        output = model(input_data)
    print("scored", len(input_data), "rows")
    return {"output": output.tolist(), "version": os.path.basename(os.getenv("AZUREML_MODEL_DIR"))}
"""
ROWS = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, -1.0, 0.0]]


@pytest.fixture(scope="module")
def site(django_db_blocker, live_server_process, tmp_path_factory):
    folder = tmp_path_factory.mktemp("endpoints")
    with module_site(django_db_blocker, live_server_process, folder) as site:
        from trainhub.sdk import ComputeTarget, Workspace
        from trainhub.sdk.compute import AmlCompute

        ws = Workspace.get("birds", url=site.url, token=site.token)
        ComputeTarget.create(ws, "serve-cluster", AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2"))
        site.start_cluster_nodes({"serve-cluster": 2})
        yield site, ws, folder


def register_version(ws, folder: Path, seed: int):
    import torch

    from trainhub.sdk import Model

    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    path = folder / f"v{seed}" / "model.pt"
    path.parent.mkdir(exist_ok=True)
    torch.save(model, path)
    registered = Model.register(ws, str(path), "birds", show_progress=False)
    with torch.no_grad():
        expected = model(torch.tensor(ROWS)).tolist()
    return registered, expected


def assert_close(got, expected):
    assert len(got) == len(expected)
    for got_row, expected_row in zip(got, expected, strict=True):
        assert all(abs(a - b) < 1e-5 for a, b in zip(got_row, expected_row, strict=True)), (got_row, expected_row)


def curl(url: str, key: str, body: str) -> tuple[int, dict]:
    done = subprocess.run(
        [
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            url,
            "-H",
            "Content-Type: application/json",
            "-H",
            f"Authorization: Bearer {key}",
            "--data",
            body,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(text)


def idle_nodes(site) -> int:
    from trainhub.compute.models import Node

    with site.blocker.unblock():
        return Node.objects.filter(cluster__name="serve-cluster", state="idle").count()


@pytest.fixture(scope="module")
def deployed(site, tmp_path_factory):
    site_, ws, folder = site
    source = folder / "deploy"
    source.mkdir()
    (source / "score.py").write_text(SCORE_PY)
    first, expected = register_version(ws, folder, seed=1)
    from trainhub.sdk import Environment
    from trainhub.sdk.model import InferenceConfig, Model
    from trainhub.sdk.webservice import AciWebservice

    pytorch_env = Environment.get(ws, name="TrainHub-PyTorch-2.13-CPU")
    inference_config = InferenceConfig(entry_script="score.py", environment=pytorch_env, source_directory=str(source))
    aciconfig = AciWebservice.deploy_configuration(
        cpu_cores=2, memory_gb=2, tags={"data": "birds"}, description="Classify birds"
    )
    service = Model.deploy(
        workspace=ws, name="aci-birds", models=[first], inference_config=inference_config, deployment_config=aciconfig
    )
    return service, expected, source


def test_the_scoring_url_refuses_anyone_without_a_key_or_membership(site, db):
    site_, _, _ = site
    url = f"{site_.url}/endpoints/birds/nothing-here/score"
    assert curl(url, "", "{}")[0] == 401
    assert curl(url, "the_not-a-key", "{}")[0] == 401
    assert curl(url, "th_not-a-token", "{}")[0] == 401
    status, answer = curl(url, site_.token, "{}")
    assert status == 404 and answer["detail"] == "No endpoint named 'nothing-here' in workspace 'birds'."
    status, _ = curl(f"{site_.url}/endpoints/elsewhere/nothing-here/score", site_.token, "{}")
    assert status == 404


def test_a_deployed_model_answers_through_the_sdk_and_curl(site, deployed, capsys):
    site_, ws, _ = site
    service, expected, _ = deployed
    service.wait_for_deployment(True)
    shown = capsys.readouterr().out
    assert service.state == "Healthy"
    assert "AciWebservice.deploy_configuration(cpu_cores=2, memory_gb=2) is served as a TrainHub endpoint" in shown
    assert 'ACI service creation operation finished, operation "Healthy"' in shown
    assert service.scoring_uri == f"{site_.url}/endpoints/birds/aci-birds/score"

    result = service.run(input_data=json.dumps({"data": ROWS}))
    assert result["version"] == "1"
    assert_close(result["output"], expected)

    primary, secondary = service.get_keys()
    for key in (primary, secondary):
        status, answer = curl(service.scoring_uri, key, json.dumps({"data": ROWS}))
        assert status == 200
        assert_close(answer["output"], expected)
    status, answer = curl(service.scoring_uri, primary[:-4] + "AAAA", json.dumps({"data": ROWS}))
    assert status == 401 and "Bearer" in answer["detail"]

    # The replica's print reaches the service's log after its answer reached the caller (the node
    # stores its output as it comes): as in the cloud, get_logs() shows it moments later.
    wait_until(lambda: "scored 2 rows" in service.get_logs(), 30, 0.2, "the scoring script's print in the log")
    logs = service.get_logs()
    assert "init: loaded" in logs and "azureml-models/birds/1/model.pt" in logs

    from trainhub.sdk.webservice import Webservice

    found = Webservice(ws, "aci-birds")
    assert found.state == "Healthy" and [w.name for w in Webservice.list(ws)] == ["aci-birds"]
    assert idle_nodes(site_) == 1  # the replica holds its node as a run does

    new_key = service.regen_key("Primary")
    assert curl(service.scoring_uri, primary, "{}")[0] == 401
    assert curl(service.scoring_uri, new_key, json.dumps({"data": ROWS}))[0] == 200


def test_an_update_to_a_new_version_fails_no_request(site, deployed):
    site_, ws, folder = site
    service, _, _ = deployed
    second, expected = register_version(ws, folder, seed=2)
    key = service.get_keys()[1]
    answers: list[tuple[int, object]] = []
    stop = threading.Event()

    def keep_scoring():
        while not stop.is_set():
            code, body = curl(service.scoring_uri, key, json.dumps({"data": ROWS}))
            answers.append((code, body.get("version") if code == 200 else body))

    thread = threading.Thread(target=keep_scoring)
    thread.start()
    try:
        service.update(models=[second])
        service.wait_for_deployment()
        wait_until(lambda: any(v == "2" for _, v in answers[-3:]), 60, message="answers from version 2")
    finally:
        stop.set()
        thread.join()
    assert [a for a in answers if a[0] != 200] == []
    assert {v for _, v in answers} == {"1", "2"}
    assert_close(service.run({"data": ROWS})["output"], expected)
    # The replica of version 1 stops once the switch is done: its node is free again.
    wait_until(lambda: idle_nodes(site_) == 1, 60, message="the old replica's node idle")


def test_a_killed_replica_is_replaced(site, deployed):
    site_, ws, _ = site
    service, _, _ = deployed
    before = service.get_details()
    serving = [r for r in before["replicas"] if r["state"] == "ready"]
    assert len(serving) == 1
    found = subprocess.run(
        ["pgrep", "-f", f"_scoring_server --endpoint aci-birds .*--replica {serving[0]['id']}$"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert found, "the replica's process"
    for pid in found:
        os.kill(int(pid), signal.SIGKILL)
    wait_until(lambda: service.get_details()["restarts"] == 1, 60, message="the endpoint counts a restart")
    service.wait_for_deployment()
    after = service.get_details()
    assert after["state"] == "Healthy"
    assert f"Replica {serving[0]['id']} (run {serving[0]['run_id']}) stopped while serving" in service.get_logs()
    states = {r["id"]: r["state"] for r in after["replicas"]}
    assert states[serving[0]["id"]] == "stopped"
    assert sum(1 for s in states.values() if s == "ready") == 1
    assert service.run({"data": ROWS})["version"] == "2"


def trainhub_cli(config: Path, *words: str) -> subprocess.CompletedProcess:
    from tests.cli.test_cli_end_to_end import TRAINHUB

    return subprocess.run([TRAINHUB, "--config", str(config), *words], capture_output=True, text=True, timeout=120)


def test_the_cli_lists_shows_and_deletes_the_endpoint_which_frees_its_node(site, deployed):
    site_, ws, folder = site
    service, _, _ = deployed
    config = site_.write_config(folder)
    listed = trainhub_cli(config, "endpoint", "list")
    assert listed.returncode == 0, listed.stderr
    assert f"aci-birds\tHealthy\tbirds:2\t{service.scoring_uri}" in listed.stdout
    shown = json.loads(trainhub_cli(config, "endpoint", "show", "aci-birds").stdout)
    assert shown["state"] == "Healthy" and shown["restarts"] == 1 and shown["stats"]["requests"] > 0
    assert "scored 2 rows" in trainhub_cli(config, "endpoint", "logs", "aci-birds").stdout

    keys = json.loads(trainhub_cli(config, "--json", "endpoint", "keys", "aci-birds").stdout)
    assert (keys["primary"], keys["secondary"]) == service.get_keys()
    deleted = trainhub_cli(config, "endpoint", "delete", "aci-birds")
    assert deleted.returncode == 0 and "Deleted endpoint aci-birds" in deleted.stdout
    from trainhub.sdk.webservice import Webservice

    assert Webservice.list(ws) == []
    wait_until(lambda: idle_nodes(site_) == 2, 60, message="both nodes idle")
    status, answer = curl(service.scoring_uri, keys["secondary"], "{}")
    assert status == 401
    missing = trainhub_cli(config, "endpoint", "show", "aci-birds")
    assert missing.returncode == 1 and "No endpoint named 'aci-birds'" in missing.stderr


def test_an_onnx_version_is_served_with_no_script_and_matches_pytorch(site):
    import torch

    from trainhub.sdk import Model

    site_, ws, folder = site
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    path = folder / "onnx" / "model.onnx"
    path.parent.mkdir()
    torch.onnx.export(
        model,
        (torch.zeros(1, 4),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["scores"],
        dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}},
    )
    registered = Model.register(ws, str(path), "birds-onnx", model_framework="Onnx", show_progress=False)

    service = Model.deploy(ws, "onnx-birds", [registered])
    service.wait_for_deployment()
    answer = service.run({"data": ROWS})
    assert list(answer) == ["scores"]
    with torch.no_grad():
        expected = model(torch.tensor(ROWS)).tolist()
    diff = max(
        abs(a - b) for got, want in zip(answer["scores"], expected, strict=True) for a, b in zip(got, want, strict=True)
    )
    assert diff <= 1e-4
    assert service.run({"input": ROWS}) == answer  # the model's own input name works too
    assert (
        "Serving model.onnx with onnxruntime" in service.get_logs()
        and "inputs input tensor(float)" in service.get_logs()
    )
    with pytest.raises(Exception, match="400"):
        service.run({"nothing": 1})
    service.delete()
    wait_until(lambda: idle_nodes(site_) == 2, 60, message="both nodes idle")
