"""Changing a member's role, removing a member, revoking a token: outsiders get 404, readers 403."""

from __future__ import annotations

import pytest

from tests.conftest import issue_token
from trainhub.workspaces.models import ApiToken, Membership, Role
from trainhub.workspaces.selectors import hash_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def carls_membership(workspace, contributor) -> Membership:
    return Membership.objects.get(workspace=workspace, user=contributor)


def role_url(membership: Membership) -> str:
    return f"/w/{membership.workspace.name}/members/{membership.pk}/role/"


def remove_url(membership: Membership) -> str:
    return f"/w/{membership.workspace.name}/members/{membership.pk}/remove/"


def test_an_owner_changes_a_role(client_for, owner, carls_membership):
    response = client_for(owner).post(role_url(carls_membership), {"role": "reader"}, follow=True)
    assert "carl is now reader." in response.content.decode()
    carls_membership.refresh_from_db()
    assert carls_membership.role == Role.READER


@pytest.mark.parametrize("who", ["reader", "contributor"])
def test_only_owners_change_roles(request, client_for, carls_membership, who):
    user = request.getfixturevalue(who)
    assert client_for(user).post(role_url(carls_membership), {"role": "owner"}).status_code == 403
    carls_membership.refresh_from_db()
    assert carls_membership.role == Role.CONTRIBUTOR


@pytest.mark.parametrize("who", ["reader", "contributor"])
def test_only_owners_remove_members(request, client_for, carls_membership, who):
    user = request.getfixturevalue(who)
    assert client_for(user).post(remove_url(carls_membership)).status_code == 403
    assert Membership.objects.filter(pk=carls_membership.pk).exists()


def test_outsiders_get_404_for_role_changes_and_removals(client_for, outsider, carls_membership):
    client = client_for(outsider)
    assert client.post(role_url(carls_membership), {"role": "reader"}).status_code == 404
    assert client.post(remove_url(carls_membership)).status_code == 404
    carls_membership.refresh_from_db()
    assert carls_membership.role == Role.CONTRIBUTOR


def test_a_membership_of_another_workspace_is_404_even_to_an_owner(client_for, owner, workspace, other_workspace):
    theirs = Membership.objects.get(workspace=other_workspace)
    response = client_for(owner).post(f"/w/{workspace.name}/members/{theirs.pk}/remove/")
    assert response.status_code == 404
    assert Membership.objects.filter(pk=theirs.pk).exists()


def test_outsiders_get_404_for_token_revocation(client_for, outsider, workspace, reader):
    secret = issue_token(workspace, reader)
    token = ApiToken.objects.get(token_hash=hash_token(secret))
    response = client_for(outsider).post(f"/w/{workspace.name}/tokens/{token.pk}/revoke/")
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_a_reader_revokes_their_own_token(client_for, reader, workspace):
    secret = issue_token(workspace, reader)
    token = ApiToken.objects.get(token_hash=hash_token(secret))
    url = f"/w/{workspace.name}/tokens/{token.pk}/revoke/"
    response = client_for(reader).post(url, follow=True)
    assert f"Token {token.name} revoked." in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_state_changes_refuse_get(client_for, owner, carls_membership):
    assert client_for(owner).get(remove_url(carls_membership)).status_code == 405
    assert Membership.objects.filter(pk=carls_membership.pk).exists()
