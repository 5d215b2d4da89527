"""Node 0's end of the MPI launch agent: a unix socket in the run's folder, where only that run
sees it, through which runs/mpi_agent.py (inside the run's box) asks for Open MPI's daemon on
another node of the run. Node 0 relays each request to that node over Redis with its own
credential, and the daemon's exit code back; the box never holds a Redis credential.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import uuid
from pathlib import Path

import redis

from runs.mpi_agent import FAILED
from runs.run_socket import RunSocket
from trainhub import redis_keys

logger = logging.getLogger(__name__)

SOCKET_NAME = ".trainhub-mpi.sock"
MAX_REQUEST_BYTES = 64 * 1024


class MpiRelay:
    """Serves `folder/SOCKET_NAME` for run `run_pk` until `close()`. A request names a node rank
    (1 … node_count - 1) and the command for it; the answer is the command's exit code. When the
    agent goes away first (mpirun stops it), the daemon on that node is stopped."""

    def __init__(self, run_pk: int, node_count: int, folder: Path, connection: redis.Redis):
        self.run_pk = run_pk
        self.node_count = node_count
        self.redis = connection
        self.socket = RunSocket(folder, SOCKET_NAME, self._serve, f"mpi-relay-{run_pk}")
        self.path, self.closed = self.socket.path, self.socket.closed

    def close(self) -> None:
        self.socket.close()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                node_rank, command = self._read_request(connection)
            except (OSError, ValueError) as error:
                logger.warning("run %s: refused an MPI agent request: %s", self.run_pk, error)
                self._answer(connection, FAILED)
                return
            request_id = uuid.uuid4().hex
            queue = redis_keys.run_mpi_requests(self.run_pk, node_rank)
            self.redis.rpush(queue, json.dumps({"id": request_id, "command": command}))
            while not self.closed.is_set():
                # Well under redis-py's 5 s socket timeout: a 5 s BLPOP raced it and failed long MPI runs.
                answer = self.redis.blpop([redis_keys.run_mpi_result(self.run_pk, request_id)], timeout=1)
                if answer is not None:
                    self._answer(connection, int(answer[1]))
                    return
                if _hung_up(connection):
                    self.redis.rpush(queue, json.dumps({"id": request_id, "kill": True}))
                    return

    def _read_request(self, connection: socket.socket) -> tuple[int, str]:
        data = b""
        while not data.endswith(b"\n"):
            chunk = connection.recv(4096)
            if not chunk:
                raise ValueError("the agent hung up before its request was whole")
            data += chunk
            if len(data) > MAX_REQUEST_BYTES:
                raise ValueError("request too long")
        request = json.loads(data)
        if not isinstance(request, dict):
            raise ValueError("not a JSON object")
        node_rank, command = request.get("node_rank"), request.get("command")
        if not isinstance(node_rank, int) or not 0 < node_rank < self.node_count:
            raise ValueError(f"no node rank {node_rank!r} in this run")
        if not isinstance(command, str) or not command:
            raise ValueError("no command")
        return node_rank, command

    @staticmethod
    def _answer(connection: socket.socket, code: int) -> None:
        try:
            connection.sendall(f"{code}\n".encode())
        except OSError:
            pass


def _hung_up(connection: socket.socket) -> bool:
    """The agent closed its end (it sends nothing after its request)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
