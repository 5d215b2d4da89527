"""The portal's Endpoints section: the list, an endpoint's page (state, versions, URL, replicas,
requests, a key shown once), and the model version page linking the endpoints that serve it."""

from __future__ import annotations

import pytest

from endpoints.keys import seal, unseal
from endpoints.models import Endpoint, Replica
from endpoints.services import endpoint_record_request
from runs.services import log_append
from tests.conftest import api_client, issue_token
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
    assert "Keys are shown here once" in page

    answer = client.post("/w/birds/endpoints/aci-birds/keys/", {"key_type": "Secondary"}).content.decode()
    key = answer.split("shown this once: <code>")[1].split("</code>")[0]
    endpoint.refresh_from_db()
    assert endpoint.secondary_key_hash == hash_token(key) and endpoint.primary_key_hash == "p" * 64
    assert unseal(endpoint.secondary_key_sealed) == key and key not in endpoint.secondary_key_sealed
    assert key not in client.get("/w/birds/endpoints/aci-birds/").content.decode()


def test_the_model_version_page_links_its_endpoints(endpoint, client_for, reader):
    version = endpoint.model_versions.select_related("model").get()
    page = client_for(reader).get(f"/w/birds/models/{version.model.name}/{version.version}/").content.decode()
    assert 'href="/w/birds/endpoints/aci-birds/"' in page


def test_a_try_without_an_answering_replica_says_why(endpoint, client_for, reader):
    Replica.objects.update(state="stopped")
    page = client_for(reader).post("/w/birds/endpoints/aci-birds/try/", {"body": "{}"}).content.decode()
    assert "No replica answers yet (the endpoint is Healthy)." in page


def test_an_endpoint_without_auth_says_so_on_its_page(endpoint, client_for, reader):
    Endpoint.objects.filter(pk=endpoint.pk).update(auth_enabled=False, replica_count=2)
    page = client_for(reader).get("/w/birds/endpoints/aci-birds/").content.decode()
    assert "POST, with no key: deployed with <code>auth_enabled=False</code>" in page
    assert "2 wanted, 1 answering" in page


def test_contributors_read_the_keys_and_readers_and_outsiders_do_not(
    endpoint, workspace, contributor, reader, other_workspace, outsider
):
    Endpoint.objects.filter(pk=endpoint.pk).update(
        primary_key_hash=hash_token("the_one"),
        primary_key_sealed=seal("the_one"),
        secondary_key_hash=hash_token("the_two"),
        secondary_key_sealed=seal("the_two"),
    )
    url = "/api/v1/workspaces/birds/endpoints/aci-birds/keys"
    answer = api_client(issue_token(workspace, contributor)).get(url)
    assert answer.status_code == 200 and answer.json() == {"primary": "the_one", "secondary": "the_two"}
    refused = api_client(issue_token(workspace, reader)).get(url)
    assert refused.status_code == 403 and "reader" in refused.json()["detail"]
    assert api_client(issue_token(other_workspace, outsider)).get(url).status_code == 404


def test_keys_sealed_under_another_secret_say_to_make_new_ones(endpoint, workspace, contributor, settings):
    settings.SECRET_KEY = "another secret key of the server"
    Endpoint.objects.filter(pk=endpoint.pk).update(primary_key_sealed=seal("the_one"))
    settings.SECRET_KEY = "yet another secret key of the server"
    answer = api_client(issue_token(workspace, contributor)).get("/api/v1/workspaces/birds/endpoints/aci-birds/keys")
    assert answer.status_code == 400 and "regen_key('Primary')" in answer.json()["detail"]
