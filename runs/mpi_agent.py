"""Open MPI's remote-launch agent for TrainHub (used instead of ssh): asks node 0, over the unix
socket it serves in the run's folder (runs/mpi_relay.py), to have the node named
`trainhub-node-<rank>` start the daemon command, and waits for it to end.

Run by mpirun inside the run's box, as `python -I -S`: the standard library only, and no
credential (node 0 relays the request over Redis with its own).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

HOST_PREFIX = "trainhub-node-"
SOCKET_VARIABLE = "TRAINHUB_MPI_AGENT_SOCKET"
FAILED = 255


def main(argv: list[str]) -> int:
    while argv and argv[0].startswith("-"):
        argv = argv[1:]
    if len(argv) < 2 or not argv[0].startswith(HOST_PREFIX) or not argv[0][len(HOST_PREFIX) :].isdigit():
        print(f"trainhub mpi agent: cannot launch on {argv[:1]}", file=sys.stderr)
        return FAILED
    node_rank = int(argv[0][len(HOST_PREFIX) :])
    path = os.environ[SOCKET_VARIABLE]
    # Hanging up is how the agent says "stop the daemon" when mpirun stops it.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: sys.exit(128 + signum))
    # A unix socket's path may hold 107 bytes, the run's folder can be deeper: connect from inside it.
    os.chdir(os.path.dirname(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as relay:
        relay.connect(os.path.basename(path))
        request = {"node_rank": node_rank, "command": " ".join(argv[1:])}
        relay.sendall(json.dumps(request).encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = relay.recv(64)
            if not chunk:
                print("trainhub mpi agent: node 0 ended the launch", file=sys.stderr)
                return FAILED
            answer += chunk
    return int(answer)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
