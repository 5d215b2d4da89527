"""Writes about clusters and nodes: creation, registration, heartbeats, state changes."""

from __future__ import annotations

import json
import os
import secrets
import socket
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from trainhub import redis_keys
from trainhub.compute import catalog, slurm
from trainhub.compute.models import ComputeCluster, Node, NodeState, Provisioner
from trainhub.environments.docker_builder import engine_problem
from trainhub.redis_conn import get_redis
from trainhub.workspaces.models import Workspace
from trainhub.workspaces.permissions import Access, Action

CLUSTER_NAME_TAKEN = "A compute target named {name!r} already exists in this workspace."
BAD_NODE_COUNTS = "min_nodes ({min}) must be at most max_nodes ({max}), and max_nodes at least 1."
CLUSTER_HAS_RUNS = (
    "Compute target {name!r} cannot be deleted: {count} run(s) were made on it, and their history "
    "keeps it (a run's page names its cluster). Keep it with min_nodes=0, or use another name."
)
CLUSTER_BUSY = (
    "Compute target {name!r} cannot be deleted while its nodes are running something ({nodes}): "
    "wait for those runs or cancel them first."
)
# The cloud SDK's name for the submitting machine (compute_target="local").
LOCAL_TARGET = "local"
LOCAL_NAME_RESERVED = (
    "'local' names the submitting machine (compute_target='local', as in the cloud SDK): give the "
    "compute target another name."
)
SLURM_PARTITION_NEEDED = "A Slurm compute target names its Slurm partition (slurm_partition)."
SLURM_PARTITION_ONLY = "Only a Slurm compute target (provisioner 'slurm') names a Slurm partition."
SLURM_PARTITION_UNKNOWN = "Slurm has no partition named {name!r}."
SLURM_NOT_REACHED = "Compute target {name!r} cannot be attached: {error}"
# A node refreshes its key every HEARTBEAT_SECONDS; a node whose key expired is lost.
HEARTBEAT_SECONDS = 1.0
HEARTBEAT_TTL_SECONDS = 6
# A node reports its machine's CPU, memory and GPU use every USAGE_SECONDS (runs/node_worker.py).
USAGE_SECONDS = 5


@transaction.atomic
def cluster_create(
    *,
    access: Access,
    user: User | None,
    name: str,
    vm_size: str,
    min_nodes: int = 0,
    max_nodes: int = 4,
    idle_seconds_before_scaledown: int = 1800,
    provisioner: str = Provisioner.LOCAL,
    slurm_partition: str = "",
) -> ComputeCluster:
    access.require(Action.WRITE)
    size = catalog.get_size(vm_size)
    if size is None:
        raise ValidationError(
            {"vm_size": catalog.UNKNOWN_SIZE.format(name=vm_size, choices=", ".join(catalog.size_names()))}
        )
    if min_nodes < 0 or max_nodes < 1 or min_nodes > max_nodes:
        raise ValidationError(BAD_NODE_COUNTS.format(min=min_nodes, max=max_nodes))
    made_by_people = [p for p in Provisioner.values if p != Provisioner.SUBMITTER]
    if provisioner not in made_by_people:
        raise ValidationError({"provisioner": f"provisioner must be one of {', '.join(made_by_people)}."})
    if name == LOCAL_TARGET:
        raise ValidationError({"name": LOCAL_NAME_RESERVED})
    if provisioner == Provisioner.SLURM:
        check_slurm_partition(name, slurm_partition)
    elif slurm_partition:
        raise ValidationError({"slurm_partition": SLURM_PARTITION_ONLY})
    cluster = ComputeCluster(
        workspace=access.workspace,
        name=name,
        vm_size=size.name,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        idle_seconds_before_scaledown=idle_seconds_before_scaledown,
        provisioner=provisioner,
        slurm_partition=slurm_partition,
        created_by=user,
    )
    cluster.full_clean(exclude=["workspace", "created_by"], validate_unique=False)
    try:
        with transaction.atomic():
            cluster.save()
    except IntegrityError:
        raise ValidationError({"name": CLUSTER_NAME_TAKEN.format(name=name)}) from None
    return cluster


def submitting_machine_target(workspace: Workspace) -> ComputeCluster:
    """The workspace's compute target "local": runs on it execute on the machine that submitted
    them. Made at the first such submit; listed nowhere (clusters_of leaves it out)."""
    cluster, _ = ComputeCluster.objects.get_or_create(
        workspace=workspace,
        name=LOCAL_TARGET,
        defaults={
            "vm_size": "LOCAL_CPU",
            "min_nodes": 0,
            "max_nodes": 1,
            "provisioner": Provisioner.SUBMITTER,
        },
    )
    return cluster


def check_slurm_partition(cluster_name: str, partition: str) -> None:
    """The partition is a name Slurm knows: asked of Slurm with sinfo as the cluster is attached."""
    if not partition:
        raise ValidationError({"slurm_partition": SLURM_PARTITION_NEEDED})
    try:
        slurm.check_partition(partition)
    except ValueError as error:
        raise ValidationError({"slurm_partition": str(error)}) from None
    try:
        known = slurm.partition_exists(partition)
    except slurm.SlurmError as error:
        raise ValidationError({"slurm_partition": SLURM_NOT_REACHED.format(name=cluster_name, error=error)}) from None
    if not known:
        raise ValidationError({"slurm_partition": SLURM_PARTITION_UNKNOWN.format(name=partition)})


@transaction.atomic
def cluster_update(
    *,
    access: Access,
    cluster: ComputeCluster,
    min_nodes: int | None = None,
    max_nodes: int | None = None,
    idle_seconds_before_scaledown: int | None = None,
) -> ComputeCluster:
    """Change a cluster's scale settings; the controller steers to them on its next tick."""
    access.require(Action.WRITE)
    cluster = ComputeCluster.objects.select_for_update().get(pk=cluster.pk)
    min_nodes = cluster.min_nodes if min_nodes is None else min_nodes
    max_nodes = cluster.max_nodes if max_nodes is None else max_nodes
    if min_nodes < 0 or max_nodes < 1 or min_nodes > max_nodes:
        raise ValidationError(BAD_NODE_COUNTS.format(min=min_nodes, max=max_nodes))
    if idle_seconds_before_scaledown is not None and idle_seconds_before_scaledown < 0:
        raise ValidationError("idle_seconds_before_scaledown must be 0 or more.")
    cluster.min_nodes, cluster.max_nodes = min_nodes, max_nodes
    if idle_seconds_before_scaledown is not None:
        cluster.idle_seconds_before_scaledown = idle_seconds_before_scaledown
    cluster.save(update_fields=["min_nodes", "max_nodes", "idle_seconds_before_scaledown"])
    return cluster


@transaction.atomic
def cluster_delete(*, access: Access, cluster: ComputeCluster) -> None:
    """Delete a cluster no run was made on; its idle nodes see their row gone and stop."""
    access.require(Action.WRITE)
    cluster = ComputeCluster.objects.select_for_update().get(pk=cluster.pk)
    busy = list(cluster.nodes.filter(state=NodeState.BUSY).values_list("name", flat=True))
    if busy:
        raise ValidationError(CLUSTER_BUSY.format(name=cluster.name, nodes=", ".join(busy)))
    runs = cluster.runs.count()
    if runs:
        raise ValidationError(CLUSTER_HAS_RUNS.format(name=cluster.name, count=runs))
    node_ids = list(cluster.nodes.values_list("pk", flat=True))
    cluster.delete()
    if node_ids:
        transaction.on_commit(lambda: get_redis().delete(*[redis_keys.node_alive(pk) for pk in node_ids]))


def machine_resources() -> dict[str, float | int | bool]:
    memory_gb = 0.0
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    gpus = len([d for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit()])
    return {"cpus": os.cpu_count() or 1, "gpus": gpus, "memory_gb": memory_gb}


def node_docker_support(setting: str) -> tuple[bool, str]:
    """Whether a node starting now runs Docker environments (setting: auto, true or false), and a
    line saying so. "auto" asks the engine, and a node that says true must have one that answers."""
    if setting.lower() in ("false", "0", "no"):
        return False, "Docker environments off"
    problem = engine_problem()
    if problem is None:
        return True, "runs Docker environments"
    if setting.lower() == "auto":
        return False, f"no Docker engine ({problem})"
    raise ImproperlyConfigured(f"TRAINHUB_NODE_DOCKER is {setting!r} but no Docker engine answers: {problem}")


@transaction.atomic
def node_register(
    *,
    cluster: ComputeCluster,
    address: str,
    managed: bool = False,
    docker: bool = False,
    name: str | None = None,
) -> Node:
    resources = machine_resources()
    hostname = socket.gethostname()
    node = Node.objects.create(
        cluster=cluster,
        name=name or f"{cluster.name}-{hostname}-{secrets.token_hex(3)}",
        hostname=hostname,
        address=address,
        pid=os.getpid(),
        cpus=int(resources["cpus"]),
        gpus=int(resources["gpus"]),
        memory_gb=float(resources["memory_gb"]),
        docker=docker,
        managed=managed,
        state=NodeState.IDLE,
        idle_since=timezone.now(),
        last_heartbeat_at=timezone.now(),
    )
    node_heartbeat(node)
    return node


def node_heartbeat(node: Node, usage: dict[str, Any] | None = None) -> None:
    """The node is alive, and how loaded its machine is (1, 5 and 15 minute load averages); with
    `usage` (trainhub/compute/usage.py), what its CPUs, memory and GPUs are doing."""
    pipe = get_redis().pipeline(transaction=False)
    pipe.set(redis_keys.node_alive(node.pk), node.name, ex=HEARTBEAT_TTL_SECONDS)
    pipe.set(
        redis_keys.node_load(node.pk), " ".join(f"{value:.2f}" for value in os.getloadavg()), ex=HEARTBEAT_TTL_SECONDS
    )
    if usage is not None:
        pipe.set(redis_keys.node_usage(node.pk), json.dumps(usage), ex=HEARTBEAT_TTL_SECONDS + USAGE_SECONDS)
    pipe.execute()


def node_loads(node_ids: list[int]) -> dict[int, tuple[float, float, float]]:
    """The load averages the live nodes among these last reported."""
    if not node_ids:
        return {}
    values = get_redis().mget([redis_keys.node_load(node_id) for node_id in node_ids])
    return {
        node_id: tuple(float(part) for part in value.split())  # type: ignore[misc]
        for node_id, value in zip(node_ids, values, strict=True)
        if value
    }


def node_usages(node_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The CPU, memory and GPU use the live nodes among these last reported."""
    if not node_ids:
        return {}
    values = get_redis().mget([redis_keys.node_usage(node_id) for node_id in node_ids])
    return {node_id: json.loads(value) for node_id, value in zip(node_ids, values, strict=True) if value}


def node_heartbeat_persist(node: Node) -> None:
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=timezone.now())


def alive_node_ids(node_ids: list[int]) -> set[int]:
    if not node_ids:
        return set()
    return node_heartbeats(node_ids, noting_kept=False)[1]


def node_heartbeats(node_ids: list[int], *, noting_kept: bool = True) -> tuple[bool, set[int]]:
    """(whether Redis had forgotten every heartbeat, the nodes among these whose heartbeat it
    holds). Redis forgot when it restarted without persistence since the last time this was asked
    (noting_kept): a key written here says it has not since. Both answers come from one
    transaction, so from the same Redis, however often it is retried."""
    pipe = get_redis().pipeline(transaction=True)
    if noting_kept:
        pipe.set(redis_keys.heartbeats_kept(), 1, nx=True)
    for node_id in node_ids:
        pipe.exists(redis_keys.node_alive(node_id))
    answers = pipe.execute()
    forgot = bool(answers.pop(0)) if noting_kept else False
    return forgot, {node_id for node_id, alive in zip(node_ids, answers, strict=True) if alive}


def node_register_slurm_host(*, cluster: ComputeCluster, host: str, address: str, docker: bool, run_id: int) -> Node:
    """The node row of a Slurm host of the cluster, busy with run `run_id` (made by the host's first
    task, then kept up to date): Slurm, not a heartbeat, says when it is gone."""
    resources = machine_resources()
    node, _ = Node.objects.update_or_create(
        name=f"slurm-{cluster.pk}-{host}",
        defaults={
            "cluster": cluster,
            "hostname": socket.gethostname(),
            "address": address,
            "pid": os.getpid(),
            "cpus": int(resources["cpus"]),
            "gpus": int(resources["gpus"]),
            "memory_gb": float(resources["memory_gb"]),
            "docker": docker,
            "state": NodeState.BUSY,
            "state_reason": f"Slurm node {host}",
            "current_run_id": run_id,
            "last_heartbeat_at": timezone.now(),
        },
    )
    return node


def node_assign(node: Node, run_id: int) -> None:
    """An idle node (locked by the caller's transaction) takes run `run_id`."""
    node.state, node.current_run_id = NodeState.BUSY, run_id
    node.save(update_fields=["state", "current_run"])


def nodes_release(run_id: int) -> None:
    """The nodes busy with run `run_id` are idle again (its dispatch was taken back)."""
    Node.objects.filter(current_run_id=run_id, state=NodeState.BUSY).update(
        state=NodeState.IDLE, current_run=None, idle_since=timezone.now()
    )


def node_set_idle(node_id: int) -> None:
    Node.objects.filter(pk=node_id, state=NodeState.BUSY).update(
        state=NodeState.IDLE, current_run=None, idle_since=timezone.now()
    )


@transaction.atomic
def node_request_stop(node: Node, reason: str) -> bool:
    """An idle node is told to stop (scale-down); a busy one is left alone."""
    updated = Node.objects.filter(pk=node.pk, state=NodeState.IDLE).update(
        state=NodeState.STOPPING, state_reason=reason
    )
    return bool(updated)


def node_stopped(node_id: int, reason: str = "stopped") -> None:
    Node.objects.filter(pk=node_id).exclude(state=NodeState.LOST).update(
        state=NodeState.STOPPED, state_reason=reason, current_run=None, stopped_at=timezone.now()
    )
    # Its load and use are the last it reported: a stopped node has none.
    get_redis().delete(redis_keys.node_alive(node_id), redis_keys.node_load(node_id), redis_keys.node_usage(node_id))


def node_mark_lost(node_id: int, reason: str = "heartbeat expired") -> bool:
    updated = Node.objects.filter(pk=node_id, state__in=[NodeState.IDLE, NodeState.BUSY, NodeState.STOPPING]).update(
        state=NodeState.LOST, state_reason=reason, stopped_at=timezone.now()
    )
    return bool(updated)


def seed_demo(*, workspace, user) -> None:
    """`make run`'s local cluster: nodes on this machine, one kept warm, up to four."""
    if not ComputeCluster.objects.filter(workspace=workspace, name="cpu-cluster").exists():
        ComputeCluster.objects.create(
            workspace=workspace,
            name="cpu-cluster",
            vm_size="LOCAL_CPU",
            min_nodes=1,
            max_nodes=4,
            idle_seconds_before_scaledown=600,
            provisioner=Provisioner.LOCAL,
            created_by=user,
        )
