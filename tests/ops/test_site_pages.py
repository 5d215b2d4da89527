"""Pages of the site as a whole: error pages in the site's layout, the favicon, the API's own docs
served without any network, the admin's names."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client, RequestFactory
from django.views import defaults
from playwright.sync_api import expect

from tests.browser.test_workspace_flows import sign_in
from tests.conftest import make_user


def test_a_missing_page_is_shown_in_the_sites_layout(client_for, workspace, outsider):
    response = client_for(outsider).get("/w/birds/")
    assert response.status_code == 404
    html = response.content.decode()
    assert '<a class="brand" href="/">TrainHub</a>' in html
    assert "<h1>Not found</h1>" in html
    assert "or you are not a member of the workspace" in html


def test_the_forbidden_and_error_pages_use_the_sites_layout(rf: RequestFactory, db):
    forbidden = defaults.permission_denied(rf.get("/w/birds/"), PermissionDenied())
    assert forbidden.status_code == 403
    assert "<h1>Not allowed</h1>" in forbidden.content.decode()
    error = defaults.server_error(rf.get("/w/birds/"))
    assert error.status_code == 500
    html = error.content.decode()
    assert "<h1>Something went wrong</h1>" in html and "trainhub/app.css" in html


def test_the_favicon_is_served(client_for, owner):
    client = client_for(owner)
    page = client.get("/w/").content.decode()
    assert 'rel="icon" type="image/svg+xml" href="/static/trainhub/favicon.svg"' in page
    redirect = client.get("/favicon.ico")
    assert redirect.status_code == 301 and redirect["Location"] == "/static/trainhub/favicon.svg"
    icon = client.get("/static/trainhub/favicon.svg")
    assert icon.status_code == 200
    assert b"<svg" in b"".join(icon.streaming_content)


def test_the_api_docs_load_their_assets_from_this_server(db):
    html = Client().get("/api/v1/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html
    assert "cdn." not in html


def test_the_data_page_lists_the_default_datastore_before_any_upload(client_for, workspace, reader):
    html = client_for(reader).get("/w/birds/data/").content.decode()
    assert "workspaceblobstore" in html
    assert "No datastores yet" not in html


def test_the_admin_names_metric_series_in_plain_english(db):
    admin = make_user("ada", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    html = client.get("/admin/").content.decode()
    assert "Metric series" in html
    assert "seriess" not in html


@pytest.mark.browser
@pytest.mark.slow
def test_the_api_docs_render_with_no_network(page, live_url, owner):
    own = urlparse(live_url).netloc
    elsewhere: list[str] = []

    def only_this_server(route):
        if urlparse(route.request.url).netloc == own:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    sign_in(page, live_url, "olivia")
    page.goto(f"{live_url}/api/v1/docs")
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    expect(page.locator(".swagger-ui")).to_contain_text("/api/v1/workspaces/")
    assert elsewhere == []
