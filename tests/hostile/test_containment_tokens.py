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
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from datastores.models import Datastore
from registry.models import ModelVersion
from runs.models import Run, RunStatus
from tests.conftest import PASSWORD, api_client, issue_token
from tests.datastores.builders import upload
from tests.hostile.test_identity import api_routes, call, snapshot_of_world
from tests.metrics.builders import running_run
from tests.metrics.test_sdk_metrics import run_env, script
from trainhub.api import IN_RUN, RUN_TOKEN_REFUSED, TokenAuth, api
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
}

# Open to anyone, signed in or not: the catalog of node sizes.
PUBLIC_ENDPOINTS = {("GET", "/api/v1/vm-sizes/")}


def every_route() -> list[tuple[str, str]]:
    """(method, path template) of every endpoint of the JSON API, workspace or not."""
    return [
        (method, f"/api/v1{prefix}{path}")
        for prefix, router in api._routers
        for path, view in router.path_operations.items()
        for operation in view.operations
        for method in operation.methods
    ]


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
    """The run outlives its user's membership: the token acts as that user, so it gets 404."""
    run, token = running_run(workspace, created_by=contributor)
    Membership.objects.filter(workspace=workspace, user=contributor).delete()
    assert api_client(token).get(f"/api/v1/workspaces/birds/runs/{run.run_id}").status_code == 404


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
