"""Identity attacks on every page, API endpoint, download and WebSocket of a workspace.

The endpoints are enumerated from the URL configuration and the API's routers, so a new one
is attacked as soon as it exists: anonymous callers, outsiders, a revoked token and a token of
another workspace are refused (objects of other workspaces answer 404), readers cannot write,
and cross-site form posts and cross-origin sockets are refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from datastores.models import DatasetVersion, DatastoreFile
from endpoints.keys import seal
from endpoints.models import Endpoint, Replica
from metrics.services import metrics_ingest, parse_batch
from registry.models import ModelVersion, OnnxExport
from registry.services import blob_store
from runs.models import Run, RunStatus
from runs.services import log_append
from sweeps.services import sweep_submit
from tests.conftest import api_client, issue_token
from tests.datastores.builders import upload
from tests.registry.builders import access_of, register, run_with_outputs
from tests.runs.test_run_log_consumer import headers
from trainhub.api import api
from trainhub.asgi import application
from trainhub.environments.selectors import EnvironmentChoice
from trainhub.environments.services import environment_register
from trainhub.live.sockets import REMOVED_CLOSE_CODE, SIGNED_OUT_CLOSE_CODE
from trainhub.workspaces.models import ApiToken, Membership
from trainhub.workspaces.services import token_revoke

pytestmark = pytest.mark.django_db(transaction=True)

BLOB = b"a stored model blob"
DATASTORE = "workspaceblobstore"
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def world(workspace, owner, contributor):
    """One object of every kind in `birds`, and the values that fill each URL parameter."""
    run = run_with_outputs(workspace, {"outputs/model.pt": b"weights"}, created_by=owner)
    log_append(run.pk, "std_log_process_0", ["a line"])
    access = access_of(workspace, owner)
    loss = {"rank": 0, "metrics": [{"name": "loss", "values": [1.0]}]}
    metrics_ingest(access=access, run=run, batch=parse_batch(loss))
    version = register(workspace, owner, run)
    export = OnnxExport.objects.create(source=version, source_path="model.pt", opset=17, tolerance=1e-4)
    environment_register(access=access, user=owner, name="birds-env", spec={"python": "3.11", "pip": ["six"]})
    blob_store(access=access, sha256=hashlib.sha256(BLOB).hexdigest(), stream=io.BytesIO(BLOB))
    data_client = api_client(issue_token(workspace, owner))
    upload(data_client, workspace.name, {"fowl/a.csv": BLOB})
    endpoint = Endpoint.objects.create(
        workspace=workspace,
        name="serving",
        cluster=run.cluster,
        snapshot=run.snapshot,
        entry_script="score.py",
        environment_name="birds-env",
        environment_spec={"python": "3.11"},
        primary_key_hash="p" * 64,
        secondary_key_hash="s" * 64,
        primary_key_sealed=seal("the_p"),
        secondary_key_sealed=seal("the_s"),
        created_by=owner,
    )
    endpoint.model_versions.set([version])
    replica = Replica.objects.create(endpoint=endpoint, run=run, generation=1)
    dataset = data_client.post(
        f"/api/v1/workspaces/{workspace.name}/datasets/fowl/versions",
        {"sources": [[DATASTORE, "fowl/**"]]},
        content_type="application/json",
    )
    assert dataset.status_code == 201, dataset.content
    sweep = sweep_submit(
        access=access,
        user=owner,
        experiment_name=run.experiment.name,
        spec=SWEEP_SPEC,
        run={
            "snapshot_sha256": run.snapshot.sha256,
            "compute_target": run.cluster.name,
            "script": "train.py",
            "environment": EnvironmentChoice("birds-env", 1, {"python": "3.11", "pip": ["six"]}),
        },
    )
    return {
        "workspace_name": workspace.name,
        "run_id": run.run_id,
        "experiment_name": run.experiment.name,
        "name": None,  # depends on the route: see fill()
        "version": version.version,
        "export_id": export.pk,
        "sha256": None,
        "membership_id": Membership.objects.get(workspace=workspace, user=contributor).pk,
        "replica_id": replica.pk,
        "token_id": ApiToken.objects.create(workspace=workspace, user=owner, name="t", token_hash="x" * 64).pk,
        "_run": run,
        "_model": version.model.name,
        "_cluster": run.cluster.name,
        "_snapshot": run.snapshot.sha256,
        "_sweep": sweep.parent.run_id,
    }


SWEEP_SPEC = {
    "sampling": {"type": "grid", "space": {"lr": ["choice", [[0.1, 0.01]]]}},
    "policy": None,
    "primary_metric_name": "loss",
    "primary_metric_goal": "MINIMIZE",
    "max_total_runs": 2,
    "max_concurrent_runs": 1,
}


# The query string each route needs to name one thing (a file, a metric).
QUERIES = {
    "runs/{run_id}/file": "?path=outputs/model.pt",
    "runs/<str:run_id>/file": "?path=outputs/model.pt",
    "versions/{version}/file": "?path=model.pt",
    "<int:version>/file": "?path=model.pt",
}


def fill(template: str, world: dict) -> str:
    """`template` ('{run_id}' or '<str:run_id>' parameters) with the world's values and query."""
    values = dict(world)
    values["name"] = (
        world["_model"]
        if "models" in template
        else "serving"
        if "endpoints" in template
        else world["_cluster"]
        if "comput" in template
        else "birds-env"
        if "environments" in template
        else DATASTORE
        if "stores" in template
        else "fowl"
        if "sets" in template
        else world["experiment_name"]
    )
    values["sha256"] = world["_snapshot"] if "snapshots" in template else hashlib.sha256(BLOB).hexdigest()
    if "/sweeps/" in template:
        values["run_id"] = world["_sweep"]
    url = template
    for key, value in values.items():
        for kind in ("", "str:", "int:"):
            url = url.replace(f"<{kind}{key}>", str(value))
        url = url.replace(f"{{{key}}}", str(value))
    return url + next((q for suffix, q in QUERIES.items() if template.endswith(suffix)), "")


def every_route() -> list[tuple[str, str]]:
    """(method, path template) of every endpoint of the JSON API, workspace or not."""
    return [
        (method, f"/api/v1{prefix}{path}")
        for prefix, router in api._routers
        for path, view in router.path_operations.items()
        for operation in view.operations
        for method in operation.methods
    ]


def api_routes() -> list[tuple[str, str]]:
    """(method, path template) of every workspace endpoint of the JSON API."""
    return [(method, template) for method, template in every_route() if "{workspace_name}" in template]


def page_routes() -> list[str]:
    """Path templates of every page of a workspace (`/w/<workspace_name>/...`)."""

    def walk(patterns, prefix: str = "") -> list[str]:
        found = []
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                found += walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                found.append("/" + prefix + str(pattern.pattern))
        return found

    return [p for p in walk(get_resolver().url_patterns) if p.startswith("/w/<str:workspace_name>/")]


# Pages that only accept POST: GET answers 405 to members, which proves nothing; they are
# attacked in test_readers_cannot_write_through_pages.
POST_ONLY_PAGES = {
    "/cancel/",
    "/edit/",
    "/role/",
    "/remove/",
    "/revoke/",
    "/clone/",
    "/export-onnx/",
    "/delete/",
    "/keys/",
    "/try/",
}


def get_pages() -> list[str]:
    return [p for p in page_routes() if not any(p.endswith(s) for s in POST_ONLY_PAGES)]


def test_every_page_and_endpoint_answers_a_member(world, client_for, owner, owner_token):
    """The control: with the world's values each GET succeeds, so the refusals below are refusals."""
    client = client_for(owner)
    for template in get_pages():
        assert client.get(fill(template, world)).status_code == 200, template
    api = api_client(owner_token)
    for method, template in api_routes():
        if method == "GET":
            assert api.get(fill(template, world)).status_code == 200, template


def test_anonymous_callers_are_sent_to_sign_in_or_refused(world):
    client = Client()
    for template in page_routes():
        response = client.get(fill(template, world))
        assert response.status_code in (302, 405), template
        if response.status_code == 302:
            assert response["Location"].startswith("/accounts/login/"), template
    for method, template in api_routes():
        assert call(client, method, template, world).status_code == 401, (method, template)


def test_outsiders_get_404_on_every_page_download_and_endpoint(world, client_for, outsider, other_workspace):
    """A signed-in stranger, and a valid token of another workspace, learn nothing: 404 everywhere."""
    session = client_for(outsider)
    for template in page_routes():
        url = fill(template, world)
        assert session.get(url).status_code in (404, 405), url
        assert session.post(url).status_code == 404, url
    token = api_client(issue_token(other_workspace, outsider))
    for method, template in api_routes():
        assert call(session, method, template, world).status_code == 404, (method, template)
        assert call(token, method, template, world).status_code == 404, (method, template)


def test_a_members_token_for_another_workspace_reaches_only_that_one(
    world, workspace, owner, outsider, other_workspace
):
    """The owner of `birds` also belongs to `elsewhere`: their `elsewhere` token still gets 404 in `birds`."""
    from trainhub.workspaces.models import Role

    Membership.objects.create(workspace=other_workspace, user=owner, role=Role.OWNER)
    token = api_client(issue_token(other_workspace, owner))
    for method, template in api_routes():
        assert call(token, method, template, world).status_code == 404, (method, template)


def test_a_revoked_token_is_refused_everywhere(world, workspace, owner):
    secret = issue_token(workspace, owner)
    token_revoke(token=ApiToken.objects.filter(workspace=workspace, user=owner).latest("pk"))
    client = api_client(secret)
    for method, template in api_routes():
        response = call(client, method, template, world)
        assert response.status_code == 401, (method, template)
        assert response.json()["code"] == "invalid_token"


def api_write_bodies(world: dict) -> dict[str, object]:
    """A well-formed body for each write, so that only the role can be why it is refused."""
    return {
        "/computes": {"name": "stolen", "vm_size": "LOCAL_CPU"},
        "/computes/{name}": {"max_nodes": 9},  # PATCH's body (DELETE reads none)
        "/environments": {"name": "stolen", "spec": {"python": "3.11", "pip": ["six"]}},
        "/clone": {"new_name": "stolen"},
        "/snapshots/{sha256}": b"",
        "/runs": {
            "snapshot": world["_snapshot"],
            "compute_target": world["_cluster"],
            "environment": {"name": "birds-env"},
            "script": "train.py",
        },
        "/cancel": None,
        "/runs/{run_id}": {"display_name": "stolen", "tags": {"stolen": "yes"}},
        "/models/{name}/versions": {"run_id": world["run_id"], "model_path": "outputs/model.pt"},
        "/versions/{version}": None,
        "/tags": {"add": {"stolen": "yes"}},
        "/model-blobs/{sha256}": BLOB,
        "/onnx-exports": {"sample_input_shape": [1, 8]},
        "/onnx-exports/{export_id}/report": {"passed": True},
        "/local/claim": None,
        "/local/report": {"logs": [{"stream": "stolen", "lines": ["stolen"]}], "status": {"status": "Completed"}},
        "/local/files/{sha256}": BLOB,
        "/metrics": {"rank": 0, "metrics": [{"name": "stolen", "values": [1.0]}]},
        "/datastores": {"name": "stolen"},
        "/datastores/{name}/files": {"files": [{"path": "stolen.csv", "sha256": hashlib.sha256(BLOB).hexdigest()}]},
        "/data-blobs/{sha256}": BLOB,
        "/data-blobs": b"",
        "/datasets/{name}/versions": {"sources": [[DATASTORE, "fowl/**"]], "create_new_version": True},
        "/sweeps": {
            "run": {
                "snapshot": world["_snapshot"],
                "compute_target": world["_cluster"],
                "environment": {"name": "birds-env"},
                "script": "train.py",
            },
            "sweep": SWEEP_SPEC,
        },
        "/endpoints": {
            "name": "stolen",
            "models": [{"name": world["_model"]}],
            "entry_script": "score.py",
            "snapshot": world["_snapshot"],
        },
        "/endpoints/{name}": {"models": [{"name": world["_model"]}]},  # PATCH's body (DELETE reads none)
        "/keys": {"key_type": "Primary"},
        "/ready": {"port": 8001, "secret": "x" * 40},
    }


def body_for(template: str, bodies: dict[str, object]) -> object:
    matches = [body for suffix, body in bodies.items() if template.endswith(suffix)]
    assert len(matches) == 1, f"give {template} one body in api_write_bodies()"
    return matches[0]


def snapshot_of_world() -> tuple:
    """What a refused write must leave unchanged."""
    from trainhub.compute.models import ComputeCluster
    from trainhub.environments.models import Environment

    return (
        list(ComputeCluster.objects.values_list("name", "max_nodes").order_by("name")),
        list(Environment.objects.values_list("name", flat=True).order_by("name")),
        list(Run.objects.values_list("run_id", "status", "display_name", "tags").order_by("run_id")),
        list(ModelVersion.objects.values_list("model__name", "version", "tags").order_by("pk")),
        OnnxExport.objects.filter(passed__isnull=False).count(),
        list(DatastoreFile.objects.values_list("path", flat=True).order_by("path")),
        DatasetVersion.objects.count(),
        list(Endpoint.objects.values_list("name", "generation", "primary_key_hash", "secondary_key_hash")),
        list(Replica.objects.values_list("state", "port")),
    )


def call(client: Client, method: str, template: str, world: dict):
    """`method` on the filled route; writes carry their well-formed body."""
    body = body_for(template, api_write_bodies(world)) if method in WRITE_METHODS else None
    data = body if isinstance(body, bytes) else json.dumps(body) if body is not None else ""
    query = next((q for suffix, q in API_QUERIES.items() if template.endswith(suffix)), "")
    return client.generic(method, fill(template, world) + query, data, content_type="application/json")


# Routes with a required query parameter get a well-formed one, so that only the caller can be why
# they are refused.
API_QUERIES = {"/local/files/{sha256}": "?path=outputs/stolen.txt"}


def test_readers_cannot_write_through_the_api(world, workspace, reader):
    client = api_client(issue_token(workspace, reader))
    before = snapshot_of_world()
    for method, template in api_routes():
        if method in WRITE_METHODS:
            response = call(client, method, template, world)
            assert response.status_code == 403, (method, template, response.content[:300])
    assert snapshot_of_world() == before


PAGE_WRITES = {
    "/members/": {"username": "oscar", "role": "owner"},
    "/role/": {"role": "owner"},
    "/remove/": {},
    "/clone/": {"new_name": "stolen"},
    "/cancel/": {},
    "/edit/": {"display_name": "stolen", "tags": "stolen=yes"},
    "/export-onnx/": {"sample_input_shape": "1,8"},
    "/delete/": {},
    "/keys/": {"key_type": "Primary"},
    "/compute/": {
        "name": "stolen",
        "vm_size": "LOCAL_CPU",
        "min_nodes": 0,
        "max_nodes": 1,
        "idle_seconds_before_scaledown": 60,
        "provisioner": "manual",
    },
}


def test_readers_cannot_write_through_pages(world, client_for, reader):
    client = client_for(reader)
    before = snapshot_of_world()
    members = list(Membership.objects.values_list("user__username", "role").order_by("pk"))
    writes = [t for t in page_routes() if any(t.endswith(s) for s in PAGE_WRITES)]
    assert {s for s in PAGE_WRITES if not any(t.endswith(s) for t in writes)} == set()
    for template in writes:
        data = next(body for suffix, body in PAGE_WRITES.items() if template.endswith(suffix))
        assert client.post(fill(template, world), data).status_code == 403, template
    assert snapshot_of_world() == before
    assert list(Membership.objects.values_list("user__username", "role").order_by("pk")) == members


def test_a_cross_site_form_post_is_refused(world, owner):
    """A form on another site posting with the victim's session cookie but without the CSRF token."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    run = world["_run"]
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    response = client.post(f"/w/birds/runs/{run.run_id}/cancel/", HTTP_ORIGIN="http://evil.example")
    assert response.status_code == 403
    api = client.post(f"/api/v1/workspaces/birds/runs/{run.run_id}/cancel", HTTP_ORIGIN="http://evil.example")
    assert api.status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING


SOCKETS = ["/ws/runs/{run_id}/logs/", "/ws/runs/{run_id}/metrics/"]


def socket_answer(path: str, user, origin: bytes = b"http://localhost") -> tuple[bool, int | None]:
    """(connected, close code) of a socket opened with `user`'s session from `origin`."""

    async def scenario():
        communicator = WebsocketCommunicator(application, path, headers=headers(user, origin=origin))
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    # In a thread of its own: a module's Playwright may leave an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, scenario()).result()


@pytest.mark.parametrize("template", SOCKETS)
def test_sockets_refuse_strangers_and_other_origins(world, reader, outsider, template):
    path = fill(template, world)
    assert socket_answer(path, reader) == (True, None)
    assert socket_answer(path, None) == (False, 4401)
    assert socket_answer(path, outsider) == (False, 4404)
    assert socket_answer(path, reader, origin=b"http://evil.example")[0] is False


@pytest.mark.parametrize("template", SOCKETS)
def test_a_removed_member_loses_the_socket(world, workspace, reader, template):
    Membership.objects.filter(workspace=workspace, user=reader).delete()
    assert socket_answer(fill(template, world), reader) == (False, 4404)


def provoke(template: str, world: dict) -> str:
    """Store something the socket of `template` streams live; a text it then carries."""
    run = world["_run"]
    if "metrics" in template:
        batch = {"rank": 0, "metrics": [{"name": "after_removal", "values": [2.0]}]}
        metrics_ingest(access=access_of(run.workspace, run.created_by), run=run, batch=parse_batch(batch))
        return "after_removal"
    log_append(run.pk, "std_log_process_0", ["a line after the removal"])
    return "a line after the removal"


def remove_member(how: str, workspace, user, owner) -> int:
    """Take `user` out of the workspace as an owner does on the members page, or as a superuser
    does in the admin (the membership, or the whole user), or deactivate the user; the close code
    the user's open sockets should then get."""
    membership = Membership.objects.get(workspace=workspace, user=user)
    client = Client()
    if how == "members page":
        client.force_login(owner)
        answer = client.post(f"/w/{workspace.name}/members/{membership.pk}/remove/")
    elif how == "user deactivated":  # a save of the user, whichever page or code does it
        user.is_active = False
        user.save()
        return SIGNED_OUT_CLOSE_CODE
    else:
        client.force_login(get_user_model().objects.create_superuser("root", password="root-password-1"))
        if how == "admin, user deleted":
            answer = client.post(f"/admin/auth/user/{user.pk}/delete/", {"post": "yes"})
            assert answer.status_code == 302
            assert not get_user_model().objects.filter(pk=user.pk).exists()
            return SIGNED_OUT_CLOSE_CODE
        answer = client.post(f"/admin/workspaces/membership/{membership.pk}/delete/", {"post": "yes"})
    assert answer.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    return REMOVED_CLOSE_CODE


@pytest.mark.parametrize("how", ["members page", "admin", "admin, user deleted", "user deactivated"])
@pytest.mark.parametrize("template", SOCKETS)
def test_a_member_removed_while_watching_is_cut_off(world, workspace, owner, reader, contributor, template, how):
    """The attack: keep a socket open on a run, get removed from the workspace, keep reading."""

    async def received_text(communicator) -> str:
        texts = []
        while not await communicator.receive_nothing(timeout=2, interval=0.05):
            texts.append(json.dumps(await communicator.receive_json_from()))
        return "".join(texts)

    async def scenario():
        watching = {
            who: WebsocketCommunicator(application, fill(template, world), headers=headers(who))
            for who in (reader, contributor)
        }
        for communicator in watching.values():
            assert (await communicator.connect())[0]
            await received_text(communicator)  # the replay
        expected = await asyncio.to_thread(remove_member, how, workspace, reader, owner)
        closed = await watching[reader].receive_output(timeout=10)
        assert (closed["type"], closed.get("code")) == ("websocket.close", expected)
        # The other member's socket stays open and still gets what the run does.
        said = await asyncio.to_thread(provoke, template, world)
        assert said in await received_text(watching[contributor])
        await watching[contributor].disconnect()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result()
