"""Runs one rank in a container and behaves like the rank's process (see runs/containers.py).

Started by the node's supervisor with the container's spec in TRAINHUB_CONTAINER_SPEC: creates and
starts the container, copies its output to stdout as it comes, and exits with its exit code.
SIGTERM (cancel, a failed peer, the node stopping or dying) stops the container, which is then
removed either way.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import docker
import docker.errors

STOP_SECONDS = 2
# mpirun's daemons tell each rank who it is through these; they reach the container too.
FORWARDED_PREFIXES = ("OMPI_", "PMIX_", "OPAL_")


def main() -> int:
    spec = json.loads(os.environ["TRAINHUB_CONTAINER_SPEC"])
    spec["environment"].update({k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)})
    client = docker.from_env(timeout=600)
    container = client.containers.create(**spec)
    stopping = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=container.stop, kwargs={"timeout": STOP_SECONDS}, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        container.start()
        out = sys.stdout.buffer
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            out.write(chunk)
            out.flush()
        return int(container.wait()["StatusCode"])
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass  # the node removed it already (the run ended or was canceled meanwhile)


if __name__ == "__main__":
    sys.exit(main())
