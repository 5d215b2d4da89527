"""Runs one rank in a container and behaves like the rank's process (see runs/containers.py).

Started by the node's supervisor (for an MPI rank, by runs/container_relay.py on the rank's
request) with the body of the container's create request in TRAINHUB_CONTAINER_SPEC: creates and
starts the container, copies its output to stdout as it comes, and exits with its exit code.
SIGTERM (cancel, a failed peer, the node stopping or dying) stops the container, which is then
removed either way.

Standard library only, and run with -S: it talks to the engine's Engine API (HTTP and JSON, over
its unix socket or DOCKER_HOST) itself, since importing the Docker SDK took about half of a
container's start overhead.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sys
import threading
from typing import Any
from urllib.parse import quote, urlencode, urlparse

STOP_SECONDS = 2
DEFAULT_SOCKET = "/var/run/docker.sock"
# Long enough for an engine busy building images; logs and wait have none (a run lasts).
REQUEST_TIMEOUT_SECONDS = 600
# A frame of a multiplexed (no TTY) log stream: stream type, three zero bytes, payload size.
FRAME_HEADER_BYTES = 8


class EngineError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"Docker engine answered {status}: {message}")
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def _connection(timeout: float | None) -> http.client.HTTPConnection:
    host = os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    if host.startswith("unix://"):
        return _UnixConnection(host.removeprefix("unix://"), timeout)
    parsed = urlparse(host)
    return http.client.HTTPConnection(parsed.hostname or "localhost", parsed.port or 2375, timeout=timeout)


def request(
    method: str, path: str, body: Any = None, *, timeout: float | None = REQUEST_TIMEOUT_SECONDS
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """One Engine API request on a connection of its own (the stop comes from another thread)."""
    connection = _connection(timeout)
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    connection.request(method, path, body=data, headers=headers)
    response = connection.getresponse()
    if response.status >= 400:
        text = response.read().decode(errors="replace")
        connection.close()
        try:
            text = json.loads(text).get("message", text)
        except ValueError:
            pass
        raise EngineError(response.status, text)
    return connection, response


def call(method: str, path: str, body: Any = None, *, timeout: float | None = REQUEST_TIMEOUT_SECONDS) -> Any:
    connection, response = request(method, path, body, timeout=timeout)
    try:
        text = response.read()
    finally:
        connection.close()
    return json.loads(text) if text.strip() else None


def attach(container: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """The container's stdout and stderr as they come, attached before it starts: following its
    logs instead lost the last lines now and then (the follow ended with the container, before the
    log file was read to its end)."""
    query = urlencode({"stream": 1, "stdout": 1, "stderr": 1})
    return request("POST", f"/containers/{container}/attach?{query}", timeout=None)


def copy_output(response: http.client.HTTPResponse, out: Any) -> None:
    """Frames of the multiplexed stream (no TTY) until the container ends, in the order they came."""
    while True:
        header = response.read(FRAME_HEADER_BYTES)
        if len(header) < FRAME_HEADER_BYTES:
            return
        payload = response.read(int.from_bytes(header[4:], "big"))
        out.write(payload)
        out.flush()


def main() -> int:
    spec = json.loads(os.environ["TRAINHUB_CONTAINER_SPEC"])
    stopping = threading.Event()
    created: list[str] = []

    def stop_container() -> None:
        try:
            call("POST", f"/containers/{created[0]}/stop?t={STOP_SECONDS}")
        except (OSError, EngineError):
            pass  # it ended meanwhile, or the node removed it

    def stop(_signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            if created:
                threading.Thread(target=stop_container, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        created.append(call("POST", "/containers/create", spec)["Id"])
    except EngineError as error:
        print(f"TrainHub could not create the rank's container: {error}", file=sys.stderr, flush=True)
        return 125
    container = quote(created[0])
    try:
        if stopping.is_set():
            return 128 + signal.SIGTERM
        connection, output = attach(container)
        try:
            call("POST", f"/containers/{container}/start")
            copy_output(output, sys.stdout.buffer)
        finally:
            connection.close()
        return int(call("POST", f"/containers/{container}/wait", timeout=None)["StatusCode"])
    finally:
        try:
            call("DELETE", f"/containers/{container}?force=1")
        except (OSError, EngineError):
            pass  # the node removed it already (the run ended or was canceled meanwhile)


if __name__ == "__main__":
    sys.exit(main())
