"""The workspace endpoints of /api/v1/ and bearer-token authentication."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.conftest import api_client, issue_token
from trainhub.compute.models import ComputeCluster
from trainhub.workspaces import services
from trainhub.workspaces.models import ApiToken, Membership, Role
from trainhub.workspaces.selectors import hash_token

pytestmark = pytest.mark.django_db


def test_it_returns_the_workspace_for_a_token(workspace, owner_token):
    body = api_client(owner_token).get("/api/v1/workspaces/birds").json()
    assert body["name"] == "birds"
    assert body["role"] == "owner"
    assert body["member_count"] == 3


def test_it_keeps_the_last_used_time(workspace, owner_token):
    api_client(owner_token).get("/api/v1/workspaces/birds")
    assert ApiToken.objects.get(token_hash=hash_token(owner_token)).last_used_at is not None


def test_it_refuses_anonymous_callers(workspace):
    response = Client().get("/api/v1/workspaces/birds")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_it_refuses_an_unknown_token(workspace):
    response = api_client("th_not-a-token").get("/api/v1/workspaces/birds")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


def test_it_refuses_a_revoked_token(workspace, owner_token):
    services.token_revoke(token=ApiToken.objects.get(token_hash=hash_token(owner_token)))
    assert api_client(owner_token).get("/api/v1/workspaces/birds").status_code == 401


def test_a_token_of_another_workspace_gets_404(workspace, other_workspace, outsider, owner):
    from trainhub.workspaces.models import Membership, Role

    # The owner is a member of both, but a token only reaches its own workspace.
    Membership.objects.create(workspace=other_workspace, user=owner, role=Role.READER)
    token = issue_token(other_workspace, owner)
    assert api_client(token).get("/api/v1/workspaces/birds").status_code == 404
    listed = api_client(token).get("/api/v1/workspaces/").json()
    assert [w["name"] for w in listed] == ["elsewhere"]


def test_outsiders_get_404(workspace, other_workspace, outsider):
    token = issue_token(other_workspace, outsider)
    response = api_client(token).get("/api/v1/workspaces/birds")
    assert response.status_code == 404
    assert "birds" in response.json()["detail"]


def test_a_session_works_for_the_browser(client_for, reader, workspace):
    assert client_for(reader).get("/api/v1/workspaces/birds").json()["role"] == "reader"


def test_the_openapi_schema_and_docs_are_served(workspace):
    paths = Client().get("/api/v1/openapi.json").json()["paths"]
    assert "/api/v1/workspaces/{workspace_name}" in paths
    assert Client().get("/api/v1/docs").status_code == 200


def test_a_tokens_call_learns_its_access_with_the_token(workspace, owner_token):
    client = api_client(owner_token)
    client.get("/api/v1/workspaces/birds/experiments")  # the token's last use is recorded once
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/workspaces/birds/experiments")
    assert response.status_code == 200
    reading_members = [q["sql"] for q in queries.captured_queries if "workspaces_membership" in q["sql"]]
    assert len(reading_members) == 1 and "workspaces_apitoken" in reading_members[0]


def test_a_token_of_someone_no_longer_a_member_gets_404(workspace, contributor):
    token = issue_token(workspace, contributor)
    Membership.objects.filter(workspace=workspace, user=contributor).delete()  # the token not revoked
    response = api_client(token).get("/api/v1/workspaces/birds/experiments")
    assert response.status_code == 404
    assert "birds" in response.json()["detail"]


def test_a_tokens_role_is_its_users_role_now(workspace, contributor):
    token = issue_token(workspace, contributor)
    assert api_client(token).get("/api/v1/workspaces/birds").json()["role"] == "contributor"
    Membership.objects.filter(workspace=workspace, user=contributor).update(role=Role.READER)
    assert api_client(token).get("/api/v1/workspaces/birds").json()["role"] == "reader"
    cluster = {"name": "x", "vm_size": "STANDARD_D2_V2", "min_nodes": 0, "max_nodes": 1, "provisioner": "manual"}
    refused = api_client(token).post("/api/v1/workspaces/birds/computes", cluster, content_type="application/json")
    assert refused.status_code == 403
    assert not ComputeCluster.objects.exists()
