"""The runs table of the whole workspace: runs of every experiment, the columns a user picks, pages
by keyset that neither skip nor repeat a run, and the values its live updates read."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from metrics import runs_table
from runs.models import Run, RunStatus
from runs.run_values import run_values_sync
from tests.conftest import api_client
from tests.metrics.builders import post_batch, running_run, series_body


def runs_of_two_experiments(workspace) -> tuple[dict[str, Run], dict[str, str]]:
    """Five runs, their tokens by the same keys."""
    made, tokens = {}, {}
    for name, experiment, lr, accuracy in (
        ("a", "baseline", "0.1", 0.7),
        ("b", "tuned", "0.01", 0.9),
        ("c", "tuned", "0.001", None),
        ("d", "baseline", "0.01", 0.8),
        ("e", "tuned", "0.1", 0.6),
    ):
        run, token = running_run(workspace, experiment=experiment, arguments=["--lr", lr])
        if accuracy is not None:
            post_batch(api_client(token), run, series_body("accuracy", [0.2, accuracy]))
        made[name], tokens[name] = run, token
    post_batch(api_client(tokens["b"]), made["b"], {"tags": {"optimizer": "adam"}})
    Run.objects.filter(pk=made["b"].pk).update(status=RunStatus.COMPLETED)
    return made, tokens


def every_page(workspace, limit: int = 2, **options) -> list[str]:
    shown, cursor = [], ""
    while True:
        page = runs_table.runs_page(workspace, cursor=cursor, limit=limit, **options)
        assert page.cursor_error is None
        shown += [run.run_id for run in page.runs]
        if page.next_cursor is None:
            return shown
        cursor = page.next_cursor


def test_pages_by_keyset_neither_skip_nor_repeat_a_run(workspace):
    runs, _ = runs_of_two_experiments(workspace)
    ids = {key: run.run_id for key, run in runs.items()}
    accuracy = runs_table.column_of("metrics.accuracy", [])
    assert every_page(workspace) == [ids[k] for k in "edcba"]
    assert every_page(workspace, sort=accuracy, descending=True) == [ids[k] for k in "bdaec"]
    assert every_page(workspace, sort=accuracy) == [ids[k] for k in "eadbc"]  # without the metric: last
    maximum = runs_table.column_of("metrics.accuracy:max", [])
    assert every_page(workspace, sort=maximum, expression="experiment = tuned") == [ids[k] for k in "ebc"]
    assert every_page(workspace, sort=accuracy, descending=True, expression="metrics.accuracy < 0.85") == [
        ids[k] for k in "dae"
    ]
    assert every_page(workspace, sort=accuracy, expression="params.lr = 0.01") == [ids[k] for k in "db"]
    assert runs_table.runs_page(workspace, cursor="nonsense").cursor_error == runs_table.BAD_CURSOR


def test_the_workspace_table_shows_the_columns_chosen_in_its_url(client_for, reader, outsider, workspace):
    runs, _ = runs_of_two_experiments(workspace)
    columns = "user,params.lr,tags.optimizer,metrics.accuracy:max,metrics.nothing-logged"
    html = client_for(reader).get("/w/birds/runs/", {"columns": columns, "sort": "metrics.accuracy", "order": "desc"})
    html = html.content.decode()
    head, body = html.split('id="metric-runs"', 1)[1].split("<tbody>")
    assert [h.split('"')[0] for h in head.split('data-column="')[1:]] == columns.split(",")
    assert ">accuracy (max)</a>" in head
    order = [body.index(f'data-run="{runs[k].run_id}"') for k in "bdaec"]
    assert order == sorted(order)
    b_row = body.split(f'data-run="{runs["b"].run_id}"')[1].split("</tr>")[0]
    assert ">tuned #1</a>" in b_row and "<td>olivia</td>" in b_row and "<td>0.01</td>" in b_row
    assert "<td>adam</td>" in b_row and '<span class="value">0.9</span>' in b_row
    assert 'value="params.lr" checked' in html and 'value="tags.optimizer" checked' in html
    assert 'value="parameters" >' in html  # offered, not chosen
    assert 'href="/w/birds/runs/" class="active">Runs</a>' in html
    assert client_for(outsider).get("/w/birds/runs/").status_code == 404


def test_its_live_updates_read_status_duration_and_metrics_of_the_workspace_only(
    client_for, reader, outsider, workspace, other_workspace
):
    run, token = running_run(workspace)
    post_batch(api_client(token), run, series_body("loss", [0.9, 0.5, 0.7]))
    theirs, _ = running_run(other_workspace, experiment="theirs")
    url = f"/w/birds/run-table-states/?runs={run.run_id},{theirs.run_id}&columns=metrics.loss,metrics.loss:min"
    states = json.loads(client_for(reader).get(url).content)
    assert list(states) == [run.run_id]
    assert states[run.run_id]["status"] == "Running" and states[run.run_id]["final"] is False
    assert states[run.run_id]["metrics"] == {
        "metrics.loss": "0.7",
        "metrics.loss:range": "0.5 – 0.9",
        "metrics.loss:min": "0.5",
    }
    assert client_for(outsider).get(url).status_code == 404


SORTS = {  # sort: (ascending, descending), the runs without a value last in both
    "started": ("abdec", "edbac"),  # b and d started together; c never started
    "duration": ("bdaec", "adbec"),  # b and d took 4 s; e is still running
    "user": ("bdace", "ecadb"),  # carl's runs before olivia's
    "status": ("bcade", "edacb"),
    "name": ("bdaec", "eadbc"),  # b and d are both "alpha"; c has no name
    "params.lr": ("bdcea", "ecdba"),  # 9 < 10 as numbers, then "auto" as text; a has no lr
    "tags.optimizer": ("abdec", "dbaec"),
}


def runs_with_ties(workspace, contributor) -> dict[str, Run]:
    """runs_of_two_experiments' five runs given a start, an end, a name, a user and a parameter
    each, with ties."""
    runs, _ = runs_of_two_experiments(workspace)
    started = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    for key, start, took, name, lr, tag in (
        ("a", 0, 10, "beta", None, "adam"),
        ("b", 1, 4, "alpha", "9", "adam"),
        ("c", None, None, "", "10", None),
        ("d", 1, 4, "alpha", "9", "sgd"),
        ("e", 3, None, "gamma", "auto", None),
    ):
        Run.objects.filter(pk=runs[key].pk).update(
            started_at=None if start is None else started + timedelta(seconds=start),
            ended_at=None if took is None else started + timedelta(seconds=start + took),
            display_name=name,
            parameters={} if lr is None else {"lr": lr},
            tags={} if tag is None else {"optimizer": tag},
            **({"created_by": contributor} if key in "bd" else {}),
            **({"status": RunStatus.QUEUED} if key == "c" else {}),
        )
        run_values_sync(Run.objects.get(pk=runs[key].pk))  # as a submit with these would have
    return runs


@pytest.mark.postgres  # make test runs it against PostgreSQL too: its number and duration SQL differ
def test_it_sorts_by_every_column_both_ways_with_ties_across_pages(client_for, reader, workspace, contributor):
    runs = runs_with_ties(workspace, contributor)
    client = client_for(reader)
    for key, orders in SORTS.items():
        sort = runs_table.sort_of(key, [])
        for descending, expected in zip((False, True), orders, strict=True):
            wanted = [runs[k].run_id for k in expected]
            assert every_page(workspace, sort=sort, descending=descending) == wanted, (key, descending)
            html = client.get("/w/birds/runs/", {"sort": key, "order": "desc" if descending else "asc"})
            shown = html.content.decode().split("<tbody>")[1].split('data-run="')[1:]
            assert [row.split('"')[0] for row in shown] == wanted, (key, descending)
    tuned = [runs[k].run_id for k in "bec"]  # tuned, oldest start first
    assert every_page(workspace, sort=runs_table.sort_of("started", []), expression="experiment = tuned") == tuned
    assert runs_table.runs_page(workspace, sort=runs_table.sort_of("name", []), cursor="[9]").cursor_error


def test_a_newest_first_table_takes_in_runs_submitted_while_it_is_open(
    client_for, reader, outsider, workspace, other_workspace
):
    runs, _ = runs_of_two_experiments(workspace)
    client = client_for(reader)
    html = client.get("/w/birds/experiments/tuned/metrics/", {"q": "params.lr = 0.01"}).content.decode()
    new_url = html.split('data-new-url="')[1].split('"')[0].replace("&amp;", "&")
    newest = html.split('data-newest="')[1].split('"')[0]
    assert newest == str(runs["b"].pk)
    submitted, _ = running_run(workspace, experiment="tuned", arguments=["--lr", "0.01"])
    running_run(workspace, experiment="tuned", arguments=["--lr", "0.1"])  # not matching the filter
    running_run(workspace, experiment="baseline", arguments=["--lr", "0.01"])  # another experiment
    running_run(other_workspace, experiment="tuned", arguments=["--lr", "0.01"])
    rows = json.loads(client.get(f"{new_url}&newer={newest}").content)["rows"]
    assert [row["id"] for row in rows] == [submitted.pk]
    assert f'<tr data-run="{submitted.run_id}" data-active>' in rows[0]["html"]
    assert f">#{submitted.number}</a>" in rows[0]["html"] and '<span class="param">lr=0.01</span>' in rows[0]["html"]
    assert json.loads(client.get(f"{new_url}&newer={submitted.pk}").content)["rows"] == []
    sorted_page = client.get("/w/birds/experiments/tuned/metrics/", {"sort": "started"}).content.decode()
    assert "data-new-url" not in sorted_page  # only the newest-first table takes runs in at its top
    assert client_for(outsider).get(f"{new_url}&newer={newest}").status_code == 404
