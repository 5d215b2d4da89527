"""The links MLflow's client prints in a run's log (`…/mlflow/<workspace>/#/experiments/<id>/runs/<run
id>`) open TrainHub's page of that run, for members only."""

from __future__ import annotations

import pytest
from django.test import Client
from playwright.sync_api import expect

from tests.browser.test_workspace_flows import sign_in
from tests.metrics.builders import running_run


@pytest.mark.django_db
def test_members_see_it_and_others_do_not(workspace, owner, outsider):
    member = Client()
    member.force_login(owner)
    page = member.get("/mlflow/birds/")
    assert page.status_code == 200 and 'data-runs="/w/birds/runs/"' in page.content.decode()
    stranger = Client()
    stranger.force_login(outsider)
    assert stranger.get("/mlflow/birds/").status_code == 404
    assert Client().get("/mlflow/birds/")["Location"].startswith("/accounts/login/")


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_mlflows_link_to_a_run_opens_its_page(workspace, page, live_url):
    run, _ = running_run(workspace)
    sign_in(page, live_url, "olivia")
    page.goto(f"{live_url}/mlflow/birds/#/experiments/{run.experiment_id}/runs/{run.run_id}")
    expect(page).to_have_url(f"{live_url}/w/birds/runs/{run.run_id}/")
    expect(page.locator("h1")).to_contain_text(f"Run #{run.number}")
