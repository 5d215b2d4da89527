"""Idempotency keys on the server: a repeat gets the first answer, nothing is stored twice, a key
is bound to its request, its workspace and run, and expires."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from metrics.models import MetricSeries
from tests.conftest import api_client
from tests.metrics.builders import post_batch, running_run, series_body
from trainhub.idempotency import services
from trainhub.idempotency.models import IdempotentAnswer

pytestmark = pytest.mark.django_db


def stored(run) -> int:
    found = MetricSeries.objects.filter(run=run, name="loss").first()
    return found.count if found else 0


def test_a_batch_sent_twice_with_its_key_is_answered_twice_and_stored_once(workspace):
    run, token = running_run(workspace)
    client = api_client(token)
    body = series_body("loss", [0.9, 0.7])
    first = post_batch(client, run, body, HTTP_IDEMPOTENCY_KEY="batch-1")
    again = post_batch(client, run, body, HTTP_IDEMPOTENCY_KEY="batch-1")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == {"points": 2, "rows": 0, "tags": 0}
    assert stored(run) == 2
    post_batch(client, run, body)
    post_batch(client, run, body, HTTP_IDEMPOTENCY_KEY="batch-2")
    assert stored(run) == 6  # without a key, or with a new one, a batch is a new batch


def test_a_key_sent_with_another_body_is_refused_and_stores_nothing(workspace):
    run, token = running_run(workspace)
    client = api_client(token)
    post_batch(client, run, series_body("loss", [0.9]), HTTP_IDEMPOTENCY_KEY="k")
    refused = post_batch(client, run, series_body("loss", [0.1]), HTTP_IDEMPOTENCY_KEY="k")
    assert refused.status_code == 400
    assert refused.json()["detail"] == services.KEY_REUSED
    assert stored(run) == 1


def test_a_malformed_key_is_refused(workspace):
    run, token = running_run(workspace)
    refused = post_batch(api_client(token), run, series_body("loss", [0.9]), HTTP_IDEMPOTENCY_KEY="a b/c")
    assert refused.status_code == 400 and refused.json()["detail"] == services.BAD_KEY
    assert stored(run) == 0


def test_a_key_reaches_no_other_run_or_workspace(workspace, other_workspace, outsider):
    body = series_body("loss", [0.9])
    here, here_token = running_run(workspace)
    there, there_token = running_run(other_workspace, created_by=outsider)
    sibling, sibling_token = running_run(workspace, experiment="other")
    for run, token in ((here, here_token), (there, there_token), (sibling, sibling_token)):
        assert post_batch(api_client(token), run, body, HTTP_IDEMPOTENCY_KEY="same").status_code == 200
        assert stored(run) == 1
    assert IdempotentAnswer.objects.filter(key="same").count() == 3


@override_settings(TRAINHUB_IDEMPOTENCY_SECONDS=60)
def test_an_expired_key_counts_as_new(workspace):
    run, token = running_run(workspace)
    client = api_client(token)
    body = series_body("loss", [0.9])
    post_batch(client, run, body, HTTP_IDEMPOTENCY_KEY="old")
    IdempotentAnswer.objects.filter(key="old").update(created_at=timezone.now() - timedelta(seconds=61))
    assert post_batch(client, run, body, HTTP_IDEMPOTENCY_KEY="old").status_code == 200
    assert stored(run) == 2
    assert IdempotentAnswer.objects.filter(key="old").count() == 1
