"""The runs table of an experiment: filter expressions kept in the URL, parameters and users,
the min and max of each metric column, clear errors for expressions it cannot read."""

from __future__ import annotations

import pytest
from django.db.models import QuerySet

from metrics import run_filter, runs_table
from metrics.run_filter import FilterError, apply_filter
from runs.models import Run, RunStatus
from tests.conftest import api_client
from tests.helpers.database import assert_work_does_not_grow
from tests.metrics.builders import copies, post_batch, running_run, series_body
from tests.metrics.test_workspace_runs_table import every_page


def sweep(workspace, contributor):
    made = {}
    for name, lr, accuracy, status in (
        ("a", "0.1", 0.95, RunStatus.RUNNING),
        ("b", "0.01", 0.85, RunStatus.RUNNING),
        ("c", "0.01", 0.92, RunStatus.FAILED),
    ):
        run, token = running_run(workspace, experiment="sweep", arguments=["--lr", lr, "--epochs", "3"])
        post_batch(api_client(token), run, series_body("accuracy", [0.1, accuracy]))
        if name == "b":
            post_batch(api_client(token), run, {"tags": {"optimizer": "adam"}})
        Run.objects.filter(pk=run.pk).update(status=status)
        made[name] = run
    Run.objects.filter(pk=made["b"].pk).update(created_by=contributor)
    return made


def matching(expression: str, workspace) -> list[str]:
    runs: QuerySet[Run] = Run.objects.filter(workspace=workspace)
    return sorted(run.run_id for run in apply_filter(runs, expression))


def test_filters_read_metrics_status_parameters_tags_and_users(workspace, contributor):
    runs = sweep(workspace, contributor)
    a, b, c = (runs[k].run_id for k in "abc")
    assert matching("metrics.accuracy > 0.9", workspace) == [a, c]
    assert matching("metrics.accuracy > 0.9 and status = Running", workspace) == [a]
    assert matching("metrics.accuracy != 0.95", workspace) == [b, c]
    assert matching("params.lr = 0.01", workspace) == [b, c]
    assert matching("params.lr = '0.01' AND status != failed", workspace) == [b]
    assert matching("tags.optimizer = adam", workspace) == [b]
    assert matching("params.optimizer = adam", workspace) == [b]  # a tag is a parameter too
    assert matching("user = carl", workspace) == [b]
    assert matching("experiment = sweep and metrics.accuracy:min = 0.1", workspace) == [a, b, c]
    assert matching("metrics.accuracy:max < 0.9", workspace) == [b]
    assert matching("experiment = other", workspace) == []
    # Parameters and tags compare as numbers where their values read as numbers.
    assert matching("params.lr > 0.05", workspace) == [a]
    assert matching("params.lr <= 0.01 and metrics.accuracy > 0.9", workspace) == [c]
    assert matching("params.epochs >= 3", workspace) == [a, b, c]
    assert matching("params.lr < 0.01", workspace) == []
    assert matching("tags.optimizer > 0", workspace) == []  # "adam" is no number


@pytest.mark.parametrize(
    "expression, message",
    [
        ("accuracy", "is not a filter"),
        ("metrics.accuracy > high", "metrics compare with a number"),
        ("params.lr > high", "params.lr compares with a number"),
        ("status > 1", "status takes = or != only"),
        ("status = Sleeping", "the statuses are Queued"),
        ("color = red", "filter on metrics.<name>, params.<name>, tags.<name>, status, user or experiment"),
        (" and ".join(["status = Queued"] * 11), "At most 10 clauses"),
    ],
)
def test_an_expression_it_cannot_read_says_why(expression, message, db):
    with pytest.raises(FilterError, match=message.replace(".", r"\.").replace("<", ".").replace(">", ".")):
        matching(expression, None)


def test_the_table_shows_parameters_users_and_filters_through_its_url(client_for, reader, workspace, contributor):
    runs = sweep(workspace, contributor)
    client = client_for(reader)
    html = client.get(
        "/w/birds/experiments/sweep/metrics/",
        {"q": "metrics.accuracy > 0.9", "columns": "parameters,accuracy", "sort": "accuracy", "order": "desc"},
    ).content.decode()
    table = html.split('id="metric-runs"', 1)[1]
    assert runs["b"].run_id not in table
    assert table.index(runs["a"].run_id) < table.index(runs["c"].run_id)
    assert '<span class="param">lr=0.1</span>' in table and '<span class="param">epochs=3</span>' in table
    assert 'value="metrics.accuracy &gt; 0.9"' in html
    # Sorting and paging keep the filter.
    assert (
        "?columns=parameters%2Cmetrics.accuracy&amp;q=metrics.accuracy+%3E+0.9&amp;sort=metrics.accuracy&amp;order=asc"
        in html
    )

    adam = client.get("/w/birds/experiments/sweep/metrics/", {"q": "tags.optimizer = adam"}).content.decode()
    assert "<td>carl</td>" in adam and runs["a"].run_id not in adam.split('id="metric-runs"', 1)[1]


def test_a_filter_it_cannot_read_is_shown_and_lists_nothing(client_for, reader, workspace, contributor):
    sweep(workspace, contributor)
    html = client_for(reader).get("/w/birds/experiments/sweep/metrics/", {"q": "metrics.accuracy > high"}).content
    html = html.decode()
    assert "metrics compare with a number" in html and 'id="filter-error"' in html
    assert "No run matches this filter." in html


FEW_MATCH = [
    "tags.optimizer = none",  # no run has it
    "metrics.accuracy > 2",
    "params.lr > 5",
    "tags.optimizer = lamb",  # 3 runs
    "params.lr = 0.3 and status = Running",
    "metrics.accuracy > 0.9 and tags.optimizer != sgd",
]


def test_a_filter_few_runs_match_reads_those_runs_not_every_run(workspace, monkeypatch):
    first, _ = running_run(workspace, experiment="big", arguments=["--lr", "0.01"], tags={"optimizer": "adam"})
    copies(first, 300, accuracy=0.5)
    copies(first, 3, accuracy=0.99, arguments=["--lr", "0.3"], parameters={"lr": "0.3"}, tags={"optimizer": "lamb"})
    experiment = first.experiment
    sorts = [None, runs_table.sort_of("metrics.accuracy", []), runs_table.sort_of("params.lr", [])]

    def pages(expression: str) -> list[list[str]]:
        return [every_page(experiment, expression=expression, sort=sort, limit=50) for sort in sorts]

    walked = {}
    monkeypatch.setattr(run_filter, "FEW_RUNS", -1)  # every filter walks the runs, as before
    for expression in [*FEW_MATCH, "params.lr = 0.01", "metrics.accuracy < 0.7 and status = Running"]:
        walked[expression] = pages(expression)
    monkeypatch.undo()
    for expression, shown in walked.items():
        assert pages(expression) == shown, expression
    assert [len(each) for each in walked["tags.optimizer = lamb"]] == [3, 3, 3]
    assert [len(each) for each in walked["params.lr = 0.01"]] == [301, 301, 301]

    # Ten times the runs: the same work, where it grew ten times.
    reads = {expression: (lambda e=expression: pages(e)) for expression in FEW_MATCH}
    assert_work_does_not_grow(reads, lambda: copies(first, 3000, accuracy=0.5))
