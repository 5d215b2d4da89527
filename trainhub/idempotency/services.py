"""Answering a POST that carries an `Idempotency-Key` once: a repeat gets the first answer.

The answer is kept in the database, in the transaction of what it answers, rather than in Redis:
the key then exists exactly when what it protects was stored. With Redis, a key written after the
commit leaves a window (a crash, a lost connection) in which a retry stores the batch again, and
one written before leaves a key whose work was rolled back. A retry arriving while the first
attempt is still being processed (a client that timed out) waits on the key's unique index, and
answers from the first attempt's row once that commits. Answers are kept for
TRAINHUB_IDEMPOTENCY_SECONDS (a day by default); older ones are deleted as new keys arrive.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from trainhub.idempotency.models import IdempotentAnswer

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")
BAD_KEY = "An Idempotency-Key is 1 to 255 letters, digits, '-', '_', '.' or ':'."
KEY_REUSED = "This Idempotency-Key was already used for another request; send each new request with a key of its own."
SWEEP_EVERY_SECONDS = 60.0

_last_sweep = 0.0


def request_key(request: HttpRequest) -> str | None:
    """The request's idempotency key (None without one); a malformed one is refused."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not KEY_PATTERN.match(key):
        raise ValidationError(BAD_KEY, code="idempotency_key")
    return key


def _expired_before() -> Any:
    return timezone.now() - timedelta(seconds=settings.TRAINHUB_IDEMPOTENCY_SECONDS)


def _sweep() -> None:
    """Delete expired answers, at most once a minute per process."""
    global _last_sweep
    now = time.monotonic()
    if now - _last_sweep < SWEEP_EVERY_SECONDS:
        return
    _last_sweep = now
    IdempotentAnswer.objects.filter(created_at__lt=_expired_before()).delete()


def answer_once(
    *,
    request: HttpRequest,
    workspace: Any,
    scope: str,
    body: bytes,
    produce: Callable[[], tuple[int, Any]],
) -> tuple[int, Any]:
    """(status, JSON answer) of `produce`, run at most once per key: a request with a key already
    answered in this workspace, scope and by this user gets the kept answer; the same key with
    another body is refused. Without a key, `produce` runs as it is. An exception in `produce`
    keeps nothing (its transaction is rolled back with the key), so the retry does the work."""
    key = request_key(request)
    if key is None:
        return produce()
    scope = f"{scope}:user-{request.user.pk}"
    fingerprint = hashlib.sha256(body).hexdigest()
    _sweep()
    here = IdempotentAnswer.objects.filter(workspace=workspace, scope=scope, key=key)
    with transaction.atomic():
        try:
            with transaction.atomic():
                row = here.create(workspace=workspace, scope=scope, key=key, fingerprint=fingerprint)
        except IntegrityError:
            kept = here.get()
            if kept.created_at >= _expired_before():
                if kept.fingerprint != fingerprint:
                    raise ValidationError(KEY_REUSED, code="idempotency_key_reused") from None
                return kept.status, kept.answer
            kept.delete()  # expired and not swept yet: the key starts afresh
            row = here.create(workspace=workspace, scope=scope, key=key, fingerprint=fingerprint)
        status, answer = produce()
        row.status, row.answer = status, answer
        row.save(update_fields=["status", "answer"])
    return status, answer
