"""The environment endpoints of /api/v1/ (list, get, register, clone) and who may call them."""

from __future__ import annotations

import pytest

from tests.conftest import api_client, issue_token
from tests.environments.conftest import SIX_SPEC
from trainhub.environments import services
from trainhub.environments.curated import PYTORCH_CPU_NAME
from trainhub.environments.models import Environment
from trainhub.workspaces.permissions import READ_ONLY_MESSAGE

pytestmark = pytest.mark.django_db

BASE = "/api/v1/workspaces/birds/environments"


def post(client, path, body):
    return client.post(path, body, content_type="application/json")


@pytest.fixture
def api(workspace, contributor):
    return api_client(issue_token(workspace, contributor))


def test_it_lists_the_curated_and_the_workspaces_environments(api, curated, other_workspace, outsider):
    post(api, BASE, {"name": "birds-env", "spec": SIX_SPEC})
    theirs = api_client(issue_token(other_workspace, outsider))
    post(
        theirs,
        "/api/v1/workspaces/elsewhere/environments",
        {"name": "secret-env", "spec": SIX_SPEC},
    )
    listed = {e["name"]: e for e in api.get(BASE).json()}
    assert set(listed) == {PYTORCH_CPU_NAME, "TrainHub-PyTorch-2.13", "birds-env"}
    assert listed[PYTORCH_CPU_NAME]["curated"] and not listed["birds-env"]["curated"]
    assert listed[PYTORCH_CPU_NAME]["spec"]["pip"] == ["torch==2.13.0", "numpy"]


def test_register_makes_version_one_then_returns_it_for_the_same_spec(api, contributor):
    first = post(api, BASE, {"name": "birds-env", "spec": SIX_SPEC})
    assert first.status_code == 201
    body = first.json()
    assert (body["name"], body["version"], body["created_by"]) == (
        "birds-env",
        1,
        contributor.username,
    )
    assert body["spec"]["python"] == "3.11" and body["portal_url"].endswith("/environments/birds-env/versions/1/")
    again = post(api, BASE, {"name": "birds-env", "spec": SIX_SPEC})
    assert again.status_code == 200 and again.json()["version"] == 1


def test_a_changed_spec_is_version_two_and_both_stay_readable(api):
    post(api, BASE, {"name": "birds-env", "spec": SIX_SPEC})
    changed = post(api, BASE, {"name": "birds-env", "spec": {"pip": ["six", "idna"]}})
    assert changed.status_code == 201 and changed.json()["version"] == 2
    assert api.get(f"{BASE}/birds-env").json()["version"] == 2
    assert api.get(f"{BASE}/birds-env?version=1").json()["spec"]["pip"] == ["six"]
    assert [v["version"] for v in api.get(f"{BASE}/birds-env/versions").json()] == [2, 1]
    missing = api.get(f"{BASE}/birds-env?version=7")
    assert missing.status_code == 404 and "no version 7" in missing.json()["detail"]


def test_get_finds_a_curated_environment_by_name(api, curated):
    body = api.get(f"{BASE}/{PYTORCH_CPU_NAME}").json()
    assert (body["name"], body["version"], body["curated"]) == (PYTORCH_CPU_NAME, 1, True)


def test_the_reserved_prefix_is_refused_even_for_staff(workspace, staff, curated):
    from trainhub.workspaces.models import Membership, Role

    Membership.objects.create(workspace=workspace, user=staff, role=Role.OWNER)
    api = api_client(issue_token(workspace, staff))
    response = post(api, BASE, {"name": PYTORCH_CPU_NAME, "spec": {"pip": ["six"]}})
    assert response.status_code == 400
    assert response.json()["detail"] == services.RESERVED_NAME
    response = post(api, f"{BASE}/{PYTORCH_CPU_NAME}/clone", {"new_name": "TrainHub-Mine"})
    assert response.status_code == 400 and response.json()["detail"] == services.RESERVED_NAME
    assert Environment.objects.get(name=PYTORCH_CPU_NAME).versions.count() == 1


def test_clone_copies_a_curated_spec_into_the_workspace(api, curated):
    response = post(api, f"{BASE}/{PYTORCH_CPU_NAME}/clone", {"new_name": "my-torch"})
    assert response.status_code == 201
    assert response.json()["spec"]["pip"] == ["torch==2.13.0", "numpy"] and not response.json()["curated"]


def test_a_bad_spec_is_a_400_that_says_why(api):
    response = post(api, BASE, {"name": "birds-env", "spec": {"pip": ["--index-url http://x"]}})
    assert response.status_code == 400 and "pip option" in response.json()["detail"]
    response = post(api, BASE, {"name": "../etc", "spec": SIX_SPEC})
    assert response.status_code == 400 and "letters, digits" in response.json()["detail"]


def test_a_reader_reads_but_cannot_register_or_clone(workspace, reader, curated):
    api = api_client(issue_token(workspace, reader))
    assert api.get(BASE).status_code == 200
    response = post(api, BASE, {"name": "birds-env", "spec": SIX_SPEC})
    assert response.status_code == 403 and response.json()["detail"] == READ_ONLY_MESSAGE
    assert post(api, f"{BASE}/{PYTORCH_CPU_NAME}/clone", {"new_name": "x"}).status_code == 403
    assert not Environment.objects.filter(workspace=workspace).exists()


ENDPOINTS = [
    ("get", BASE, None),
    ("post", BASE, {"name": "x", "spec": SIX_SPEC}),
    ("get", f"{BASE}/birds-env", None),
    ("get", f"{BASE}/{PYTORCH_CPU_NAME}", None),
    ("get", f"{BASE}/birds-env/versions", None),
    ("post", f"{BASE}/birds-env/clone", {"new_name": "stolen"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_outsiders_get_404_from_every_endpoint(api, curated, other_workspace, outsider, method, path, body):
    post(api, BASE, {"name": "birds-env", "spec": SIX_SPEC})
    stranger = api_client(issue_token(other_workspace, outsider))
    response = post(stranger, path, body) if method == "post" else stranger.get(path)
    assert response.status_code == 404
    assert "birds" in response.json()["detail"]
    assert not Environment.objects.filter(name__in=["x", "stolen"]).exists()


def test_another_workspaces_environment_is_404_by_name(api, other_workspace, outsider):
    theirs = api_client(issue_token(other_workspace, outsider))
    post(
        theirs,
        "/api/v1/workspaces/elsewhere/environments",
        {"name": "secret-env", "spec": SIX_SPEC},
    )
    response = api.get(f"{BASE}/secret-env")
    assert response.status_code == 404 and "No environment named 'secret-env'" in response.json()["detail"]
