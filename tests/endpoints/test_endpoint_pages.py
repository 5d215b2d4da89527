"""The portal's Endpoints section: the list, an endpoint's page (state, versions, URL, replicas,
requests, a key shown once), and the model version page linking the endpoints that serve it."""

from __future__ import annotations

import pytest

from endpoints.models import Endpoint, Replica
from endpoints.services import endpoint_record_request
from runs.services import log_append
from tests.registry.builders import register, run_with_outputs
from trainhub.workspaces.selectors import hash_token


@pytest.fixture
def endpoint(workspace, owner):
    run = run_with_outputs(workspace, {"outputs/model.pt": b"weights"}, created_by=owner)
    version = register(workspace, owner, run)
    endpoint = Endpoint.objects.create(
        workspace=workspace,
        name="aci-birds",
        state="Healthy",
        cluster=run.cluster,
        snapshot=run.snapshot,
        entry_script="score.py",
        environment_name="TrainHub-PyTorch-2.13-CPU",
        environment_spec={"python": "3.11"},
        primary_key_hash="p" * 64,
        secondary_key_hash="s" * 64,
        created_by=owner,
    )
    endpoint.model_versions.set([version])
    Replica.objects.create(endpoint=endpoint, run=run, generation=1, state="ready", address="127.0.0.1", port=9)
    return endpoint


def test_the_list_shows_state_versions_and_url(endpoint, client_for, reader):
    endpoint_record_request(endpoint.pk, 0.004, True)
    page = client_for(reader).get("/w/birds/endpoints/").content.decode()
    assert "aci-birds" in page and "Healthy" in page
    assert "/endpoints/birds/aci-birds/score" in page
    version = endpoint.model_versions.get()
    assert f"{version.model.name}:{version.version}" in page


def test_an_endpoints_page_shows_its_replicas_and_a_new_key_once(endpoint, client_for, owner):
    client = client_for(owner)
    run = endpoint.replicas.get().run
    log_append(run.pk, "std_log_process_0", ["init: loaded the model"])
    page = client.get("/w/birds/endpoints/aci-birds/").content.decode()
    assert "http://testserver/endpoints/birds/aci-birds/score" in page
    assert run.run_id in page
    # The serving replica's log, followed live through its run's log socket.
    assert "init: loaded the model" in page and f'data-ws="/ws/runs/{run.run_id}/logs/"' in page
    assert "trainhub/runlog" in page
    assert "Keys are shown once" in page

    answer = client.post("/w/birds/endpoints/aci-birds/keys/", {"key_type": "Secondary"}).content.decode()
    key = answer.split("shown this once: <code>")[1].split("</code>")[0]
    endpoint.refresh_from_db()
    assert endpoint.secondary_key_hash == hash_token(key) and endpoint.primary_key_hash == "p" * 64
    assert key not in client.get("/w/birds/endpoints/aci-birds/").content.decode()


def test_the_model_version_page_links_its_endpoints(endpoint, client_for, reader):
    version = endpoint.model_versions.select_related("model").get()
    page = client_for(reader).get(f"/w/birds/models/{version.model.name}/{version.version}/").content.decode()
    assert 'href="/w/birds/endpoints/aci-birds/"' in page


def test_a_try_without_an_answering_replica_says_why(endpoint, client_for, reader):
    Replica.objects.update(state="stopped")
    page = client_for(reader).post("/w/birds/endpoints/aci-birds/try/", {"body": "{}"}).content.decode()
    assert "No replica answers yet (the endpoint is Healthy)." in page
