"""What a node makes ready on its host before a run's processes start: the run's environment (built,
or from the node's cache) and the launcher it needs, the unpacked snapshot, and the run's box with
its limits."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

from runs.archives import UnsafeArchiveError, extract_snapshot
from runs.containers import ContainerLauncher, Launcher, launch_problem, launcher_for
from runs.executor import SetupFailed
from runs.limits import ENFORCED, NOT_ENFORCED, LimitsUnavailable, RunCgroup, describe, make_run_cgroup
from runs.models import Run
from trainhub.compute.models import Node
from trainhub.environments.builders import BuildError
from trainhub.environments.services import materialise_recorded
from trainhub.sandbox import Box, SandboxUnavailable, box_uid, chown_tree, run_box

DOCKER_MPI_NEEDS_BOX = (
    "MPI launches in a Docker environment run mpirun and Open MPI's daemons in the run's box, which "
    "this node does not use (TRAINHUB_NODE_SANDBOX=false). Run it on nodes with the box, or without MPI."
)


def prepare_environment(
    run: Run, node: Node, workdir: Path, say: Callable[[str], None]
) -> tuple[Path, dict[str, str], Launcher]:
    """(the environment's python, the run's environment variables, the launcher its kind needs)."""
    spec = run.environment_spec
    say(
        f"Preparing environment {run.environment_name}"
        + (f" version {run.environment_version}" if run.environment_version else "")
        + f" on node {node.name}"
    )
    problem = launch_problem(run, node)
    if problem:
        raise SetupFailed(problem, "")
    started = time.monotonic()
    try:
        built = materialise_recorded(spec, cache_dir=Path(settings.TRAINHUB_ENV_CACHE_DIR), node=node.name, log=say)
    except BuildError as error:
        raise SetupFailed(f"Environment build failed: {error.reason}", error.log) from None
    launcher = launcher_for(run, node, workdir, built)
    say(
        ("Environment cache hit" if built.cache_hit else "Environment built")
        + f" ({built.spec_hash[:12]}) in {time.monotonic() - started:.2f} s"
    )
    variables = {str(k): str(v) for k, v in (spec.get("environment_variables") or {}).items()}
    return built.python, variables, launcher


def unpack_snapshot(run: Run, workdir: Path, private_logs: Path, say: Callable[[str], None]) -> None:
    """The snapshot into a fresh working folder, with its outputs/ and logs/ (an unsafe archive is
    refused, saying why)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    private_logs.mkdir(parents=True, exist_ok=True)
    try:
        with default_storage.open(run.snapshot.storage_name, "rb") as archive:
            count = extract_snapshot(archive, workdir, max_bytes=settings.TRAINHUB_SNAPSHOT_MAX_EXPANDED_BYTES)
    except UnsafeArchiveError as error:
        raise SetupFailed(f"Snapshot rejected: {error}", "") from None
    (workdir / "outputs").mkdir(exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    say(f"Snapshot {run.snapshot.sha256[:12]} unpacked: {count} files")


def make_box(
    run: Run,
    *,
    launcher: Launcher,
    readable: list[Path],
    inputs: list[Path],
    workdir: Path,
    box_folder: Path,
    say: Callable[[str], None],
) -> tuple[Launcher, Box | None]:
    """The node's own processes (not containers) start in the run's box: its uid, its private
    /tmp and /dev/shm (shared by the run's ranks on this node), the site's data out of sight, and
    `readable` (the environment, the in-run SDK) and `inputs` read-only. Containers see the run's
    folder, as its uid, and its own inputs read-only; a Docker MPI run's mpirun and Open MPI's
    daemons are in the box too. (the launcher, with the inputs mounted; the box, not yet prepared,
    or None where the node runs unboxed)."""
    readable = [*readable, *inputs]
    if isinstance(launcher, ContainerLauncher):
        launcher = dataclasses.replace(launcher, mounts=tuple(inputs))
        uid = int(launcher.user.split(":")[0])
        if uid != os.getuid():
            chown_tree(workdir, uid)
        if run.distributed.get("type") != "mpi":
            return launcher, None
        readable = list(inputs)
    try:
        box = run_box(uid=box_uid("run", run.pk), workdir=workdir, box_folder=box_folder, read_only=readable, say=say)
    except SandboxUnavailable as error:
        raise SetupFailed(str(error), "") from None
    if box is None and isinstance(launcher, ContainerLauncher):
        raise SetupFailed(DOCKER_MPI_NEEDS_BOX, "")
    return launcher, box


def hold_to_limits(run: Run, node: Node, box: Box, say: Callable[[str], None]) -> tuple[Box, RunCgroup | None]:
    """The run's limits (Run.limits), held by a cgroup its box joins; said in its log either way.
    (the box joining the cgroup, the cgroup or None)."""
    limits = {k: v for k, v in (run.limits or {}).items() if v is not None}
    if not limits:
        return box, None
    try:
        cgroup = make_run_cgroup(run.pk, limits)
    except LimitsUnavailable as why:
        say(NOT_ENFORCED.format(limits=describe(limits), node=node.name, why=why))
        return box, None
    say(ENFORCED.format(node=node.name, limits=describe(limits), version=cgroup.version))
    return dataclasses.replace(box, cgroups=tuple(cgroup.folders)), cgroup
