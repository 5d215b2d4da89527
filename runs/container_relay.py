"""A node's end of a Docker MPI run's container agent: a unix socket in the run's folder through
which runs/container_agent.py (a rank Open MPI started in the run's box) asks for its container.

The request carries only the rank's Open MPI and PMIx variables (names checked against
FORWARDED_PREFIXES, the whole request against MAX_REQUEST_BYTES); everything else of the container
(image, command, user, mounts, the run's variables, labels) is the node's own spec for the run's
ranks on this node. The box's /tmp, where Open MPI's daemon keeps the job's session files, is the
container's /tmp: both run as the run's uid, so PMIx shares them without loosening their 0700. At
most one container per rank of this node is started; a refused request starts nothing. The node's
container helper (runs/container_rank.py) runs the container, its output goes back in frames, then
its exit code; the agent hanging up stops it.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from runs.container_agent import EXIT, FORWARDED_PREFIXES, OUTPUT, frame
from runs.containers import CONTAINER_RANK_ARGV, SOCKET_NAME, SPEC_VARIABLE
from runs.run_socket import RunSocket
from trainhub.sandbox import IDENTIFIER, start_unboxed

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
# The agent sends its request as soon as it connects: a connection that holds it back is refused.
REQUEST_SECONDS = 10
REFUSED = 125
REFUSED_MESSAGE = "TrainHub refused the rank's container request: {reason}\n"


class RequestRefused(ValueError):
    pass


def rank_spec(spec: dict[str, Any], variables: dict[str, str], tmp: Path) -> dict[str, Any]:
    """The node's container spec for a rank, with the rank's Open MPI variables and the box's /tmp."""
    host_config = dict(spec["HostConfig"], Binds=[*spec["HostConfig"]["Binds"], f"{tmp}:/tmp:rw"])
    return dict(
        spec, Env=[*spec["Env"], *(f"{name}={value}" for name, value in variables.items())], HostConfig=host_config
    )


def parse_request(data: bytes) -> dict[str, str]:
    """The rank's variables of a request, or RequestRefused saying why."""
    try:
        request = json.loads(data)
    except ValueError:
        raise RequestRefused("not JSON") from None
    if not isinstance(request, dict) or set(request) != {"variables"}:
        keys = sorted(request) if isinstance(request, dict) else type(request).__name__
        raise RequestRefused(f"a request holds 'variables' only, not {keys}")
    variables = request["variables"]
    if not isinstance(variables, dict):
        raise RequestRefused("'variables' is not an object")
    for name, value in variables.items():
        if not name.startswith(FORWARDED_PREFIXES) or not IDENTIFIER.match(name):
            raise RequestRefused(f"variable {name[:80]!r} is not one of Open MPI's ({', '.join(FORWARDED_PREFIXES)})")
        if not isinstance(value, str) or "\0" in value:
            raise RequestRefused(f"variable {name!r} has no text value")
    return variables


class ContainerRelay:
    """Serves `folder/SOCKET_NAME` until `close()`: up to `ranks` containers of `spec`, one per request."""

    def __init__(self, *, run_pk: int, folder: Path, spec: dict[str, Any], tmp: Path, ranks: int):
        self.run_pk = run_pk
        self.folder = folder
        self.spec = spec
        self.tmp = tmp
        self.slots = ranks
        self.lock = threading.Lock()
        self.helpers: list[subprocess.Popen] = []
        self.socket = RunSocket(folder, SOCKET_NAME, self._serve, f"container-relay-{run_pk}")
        self.path, self.closed = self.socket.path, self.socket.closed

    def close(self) -> None:
        """Stop listening and stop every container helper still running (the node then removes
        the run's containers by their labels)."""
        self.socket.close()
        with self.lock:
            helpers = list(self.helpers)
        for helper in helpers:
            if helper.poll() is None:
                helper.terminate()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                variables = parse_request(self._read_request(connection))
                helper = self._start(variables)
            except OSError:
                return  # the agent went away
            except RequestRefused as refused:
                logger.warning("run %s: refused a container request: %s", self.run_pk, refused)
                message = REFUSED_MESSAGE.format(reason=refused).encode()
                _send(connection, frame(OUTPUT, message) + frame(EXIT, str(REFUSED).encode()))
                return
            try:
                self._pump(helper, connection)
            finally:
                if helper.poll() is None:
                    helper.terminate()  # the helper stops the container
                helper.wait()
                assert helper.stdout is not None
                helper.stdout.close()
            _send(connection, frame(EXIT, str(helper.returncode).encode()))

    def _read_request(self, connection: socket.socket) -> bytes:
        data = b""
        connection.settimeout(REQUEST_SECONDS)
        while not data.endswith(b"\n"):
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                raise RequestRefused(f"no whole request within {REQUEST_SECONDS} s") from None
            if not chunk:
                raise RequestRefused("the agent hung up before its request was whole")
            data += chunk
            if len(data) > MAX_REQUEST_BYTES:
                raise RequestRefused(f"a request is at most {MAX_REQUEST_BYTES} bytes")
        connection.settimeout(None)
        return data

    def _start(self, variables: dict[str, str]) -> subprocess.Popen:
        with self.lock:
            if self.closed.is_set():
                raise RequestRefused("the run's processes on this node have ended")
            if self.slots <= 0:
                raise RequestRefused("every rank of this node has its container already")
            self.slots -= 1
            env = {SPEC_VARIABLE: json.dumps(rank_spec(self.spec, variables, self.tmp))}
            env |= {name: os.environ[name] for name in ("PATH", "DOCKER_HOST") if name in os.environ}
            helper = start_unboxed(
                CONTAINER_RANK_ARGV,
                env,
                self.folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.helpers.append(helper)
            return helper

    def _pump(self, helper: subprocess.Popen, connection: socket.socket) -> None:
        """The container's output to the agent until it ends, or until the agent hangs up."""
        assert helper.stdout is not None
        output = helper.stdout.fileno()
        watched: list[int | socket.socket] = [output, connection]
        while True:
            readable, _, _ = select.select(watched, [], [], 1)
            if self.closed.is_set():
                return
            if connection in readable and _hung_up(connection):
                return
            if output in readable:
                data = os.read(output, 65536)
                if not data:
                    return
                if not _send(connection, frame(OUTPUT, data)):
                    return


def _send(connection: socket.socket, data: bytes) -> bool:
    try:
        connection.sendall(data)
        return True
    except OSError:
        return False


def _hung_up(connection: socket.socket) -> bool:
    """The agent closed its end (it sends nothing after its request); anything else it sends is dropped."""
    try:
        return connection.recv(4096) == b""
    except OSError:
        return True
