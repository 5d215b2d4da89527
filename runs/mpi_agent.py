"""Open MPI's remote-launch agent for TrainHub (used instead of ssh): asks the node named
`trainhub-node-<rank>` to start the daemon command, and waits for it to end.

Run as a plain script by mpirun on the run's first node; standard library and redis only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid

import redis

HOST_PREFIX = "trainhub-node-"


def request_key(run_pk: str, node_rank: int) -> str:
    return f"trainhub:run:{run_pk}:mpi:{node_rank}"


def result_key(run_pk: str, request_id: str) -> str:
    return f"trainhub:run:{run_pk}:mpi:result:{request_id}"


def main(argv: list[str]) -> int:
    while argv and argv[0].startswith("-"):
        argv = argv[1:]
    if len(argv) < 2 or not argv[0].startswith(HOST_PREFIX):
        print(f"trainhub mpi agent: cannot launch on {argv[:1]}", file=sys.stderr)
        return 255
    node_rank = int(argv[0][len(HOST_PREFIX):])
    run_pk = os.environ["TRAINHUB_MPI_RUN"]
    connection = redis.Redis.from_url(os.environ["TRAINHUB_MPI_REDIS_URL"])
    request_id = uuid.uuid4().hex
    command = " ".join(argv[1:])

    def on_term(signum, frame):
        connection.rpush(request_key(run_pk, node_rank), json.dumps({"id": request_id, "kill": True}))
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    connection.rpush(request_key(run_pk, node_rank), json.dumps({"id": request_id, "command": command}))
    while True:
        # Well under redis-py's 5 s socket timeout: a 5 s BLPOP raced it and failed long MPI runs.
        answer = connection.blpop([result_key(run_pk, request_id)], timeout=1)
        if answer is not None:
            return int(answer[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
