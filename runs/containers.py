"""Where a node starts a run's processes: on the node itself, or each in a container of the run's image.

A launcher turns a rank's argv and environment into the command the node starts under its
supervisor. For a Docker environment that command is runs/container_rank.py, which creates the
container through the engine's HTTP API, pumps its output to stdout (so the node reads logs exactly as
from a process), passes SIGTERM on as a container stop and exits with the container's code.

MPI launches run mpirun (node 0) and Open MPI's daemons (the other nodes) in the run's box, as
for any other environment: what they start for each rank is runs/container_agent.py, which asks its
node's ContainerRelay (runs/container_relay.py) for the rank's container, handing on only the
rank's Open MPI variables.

Containers share the node's network (rendezvous addresses and ports are the node's), see the
run's working folder (writable) and the run's own staged inputs (read-only) at the same paths as on
the node, and nothing else of it; each has its own IPC namespace and /dev/shm, runs as the run's
unprivileged uid (trainhub/sandbox.py: box_uid; the node's own where it is not root) with no capability
and no new privileges, and carries the labels LABEL_RUN and LABEL_NODE: the node removes
its run's containers when the run ends, its own when it stops, and the controller those of nodes
that are gone (a node killed outright).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

from runs.container_agent import SOCKET_VARIABLE
from runs.models import Run
from trainhub.compute.models import LIVE_NODE_STATES, Node, NodeState
from trainhub.environments.builders import MaterialisedEnvironment, uses_docker
from trainhub.environments.docker_builder import docker_client, engine_problem
from trainhub.sandbox import box_uid, node_is_root

LABEL_RUN = "trainhub.run"
LABEL_NODE = "trainhub.node"
# The rank a container runs (a per-node launcher's: its node's first rank), so the node finds the
# process tree whose CPU and memory it samples (runs/system_metrics.py).
LABEL_RANK = "trainhub.rank"
# Several TrainHub sites (a test session, a second install) can share one engine: each touches only
# its own containers, told apart by the folder its nodes work in.
LABEL_SITE = "trainhub.site"
CONTAINER_RANK = str(Path(__file__).with_name("container_rank.py"))
# Standard library only: -S spares it the site packages.
CONTAINER_RANK_ARGV = (sys.executable, "-S", "-P", CONTAINER_RANK)
# Runs in the run's box: isolated and without site-packages (standard library only).
CONTAINER_AGENT_ARGV = (sys.executable, "-I", "-S", str(Path(__file__).with_name("container_agent.py")))
SPEC_VARIABLE = "TRAINHUB_CONTAINER_SPEC"
# Where a node's ContainerRelay (runs/container_relay.py) listens, in the run's working folder.
SOCKET_NAME = ".trainhub-containers.sock"
# Set by the image (its virtualenv and the in-run SDK), or meaningless inside the container.
NOT_PASSED = frozenset({"PATH", "VIRTUAL_ENV", "PYTHONPATH", "HOME", "USER", "LOGNAME"})
# Each container's own /dev/shm (its IPC namespace is its own).
CONTAINER_SHM_BYTES = 1024**3
HOST_VARIABLES = frozenset({SPEC_VARIABLE, "TRAINHUB_MPI_RANK_DIR"})
HOST_PREFIXES = ("TRAINHUB_MPI_",)


class Launcher(Protocol):
    def command(
        self, argv: list[str], env: dict[str, str], node_variables: frozenset[str] = frozenset()
    ) -> tuple[list[str], dict[str, str]]:
        """The argv and environment the node starts (under its supervisor) for one rank.
        `node_variables`: the names of `env` the node inherited from its own environment."""

    def mpi_app(
        self, argv: list[str], env: dict[str, str], node_variables: frozenset[str]
    ) -> tuple[list[str], dict[str, str]]:
        """What mpirun starts for each of this node's ranks, and the variables to add for it to
        the environment of mpirun (node 0) or of Open MPI's daemon (the other nodes), whose
        environment the ranks inherit."""

    def remove_leftovers(self) -> None:
        """Make sure nothing of the run outlives it on this node."""


class ProcessLauncher:
    """Ranks are processes of the node, in the environment's virtualenv."""

    def command(
        self, argv: list[str], env: dict[str, str], node_variables: frozenset[str] = frozenset()
    ) -> tuple[list[str], dict[str, str]]:
        return argv, env

    def mpi_app(
        self, argv: list[str], env: dict[str, str], node_variables: frozenset[str]
    ) -> tuple[list[str], dict[str, str]]:
        return argv, {}

    def remove_leftovers(self) -> None:
        """The supervisor already guarantees it for processes."""


@dataclass(frozen=True)
class ContainerLauncher:
    """Ranks are containers of the environment's image, one per rank."""

    image: str
    run_id: str
    node_name: str
    workdir: Path
    # The run's staged inputs, read-only.
    mounts: tuple[Path, ...]
    gpus: int
    user: str = f"{os.getuid()}:{os.getgid()}"

    def spec(self, argv: list[str], env: dict[str, str], node_variables: frozenset[str]) -> dict[str, Any]:
        """The container create request of a rank (see container_spec)."""
        return container_spec(
            image=self.image,
            argv=argv,
            env=run_variables(env, node_variables),
            workdir=self.workdir,
            mounts=self.mounts,
            labels={
                LABEL_RUN: self.run_id,
                LABEL_NODE: self.node_name,
                LABEL_SITE: site_label(),
                LABEL_RANK: env.get("TRAINHUB_RANK", ""),
            },
            gpus=self.gpus,
            user=self.user,
        )

    def command(
        self, argv: list[str], env: dict[str, str], node_variables: frozenset[str] = frozenset()
    ) -> tuple[list[str], dict[str, str]]:
        helper_env = {name: os.environ[name] for name in ("PATH", "DOCKER_HOST") if name in os.environ}
        helper_env[SPEC_VARIABLE] = json.dumps(self.spec(argv, env, node_variables))
        return list(CONTAINER_RANK_ARGV), helper_env

    def mpi_app(
        self, argv: list[str], env: dict[str, str], node_variables: frozenset[str]
    ) -> tuple[list[str], dict[str, str]]:
        """Every rank is the container agent, in the run's box, which asks this node's relay
        (runs/container_relay.py, serving `self.spec(argv, env, node_variables)`) for its container."""
        return list(CONTAINER_AGENT_ARGV), {SOCKET_VARIABLE: str(self.workdir / SOCKET_NAME)}

    def remove_leftovers(self) -> None:
        remove_containers({LABEL_RUN: self.run_id, LABEL_NODE: self.node_name})

    def rank_pids(self) -> dict[int, int]:
        """rank → this machine's pid of the first process of the rank's running container (the
        engine starts it, not the node: its processes are found through the engine)."""
        found = {}
        for container in _site_containers({LABEL_RUN: self.run_id, LABEL_NODE: self.node_name}):
            rank, pid = container.labels.get(LABEL_RANK, ""), container.attrs.get("State", {}).get("Pid")
            if rank.isdigit() and pid:
                found[int(rank)] = int(pid)
        return found


def run_variables(env: dict[str, str], node_variables: frozenset[str]) -> dict[str, str]:
    """What the container gets of a rank's environment: everything TrainHub or the run set (even
    to the value the node has), not what the node inherited from its own environment (it
    describes the node's machine, not the image)."""
    passed = {name: value for name, value in env.items() if name not in NOT_PASSED and name not in node_variables}
    return passed | {"HOME": "/tmp"}


def container_spec(
    *,
    image: str,
    argv: list[str],
    env: dict[str, str],
    workdir: Path,
    mounts: Iterable[Path],
    labels: dict[str, str],
    gpus: int,
    user: str,
) -> dict[str, Any]:
    """The body of the Engine API's container create request for one rank: `workdir` writable,
    `mounts` read-only.

    The container runs as `user` (uid:gid), the owner of the run's folder, so it writes its
    outputs there and the node copies and deletes them. GPUs: a node with GPUs hands them all to
    the run's containers (one run per node), through a device request for the NVIDIA runtime.
    """
    host_config: dict[str, Any] = {
        "Binds": [f"{workdir}:{workdir}:rw", *(f"{path}:{path}:ro" for path in mounts)],
        "NetworkMode": "host",
        "IpcMode": "private",
        "ShmSize": CONTAINER_SHM_BYTES,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "Init": True,
    }
    if gpus > 0:
        host_config["DeviceRequests"] = [{"Driver": "nvidia", "Count": gpus, "Capabilities": [["gpu"]]}]
    return {
        "Image": image,
        "Cmd": argv,
        "Env": [f"{name}={value}" for name, value in env.items()],
        "WorkingDir": str(workdir),
        "Labels": labels,
        "User": user,
        "HostConfig": host_config,
    }


def site_label() -> str:
    return str(Path(settings.TRAINHUB_NODE_WORK_DIR).absolute())


def _site_containers(labels: dict[str, str]) -> list[Any]:
    wanted = {**labels, LABEL_SITE: site_label()}
    # A container removed between Docker's list and its inspection (a rank's own end) is gone, not an error.
    return docker_client().containers.list(
        all=True, filters={"label": [f"{k}={v}" for k, v in wanted.items()]}, ignore_removed=True
    )


def remove_containers(labels: dict[str, str]) -> list[str]:
    """Force-remove every container of this site (running or not) carrying these labels; their short ids."""
    found = _site_containers(labels)
    for container in found:
        container.remove(force=True)
    return [container.short_id for container in found]


def reap_orphan_containers(live_nodes: set[str]) -> list[str]:
    """Remove this site's containers whose node is not one of `live_nodes` (it was killed or lost)."""
    removed = []
    for container in _site_containers({}):
        if container.labels.get(LABEL_NODE) not in live_nodes:
            container.remove(force=True)
            removed.append(container.short_id)
    return removed


NO_DOCKER_ON_NODE = (
    "Environment {environment!r} is a Docker environment (docker.enabled = True), but node {node} "
    "has no Docker engine. Run it on a cluster whose nodes have one, or set docker.enabled = False."
)


def launch_problem(run: Run, node: Node) -> str:
    """Why this node cannot start the run's processes as its environment needs, or ''."""
    if not uses_docker(run.environment_spec):
        return ""
    if not node.docker:
        return NO_DOCKER_ON_NODE.format(environment=run.environment_name, node=node.name)
    return ""


def launcher_for(run: Run, node: Node, workdir: Path, built: MaterialisedEnvironment) -> Launcher:
    """Containers of the built image for a Docker environment (their inputs are added once staged,
    see with_inputs), the node's own processes otherwise."""
    if built.image is None:
        return ProcessLauncher()
    uid = box_uid("run", run.pk) if node_is_root() else os.getuid()
    gid = uid if node_is_root() else os.getgid()
    return ContainerLauncher(
        image=built.image,
        run_id=run.run_id,
        node_name=node.name,
        workdir=workdir,
        mounts=(),
        gpus=node.gpus,
        user=f"{uid}:{gid}",
    )


def host_variables(env: dict[str, str]) -> dict[str, str]:
    """What the container helper, which the node starts OUTSIDE any box for a Docker run, gets of a
    rank's environment: the node's PATH and DOCKER_HOST and TrainHub's own variables for it, never
    the run's (those go into the container's spec)."""
    engine = {name: os.environ[name] for name in ("DOCKER_HOST",) if name in os.environ}
    return launcher_variables(env) | engine


def launcher_variables(env: dict[str, str]) -> dict[str, str]:
    """What mpirun and Open MPI's daemons of a Docker MPI run (in the run's box) get of a rank's
    environment: the node's PATH, TrainHub's own variables for them and HOME (the run's folder: PMIx
    needs one, and the box's uid has no passwd entry); the run's go into the container's spec, and
    the ranks hand on to their containers only Open MPI's."""
    kept = {name: value for name, value in env.items() if name in HOST_VARIABLES or name.startswith(HOST_PREFIXES)}
    home = {"HOME": env["HOME"]} if "HOME" in env else {}
    return kept | home | {name: os.environ[name] for name in ("PATH",) if name in os.environ}


def reap_containers_of_gone_nodes() -> list[str]:
    """On a machine with a Docker engine: remove the containers of nodes that are no longer live
    (stopped, lost, or killed before they could clean up); their short ids."""
    if engine_problem() is not None:
        return []
    live = Node.objects.filter(state__in=[*LIVE_NODE_STATES, NodeState.STOPPING]).values_list("name", flat=True)
    return reap_orphan_containers(set(live))
