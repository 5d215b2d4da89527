"""MLflow's runs/search on params. and tags.: what MLflow's server answers, read through the runs
table's RunValue rows (as the portal's filter) rather than the JSON of every run."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs.models import Experiment, Run
from tests.conftest import api_client, issue_token
from tests.helpers.database import assert_work_does_not_grow
from tests.metrics.builders import copies, running_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def searched(workspace, owner):
    """Four runs (newest last): a parameter and a tag of the same name tell MLflow's params from tags."""
    made = {}
    for name, arguments, tags in (
        ("a", ["--lr", "0.01"], {"team": "birds"}),
        ("b", ["--lr", "0.1"], {"team": "fish"}),
        ("c", [], {"lr": "0.01"}),  # a tag only: no MLflow param
        ("d", ["--lr", "0.01"], {"lr": "0.5"}),
    ):
        made[name] = running_run(workspace, experiment="search", arguments=arguments, tags=tags)[0].run_id
    client = api_client(issue_token(workspace, owner))
    experiment = str(Experiment.objects.get(workspace=workspace, name="search").pk)

    def search(text: str, order_by: list[str] | None = None) -> list[str]:
        answer = client.post(
            f"/mlflow/{workspace.name}/api/2.0/mlflow/runs/search",
            {"experiment_ids": [experiment], "filter": text, "order_by": order_by or []},
            content_type="application/json",
        )
        assert answer.status_code == 200, answer.content
        ids = {run_id: key for key, run_id in made.items()}
        return [ids.get(run["info"]["run_id"], run["info"]["run_id"]) for run in answer.json().get("runs", [])]

    search.made = made  # type: ignore[attr-defined]
    return search


@pytest.mark.postgres  # make test runs it against PostgreSQL too: its regular expressions are its own
def test_params_and_tags_filter_as_mlflows_server_does(searched):
    assert searched("params.lr = '0.01'") == ["d", "a"]  # newest first; c's lr is a tag
    assert searched("params.lr != '0.01'") == ["b"]
    assert searched("tags.lr = '0.01'") == ["c"]
    assert searched("tags.lr != '0.01'") == ["d"]
    assert searched("params.lr LIKE '0.0%'") == ["d", "a"]
    assert searched("params.lr = '0.01' AND tags.team = 'birds'") == ["a"]
    assert searched("tags.team ILIKE 'BIRD_'") == ["a"]
    assert searched("params.missing = '1'") == []


def test_like_matches_the_whole_value_as_sql_does(searched):
    assert searched("tags.team LIKE 'bi%'") == ["a"]
    assert searched("tags.team LIKE 'ird%'") == []
    assert searched("tags.team LIKE '%ish'") == ["b"]


def test_a_params_or_tags_filter_reads_the_tables_rows_not_every_runs_json(searched):
    with CaptureQueriesContext(connection) as queries:
        assert searched("tags.team = 'fish' AND params.lr = '0.1'") == ["b"]
    searches = [q["sql"] for q in queries.captured_queries if "runs_runvalue" in q["sql"]]
    assert searches
    for search in searches:
        assert '"runs_run"."tags"' not in search.split(" WHERE ", 1)[1]


@pytest.mark.postgres  # make test runs it against PostgreSQL too: text sorts in SQL
def test_order_by_params_and_tags_sorts_their_text_with_runs_without_it_last(searched):
    assert searched("", ["params.lr"]) == ["d", "a", "b", "c"]  # c's lr is a tag; ties newest first
    assert searched("", ["params.lr DESC"]) == ["b", "d", "a", "c"]
    assert searched("", ["tags.lr ASC"]) == ["c", "d", "b", "a"]
    assert searched("", ["tags.lr DESC"]) == ["d", "c", "b", "a"]
    assert searched("", ["tags.team DESC"]) == ["b", "a", "d", "c"]
    assert searched("", ["tags.team", "params.lr DESC"]) == ["a", "b", "d", "c"]
    assert searched("params.lr = '0.01'", ["tags.team"]) == ["a", "d"]


def test_a_filter_few_runs_match_reads_those_runs_not_every_run(searched, workspace):
    first = Run.objects.get(run_id=searched.made["a"])
    copies(first, 300, accuracy=0.5)
    copies(first, 3, accuracy=0.99, tags={"team": "owls"})
    few = ["tags.team = 'none'", "tags.team = 'owls'", "params.lr = '0.7'", "metrics.accuracy > 2"]
    few += ["metrics.accuracy > 0.9 AND tags.team != 'birds'", "params.lr = '0.01' AND tags.team = 'owls'"]
    found = {text: searched(text) for text in few}
    assert found["tags.team = 'owls'"] == found["metrics.accuracy > 0.9 AND tags.team != 'birds'"]
    assert len(found["tags.team = 'owls'"]) == 3 and found["tags.team = 'none'"] == []

    # Ten times the runs: the same work, where it grew ten times, and the same runs found.
    assert_work_does_not_grow(
        {text: (lambda t=text: searched(t)) for text in few}, lambda: copies(first, 3000, accuracy=0.5)
    )
    assert {text: searched(text) for text in few} == found
