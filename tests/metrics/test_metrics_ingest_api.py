"""The metrics API: a run's batches are stored whole and read back; bad input gets a clear 400."""

from __future__ import annotations

import json
import math

import pytest

from metrics import limits, services
from metrics.models import MetricChunk, MetricSeries
from runs.models import Run, RunStatus
from tests.conftest import api_client, issue_token
from tests.metrics.builders import metrics_url, post_batch, running_run, series_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def run_and_token(workspace):
    return running_run(workspace)


def detail(response) -> str:
    return response.json()["detail"]


def test_a_run_stores_a_batch_with_its_own_token(run_and_token):
    run, token = run_and_token
    client = api_client(token)
    body = {
        "rank": 0,
        "metrics": [
            {
                "name": "loss",
                "values": [0.9, 0.7, 0.5],
                "steps": [0, 1, 2],
                "times": [10.0, 11.0, 12.0],
                "description": "training loss",
            },
            {"name": "accuracy", "values": [0.1, 0.4]},
        ],
        "rows": [
            {
                "name": "per_class",
                "step": 0,
                "cells": {"cls": 3, "precision": 0.9, "label": "heron"},
            }
        ],
        "tags": {"lr": "0.01"},
    }
    response = post_batch(client, run, body)
    assert response.status_code == 200, response.content
    assert response.json() == {"points": 5, "rows": 1, "tags": 1}

    answer = client.get(metrics_url(run)).json()
    assert answer["metrics"]["loss"]["values"] == [0.9, 0.7, 0.5]
    assert answer["metrics"]["loss"]["steps"] == [0, 1, 2]
    assert answer["metrics"]["loss"]["times"] == [10.0, 11.0, 12.0]
    assert answer["metrics"]["accuracy"]["steps"] == [0, 1]
    assert answer["metrics"]["per_class"]["rows"][0]["cells"] == {
        "cls": 3,
        "precision": 0.9,
        "label": "heron",
    }
    assert answer["tags"]["lr"] == "0.01"
    summary = client.get(metrics_url(run) + "/summary").json()
    loss = next(s for s in summary["series"] if s["name"] == "loss")
    assert (loss["count"], loss["last_value"], loss["min_value"], loss["description"]) == (
        3,
        0.5,
        0.5,
        "training loss",
    )


def test_small_batches_append_in_order_and_steps_continue(run_and_token):
    run, token = run_and_token
    client = api_client(token)
    for start in range(0, 50, 5):
        assert (
            post_batch(client, run, series_body("loss", [float(v) for v in range(start, start + 5)])).status_code == 200
        )
    answer = client.get(metrics_url(run), {"name": "loss"}).json()
    assert answer["metrics"]["loss"]["values"] == [float(v) for v in range(50)]
    assert answer["metrics"]["loss"]["steps"] == list(range(50))
    # Small batches share a chunk instead of leaving one row per request.
    assert MetricChunk.objects.filter(series__run=run).count() == 1


def test_a_hundred_thousand_points_in_one_request(run_and_token):
    run, token = run_and_token
    values = [math.sin(i / 100) for i in range(100_000)]
    response = post_batch(api_client(token), run, series_body("wave", values))
    assert response.status_code == 200
    series = MetricSeries.objects.get(run=run, name="wave")
    assert series.count == 100_000
    assert series.last_value == values[-1]


def test_ranks_are_kept_apart(run_and_token):
    run, token = run_and_token
    client = api_client(token)
    post_batch(client, run, series_body("loss", [1.0, 2.0], rank=0))
    post_batch(client, run, series_body("loss", [5.0], rank=1))
    assert client.get(metrics_url(run), {"rank": 1}).json()["metrics"]["loss"]["values"] == [5.0]
    assert client.get(metrics_url(run)).json()["metrics"]["loss"]["values"] == [1.0, 2.0]
    assert client.get(metrics_url(run) + "/summary").json()["ranks"] == [0, 1]


def test_chart_data_is_downsampled_and_keeps_the_ends(run_and_token):
    run, token = run_and_token
    client = api_client(token)
    values = [float((i * 7919) % 1000) for i in range(20_000)]
    post_batch(client, run, series_body("noisy", values))
    answer = client.get(metrics_url(run) + "/chart", {"points": 500}).json()
    (series,) = answer["series"]
    assert series["count"] == 20_000
    assert len(series["values"]) == 500
    assert series["x"][0] == 0 and series["x"][-1] == 19_999
    assert series["values"][-1] == values[-1]
    by_time = client.get(metrics_url(run) + "/chart", {"points": 500, "x": "time"}).json()
    assert by_time["x"] == "time" and len(by_time["series"][0]["x"]) == 500


def test_steps_out_of_order_are_charted_sorted(run_and_token):
    run, token = run_and_token
    client = api_client(token)
    post_batch(client, run, series_body("val_loss", [3.0, 1.0, 2.0], steps=[30, 10, 20]))
    (series,) = client.get(metrics_url(run) + "/chart").json()["series"]
    assert series["x"] == [10, 20, 30]
    assert series["values"] == [1.0, 2.0, 3.0]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            '{"metrics": [{"name": "loss", "values": [0.5, NaN]}]}',
            services.NOT_FINITE.format(name="loss", value="nan", index=1),
        ),
        (
            '{"metrics": [{"name": "loss", "values": [Infinity]}]}',
            services.NOT_FINITE.format(name="loss", value="inf", index=0),
        ),
        (
            '{"metrics": [{"name": "loss", "values": [-Infinity]}]}',
            services.NOT_FINITE.format(name="loss", value="-inf", index=0),
        ),
        (
            '{"metrics": [{"name": "loss", "values": [0.5, "0.4"]}]}',
            services.NOT_A_NUMBER.format(name="loss", value="0.4", index=1, kind="a string"),
        ),
        (
            '{"metrics": [{"name": "loss", "values": [true]}]}',
            services.NOT_A_NUMBER.format(name="loss", value=True, index=0, kind="a boolean"),
        ),
        (
            '{"metrics": [{"name": "loss", "values": [null]}]}',
            services.NOT_A_NUMBER.format(name="loss", value=None, index=0, kind="null"),
        ),
        (
            '{"metrics": [{"name": "loss", "values": 0.5}]}',
            services.BAD_LIST.format(name="loss", field="values"),
        ),
        (
            '{"metrics": [{"name": "loss", "values": [1.0], "steps": [1.5]}]}',
            services.BAD_STEP.format(name="loss", value=1.5, index=0),
        ),
        (
            '{"metrics": [{"name": "loss", "values": [1.0], "steps": [-1]}]}',
            services.BAD_STEP.format(name="loss", value=-1, index=0),
        ),
        (
            '{"metrics": [{"name": "loss", "values": [1.0, 2.0], "steps": [1]}]}',
            services.LENGTHS_DIFFER.format(name="loss", field="steps", got=1, expected=2),
        ),
        (
            '{"metrics": [{"name": "", "values": [1.0]}]}',
            services.BAD_NAME.format(got="a name of 0 characters"),
        ),
        ('{"metrics": [{"name": 7, "values": [1.0]}]}', services.BAD_NAME.format(got="int")),
        (
            '{"tags": {"lr": 0.01}}',
            services.TAG_NOT_STRING.format(key="lr", kind="float", limit=5000),
        ),
        ('{"rank": -1}', services.BAD_RANK.format(got=-1)),
        ('{"loss": 0.5}', services.BAD_BODY),
        ("[1, 2]", services.BAD_BODY),
    ],
)
def test_bad_input_gets_a_clear_400(run_and_token, body, expected):
    run, token = run_and_token
    response = post_batch(api_client(token), run, body)
    assert response.status_code == 400
    assert detail(response) == expected
    assert not MetricSeries.objects.filter(run=run, count__gt=0).exists()


def test_a_huge_name_is_refused(run_and_token):
    run, token = run_and_token
    response = post_batch(api_client(token), run, series_body("x" * 256, [1.0]))
    assert response.status_code == 400
    assert detail(response) == services.BAD_NAME.format(got="a name of 256 characters")
    assert post_batch(api_client(token), run, series_body("x" * 255, [1.0])).status_code == 200


def test_broken_json_is_named(run_and_token):
    run, token = run_and_token
    response = post_batch(api_client(token), run, '{"metrics": [')
    assert response.status_code == 400
    assert detail(response).startswith("The body is not valid JSON")


def test_a_table_and_a_metric_cannot_share_a_name(run_and_token):
    run, token = run_and_token
    client = api_client(token)
    post_batch(client, run, series_body("per_class", [1.0]))
    response = post_batch(client, run, {"rows": [{"name": "per_class", "cells": {"a": 1}}]})
    assert response.status_code == 400
    assert detail(response) == services.KIND_CONFLICT.format(name="per_class", existing="a metric (run.log)")


def test_per_run_limits_are_enforced(run_and_token, monkeypatch):
    run, token = run_and_token
    client = api_client(token)
    monkeypatch.setattr(limits, "MAX_POINTS_PER_RUN", 10)
    monkeypatch.setattr(limits, "MAX_NAMES_PER_RUN", 2)
    assert post_batch(client, run, series_body("a", [1.0] * 8)).status_code == 200
    too_many = post_batch(client, run, series_body("a", [1.0] * 3))
    assert too_many.status_code == 400
    assert detail(too_many) == services.TOO_MANY_POINTS.format(run_id=run.run_id, total=11, limit=10)
    assert post_batch(client, run, series_body("b", [1.0])).status_code == 200
    third_name = post_batch(client, run, series_body("c", [1.0]))
    assert detail(third_name) == services.TOO_MANY_NAMES.format(run_id=run.run_id, total=3, limit=2)
    assert MetricSeries.objects.get(run=run, name="a").count == 8


def test_a_request_past_the_size_limit_is_refused(run_and_token, monkeypatch):
    run, token = run_and_token
    monkeypatch.setattr(limits, "MAX_BODY_BYTES", 1000)
    response = post_batch(api_client(token), run, series_body("loss", [0.123456789] * 200))
    assert response.status_code == 400
    assert detail(response) == services.BODY_TOO_LARGE.format(limit=1000)


# ---------------------------------------------------------------- who may


def test_a_reader_cannot_write_metrics(workspace, reader, run_and_token):
    run, _ = run_and_token
    response = post_batch(api_client(issue_token(workspace, reader)), run, series_body("loss", [1.0]))
    assert response.status_code == 403
    from trainhub.workspaces.permissions import READ_ONLY_MESSAGE

    assert detail(response) == READ_ONLY_MESSAGE
    assert not MetricSeries.objects.filter(run=run).exists()


def test_a_reader_can_read_metrics(workspace, reader, run_and_token):
    run, token = run_and_token
    post_batch(api_client(token), run, series_body("loss", [1.0]))
    client = api_client(issue_token(workspace, reader))
    assert client.get(metrics_url(run)).json()["metrics"]["loss"]["values"] == [1.0]


def test_a_contributor_can_log_to_a_finished_run(workspace, contributor, run_and_token):
    run, _ = run_and_token
    Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)
    response = post_batch(api_client(issue_token(workspace, contributor)), run, series_body("test_acc", [0.93]))
    assert response.status_code == 200


def test_a_run_token_speaks_for_its_own_run_only(workspace, run_and_token):
    run, token = run_and_token
    other, _ = running_run(workspace, experiment="other")
    response = post_batch(api_client(token), other, series_body("loss", [1.0]))
    assert response.status_code == 404
    assert api_client(token).get(metrics_url(other)).status_code == 404


def test_a_run_token_still_sends_shortly_after_the_run_ended(run_and_token):
    from django.utils import timezone

    run, token = run_and_token
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, ended_at=timezone.now())
    assert post_batch(api_client(token), run, series_body("loss", [1.0])).status_code == 200
    Run.objects.filter(pk=run.pk).update(
        ended_at=timezone.now() - timezone.timedelta(seconds=limits.RUN_TOKEN_GRACE_SECONDS + 5)
    )
    assert post_batch(api_client(token), run, series_body("loss", [1.0])).status_code == 401


@pytest.mark.parametrize("suffix", ["", "/summary", "/chart"])
def test_outsiders_get_404_from_every_endpoint(other_workspace, outsider, run_and_token, suffix):
    run, _ = run_and_token
    client = api_client(issue_token(other_workspace, outsider))
    assert client.get(metrics_url(run) + suffix).status_code == 404
    from django.test import Client

    session = Client()
    session.force_login(outsider)
    assert session.get(metrics_url(run) + suffix).status_code == 404


def test_outsiders_cannot_write(other_workspace, outsider, run_and_token):
    run, _ = run_and_token
    response = post_batch(api_client(issue_token(other_workspace, outsider)), run, series_body("loss", [1.0]))
    assert response.status_code == 404
    assert not MetricSeries.objects.filter(run=run).exists()


@pytest.mark.parametrize("suffix", ["", "/summary", "/chart"])
def test_anonymous_callers_get_401(run_and_token, suffix):
    run, _ = run_and_token
    from django.test import Client

    assert Client().get(metrics_url(run) + suffix).status_code == 401
    assert post_batch(Client(), run, series_body("loss", [1.0])).status_code == 401


def test_a_revoked_looking_token_is_refused(run_and_token):
    run, _ = run_and_token
    response = post_batch(api_client("thr_not-a-real-token"), run, series_body("loss", [1.0]))
    assert response.status_code == 401
    assert json.loads(response.content)["code"] == "invalid_token"
