"""The scoring URL's path and the size of a body it takes, read by the proxy (endpoints/proxy.py),
which answers that URL before Django, and by daphne's request (trainhub/ops/request_limits.py),
which refuses a longer body while it arrives instead of reading all of it first. No Django here:
the request reads it before any application sees the request."""

from __future__ import annotations

import re
from urllib.parse import unquote

SCORE_PATH = re.compile(r"^/endpoints/([A-Za-z0-9][A-Za-z0-9_.-]{0,99})/([A-Za-z0-9][A-Za-z0-9_.-]{0,99})/score/?$")
TOO_LARGE = "The request is {size} bytes; an endpoint takes at most {limit}."
TOO_LARGE_SO_FAR = "The request is more than {limit} bytes, which is all an endpoint takes: it was cut off there."


def is_scoring_target(target: bytes) -> bool:
    """Whether a request line's target is the scoring URL, read as daphne hands it to the proxy: the
    query left out, percent-escapes decoded."""
    return SCORE_PATH.match(unquote(target.split(b"?", 1)[0].decode("ascii", "replace"))) is not None
