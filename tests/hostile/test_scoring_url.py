"""Attacks on the scoring URL (/endpoints/<workspace>/<name>/score, answered before Django by
endpoints/proxy.py), against a real daphne whose replicas are real scoring servers
(trainhub/sdk/_scoring_server.py) listening in this process: a malformed Content-Length, a Host
the site does not serve, a wrong key, one workspace's key or token on another workspace's endpoint,
a path that tries to step out of the route, a body past the limit, a Content-Type that smuggles a
header to the replica's kept connection, a stale key or replica after a change, and a replica that
stops answering. Each answers what Django would (400, 401, 404, 413) or keeps serving, and never
reaches a replica it should not."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
import requests

from endpoints import services
from endpoints.keys import seal
from endpoints.models import Endpoint, Replica
from endpoints.proxy import (
    BAD_CONTENT_TYPE,
    BAD_HOST,
    BAD_LENGTH,
    NOT_AUTHENTICATED,
    NOT_FOUND,
    REPLICA_ANSWERED,
    TOO_LARGE,
)
from tests.conftest import issue_token
from tests.helpers.chunked import send_chunks
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

    def reached(self) -> bool:
        """Whether any connection ever reached this replica."""
        return bool(getattr(self.server, "connections", []))

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


def _asgi_score(headers: list[tuple[bytes, bytes]], body: bytes = b"{}") -> list[dict]:
    """The messages ScoringProxy sends for one request to birds' `echo`, run in this process."""
    import asyncio

    from endpoints.proxy import ScoringProxy

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/endpoints/birds/echo/score",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {KEY}".encode()), *headers],
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    async def score():
        proxy = ScoringProxy(app=None)
        # Its background tasks (following route changes, writing counts) are not started: redis-py's
        # pubsub listener can swallow a cancellation, and asyncio.run() would wait for it forever.
        # Without them every request reads its route from the database.
        proxy.loop = asyncio.get_running_loop()
        await proxy(scope, receive, send)

    asyncio.run(score())
    return sent


@pytest.mark.parametrize("length", [b"1_0", b"+5", b"\xd9\xa1", b"-1"])
def test_the_proxy_itself_refuses_a_malformed_content_length(workspace, owner, replicas, length):
    """Under an ASGI server that passes the header on as it came (Twisted refuses these first)."""
    serving(workspace, owner, "echo", replicas[:1])
    sent = _asgi_score([(b"content-length", length)])
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
    # The server keeps keys it checked; regenerating returns once it dropped them: the very next
    # request with the old key is refused, each time.
    old_key = KEY
    for _ in range(3):
        new_key = services.endpoint_regenerate_key(
            access=access_of(workspace, owner), endpoint=endpoint, key_type="Primary"
        )
        refused = post(live_url, path, b"{}", key=old_key)
        assert refused.status_code == 401 and refused.json()["detail"] == NOT_AUTHENTICATED
        assert post(live_url, path, b"{}", key=new_key).status_code == 200
        old_key = new_key
    replica = endpoint.replicas.get()
    Replica.objects.filter(pk=replica.pk).update(state="stopped")
    services._publish_route(endpoint.pk)
    wait_until(lambda: post(live_url, path, b"{}", key=new_key).status_code == 503, 2, message="no replica left")


def test_a_deleted_endpoint_refuses_its_key_at_once(live_url, workspace, owner, replicas):
    endpoint = serving(workspace, owner, "gone", replicas[:1])
    path = "/endpoints/birds/gone/score"
    assert post(live_url, path, b"{}").status_code == 200
    services.endpoint_delete(access=access_of(workspace, owner), endpoint=endpoint)
    assert post(live_url, path, b"{}").status_code == 401


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {KEY[:-1]}",  # one character short
        f"Bearer {KEY}x",
        f"Bearer {KEY.upper()}",
        "Bearer ",
        f"Basic {KEY}",
        f"Bearer {'the_' + 'a' * 300}",
    ],
)
def test_a_wrong_key_is_refused_and_reaches_no_replica(live_url, workspace, owner, replicas, authorization):
    serving(workspace, owner, "echo", replicas[:1])
    answer = requests.post(
        live_url + "/endpoints/birds/echo/score", data=b"{}", headers={"Authorization": authorization}, timeout=30
    )
    assert answer.status_code == 401 and answer.json()["detail"] == NOT_AUTHENTICATED
    assert not replicas[0].reached()


@pytest.mark.parametrize(
    "path",
    [
        "/endpoints/birds/../elsewhere/echo/score",
        "/endpoints/birds/echo/score/../../../elsewhere/echo/score",
        "/endpoints/birds/echo/../../elsewhere/echo/score",
        "/endpoints/birds%2F..%2Felsewhere/echo/score",
        "/endpoints/birds/echo%2F..%2F..%2Felsewhere%2Fecho/score",
        "/endpoints/./elsewhere/echo/score",
        "/endpoints/elsewhere/echo/score",
    ],
)
def test_a_path_cannot_step_from_ones_own_endpoint_to_anothers(
    live_url, workspace, owner, other_workspace, outsider, replicas, path
):
    """birds' key, on a path that names birds' endpoint and then steps to elsewhere's: answered as a
    page that does not exist or as elsewhere's endpoint without its key, never by elsewhere's replica."""
    serving(workspace, owner, "echo", replicas[:1])
    theirs = serving(other_workspace, outsider, "echo", replicas[1:])
    Endpoint.objects.filter(pk=theirs.pk).update(primary_key_hash=hash_token("the_elsewhere-key"))
    status, _ = raw(
        live_url,
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".encode(),
    )
    assert status in (401, 404)
    assert not replicas[1].reached()


def test_the_replica_is_asked_for_its_scoring_path_only(live_url, workspace, owner, replicas):
    """What follows the route in the URL (a query, a step back) is not passed on: the replica sees
    POST /score, never its proof path or any other."""
    serving(workspace, owner, "echo", replicas[:1])
    answer = post(live_url, "/endpoints/birds/echo/score?../../trainhub-replica", b'"q"')
    assert answer.status_code == 200 and answer.json() == {"echo": '"q"'}
    status, _ = raw(
        live_url,
        f"GET /endpoints/birds/echo/score HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {KEY}\r\n\r\n".encode(),
    )
    assert status == 405


def test_a_body_past_the_limit_is_refused_before_any_replica_sees_it(live_url, workspace, owner, replicas, settings):
    serving(workspace, owner, "echo", replicas[:1])
    limit = settings.TRAINHUB_ENDPOINT_MAX_REQUEST_BYTES  # the live server's, from the same settings
    path = "/endpoints/birds/echo/score"
    declared = post(live_url, path, b"x" * (limit + 1))
    assert declared.status_code == 413
    assert declared.json()["detail"] == TOO_LARGE.format(size=limit + 1, limit=limit)
    # Without a Content-Length (chunked), counted as it arrives.
    chunked = requests.post(
        live_url + path,
        data=iter([b"x" * (1024 * 1024)] * (limit // (1024 * 1024) + 2)),
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert chunked.status_code == 413 and chunked.json()["code"] == "too_large"
    assert not replicas[0].reached()
    assert post(live_url, path, b'"small"').json() == {"echo": '"small"'}


def test_a_body_past_the_endpoints_limit_is_cut_off_as_it_arrives_not_read_up_to_the_servers_limit(
    live_url, workspace, owner, replicas, settings
):
    serving(workspace, owner, "echo", replicas[:1])
    limit = settings.TRAINHUB_ENDPOINT_MAX_REQUEST_BYTES
    attempted = 4 * limit
    assert attempted < settings.TRAINHUB_REQUEST_MAX_BYTES  # what the server would read of any other body
    host, port = live_url.split("//", 1)[1].split(":")
    head = f"POST /endpoints/birds/echo/score HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(f"{head}Content-Length: {attempted}\r\nExpect: 100-continue\r\n\r\n".encode())
        said = b""
        while b"\r\n\r\n" not in said:
            said += connection.recv(65536)
        assert said.startswith(b"HTTP/1.1 413 "), said  # not "100 Continue": the body is never asked for
        while piece := connection.recv(65536):  # to its end: the server closes the connection
            said += piece
        answer = json.loads(said.partition(b"\r\n\r\n")[2])
        assert answer == {"detail": TOO_LARGE.format(size=attempted, limit=limit), "code": "too_large"}
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        sent = send_chunks(connection, attempted)
    assert sent < attempted, f"the server read {attempted} bytes of a scoring body past the endpoint's {limit}"
    assert not replicas[0].reached()
    assert post(live_url, "/endpoints/birds/echo/score", b'"small"').json() == {"echo": '"small"'}


@pytest.mark.parametrize("separator", [b"\n", b"\r"])
def test_a_content_type_cannot_smuggle_a_request_onto_the_replicas_kept_connection(
    live_url, workspace, owner, replicas, separator
):
    """A Content-Type holding a bare LF (or CR) and `Content-Length: 0`, passed on as it is, would
    end the request to the replica before its body, and the body would be read as a second request
    on the kept connection, whose answer the next caller of the endpoint would get. (daphne's Twisted
    turns both into spaces; the proxy refuses them itself under a server that does not: below.)"""
    serving(workspace, owner, "echo", replicas[:1])
    path = "/endpoints/birds/echo/score"
    assert post(live_url, path, b'"warm"').status_code == 200  # a connection to the replica is kept
    smuggled = b"GET /trainhub-replica HTTP/1.1\r\nHost: replica\r\n\r\n"
    status, _ = raw(
        live_url,
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Type: application/json"
        + separator
        + b"Content-Length: 0\r\nContent-Length: "
        + str(len(smuggled)).encode()
        + b"\r\n\r\n"
        + smuggled,
    )
    assert status in (200, 400)
    for n in range(3):
        assert post(live_url, path, f'"next {n}"'.encode()).json() == {"echo": f'"next {n}"'}


@pytest.mark.parametrize("content_type", [b"application/json\nContent-Length: 0", b"text/plain\rX: y", b"a\x00b", b""])
def test_the_proxy_itself_refuses_a_content_type_it_would_not_pass_on_as_it_is(
    workspace, owner, replicas, content_type
):
    """Under an ASGI server that passes header values on as they came."""
    serving(workspace, owner, "echo", replicas[:1])
    sent = _asgi_score([(b"content-type", content_type), (b"content-length", b"2")])
    assert sent[0]["status"] == 400
    expected = BAD_CONTENT_TYPE.format(value=content_type.decode("latin-1"))
    assert json.loads(sent[1]["body"])["detail"] == expected
    assert not replicas[0].reached()


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
