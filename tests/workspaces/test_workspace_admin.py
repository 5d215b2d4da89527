"""The Django admin for workspaces, memberships and tokens, and the RQ dashboard: staff only."""

from __future__ import annotations

import pytest

from tests.conftest import issue_token, make_user
from trainhub.workspaces.models import ApiToken
from trainhub.workspaces.selectors import hash_token

pytestmark = pytest.mark.django_db

ADMIN_PAGES = [
    "/admin/auth/user/",
    "/admin/workspaces/workspace/",
    "/admin/workspaces/membership/",
    "/admin/workspaces/apitoken/",
]


@pytest.fixture
def staff(db):
    return make_user("stella", is_staff=True, is_superuser=True)


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_staff_see_the_admin_lists(client_for, staff, workspace, url):
    assert client_for(staff).get(url).status_code == 200


@pytest.mark.parametrize("url", [*ADMIN_PAGES, "/django-rq/"])
def test_members_who_are_not_staff_are_sent_to_the_admin_login(client_for, owner, workspace, url):
    response = client_for(owner).get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_rq_dashboard_shows_the_default_queue_to_staff(client_for, staff):
    body = client_for(staff).get("/django-rq/").content.decode()
    assert "default" in body


def test_the_workspace_page_lists_its_members(client_for, staff, workspace):
    url = f"/admin/workspaces/workspace/{workspace.pk}/change/"
    body = client_for(staff).get(url).content.decode()
    assert "carl" in body and "rita" in body


def test_tokens_cannot_be_added_in_the_admin(client_for, staff):
    assert client_for(staff).get("/admin/workspaces/apitoken/add/").status_code == 403


def test_the_admin_revokes_tokens(client_for, staff, workspace, owner):
    secret = issue_token(workspace, owner, "laptop")
    token = ApiToken.objects.get(token_hash=hash_token(secret))
    client_for(staff).post(
        "/admin/workspaces/apitoken/",
        {"action": "revoke", "_selected_action": [token.pk]},
    )
    token.refresh_from_db()
    assert token.revoked_at is not None
