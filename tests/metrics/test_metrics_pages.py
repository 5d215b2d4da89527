"""Metric pages: run page section, CSV downloads, runs by metric, compare view; 404 to outsiders."""

from __future__ import annotations

import csv
import io

import pytest

from tests.conftest import api_client
from tests.metrics.builders import post_batch, running_run, series_body

pytestmark = pytest.mark.django_db


def log(run, token, name, values, **extra):
    response = post_batch(api_client(token), run, series_body(name, values) | extra)
    assert response.status_code == 200, response.content


def csv_rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def logged_run(workspace):
    run, token = running_run(workspace)
    log(
        run,
        token,
        "loss",
        [0.9, 0.5, 0.25],
        tags={"optimizer": "sgd"},
        rows=[{"name": "per_class", "cells": {"cls": 3, "precision": 0.875}}],
    )
    return run, token


def test_the_run_page_lists_final_values_tags_and_tables(client_for, reader, logged_run):
    run, _ = logged_run
    page = client_for(reader).get(f"/w/birds/runs/{run.run_id}/").content.decode()
    assert 'id="metrics"' in page
    assert f'data-ws="/ws/runs/{run.run_id}/metrics/"' in page
    assert '<tr data-name="loss"><td>loss</td><td class="value">0.25</td><td>2</td><td>3</td>' in page
    assert "<dt>optimizer</dt><dd>sgd</dd>" in page
    assert "<th>cls</th><th>precision</th>" in page and "<td>0.875</td>" in page
    assert "metrics/vendor/uplot/uPlot.iife.min.js" in page


def test_the_csv_holds_every_point(client_for, reader, workspace):
    run, token = running_run(workspace)
    values = [i / 7 for i in range(45_000)]
    log(run, token, "loss", values)
    response = client_for(reader).get(f"/w/birds/runs/{run.run_id}/metrics.csv", {"name": "loss"})
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{run.run_id}-loss.csv"'
    rows = csv_rows(response)
    assert rows[0] == ["name", "rank", "step", "value", "time_unix", "time_utc"]
    assert len(rows) == 45_001
    assert [float(r[3]) for r in rows[1:]] == values
    assert rows[-1][:3] == ["loss", "0", "44999"]
    assert rows[1][5].endswith("Z")


def test_the_csv_of_every_metric_and_of_a_table(client_for, reader, logged_run):
    run, token = logged_run
    log(run, token, "accuracy", [0.5])
    client = client_for(reader)
    rows = csv_rows(client.get(f"/w/birds/runs/{run.run_id}/metrics.csv"))
    assert sorted(r[0] for r in rows[1:]) == ["accuracy", "loss", "loss", "loss"]
    table = csv_rows(client.get(f"/w/birds/runs/{run.run_id}/metrics.csv", {"name": "per_class"}))
    assert table[0] == ["name", "rank", "step", "time_unix", "cls", "precision"]
    assert table[1][4:] == ["3", "0.875"]


def make_runs_with_accuracy(workspace, finals):
    runs = []
    for value in finals:
        run, token = running_run(workspace, experiment="sweep")
        if value is not None:
            log(run, token, "accuracy", [0.1, value])
            log(run, token, "loss", [1 - value])
        runs.append(run)
    return runs


def test_runs_by_metric_shows_chosen_columns_sorted(client_for, reader, workspace):
    low, high, none, middle = make_runs_with_accuracy(workspace, [0.5, 0.9, None, 0.7])
    client = client_for(reader)
    page = client.get(
        "/w/birds/experiments/sweep/metrics/",
        {"columns": "accuracy", "sort": "accuracy", "order": "desc"},
    )
    html = page.content.decode()
    order = [html.index(f'data-run="{r.run_id}"') for r in (high, middle, low, none)]
    assert order == sorted(order)
    assert (
        '<td class="num" data-metric="metrics.accuracy" title="min 0.1 · max 0.9"><span class="value">0.9</span>'
        '<br><span class="muted range">0.1 – 0.9</span></td>'
        in html
        and '<th data-column="metrics.accuracy"><a' in html
        and ">loss<" not in html.split("<tbody>")[1]
    )
    ascending = client.get(
        "/w/birds/experiments/sweep/metrics/", {"columns": "accuracy", "sort": "accuracy"}
    ).content.decode()
    order = [ascending.index(f'data-run="{r.run_id}"') for r in (low, middle, high, none)]
    assert order == sorted(order)


def test_the_experiment_page_links_to_runs_by_metric(client_for, reader, workspace):
    make_runs_with_accuracy(workspace, [0.5])
    page = client_for(reader).get("/w/birds/experiments/sweep/").content.decode()
    assert 'href="/w/birds/experiments/sweep/metrics/"' in page


def test_the_compare_view_takes_a_shareable_selection(client_for, reader, workspace, other_workspace):
    a, b, c = make_runs_with_accuracy(workspace, [0.5, 0.9, 0.7])
    foreign, _ = running_run(other_workspace, experiment="sweep")
    client = client_for(reader)
    html = client.get(
        "/w/birds/experiments/sweep/compare/",
        {"runs": f"{a.run_id},{b.run_id},{c.run_id},{foreign.run_id}"},
    ).content.decode()
    assert f"?runs={a.run_id},{b.run_id},{c.run_id}</code>" in html
    assert f"Not runs of this experiment: {foreign.run_id}" in html
    assert "<th>accuracy</th><th>loss</th>" in html
    repeated = client.get(f"/w/birds/experiments/sweep/compare/?runs={a.run_id}&runs={b.run_id}").content.decode()
    assert f"?runs={a.run_id},{b.run_id}</code>" in repeated


def page_urls(run) -> list[str]:
    return [
        f"/w/birds/runs/{run.run_id}/metrics.csv",
        f"/w/birds/runs/{run.run_id}/metrics.csv?name=loss",
        f"/w/birds/experiments/{run.experiment.name}/metrics/",
        f"/w/birds/experiments/{run.experiment.name}/compare/?runs={run.run_id}",
    ]


def test_outsiders_get_404_from_every_page(client_for, outsider, logged_run):
    run, _ = logged_run
    client = client_for(outsider)
    for url in page_urls(run):
        assert client.get(url).status_code == 404, url


def test_anonymous_visitors_are_sent_to_sign_in(logged_run):
    from django.test import Client

    run, _ = logged_run
    for url in page_urls(run):
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url


def test_members_see_every_page(client_for, reader, logged_run):
    run, _ = logged_run
    client = client_for(reader)
    for url in page_urls(run):
        assert client.get(url).status_code == 200, url
