"""Containment of a run's token, sign-in throttling and sockets cut at sign-out (issue 16).

A run's code is untrusted and holds its run's token (TRAINHUB_RUN_TOKEN, readable by whatever
the script runs, and once by any process that could read another run's environment). The token
must act for its run only: what the in-run SDK does, in its own workspace, while the run lasts.
"""

from __future__ import annotations

import html
import http.client
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import websockets.exceptions
import websockets.sync.client
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from playwright.sync_api import expect

from datastores.models import Datastore
from mlflow_compat.views import ENDPOINTS, NOT_DELETABLE
from registry.models import ModelVersion
from runs.models import Run, RunStatus
from runs.services import log_append
from tests.conftest import PASSWORD, api_client, issue_token
from tests.datastores.builders import upload
from tests.hostile.test_identity import api_routes, call, every_route, snapshot_of_world
from tests.metrics.builders import running_run
from tests.metrics.test_sdk_metrics import run_env, script
from tests.runs.builders import make_run
from trainhub.api import api
from trainhub.api_auth import IN_RUN, RUN_TOKEN_REFUSED, TokenAuth
from trainhub.compute.models import ComputeCluster
from trainhub.environments.models import Environment
from trainhub.workspaces.models import ApiToken, Membership, Role
from trainhub.workspaces.signin import LOCKED_OUT

pytestmark = pytest.mark.django_db(transaction=True)

# What a running script may call with its token: reviewed here, so that marking one more endpoint
# IN_RUN is a decision this test makes visible.
RUN_TOKEN_ENDPOINTS = {
    ("GET", "/api/v1/workspaces/{workspace_name}/runs/{run_id}"),
    ("POST", "/api/v1/workspaces/{workspace_name}/runs/{run_id}/cancel"),
    ("GET", "/api/v1/workspaces/{workspace_name}/runs/{run_id}/logs"),
    ("GET", "/api/v1/workspaces/{workspace_name}/runs/{run_id}/files"),
    ("GET", "/api/v1/workspaces/{workspace_name}/runs/{run_id}/file"),
    ("POST", "/api/v1/workspaces/{workspace_name}/runs/{run_id}/metrics"),
    ("GET", "/api/v1/workspaces/{workspace_name}/runs/{run_id}/metrics"),
    ("GET", "/api/v1/workspaces/{workspace_name}/runs/{run_id}/metrics/summary"),
    ("GET", "/api/v1/workspaces/{workspace_name}/runs/{run_id}/metrics/chart"),
    ("GET", "/api/v1/workspaces/{workspace_name}/models"),
    ("POST", "/api/v1/workspaces/{workspace_name}/models/{name}/versions"),
    ("GET", "/api/v1/workspaces/{workspace_name}/models/{name}"),
    ("GET", "/api/v1/workspaces/{workspace_name}/models/{name}/versions/{version}"),
    ("GET", "/api/v1/workspaces/{workspace_name}/models/{name}/versions/{version}/file"),
    ("GET", "/api/v1/workspaces/{workspace_name}/models/{name}/versions/{version}/download"),
    ("GET", "/api/v1/workspaces/{workspace_name}/model-blobs/{sha256}"),
    ("PUT", "/api/v1/workspaces/{workspace_name}/model-blobs/{sha256}"),
    ("POST", "/api/v1/workspaces/{workspace_name}/onnx-exports/{export_id}/report"),
    ("GET", "/api/v1/workspaces/{workspace_name}/datastores"),
    ("GET", "/api/v1/workspaces/{workspace_name}/default-datastore"),
    ("GET", "/api/v1/workspaces/{workspace_name}/datastores/{name}"),
    ("GET", "/api/v1/workspaces/{workspace_name}/datastores/{name}/files"),
    ("GET", "/api/v1/workspaces/{workspace_name}/data-blobs/{sha256}"),
    ("GET", "/api/v1/workspaces/{workspace_name}/data-blobs/{sha256}/content"),
    ("GET", "/api/v1/workspaces/{workspace_name}/datasets/{name}"),
    ("GET", "/api/v1/workspaces/{workspace_name}/datasets/{name}/versions/{version}"),
    ("GET", "/api/v1/workspaces/{workspace_name}/datasets/{name}/versions/{version}/files"),
    # An endpoint replica's scoring server reports its port; only for the replica its run is.
    ("POST", "/api/v1/workspaces/{workspace_name}/endpoints/{name}/replicas/{replica_id}/ready"),
}

# Open to anyone, signed in or not: the catalog of node sizes.
PUBLIC_ENDPOINTS = {("GET", "/api/v1/vm-sizes/")}


def open_to_runs(method: str, template: str) -> bool:
    prefix_path = template.removeprefix("/api/v1")
    for prefix, router in api._routers:
        for path, view in router.path_operations.items():
            if prefix + path != prefix_path:
                continue
            for operation in view.operations:
                if method in operation.methods:
                    auth = operation.auth_callbacks
                    return any(isinstance(a, TokenAuth) and a.run_tokens for a in auth)
    raise AssertionError(f"no route {method} {template}")


def test_only_the_reviewed_endpoints_take_a_run_token():
    """The allow-list is one mark (auth=IN_RUN) at one choke point (TokenAuth): a new endpoint is
    closed to run tokens until it is marked, and marking it shows up here."""
    marked = {route for route in every_route() if open_to_runs(*route)}
    assert marked == RUN_TOKEN_ENDPOINTS
    assert isinstance(IN_RUN[0], TokenAuth) and IN_RUN[0].run_tokens
    for method, template in PUBLIC_ENDPOINTS:
        assert Client().generic(method, template).status_code == 200


def test_a_run_token_reports_only_its_own_replica_ready(workspace, owner):
    """The attack: a run takes over another run's endpoint replica by reporting its own port for it."""
    from endpoints.models import Endpoint, Replica

    replica_run, _ = running_run(workspace, experiment="endpoint-serving")
    other_run, other_token = running_run(workspace)
    endpoint = Endpoint.objects.create(
        workspace=workspace,
        name="serving",
        cluster=replica_run.cluster,
        snapshot=replica_run.snapshot,
        entry_script="score.py",
        environment_name="e",
        environment_spec={},
        primary_key_hash="p" * 64,
        secondary_key_hash="s" * 64,
    )
    replica = Replica.objects.create(endpoint=endpoint, run=replica_run, generation=1)
    response = api_client(other_token).post(
        f"/api/v1/workspaces/birds/endpoints/serving/replicas/{replica.pk}/ready",
        {"port": 8001, "secret": "x" * 40},
        content_type="application/json",
    )
    assert response.status_code == 403
    replica.refresh_from_db()
    assert (replica.state, replica.port, replica.secret) == ("starting", None, "")


def test_a_replica_cannot_point_the_server_at_another_service_of_its_node(workspace, owner):
    """The attack: the scoring script reports, with its own run's token, the port of another service on
    its node (here a listener that answers 200 to anything) so that the server sends requests there.
    The server asks the port for the replica's proof of its secret first, and refuses."""
    import socket
    import threading

    from endpoints.models import Endpoint, Replica
    from endpoints.services import NOT_A_REPLICA
    from runs.models import RunNode
    from trainhub.compute.models import Node

    run, token = running_run(workspace, experiment="endpoint-serving")
    node = Node.objects.create(cluster=run.cluster, name="n-proof", hostname="h", address="127.0.0.1", pid=1, cpus=1)
    RunNode.objects.create(run=run, node=node, node_rank=0, state="running")
    endpoint = Endpoint.objects.create(
        workspace=workspace,
        name="serving",
        cluster=run.cluster,
        snapshot=run.snapshot,
        entry_script="score.py",
        environment_name="e",
        environment_spec={},
        primary_key_hash="p" * 64,
        secondary_key_hash="s" * 64,
    )
    replica = Replica.objects.create(endpoint=endpoint, run=run, generation=1)
    other = socket.create_server(("127.0.0.1", 0))

    def answer_anything():
        with other:
            connection, _ = other.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"proof": "x"}\n')

    threading.Thread(target=answer_anything, daemon=True).start()
    port = other.getsockname()[1]
    response = api_client(token).post(
        f"/api/v1/workspaces/birds/endpoints/serving/replicas/{replica.pk}/ready",
        {"port": port, "secret": "x" * 40},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["detail"] == NOT_A_REPLICA.format(port=port)
    replica.refresh_from_db()
    assert (replica.state, replica.port) == ("starting", None)


def test_a_run_token_cannot_list_workspaces(workspace, owner, other_workspace):
    """The attack: a run of `birds` lists its user's other workspaces (`elsewhere`) to go there next."""
    Membership.objects.create(workspace=other_workspace, user=owner, role=Role.OWNER)
    _, token = running_run(workspace)
    response = api_client(token).get("/api/v1/workspaces/")
    assert response.status_code == 403
    assert response.json() == {"detail": RUN_TOKEN_REFUSED, "code": "permission_denied"}
    assert "elsewhere" not in response.content.decode()


def test_a_run_token_learns_nothing_of_another_workspace(world, owner, other_workspace):
    """The attack: a run of `elsewhere` (whose user also owns `birds`) takes its token to every
    endpoint of `birds`, reads and writes. Every one answers 404 and nothing changes."""
    Membership.objects.create(workspace=other_workspace, user=owner, role=Role.OWNER)
    _, token = running_run(other_workspace, created_by=owner)
    client = api_client(token)
    before = snapshot_of_world()
    for method, template in api_routes():
        response = call(client, method, template, world)
        assert response.status_code == 404, (method, template, response.content[:300])
        assert "birds" not in json.dumps(response.json()).replace("'birds'", ""), (method, template)
    assert snapshot_of_world() == before


def test_a_run_token_is_refused_by_every_other_endpoint_of_its_workspace(world, workspace):
    """The attack: a run of `birds` uses its token for what its user could do: create clusters,
    environments, datastores, runs, exports, change tags, delete versions, upload data. Each
    endpoint not marked for runs answers 403 naming what a run's token is for; nothing changes."""
    _, token = running_run(workspace)
    client = api_client(token)
    before = snapshot_of_world()
    refused = [route for route in every_route() if route not in RUN_TOKEN_ENDPOINTS | PUBLIC_ENDPOINTS]
    assert ("POST", "/api/v1/workspaces/{workspace_name}/computes") in refused
    for method, template in refused:
        if "{workspace_name}" in template:
            response = call(client, method, template, world)
        else:
            response = client.generic(method, template)
        assert response.status_code == 403, (method, template, response.content[:300])
        assert response.json()["detail"] == RUN_TOKEN_REFUSED
    assert snapshot_of_world() == before
    assert not ComputeCluster.objects.filter(name="stolen").exists()
    assert not Environment.objects.filter(name="stolen").exists()
    assert not Datastore.objects.filter(name="stolen").exists()


def test_a_run_token_mints_no_token_and_changes_no_membership(workspace, owner, reader):
    """The attack: the token is sent to the pages that make API tokens and change roles. Pages
    take the browser's session only: the caller is sent to sign in and nothing is made."""
    _, token = running_run(workspace)
    client = api_client(token)
    tokens = ApiToken.objects.count()
    made = client.post("/w/birds/tokens/", {"name": "stolen"})
    assert made.status_code == 302 and made["Location"].startswith("/accounts/login/")
    reader_membership = Membership.objects.get(workspace=workspace, user=reader)
    promoted = client.post(f"/w/birds/members/{reader_membership.pk}/role/", {"role": "owner"})
    assert promoted.status_code == 302 and promoted["Location"].startswith("/accounts/login/")
    assert ApiToken.objects.count() == tokens
    assert Membership.objects.get(pk=reader_membership.pk).role == Role.READER


def test_a_run_token_cannot_cancel_or_read_another_run_of_its_workspace(workspace):
    """The attack: a run of `birds` cancels a colleague's run of the same workspace, reads its
    files and logs, and registers a model from it. Each answers 404; the other run keeps running."""
    mine, token = running_run(workspace)
    theirs, _ = running_run(workspace, experiment="theirs")
    client = api_client(token)
    base = f"/api/v1/workspaces/birds/runs/{theirs.run_id}"
    for response in (
        client.post(f"{base}/cancel"),
        client.get(base),
        client.get(f"{base}/logs"),
        client.get(f"{base}/files"),
        client.get(f"{base}/metrics"),
        client.post(
            "/api/v1/workspaces/birds/models/stolen/versions",
            {"run_id": theirs.run_id, "model_path": "outputs/model.pt"},
            content_type="application/json",
        ),
    ):
        assert response.status_code == 404, response.content
        assert response.json()["detail"] == f"No run {theirs.run_id!r} in this workspace."
    theirs.refresh_from_db()
    assert theirs.status == RunStatus.RUNNING
    assert not ModelVersion.objects.filter(model__name="stolen").exists()
    assert client.get(f"/api/v1/workspaces/birds/runs/{mine.run_id}").json()["status"] == "Running"


# MLflow's tracking API (mlflow_compat/, /mlflow/<workspace>/api/2.0/…): the second way in for a
# run's token, set in every run as MLFLOW_TRACKING_TOKEN. What it serves is reviewed here too.
MLFLOW_ENDPOINTS = {
    ("GET", "runs/get"),
    ("POST", "runs/update"),
    ("POST", "runs/log-metric"),
    ("POST", "runs/log-parameter"),
    ("POST", "runs/set-tag"),
    ("POST", "runs/log-batch"),
    ("POST", "runs/log-model"),
    ("POST", "runs/log-inputs"),
    ("POST", "runs/outputs"),
    ("POST", "runs/create"),
    ("POST", "runs/delete"),
    ("POST", "runs/delete-tag"),
    ("POST", "runs/search"),
    ("GET", "metrics/get-history"),
    ("GET", "experiments/get"),
    ("GET", "experiments/get-by-name"),
    ("POST", "experiments/search"),
    ("POST", "experiments/create"),
    ("POST", "logged-models"),
    ("POST", "logged-models/search"),
}


def test_only_the_reviewed_mlflow_endpoints_are_served():
    assert set(ENDPOINTS) == MLFLOW_ENDPOINTS


def mlflow_calls(run_id: str) -> list[tuple[str, str, dict]]:
    """Every MLflow endpoint, aimed at `run_id` with a well-formed body."""
    bodies = {
        "runs/log-metric": {"key": "loss", "value": 9.0, "timestamp": 0, "step": 0},
        "runs/log-parameter": {"key": "lr", "value": "9"},
        "runs/set-tag": {"key": "stolen", "value": "yes"},
        "runs/log-batch": {"metrics": [{"key": "loss", "value": 9.0, "timestamp": 0, "step": 0}]},
        "metrics/get-history": {"metric_key": "loss"},
        "logged-models": {"source_run_id": run_id, "name": "stolen"},
    }
    return [
        (method, endpoint, {"run_id": run_id, **bodies.get(endpoint, {})})
        for method, endpoint in sorted(MLFLOW_ENDPOINTS)
        if not endpoint.startswith(("experiments/", "runs/search", "runs/create", "logged-models/search"))
    ]


def mlflow_call(client: Client, workspace_name: str, method: str, endpoint: str, body: dict):
    url = f"/mlflow/{workspace_name}/api/2.0/mlflow/{endpoint}"
    if method == "GET":
        return client.get(url, body)
    return client.generic(method, url, json.dumps(body), content_type="application/json")


def test_a_run_token_reaches_only_its_own_run_through_mlflow(world, workspace, other_workspace, owner):
    """The attack: a run of `birds` points MLflow's client at a colleague's run (same workspace) and
    at a run of `elsewhere`: it logs metrics, params and tags there, reads them, announces a model
    in them, uploads a file into their outputs. Every call answers MLflow's 404 and nothing changes."""
    mine, token = running_run(workspace)
    theirs, _ = running_run(workspace, experiment="theirs")
    Membership.objects.create(workspace=other_workspace, user=owner, role=Role.OWNER)
    far, _ = running_run(other_workspace, created_by=owner)
    client = api_client(token)
    before = snapshot_of_world()
    for target, workspace_name in ((theirs, "birds"), (far, "birds"), (far, "elsewhere")):
        for method, endpoint, body in mlflow_calls(target.run_id):
            response = mlflow_call(client, workspace_name, method, endpoint, body)
            if endpoint.startswith("runs/delete") and workspace_name == "birds":  # refused to all: history is kept
                assert response.json() == {"error_code": "PERMISSION_DENIED", "message": NOT_DELETABLE}
                continue
            assert response.status_code == 404, (workspace_name, endpoint, response.content)
            assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST", (endpoint, response.content)
        for method, path in (("PUT", f"{target.run_id}/outputs/stolen.txt"), ("GET", f"{target.run_id}/outputs/x")):
            url = f"/mlflow/{workspace_name}/api/2.0/mlflow-artifacts/artifacts/{path}"
            response = client.generic(method, url, b"data", content_type="application/octet-stream")
            assert response.status_code == 404, (workspace_name, path, response.content)
        listing = client.get(f"/mlflow/{workspace_name}/api/2.0/mlflow-artifacts/artifacts", {"path": target.run_id})
        assert listing.status_code == 404
    search = mlflow_call(client, "birds", "POST", "runs/search", {"experiment_ids": [str(theirs.experiment_id)]})
    assert search.status_code == 404 and "theirs" not in search.content.decode()
    assert snapshot_of_world() == before
    assert not theirs.files.exists() and not far.files.exists()
    assert not theirs.metric_series.exists() and not far.metric_series.exists()
    assert Run.objects.get(pk=theirs.pk).parameters == theirs.parameters
    own = mlflow_call(client, "birds", "GET", "runs/get", {"run_id": mine.run_id})
    assert own.status_code == 200 and own.json()["run"]["info"]["run_id"] == mine.run_id


def test_a_run_token_dies_with_its_run_for_mlflow_too(workspace):
    run, token = running_run(workspace)
    client = api_client(token)
    assert mlflow_call(client, "birds", "GET", "runs/get", {"run_id": run.run_id}).status_code == 200
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.COMPLETED, ended_at=timezone.now() - timezone.timedelta(hours=1)
    )
    response = mlflow_call(client, "birds", "POST", "runs/set-tag", {"run_id": run.run_id, "key": "k", "value": "v"})
    assert response.status_code == 401
    assert response.json() == {
        "error_code": "UNAUTHENTICATED",
        "message": f"Run {run.run_id} has ended (Completed): its token stopped working with it.",
    }


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED])
def test_a_run_token_dies_with_its_run(workspace, status):
    """The attack: a run's token kept (copied to a file, printed in a log) after the run ended,
    then used to read the run and the workspace's data. Refused with 401 saying the run ended."""
    run, token = running_run(workspace)
    client = api_client(token)
    url = f"/api/v1/workspaces/birds/runs/{run.run_id}"
    assert client.get(url).status_code == 200
    Run.objects.filter(pk=run.pk).update(status=status, ended_at=timezone.now() - timezone.timedelta(hours=1))
    for response in (client.get(url), client.get("/api/v1/workspaces/birds/datastores")):
        assert response.status_code == 401
        assert response.json() == {
            "detail": f"Run {run.run_id} has ended ({status}): its token stopped working with it.",
            "code": "run_ended",
        }


def test_a_run_token_of_a_user_removed_from_the_workspace_reaches_nothing(workspace, contributor):
    """The run outlives its user's membership: the token acts as that user, so it gets 404, from
    TrainHub's API and from MLflow's."""
    run, token = running_run(workspace, created_by=contributor)
    client = api_client(token)
    Membership.objects.filter(workspace=workspace, user=contributor).delete()
    assert client.get(f"/api/v1/workspaces/birds/runs/{run.run_id}").status_code == 404
    response = mlflow_call(client, "birds", "GET", "runs/get", {"run_id": run.run_id})
    assert (response.status_code, response.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")


def test_an_api_token_of_a_user_removed_from_the_workspace_reaches_nothing(workspace, contributor):
    """The token was made while its user was a member: once they are not, it reads nothing of the
    workspace, from TrainHub's API or MLflow's, and the workspace is not named to it."""
    run, _ = running_run(workspace)
    client = api_client(issue_token(workspace, contributor))
    assert client.get(f"/api/v1/workspaces/birds/runs/{run.run_id}").status_code == 200
    Membership.objects.filter(workspace=workspace, user=contributor).delete()
    answer = client.get(f"/api/v1/workspaces/birds/runs/{run.run_id}")
    assert answer.json() == {"detail": "No workspace named 'birds' that you are a member of.", "code": "not_found"}
    response = mlflow_call(client, "birds", "GET", "runs/get", {"run_id": run.run_id})
    assert (response.status_code, response.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")


@pytest.mark.slow
def test_the_in_run_sdk_still_does_what_a_training_script_needs(workspace, owner, live_url, tmp_path):
    """The control, on the real server with the real in-run SDK and only the run's token: log and
    read metrics, read the run, read a dataset and the default datastore (inputs), register a model
    from the run's outputs, and read the registry; while the same script cannot list workspaces."""
    upload(api_client(issue_token(workspace, owner)), "birds", {"fowl/a.csv": b"x,y\n1,2\n"})
    owner_client = api_client(issue_token(workspace, owner))
    made = owner_client.post(
        "/api/v1/workspaces/birds/datasets/fowl/versions",
        {"sources": [["workspaceblobstore", "fowl/**"]]},
        content_type="application/json",
    )
    assert made.status_code == 201, made.content
    run, token = running_run(workspace)
    path = script(
        tmp_path,
        """
        import os
        from trainhub.sdk import Dataset, Datastore, Model, Run
        from trainhub.sdk.exceptions import TrainHubError

        run = Run.get_context()
        run.log("loss", 0.25)
        run.flush()
        print("metrics", run.get_metrics()["loss"])
        print("status", run.get_status())
        ws = run.experiment.workspace
        print("datastore", Datastore.get_default(ws).name)
        Dataset.get_by_name(ws, "fowl").download("inputs")
        print("input", open(os.path.join("inputs", "a.csv")).read().splitlines()[0])
        os.makedirs("outputs", exist_ok=True)
        with open("outputs/model.pt", "wb") as handle:
            handle.write(b"weights")
        model = run.register_model("fowl-net", "outputs/model.pt")
        print("registered", model.name, model.version, model.run_id)
        print("read back", Model(ws, "fowl-net").version)
        try:
            ws._http.get("workspaces/")
        except TrainHubError as error:
            print("list workspaces refused:", error)
        """,
    )
    done = subprocess.run(
        [sys.executable, path],
        env=run_env(run, token, live_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "metrics 0.25" in lines
    assert "status Running" in lines
    assert "datastore workspaceblobstore" in lines
    assert "input x,y" in lines
    assert f"registered fowl-net 1 {run.run_id}" in lines
    assert "read back 1" in lines
    assert any(line.startswith("list workspaces refused:") and RUN_TOKEN_REFUSED in line for line in lines), lines
    assert Path(tmp_path, "inputs", "a.csv").exists()


class FormClient:
    """Signs in through the real server's form, as a browser on `address` would (its own cookies)."""

    def __init__(self, live_url: str, address: str = "127.0.0.1"):
        parts = urlsplit(live_url)
        self.host, self.port, self.address = parts.hostname, parts.port, address
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None, **headers: str) -> tuple[int, str, dict]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30, source_address=(self.address, 0))
        try:
            cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            headers = {"Cookie": cookie, **headers} if cookie else headers
            if body is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    key, _, rest = value.partition("=")
                    self.cookies[key] = rest.split(";", 1)[0]
            return response.status, response.read().decode(), dict(response.getheaders())
        finally:
            connection.close()

    def sign_in(self, username: str, password: str, page: str = "/accounts/login/", **headers: str) -> tuple[int, str]:
        """(status, page text) of posting the sign-in form; 302 is signed in."""
        _, form, _ = self.request("GET", page)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
        body = urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token, "next": "/"})
        status, text, _ = self.request("POST", page, body, **headers)
        return status, html.unescape(text)

    def signed_in(self) -> bool:
        status, _, headers = self.request("GET", "/workspaces/")
        return status == 200


def locked_out_message() -> str:
    return LOCKED_OUT.format(minutes=settings.TRAINHUB_SIGNIN_LOCKOUT_MINUTES)


@pytest.mark.slow
def test_thirty_wrong_passwords_lock_the_account_and_the_address(live_url, owner, reader):
    """The attack: 30 guesses in a row at olivia's password at the sign-in form. After the limit
    the page says sign-in is locked and for how long, and the right password is refused too, from
    this address (whatever X-Forwarded-For it claims) and for olivia from anywhere. Another user
    from another address signs in; olivia does again once the lock-out has passed."""
    attacker = FormClient(live_url)
    answers = [attacker.sign_in("olivia", f"guess-{n}") for n in range(30)]
    limit = settings.AXES_FAILURE_LIMIT
    assert all(status == 200 and "didn't match" in text for status, text in answers[: limit - 1])
    assert all(status == 429 and locked_out_message() in text for status, text in answers[limit:])
    assert "locked for 15 minutes" in answers[-1][1]

    status, text = attacker.sign_in("olivia", PASSWORD)
    assert status == 429 and locked_out_message() in text
    assert attacker.sign_in("rita", PASSWORD, **{"X-Forwarded-For": "10.1.2.3"})[0] == 429
    assert not attacker.signed_in()
    elsewhere = FormClient(live_url, address="127.0.0.2")
    assert elsewhere.sign_in("olivia", PASSWORD)[0] == 429
    assert not elsewhere.signed_in()

    colleague = FormClient(live_url, address="127.0.0.3")
    assert colleague.sign_in("rita", PASSWORD)[0] == 302
    assert colleague.signed_in()

    # The lock-out passes.
    cooloff = timezone.timedelta(minutes=settings.TRAINHUB_SIGNIN_LOCKOUT_MINUTES, seconds=1)
    AccessAttempt.objects.update(attempt_time=timezone.now() - cooloff)
    assert attacker.sign_in("olivia", PASSWORD)[0] == 302
    assert attacker.signed_in()


@pytest.mark.slow
def test_the_admin_sign_in_is_throttled_too(live_url):
    """The attack: the same guessing at the admin site's login, for a superuser."""
    get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    attacker = FormClient(live_url)
    for n in range(settings.AXES_FAILURE_LIMIT):
        attacker.sign_in("root", f"guess-{n}", page="/admin/login/")
    status, text = attacker.sign_in("root", PASSWORD, page="/admin/login/")
    assert status == 429 and locked_out_message() in text
    assert FormClient(live_url, address="127.0.0.2").sign_in("root", PASSWORD)[0] == 429


@contextmanager
def watching(live_url: str, browser: FormClient, run: Run) -> Iterator[websockets.sync.client.ClientConnection]:
    """The run page's log socket, opened with `browser`'s session, once its replay is read."""
    with websockets.sync.client.connect(
        live_url.replace("http://", "ws://") + f"/ws/runs/{run.run_id}/logs/",
        additional_headers={"Cookie": f"sessionid={browser.cookies['sessionid']}", "Origin": live_url},
        open_timeout=30,
    ) as socket:
        while json.loads(socket.recv(timeout=30))["type"] != "replayed":
            pass
        yield socket


def close_code(socket: websockets.sync.client.ClientConnection) -> int | None:
    """The code the server closed `socket` with (reading what it sent before)."""
    try:
        while True:
            socket.recv(timeout=20)
    except websockets.exceptions.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def still_follows(socket: websockets.sync.client.ClientConnection, run: Run) -> bool:
    log_append(run.pk, "std_log_process_0", ["a line for whoever still watches"])
    while True:
        message = json.loads(socket.recv(timeout=20))
        if message["type"] == "lines":
            return "a line for whoever still watches" in message["lines"]


def signed_in_twice(live_url: str, username: str) -> tuple[FormClient, FormClient]:
    """The same user signed in from two browsers (two sessions)."""
    browsers = (FormClient(live_url), FormClient(live_url))
    for browser in browsers:
        assert browser.sign_in(username, PASSWORD)[0] == 302
    return browsers


@pytest.mark.slow
def test_signing_out_closes_the_sockets_of_that_session(live_url, workspace, owner):
    """The attack: a log socket opened before signing out (a shared computer, a stolen laptop left
    on the run page) keeps streaming the run's log. Signing out closes it (4401, which the page
    does not reconnect after); a socket of the same user's other, still signed-in browser stays."""
    run = make_run(workspace, status=RunStatus.RUNNING, created_by=owner)
    laptop, desktop = signed_in_twice(live_url, "olivia")
    with watching(live_url, laptop, run) as on_laptop, watching(live_url, desktop, run) as on_desktop:
        _, page, _ = laptop.request("GET", "/workspaces/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        signed_out, _, _ = laptop.request("POST", "/accounts/logout/", urlencode({"csrfmiddlewaretoken": token}))
        assert signed_out == 302
        assert close_code(on_laptop) == 4401
        assert still_follows(on_desktop, run)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["password-change page", "set_password"])
def test_a_password_change_closes_every_socket_of_the_user(live_url, workspace, owner, path):
    """The attack: whoever learnt the old password opened a socket; the owner changes the password
    (on the password-change page, or an administrator with set_password) and that socket must not
    stream on. Every socket of the user closes with 4401; another member's stays."""
    run = make_run(workspace, status=RunStatus.RUNNING, created_by=owner)
    mine, intruder = signed_in_twice(live_url, "olivia")
    colleague = FormClient(live_url, address="127.0.0.2")
    assert colleague.sign_in("carl", PASSWORD)[0] == 302
    stack = ExitStack()
    sockets = [stack.enter_context(watching(live_url, browser, run)) for browser in (mine, intruder, colleague)]
    if path == "set_password":
        owner.set_password("a brand new passphrase")
        owner.save()
    else:
        _, form, _ = mine.request("GET", "/accounts/password_change/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
        body = {
            "old_password": PASSWORD,
            "new_password1": "a brand new passphrase",
            "new_password2": "a brand new passphrase",
            "csrfmiddlewaretoken": token,
        }
        assert mine.request("POST", "/accounts/password_change/", urlencode(body))[0] == 302
    assert close_code(sockets[0]) == 4401
    assert close_code(sockets[1]) == 4401
    assert still_follows(sockets[2], run)
    stack.close()


# Last in the module: the browser's event loop stays open in this thread until the module ends.
@pytest.mark.slow
@pytest.mark.browser
def test_the_run_page_says_it_stopped_following_after_signing_out(page, live_url, workspace, owner):
    """What the user sees: the run page open in one tab, signing out in another. The log and the
    charts stop following, say why, and the page does not keep reconnecting."""
    run = make_run(workspace, status=RunStatus.RUNNING, created_by=owner)
    page.goto(f"{live_url}/accounts/login/")
    page.get_by_label("Username").fill("olivia")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.goto(f"{live_url}/w/birds/runs/{run.run_id}/")
    log_append(run.pk, "std_log_process_0", ["step 1"])
    expect(page.locator("#log")).to_contain_text("step 1")
    other_tab = page.context.new_page()
    other_tab.goto(f"{live_url}/workspaces/")
    other_tab.get_by_role("button", name="Sign out").click()
    alerts = page.get_by_role("alert")
    expect(alerts.filter(has_text="sign in again to follow this log")).to_have_count(1)
    expect(alerts.filter(has_text="sign in again to follow these metrics")).to_have_count(1)
    log_append(run.pk, "std_log_process_0", ["step 2"])
    page.wait_for_timeout(2000)
    expect(page.locator("#log")).not_to_contain_text("step 2")
    # One log socket and one metrics socket, each opened once: no reconnecting.
    assert sorted(s.url.rsplit("/", 2)[-2] for s in sockets) == ["logs", "metrics"]
