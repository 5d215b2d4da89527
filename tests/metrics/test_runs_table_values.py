"""The runs table sorted and filtered by a parameter or a tag: through the rows kept where runs are
submitted, tagged (on the run page, from inside the run) and given MLflow params, and the rows the
migration made for runs that were there before."""

from __future__ import annotations

import importlib
import re

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext

from metrics import runs_table
from runs.models import Run, RunValue
from runs.parameters import TABLE_KEY_LENGTH
from runs.services import BAD_TAG_NAME
from tests.conftest import api_client, issue_token
from tests.metrics.builders import copies, post_batch, running_run
from tests.metrics.test_workspace_runs_table import every_page
from tests.runs.builders import make_cluster, make_snapshot


def submitted(workspace, user, arguments: list[str], tags: dict[str, str] | None = None) -> Run:
    """A run of experiment "sweep" submitted through the API, as the SDK and the CLI do."""
    if not workspace.clusters.filter(name="cpu").exists():
        make_cluster(workspace, name="cpu")
    answer = api_client(issue_token(workspace, user)).post(
        f"/api/v1/workspaces/{workspace.name}/experiments/sweep/runs",
        {
            "snapshot": make_snapshot(workspace).sha256,
            "compute_target": "cpu",
            "environment": {"name": "TrainHub-PyTorch-2.13-CPU"},
            "script": "train.py",
            "arguments": arguments,
            "tags": tags or {},
        },
        content_type="application/json",
    )
    assert answer.status_code in (200, 201), answer.content
    return Run.objects.get(run_id=answer.json()["run_id"])


def shown_order(client, url: str, **query) -> list[str]:
    html = client.get(url, query).content.decode()
    return [row.split('"')[0] for row in html.split("<tbody>")[1].split('data-run="')[1:]]


@pytest.mark.postgres  # make test runs it against PostgreSQL too: numbers and text sort in SQL
def test_a_parameter_sorts_numbers_as_numbers_then_text_and_runs_without_it_last(
    client_for, reader, contributor, workspace, other_workspace, curated_env
):
    runs = {
        name: submitted(workspace, contributor, arguments, tags)
        for name, arguments, tags in (
            ("tenth", ["--lr", "0.1"], None),
            ("milli", ["--lr=1e-3", "--epochs", "3"], None),
            ("ten", ["--lr", "10"], None),
            ("none", ["--epochs", "3"], None),
            ("two", ["--lr", "2"], None),
            ("auto", ["--lr", "auto"], None),
            ("tagged", ["--epochs", "3"], {"lr": "0.5"}),  # a params.lr column shows a tag named lr
            ("also-none", [], None),
        )
    }
    running_run(other_workspace, experiment="sweep", arguments=["--lr", "0.2"])  # not in birds' tables
    ids = {name: run.run_id for name, run in runs.items()}
    ascending = [ids[k] for k in ("milli", "tenth", "tagged", "two", "ten", "auto", "also-none", "none")]
    descending = [ids[k] for k in ("auto", "ten", "two", "tagged", "tenth", "milli", "also-none", "none")]
    sort = runs_table.sort_of("params.lr", [])
    assert every_page(workspace, sort=sort) == ascending
    assert every_page(workspace, sort=sort, descending=True) == descending
    client = client_for(reader)
    assert shown_order(client, "/w/birds/runs/", sort="params.lr") == ascending
    assert shown_order(client, "/w/birds/experiments/sweep/metrics/", sort="params.lr", order="desc") == descending
    assert every_page(workspace, sort=sort, expression="params.epochs = 3") == [
        ids[k] for k in ("milli", "tagged", "none")
    ]
    assert every_page(workspace, sort=sort, expression="params.lr = 0.5") == [ids["tagged"]]
    assert every_page(workspace, sort=runs_table.sort_of("params.epochs", []), descending=True)[:3] == [
        ids[k]
        for k in ("tagged", "none", "milli")  # ties newest first when descending
    ]


def test_a_tag_sorts_and_filters_as_it_is_set_on_the_run_page_from_inside_the_run_and_removed(
    client_for, reader, contributor, workspace
):
    one, token_one = running_run(workspace, experiment="sweep", tags={"priority": "3"})
    two, _ = running_run(workspace, experiment="sweep", tags={"priority": "20"})
    three, token_three = running_run(workspace, experiment="sweep")
    post_batch(api_client(token_three), three, {"tags": {"priority": "high"}})  # run.tag() in the script
    sort = runs_table.sort_of("tags.priority", [])
    assert every_page(workspace, sort=sort) == [one.run_id, two.run_id, three.run_id]
    assert every_page(workspace, expression="tags.priority = high") == [three.run_id]

    editor = client_for(contributor)
    editor.post(f"/w/birds/runs/{one.run_id}/edit/", {"display_name": "", "description": "", "tags": "priority=100"})
    editor.post(f"/w/birds/runs/{two.run_id}/edit/", {"display_name": "", "description": "", "tags": "stage=dev"})
    post_batch(api_client(token_one), one, {"tags": {"stage": "prod"}})
    assert every_page(workspace, sort=sort) == [one.run_id, three.run_id, two.run_id]  # two has none now
    assert every_page(workspace, sort=sort, descending=True) == [three.run_id, one.run_id, two.run_id]
    assert every_page(workspace, expression="tags.priority = 20") == []
    assert every_page(workspace, expression="tags.priority != 100") == [three.run_id, two.run_id]
    assert every_page(workspace, expression="params.stage = prod") == [one.run_id]  # a tag is a parameter too
    html = client_for(reader).get("/w/birds/runs/", {"sort": "tags.priority", "columns": "tags.priority,tags.stage"})
    row = html.content.decode().split(f'data-run="{one.run_id}"')[1].split("</tr>")[0]
    assert "<td>100</td>" in row and "<td>prod</td>" in row


def test_a_param_logged_through_mlflow_replaces_the_argument_in_sorts_and_filters(workspace):
    low, _ = running_run(workspace, arguments=["--lr", "0.5"])
    high, token = running_run(workspace, arguments=["--lr", "1e-3"])
    answer = api_client(token).post(
        f"/mlflow/{workspace.name}/api/2.0/mlflow/runs/log-parameter",
        {"run_id": high.run_id, "key": "lr", "value": "0.9"},
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    assert every_page(workspace, sort=runs_table.sort_of("params.lr", [])) == [low.run_id, high.run_id]
    assert every_page(workspace, expression="params.lr = 0.9") == [high.run_id]
    assert every_page(workspace, expression="params.lr = 1e-3") == []


def test_the_migration_gives_runs_that_were_there_before_their_rows(workspace, contributor):
    made = [
        running_run(workspace, arguments=["--lr", lr], tags=tags)[0]
        for lr, tags in (("0.1", {"team": "vision"}), ("auto", {}), ("3", {"lr": "7", "team": "audio"}))
    ]
    kept = sorted(RunValue.objects.values_list("run_id", "kind", "key", "value", "number", "text"))
    # params.lr of each; tags.team and params.team twice; tags.lr 7 (its params.lr shows the argument)
    assert len(kept) == 8
    RunValue.objects.all().delete()  # as before the migration
    importlib.import_module("runs.migrations.0011_run_value").fill(apps, None)
    assert sorted(RunValue.objects.values_list("run_id", "kind", "key", "value", "number", "text")) == kept
    assert every_page(workspace, sort=runs_table.sort_of("params.lr", [])) == [made[k].run_id for k in (0, 2, 1)]


def test_the_column_picker_offers_the_keys_of_old_runs_too_from_the_index_alone(client_for, reader, workspace):
    old, _ = running_run(workspace, arguments=["--warmup", "5"], tags={"dataset": "cub-200"})
    copies(old, 300, arguments=[], parameters={}, tags={})
    with CaptureQueriesContext(connection) as queries:
        html = client_for(reader).get("/w/birds/runs/").content.decode()
    picker = html.split('id="column-picker"')[1].split("</details>")[0]
    assert 'value="params.warmup"' in picker and 'value="tags.dataset"' in picker
    keys = [q["sql"] for q in queries.captured_queries if 'SELECT "runs_runvalue"."key"' in q["sql"]]
    assert keys
    for sql in keys:  # each key is a seek on a (workspace, kind, key, ...) index, no scan of the rows
        [plan] = [row[-1] for row in connection.cursor().execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()]
        assert re.fullmatch(r"SEARCH runs_runvalue USING (COVERING )?INDEX run_value_workspace_\w+ \(.*\)", plan)


def test_a_tag_name_no_column_could_show_is_refused_at_submit(workspace, contributor, curated_env):
    make_cluster(workspace, name="cpu")
    long_name = "k" * (TABLE_KEY_LENGTH + 1)
    answer = api_client(issue_token(workspace, contributor)).post(
        f"/api/v1/workspaces/{workspace.name}/experiments/sweep/runs",
        {
            "snapshot": make_snapshot(workspace).sha256,
            "compute_target": "cpu",
            "environment": {"name": "TrainHub-PyTorch-2.13-CPU"},
            "script": "train.py",
            "tags": {"team": "birds", long_name: "x"},
        },
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert BAD_TAG_NAME.format(key=long_name[:60], length=TABLE_KEY_LENGTH + 1) in answer.content.decode()
    assert not Run.objects.exists()
