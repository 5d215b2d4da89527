"""Sign-in and workspace flows in Chromium (through Playwright) against the live daphne server."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import PASSWORD, make_user
from trainhub.sdk import Workspace
from trainhub.workspaces.models import ApiToken, Membership, Role
from trainhub.workspaces.selectors import hash_token

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def sign_in(page: Page, live_url: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{live_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_i_sign_in_and_see_my_workspaces(page, live_url, owner, workspace, other_workspace):
    sign_in(page, live_url, "olivia")
    expect(page).to_have_url(f"{live_url}/workspaces/")
    expect(page.locator("header .user")).to_contain_text("olivia")
    expect(page.get_by_role("link", name="birds")).to_be_visible()
    expect(page.get_by_role("link", name="elsewhere")).to_have_count(0)


def test_a_wrong_password_keeps_me_out(page, live_url, owner):
    sign_in(page, live_url, "olivia", "not my password")
    expect(page.get_by_text("didn't match")).to_be_visible()
    page.goto(f"{live_url}/workspaces/")
    expect(page).to_have_url(f"{live_url}/accounts/login/?next=/workspaces/")


def test_i_sign_out(page, live_url, owner, workspace):
    sign_in(page, live_url, "olivia")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{live_url}/accounts/login/")
    page.goto(f"{live_url}/w/birds/")
    expect(page.get_by_role("heading", name="Sign in to TrainHub")).to_be_visible()


def test_i_create_a_workspace_from_the_form(page, live_url, outsider):
    sign_in(page, live_url, "oscar")
    page.get_by_label("Name").fill("herons")
    page.get_by_label("Description").fill("Wading birds")
    page.get_by_role("button", name="Create workspace").click()
    expect(page).to_have_url(f"{live_url}/w/herons/")
    expect(page.locator(".flash")).to_have_text("Workspace herons created.")
    expect(page.get_by_text("your role: owner")).to_be_visible()
    page.goto(f"{live_url}/workspaces/")
    expect(page.get_by_role("link", name="herons")).to_be_visible()


def test_a_taken_name_is_explained_on_the_form(page, live_url, outsider, workspace):
    sign_in(page, live_url, "oscar")
    page.get_by_label("Name").fill("birds")
    page.get_by_role("button", name="Create workspace").click()
    expect(page.get_by_text("A workspace named 'birds' already exists.")).to_be_visible()


def test_an_owner_adds_a_member_by_username_and_role(page, live_url, owner, workspace, outsider):
    sign_in(page, live_url, "olivia")
    page.goto(f"{live_url}/w/birds/")
    page.locator("nav.wsnav").get_by_role("link", name="Members").click()
    form = page.locator("#add-member")
    form.get_by_label("Username").fill("oscar")
    form.get_by_label("Role").select_option(label="Reader")
    page.get_by_role("button", name="Add member").click()
    expect(page.locator(".flash")).to_have_text("oscar added.")
    expect(page.get_by_label("Role of oscar")).to_have_value("reader")
    assert Membership.objects.get(workspace=workspace, user=outsider).role == Role.READER


def test_the_new_member_sees_the_workspace(browser, live_url, owner, workspace, outsider):
    Membership.objects.create(workspace=workspace, user=outsider, role=Role.READER)
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, live_url, "oscar")
        page.get_by_role("link", name="birds").click()
        expect(page.get_by_text("your role: reader")).to_be_visible()
    finally:
        context.close()


def test_a_new_token_is_shown_once(page, live_url, contributor, workspace):
    sign_in(page, live_url, "carl")
    page.goto(f"{live_url}/w/birds/tokens/")
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token pre.secret").inner_text().strip()
    assert secret.startswith("th_")
    assert ApiToken.objects.get(name="laptop").token_hash == hash_token(secret)

    # The secret is in the page before its last script has made the POST's entry a GET: a reload
    # before then posts the form again (seen once under load).
    page.wait_for_load_state("load")
    page.reload()
    expect(page.locator("#tokens")).to_contain_text("laptop")
    expect(page.locator("#new-token")).to_have_count(0)
    assert secret not in page.content()
    assert ApiToken.objects.filter(name="laptop").count() == 1


def test_a_revoked_token_is_marked_revoked(page, live_url, contributor, workspace):
    sign_in(page, live_url, "carl")
    page.goto(f"{live_url}/w/birds/tokens/")
    page.get_by_label("Name").fill("old laptop")
    page.get_by_role("button", name="Create token").click()
    page.locator("#tokens").get_by_role("button", name="Revoke").click()
    expect(page.locator(".flash")).to_have_text("Token old laptop revoked.")
    expect(page.locator("#tokens")).to_contain_text("revoked")


def test_config_json_downloads_with_a_token_that_works(page, live_url, reader, workspace, tmp_path):
    sign_in(page, live_url, "rita")
    page.goto(f"{live_url}/w/birds/")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download config.json").click()
    download = download_info.value
    assert download.suggested_filename == "config.json"
    path = tmp_path / "config.json"
    download.save_as(path)

    config = json.loads(path.read_text())
    assert config["server_url"] == live_url
    assert config["workspace_name"] == "birds"
    ws = Workspace.from_config(path)
    assert ws.name == "birds"
    assert ws.get_details()["role"] == "reader"


def test_config_json_without_a_token_leaves_it_to_the_sdk(page, live_url, owner, workspace, tmp_path):
    sign_in(page, live_url, "olivia")
    page.goto(f"{live_url}/w/birds/")
    page.get_by_label("Include a new API token").uncheck()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download config.json").click()
    path = tmp_path / "config.json"
    download_info.value.save_as(path)
    assert json.loads(path.read_text()) == {"server_url": live_url, "workspace_name": "birds"}
    assert not ApiToken.objects.exists()


def test_a_user_created_in_the_test_can_sign_in_with_a_real_password(page, live_url, db):
    make_user("newcomer")
    sign_in(page, live_url, "newcomer")
    expect(page.get_by_text("You are not a member of any workspace yet.")).to_be_visible()
