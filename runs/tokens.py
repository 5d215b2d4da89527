"""A run's token: what its processes send to act as the run (and only it) on the server."""

from __future__ import annotations

import base64

from django.utils.crypto import salted_hmac

from trainhub.workspaces.selectors import RUN_TOKEN_PREFIX

RUN_TOKEN_KEY_SALT = "trainhub.runs.run_token"


def run_token(run_pk: int, token_salt: str) -> str:
    """The token of a run's dispatch: an HMAC of the secret key, which the server and every node
    hold, so a node derives it from the run's row and no token travels in a job or sits in Redis."""
    digest = salted_hmac(RUN_TOKEN_KEY_SALT, f"{run_pk}:{token_salt}", algorithm="sha256").digest()
    return RUN_TOKEN_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
