"""Issue 16, "each run in its own box", for MPI launches in Docker environments: mpirun and Open MPI's
daemons once ran on the hosts as root and every rank's container as root, talking PMIx to them.
Now they run in the run's box and every rank container as the run's uid; a rank asks its node for
its container through a relay that takes the rank's Open MPI variables and nothing else."""

from __future__ import annotations

import datetime
import json
import os
import socket
import textwrap
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from runs.container_agent import EXIT, FRAME_HEADER_BYTES, read_exactly
from runs.container_relay import MAX_REQUEST_BYTES, REFUSED, REQUEST_SECONDS, SOCKET_NAME, ContainerRelay
from runs.models import Run
from tests.docker.conftest import docker_engine, log_lines, run_containers, site_client, submit, ws  # noqa: F401
from tests.docker.test_docker_launches import mpi_config, mpi_env, site  # noqa: F401
from tests.helpers.processes import run_folder, wait_until
from trainhub.sandbox import box_uid

pytestmark = pytest.mark.slow

# Requests a hostile rank (or anything else of the run) could send the node instead of its own.
FORGED = {
    "another image": {"variables": {}, "Image": "trainhub/python:3.11-bookworm"},
    "extra mounts": {"variables": {}, "Binds": ["/:/host:rw"]},
    "privileged flags": {"variables": {}, "HostConfig": {"Privileged": True, "CapAdd": ["ALL"]}, "User": "0:0"},
    "a variable outside the prefixes": {"variables": {"OMPI_COMM_WORLD_RANK": "0", "LD_PRELOAD": "/tmp/evil.so"}},
    "a huge request": {"variables": {"OMPI_MCA_padding": "x" * (16 * MAX_REQUEST_BYTES)}},
    "one container more": {"variables": {"OMPI_COMM_WORLD_RANK": "0", "PMIX_SERVER_TMPDIR": "/"}},
}

# Each rank says who it runs as and tries the site's secrets; rank 0 sends the node every forged
# request through the relay's socket in the run folder (which its container sees), then the ranks
# wait for the test to look at the node's processes.
ATTACK = """
    import json, os, socket, sys, time
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    print(f"rank {rank} uid={os.getuid()} gid={os.getgid()} groups={os.getgroups()}", flush=True)
    for path in sys.argv[1:]:
        try:
            with open(path, "rb") as handle:
                print(f"rank {rank} READ {path}: {handle.read(64)!r}", flush=True)
        except OSError as error:
            print(f"rank {rank} cannot read {path}: {error.strerror}", flush=True)
    try:
        socket.socket(socket.AF_UNIX).connect("/var/run/docker.sock")
        print(f"rank {rank} REACHED the Docker engine", flush=True)
    except OSError as error:
        print(f"rank {rank} no Docker engine: {error.strerror}", flush=True)

    def answer(relay):
        data = b""
        while True:
            try:
                chunk = relay.recv(65536)
            except OSError:  # the node closed on what it did not read
                chunk = b""
            if not chunk:
                return data
            data += chunk

    if rank == 0:
        with open("forged.json") as handle:
            forged = json.load(handle)
        for name, request in forged.items():
            with socket.socket(socket.AF_UNIX) as relay:
                relay.connect("SOCKET_NAME")
                try:
                    relay.sendall(json.dumps(request).encode() + b"\\n")
                except OSError as error:
                    print(f"FORGED {name}: the node hung up while it was sent ({error.strerror})", flush=True)
                print(f"FORGED {name}: {answer(relay)!r}", flush=True)
    MPI.COMM_WORLD.Barrier()
    print(f"rank {rank} waiting", flush=True)
    for _ in range(1200):
        if os.path.exists("go"):
            break
        time.sleep(0.1)
    MPI.COMM_WORLD.Barrier()
""".replace("SOCKET_NAME", SOCKET_NAME)


def exit_frame(code: int) -> bytes:
    return EXIT + len(str(code)).to_bytes(4, "big") + str(code).encode()


def launcher_processes(run_id: str) -> dict[int, tuple[str, int]]:
    """mpirun and Open MPI's daemons of the run on this machine: pid -> (name, uid)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as handle:
                name = handle.read().strip()
            if name not in ("mpirun", "orted"):
                continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                variables = handle.read().split(b"\0")
            with open(f"/proc/{entry}/status") as handle:
                uid = next(int(line.split()[1]) for line in handle if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if any(v.startswith(b"TRAINHUB_MPI_RANK_DIR=") and v.endswith(f"/{run_id}".encode()) for v in variables):
            found[int(entry)] = (name, uid)
    return found


def test_the_relay_refuses_a_forged_request_and_starts_nothing(db, tmp_path):
    """The node's end of the relay, spoken to directly as anything of a run could: each forged
    request, and one that never ends, gets the refusal and exit code 125, and no container helper
    was started. Also the first
    test of the module to ask for `db`, so that the test database exists for the site."""
    folder = tmp_path / "run"
    folder.mkdir()
    relay = ContainerRelay(run_pk=1, folder=folder, spec={"Image": "never-started"}, tmp=tmp_path, ranks=0)
    try:
        for name, request in [*FORGED.items(), ("not JSON", "OMPI_X=1")]:
            with socket.socket(socket.AF_UNIX) as agent:
                agent.connect(str(folder / SOCKET_NAME))
                data = (request if isinstance(request, str) else json.dumps(request)).encode() + b"\n"
                try:
                    agent.sendall(data)
                except OSError:
                    assert len(data) > MAX_REQUEST_BYTES, name  # the node hung up on a request too long
                header = read_exactly(agent, FRAME_HEADER_BYTES)
                message = read_exactly(agent, int.from_bytes(header[1:], "big"))
                assert message.startswith(b"TrainHub refused the rank's container request: "), (name, message)
                assert read_exactly(agent, FRAME_HEADER_BYTES + 3) == exit_frame(REFUSED), name
        with socket.socket(socket.AF_UNIX) as agent:
            agent.connect(str(folder / SOCKET_NAME))
            agent.sendall(b'{"variables": {}')  # and never the rest
            assert f"no whole request within {REQUEST_SECONDS} s".encode() in agent.recv(4096)
        assert relay.helpers == []
    finally:
        relay.close()
    assert not Path(folder / SOCKET_NAME).exists()


def test_a_docker_mpi_rank_runs_as_the_runs_uid_sees_no_secret_and_cannot_forge_its_container(
    site,  # noqa: F811
    ws,  # noqa: F811
    mpi_env,  # noqa: F811
    tmp_path,
):
    """An MPI run of two nodes in a Docker environment: each rank container runs as the run's uid
    (not 0), reads neither the secret key nor the database, reaches no Docker engine; mpirun and
    Open MPI's daemon run as that uid too; every forged relay request (another image, extra mounts,
    privileged flags, a variable outside Open MPI's prefixes, a huge request, a container beyond
    the node's ranks) is refused with a reason; the engine created exactly one container per rank,
    and the run completes."""
    from trainhub.sdk.runconfig import MpiConfiguration

    source = tmp_path / "attack"
    source.mkdir()
    (source / "attack.py").write_text(textwrap.dedent(ATTACK))
    (source / "forged.json").write_text(json.dumps(FORGED))
    targets = [str(settings.DATA_DIR / "secret_key"), str(connection.settings_dict["NAME"])]
    client = site_client()
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    run = submit(
        ws,
        mpi_env,
        source,
        "attack.py",
        arguments=targets,
        distributed_job_config=MpiConfiguration(node_count=2, process_count_per_node=1),
    )
    wait_until(
        lambda: sum(" waiting" in line for line in log_lines(site, run, "std_log_process_")) == 2,
        240,
        message="both ranks to wait",
    )
    launchers = launcher_processes(run.id)
    with site.blocker.unblock():
        uid = box_uid("run", Run.objects.get(run_id=run.id).pk)
        (run_folder(run.id) / "go").touch()
        (run_folder(run.id, 1) / "go").touch()
    details = run.wait_for_completion(raise_on_error=False)
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
    lines = log_lines(site, run)
    assert details["status"] == "Completed", "\n".join(lines[-60:])

    assert sorted(name for name, _ in launchers.values()) == ["mpirun", "orted"], launchers
    assert {owner for _, owner in launchers.values()} == {uid}, f"mpirun and orted run as {launchers}, not {uid}"
    for rank in (0, 1):
        said = [line for line in log_lines(site, run, f"std_log_process_{rank}") if line.startswith(f"rank {rank}")]
        assert any(line.startswith(f"rank {rank} uid={uid} gid={uid} ") for line in said), said
        for target in targets:
            assert any(line.startswith(f"rank {rank} cannot read {target}: ") for line in said), said
        assert any(line.startswith(f"rank {rank} no Docker engine: ") for line in said), said
    assert uid != 0
    text = "\n".join(lines)
    assert settings.SECRET_KEY not in text and "READ" not in text and "REACHED" not in text

    forged = {line.split(":", 1)[0].removeprefix("FORGED "): line for line in lines if line.startswith("FORGED ")}
    assert sorted(forged) == sorted(FORGED), lines
    for line in forged.values():
        assert "refused the rank's container request" in line and repr(exit_frame(REFUSED))[2:-1] in line, line
    assert "every rank of this node has its container already" in forged["one container more"]
    assert "not ['Image', 'variables']" in forged["another image"]
    assert "'LD_PRELOAD' is not one of Open MPI's" in forged["a variable outside the prefixes"]
    assert f"at most {MAX_REQUEST_BYTES} bytes" in forged["a huge request"]

    created = client.events(
        since=since, until=until, decode=True, filters={"event": "create", "label": f"trainhub.run={run.id}"}
    )
    assert len([event for event in created if event.get("Type") == "container"]) == 2, "one container per rank"
    assert run_containers(client, run.id) == []
