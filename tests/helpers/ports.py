"""Free TCP ports on the loopback interface."""

from __future__ import annotations

import socket

# Every port handed out by this process: the kernel may give the same free port twice in a row (as it
# did to a `make run` test's web server and its Redis, which then could not both listen), since the
# first is not bound until whoever it went to starts.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, and that this process has not handed out before."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
