"""Attacks on the scoring URL (/endpoints/<workspace>/<name>/score, answered before Django by
endpoints/proxy.py), against a real daphne whose replicas are real scoring servers
(trainhub/sdk/_scoring_server.py) listening in this process: a malformed Content-Length, a Host
the site does not serve, one workspace's key or token on another workspace's endpoint, a stale key
or replica after a change, and a replica that stops answering. Each answers what Django would (400,
401, 404) or keeps serving, and never reaches a replica it should not."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from endpoints import services
from endpoints.keys import seal
from endpoints.models import Endpoint, Replica
from endpoints.proxy import BAD_HOST, BAD_LENGTH, NOT_AUTHENTICATED, NOT_FOUND, REPLICA_ANSWERED
from tests.conftest import issue_token
from tests.helpers.processes import wait_until
from tests.registry.builders import access_of, run_with_outputs
from trainhub.sdk._scoring_server import InFlight, ScoringHTTPServer, ScriptScorer, handler_for
from trainhub.workspaces.selectors import hash_token

pytestmark = pytest.mark.django_db(transaction=True)

ECHO = "def run(raw_data):\n    return {'echo': raw_data}\n"
KEY = "the_birds-primary-key"


class TrackedScoringServer(ScoringHTTPServer):
    """The replica's server, which can also drop its open connections, as its process's end would."""

    def get_request(self):
        connection, address = super().get_request()
        self.connections = [*getattr(self, "connections", []), connection]
        return connection, address


class LiveReplica:
    """A scoring server answering `ECHO` on a free port of this machine."""

    def __init__(self, folder: Path, secret: str):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "score.py").write_text(ECHO)
        self.secret = secret
        self.server = TrackedScoringServer(
            ("127.0.0.1", 0), handler_for(ScriptScorer(str(folder / "score.py")), secret, InFlight())
        )
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for connection in getattr(self.server, "connections", []):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serving(workspace, owner, name: str, replicas: list[LiveReplica], **fields) -> Endpoint:
    run = run_with_outputs(workspace, {"outputs/model.pt": b"weights"}, created_by=owner)
    endpoint = Endpoint.objects.create(
        workspace=workspace,
        name=name,
        state="Healthy",
        cluster=run.cluster,
        snapshot=run.snapshot,
        entry_script="score.py",
        environment_name="e",
        environment_spec={},
        primary_key_hash=hash_token(KEY),
        primary_key_sealed=seal(KEY),
        secondary_key_hash="s" * 64,
        created_by=owner,
        **fields,
    )
    for number, live in enumerate(replicas):
        replica_run = run if number == 0 else run_with_outputs(workspace, {}, created_by=owner)
        Replica.objects.create(
            endpoint=endpoint,
            run=replica_run,
            generation=1,
            state="ready",
            address="127.0.0.1",
            port=live.port,
            secret=live.secret,
        )
    return endpoint


@pytest.fixture
def replicas(tmp_path):
    made = [LiveReplica(tmp_path / f"r{n}", f"replica-secret-{n}-" + "x" * 32) for n in range(2)]
    yield made
    for live in made:
        live.stop()


def raw(url: str, request: bytes) -> tuple[int, bytes]:
    host, port = url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def post(url: str, path: str, body: bytes, *, key: str | None = KEY, host: str | None = None, extra: bytes = b""):
    import requests

    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if host is not None:
        headers["Host"] = host
    return requests.post(url + path, data=body, headers=headers, timeout=30)


@pytest.mark.parametrize("length", [b"1_0", b"+5", b"0x10", b"\xd9\xa1", b"1 2"])
def test_a_malformed_content_length_is_a_400_not_a_server_error(live_url, workspace, owner, replicas, length):
    serving(workspace, owner, "echo", replicas[:1])
    request = (
        b"POST /endpoints/birds/echo/score HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: " + length + b"\r\n\r\n{}"
    )
    status, body = raw(live_url, request)
    assert status == 400, body  # daphne's Twisted refuses these itself, before TrainHub sees them


@pytest.mark.parametrize("length", [b"1_0", b"+5", b"\xd9\xa1", b"-1"])
def test_the_proxy_itself_refuses_a_malformed_content_length(workspace, owner, replicas, length):
    """Under an ASGI server that passes the header on as it came (Twisted refuses these first)."""
    import asyncio

    from endpoints.proxy import ScoringProxy

    serving(workspace, owner, "echo", replicas[:1])
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/endpoints/birds/echo/score",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {KEY}".encode()), (b"content-length", length)],
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    async def score():
        proxy = ScoringProxy(app=None)
        await proxy(scope, receive, send)
        for task in proxy.tasks:
            task.cancel()

    asyncio.run(score())
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["detail"] == BAD_LENGTH.format(value=length.decode("latin-1"))


def test_a_host_the_site_does_not_serve_is_refused_as_django_would(live_url, workspace, owner, replicas):
    serving(workspace, owner, "echo", replicas[:1])
    answer = post(live_url, "/endpoints/birds/echo/score", b"{}", host="evil.example")
    assert answer.status_code == 400
    assert answer.json()["detail"] == BAD_HOST.format(host="evil.example", domain="evil.example")
    assert post(live_url, "/endpoints/birds/echo/score", b'"hi"').json() == {"echo": '"hi"'}


def test_one_workspaces_key_and_token_do_not_reach_another_workspaces_endpoint(
    live_url, workspace, owner, other_workspace, outsider, replicas
):
    serving(workspace, owner, "echo", replicas[:1])
    # `elsewhere` has an endpoint of the same name with its own key.
    theirs = serving(other_workspace, outsider, "echo", replicas[1:])
    Endpoint.objects.filter(pk=theirs.pk).update(primary_key_hash=hash_token("the_elsewhere-key"))
    mine = "/endpoints/birds/echo/score"
    assert post(live_url, mine, b"{}", key="the_elsewhere-key").json()["detail"] == NOT_AUTHENTICATED
    outsider_token = issue_token(other_workspace, outsider)
    refused = post(live_url, mine, b"{}", key=outsider_token)
    assert refused.status_code == 404
    assert refused.json()["detail"] == NOT_FOUND.format(name="echo", workspace="birds")
    # A token of birds' owner names birds only: not elsewhere's endpoint, even for a member of both.
    assert post(live_url, "/endpoints/elsewhere/echo/score", b"{}", key=KEY).status_code == 401
    theirs_path = "/endpoints/elsewhere/echo/score"
    assert post(live_url, theirs_path, b"{}", key=issue_token(workspace, owner)).status_code == 404


def test_an_endpoint_without_auth_answers_anyone_and_opens_no_other(live_url, workspace, owner, replicas):
    serving(workspace, owner, "open", replicas[:1], auth_enabled=False)
    serving(workspace, owner, "closed", replicas[1:])
    answer = post(live_url, "/endpoints/birds/open/score", b'"x"', key=None)
    assert answer.status_code == 200 and answer.json() == {"echo": '"x"'}
    assert post(live_url, "/endpoints/birds/closed/score", b'"x"', key=None).status_code == 401


def test_a_new_key_and_a_stopped_replica_take_effect_at_once(live_url, workspace, owner, replicas):
    endpoint = serving(workspace, owner, "changes", replicas[:1])
    path = "/endpoints/birds/changes/score"
    assert post(live_url, path, b"{}").status_code == 200  # the route is now kept by the server
    # Published: the old key is refused well before the route would be read again anyway.
    new_key = services.endpoint_regenerate_key(
        access=access_of(workspace, owner), endpoint=endpoint, key_type="Primary"
    )
    wait_until(lambda: post(live_url, path, b"{}").status_code == 401, 2, message="the old key refused")
    assert post(live_url, path, b"{}", key=new_key).status_code == 200
    replica = endpoint.replicas.get()
    Replica.objects.filter(pk=replica.pk).update(state="stopped")
    services._publish_route(endpoint.pk)
    wait_until(lambda: post(live_url, path, b"{}", key=new_key).status_code == 503, 2, message="no replica left")


def test_requests_spread_over_replicas_and_skip_one_that_stopped_answering(live_url, workspace, owner, replicas):
    endpoint = serving(workspace, owner, "spread", replicas)
    path = "/endpoints/birds/spread/score"
    answered = [post(live_url, path, b"{}").headers[REPLICA_ANSWERED] for _ in range(6)]
    ids = {str(r.pk) for r in endpoint.replicas.all()}
    assert set(answered) == ids
    replicas[0].stop()
    answers = [post(live_url, path, b"{}") for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    stopped = str(endpoint.replicas.get(port=replicas[0].port).pk)
    assert stopped not in {a.headers[REPLICA_ANSWERED] for a in answers}


def test_a_replica_cannot_claim_another_replicas_port(workspace, owner, replicas):
    """The attack: replica B's scoring script, with its run's token, reports the port of replica A (a
    real scoring server on the same node) as its own, with a secret it made up or B's own, so that
    requests meant for B reach A (or A's are counted as B's). A proves only A's own secret: refused.
    Its run token reads no key of the endpoint either."""
    from django.test import Client

    from runs.models import RunNode
    from tests.metrics.builders import running_run
    from trainhub.compute.models import Node

    endpoint = serving(workspace, owner, "pair", replicas[:1])
    run, token = running_run(workspace, experiment="endpoint-pair")
    node = Node.objects.create(cluster=run.cluster, name="n-pair", hostname="h", address="127.0.0.1", pid=1, cpus=1)
    RunNode.objects.create(run=run, node=node, node_rank=0, state="running")
    claimant = Replica.objects.create(endpoint=endpoint, run=run, generation=1)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    for secret in ("made-up-secret-" + "y" * 30, replicas[1].secret):
        answer = client.post(
            f"/api/v1/workspaces/birds/endpoints/pair/replicas/{claimant.pk}/ready",
            {"port": replicas[0].port, "secret": secret},
            content_type="application/json",
        )
        assert answer.status_code == 400
        assert answer.json()["detail"] == services.NOT_A_REPLICA.format(port=replicas[0].port)
    claimant.refresh_from_db()
    assert (claimant.state, claimant.port, claimant.secret) == ("starting", None, "")
    assert client.get("/api/v1/workspaces/birds/endpoints/pair/keys").status_code == 403
