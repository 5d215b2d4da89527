"""The rank Open MPI starts in a Docker MPI run: asks its node, over the unix socket the node serves
in the run's folder (runs/container_relay.py), for the rank's container, copies the container's
output to stdout and exits with its exit code.

Run by Open MPI's daemon (or mpirun) inside the run's box, as `python -I -S`: the standard library
only, and no access to the Docker engine. The request carries only what the node cannot know, the
rank's Open MPI and PMIx variables; the node builds the container itself. Hanging up (on SIGTERM,
when mpirun stops the rank) is how the agent says "stop the container".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

SOCKET_VARIABLE = "TRAINHUB_MPI_CONTAINER_SOCKET"
# mpirun's daemons tell each rank who it is through these; only these reach the container.
FORWARDED_PREFIXES = ("OMPI_", "PMIX_", "OPAL_")
FAILED = 255
# An answer is frames: a kind byte, the payload's size (4 bytes, big-endian), the payload.
OUTPUT, EXIT = b"o", b"x"
FRAME_HEADER_BYTES = 5


def frame(kind: bytes, payload: bytes) -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


def read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(min(size - len(data), 65536))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def main() -> int:
    path = os.environ[SOCKET_VARIABLE]
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: sys.exit(128 + signum))
    variables = {name: value for name, value in os.environ.items() if name.startswith(FORWARDED_PREFIXES)}
    out = sys.stdout.buffer
    # A unix socket's path may hold 107 bytes, the run's folder can be deeper: connect from inside it.
    os.chdir(os.path.dirname(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as relay:
        relay.connect(os.path.basename(path))
        relay.sendall(json.dumps({"variables": variables}).encode() + b"\n")
        try:
            while True:
                header = read_exactly(relay, FRAME_HEADER_BYTES)
                payload = read_exactly(relay, int.from_bytes(header[1:], "big"))
                if header[:1] == EXIT:
                    return int(payload)
                out.write(payload)
                out.flush()
        except (EOFError, ConnectionError):
            print("trainhub container agent: the node ended the rank's container", file=sys.stderr)
            return FAILED


if __name__ == "__main__":
    sys.exit(main())
