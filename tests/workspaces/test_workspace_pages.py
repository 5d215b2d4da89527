"""The workspace pages: list, create, overview, members, tokens, config.json."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from trainhub.workspaces import services
from trainhub.workspaces.models import ApiToken, Membership, Role, Workspace
from trainhub.workspaces.selectors import hash_token

pytestmark = pytest.mark.django_db

WORKSPACE_PAGES = ["detail", "members", "tokens"]


def test_it_asks_anonymous_visitors_to_sign_in(workspace):
    response = Client().get(f"/w/{workspace.name}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_lists_only_my_workspaces(client_for, owner, workspace, other_workspace):
    body = client_for(owner).get("/workspaces/").content.decode()
    assert "birds" in body
    assert "elsewhere" not in body


def test_it_creates_a_workspace_with_me_as_owner(client_for, outsider):
    response = client_for(outsider).post("/workspaces/", {"name": "herons", "description": "x"})
    assert response.status_code == 302
    workspace = Workspace.objects.get(name="herons")
    assert Membership.objects.get(workspace=workspace, user=outsider).role == Role.OWNER


def test_it_rejects_a_taken_or_bad_name(client_for, outsider, workspace):
    client = client_for(outsider)
    body = client.post("/workspaces/", {"name": "BIRDS"}).content.decode()
    assert "already exists" in body
    body = client.post("/workspaces/", {"name": "../etc"}).content.decode()
    assert "letters, digits" in body
    assert Workspace.objects.count() == 1


@pytest.mark.parametrize("page", WORKSPACE_PAGES)
def test_it_answers_404_to_outsiders(client_for, outsider, workspace, page):
    url = {
        "detail": f"/w/{workspace.name}/",
        "members": f"/w/{workspace.name}/members/",
        "tokens": f"/w/{workspace.name}/tokens/",
    }[page]
    assert client_for(outsider).get(url).status_code == 404


def test_it_answers_404_to_outsiders_for_config_json(client_for, outsider, workspace):
    assert client_for(outsider).get(f"/w/{workspace.name}/config.json").status_code == 404
    url = f"/w/{workspace.name}/config.json"
    response = client_for(outsider).post(url, {"include_token": "on"})
    assert response.status_code == 404
    assert not ApiToken.objects.exists()


def test_an_owner_adds_a_member(client_for, owner, workspace, outsider):
    response = client_for(owner).post(f"/w/{workspace.name}/members/", {"username": "oscar", "role": "reader"})
    assert response.status_code == 302
    assert Membership.objects.get(workspace=workspace, user=outsider).role == Role.READER


def test_it_names_an_unknown_user(client_for, owner, workspace):
    body = (
        client_for(owner)
        .post(f"/w/{workspace.name}/members/", {"username": "nobody", "role": "reader"})
        .content.decode()
    )
    assert "No user named" in body


@pytest.mark.parametrize("who", ["reader", "contributor"])
def test_only_owners_add_members(request, client_for, workspace, outsider, who):
    user = request.getfixturevalue(who)
    response = client_for(user).post(f"/w/{workspace.name}/members/", {"username": "oscar", "role": "owner"})
    assert response.status_code == 403
    assert not Membership.objects.filter(user=outsider).exists()


def test_the_last_owner_cannot_step_down(client_for, owner, workspace):
    membership = Membership.objects.get(workspace=workspace, user=owner)
    client_for(owner).post(f"/w/{workspace.name}/members/{membership.pk}/role/", {"role": "reader"}, follow=True)
    membership.refresh_from_db()
    assert membership.role == Role.OWNER


def test_removing_a_member_revokes_their_tokens(client_for, owner, contributor, workspace):
    from tests.conftest import issue_token

    secret = issue_token(workspace, contributor)
    membership = Membership.objects.get(workspace=workspace, user=contributor)
    client_for(owner).post(f"/w/{workspace.name}/members/{membership.pk}/remove/")
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert ApiToken.objects.get(token_hash=hash_token(secret)).revoked_at is not None


def test_a_token_is_shown_once_and_stored_hashed(client_for, reader, workspace):
    client = client_for(reader)
    body = client.post(f"/w/{workspace.name}/tokens/", {"name": "laptop"}).content.decode()
    token = ApiToken.objects.get(name="laptop")
    secret = body.split('<pre class="secret">')[1].split("</pre>")[0]
    assert secret.startswith("th_")
    assert token.token_hash == hash_token(secret)
    assert secret not in client.get(f"/w/{workspace.name}/tokens/").content.decode()


def test_i_cannot_revoke_someone_elses_token(client_for, owner, contributor, workspace):
    from tests.conftest import issue_token

    issue_token(workspace, contributor, "carls")
    token = ApiToken.objects.get(name="carls")
    response = client_for(owner).post(f"/w/{workspace.name}/tokens/{token.pk}/revoke/")
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_config_json_carries_a_fresh_token_when_asked(client_for, contributor, workspace):
    response = client_for(contributor).post(f"/w/{workspace.name}/config.json", {"include_token": "on"})
    config = json.loads(response.content)
    assert response["Content-Disposition"] == 'attachment; filename="config.json"'
    assert config["workspace_name"] == "birds"
    assert config["server_url"] == "http://testserver"
    assert ApiToken.objects.get(token_hash=hash_token(config["token"])).user == contributor


def test_config_json_without_a_token(client_for, contributor, workspace):
    config = json.loads(client_for(contributor).get(f"/w/{workspace.name}/config.json").content)
    assert "token" not in config
    assert not ApiToken.objects.exists()


def test_workspace_names_are_escaped(client_for, owner):
    services.workspace_create(name="x", user=owner, description="<img src=x onerror=alert(1)>")
    body = client_for(owner).get("/w/x/").content.decode()
    assert "<img src=x" not in body
    assert "&lt;img src=x" in body


def test_the_overview_shows_the_latest_runs_clusters_and_models_of_this_workspace_only(
    client_for, owner, workspace, other_workspace, django_assert_max_num_queries
):
    from registry.models import ModelVersion
    from runs.models import RunStatus
    from tests.registry.builders import register, run_with_outputs
    from tests.runs.builders import make_cluster, make_run

    cluster = make_cluster(workspace, name="cpu-cluster")
    runs = [make_run(workspace, cluster, experiment=f"exp-{i % 2}") for i in range(12)]
    trained = run_with_outputs(workspace, {"outputs/model.pt": b"weights"}, created_by=owner)
    register(workspace, owner, trained, name="pytorch-birds")
    stranger = make_run(other_workspace, experiment="theirs", status=RunStatus.FAILED)

    client = client_for(owner)
    client.get(f"/w/{workspace.name}/")
    with django_assert_max_num_queries(10):  # the same however many runs and models there are
        page = client.get(f"/w/{workspace.name}/").content.decode()
    recent = page.split('id="recent-runs"', 1)[1].split("</section>", 1)[0]
    shown = [r for r in [*runs, trained] if f"/w/{workspace.name}/runs/{r.run_id}/" in recent]
    assert shown == [*runs[3:], trained]  # the newest ten
    assert stranger.run_id not in page and "theirs" not in page
    compute = page.split('id="overview-compute"', 1)[1].split("</section>", 1)[0]
    assert "cpu-cluster" in compute and "0 / 0" in compute
    version = ModelVersion.objects.get(model__name="pytorch-birds")
    assert f'href="/w/{workspace.name}/models/pytorch-birds/{version.version}/"' in compute


def test_an_empty_workspace_points_to_the_tutorial(client_for, owner, workspace):
    page = client_for(owner).get(f"/w/{workspace.name}/").content.decode()
    assert "No runs yet" in page and 'href="/docs/tutorial/"' in page and "No models registered." in page
