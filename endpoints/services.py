"""Deploying, updating and deleting endpoints, and the life of their replicas.

A replica is a run (experiment `endpoint-<name>`) whose command is the scoring server
(trainhub/sdk/_scoring_server.py): it runs on a node of the endpoint's cluster, in the run's box,
holds the node as any run does, and its log is the service's log. The server never loads the
model nor imports the scoring script: it only passes request bytes to the replica's port.
"""

from __future__ import annotations

import hmac
import http.client
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from endpoints.keys import seal, unseal
from endpoints.models import Endpoint, EndpointState, Replica, ReplicaState
from endpoints.selectors import serving_replicas
from registry.exports import with_packages
from registry.models import ModelVersion
from runs.models import Run, RunStatus, Snapshot
from runs.services import SNAPSHOT_UNKNOWN, log_append, one_file_snapshot, run_cancel, run_submit
from trainhub import redis_keys
from trainhub.environments.selectors import EnvironmentChoice, environment_for_run
from trainhub.redis_conn import get_redis
from trainhub.sdk._scoring_server import PROOF_PATH, REPLICA_HEADER, proof
from trainhub.workspaces.models import Role, name_validator
from trainhub.workspaces.permissions import Access, Action
from trainhub.workspaces.selectors import hash_token

logger = logging.getLogger(__name__)

ENDPOINT_KEY_PREFIX = "the_"
# How long a key regeneration or a deletion waits for the scoring proxies to drop the old route.
ROUTE_ACK_SECONDS = 2.0
DEPLOY_STREAM = "deployment"
DEFAULT_ENVIRONMENT = "TrainHub-PyTorch-2.13-CPU"
ONNX_PACKAGES = ("onnxruntime>=1.20",)

NAME_TAKEN = (
    "An endpoint named {name!r} already exists in this workspace: pass overwrite=True to replace "
    "what it serves, or delete it first."
)
NO_MODELS = "Give at least one registered model version to deploy."
UNKNOWN_VERSION = "No model version {name}:{version} in this workspace."
NO_ENTRY_SCRIPT = (
    "An entry script is needed (InferenceConfig(entry_script=...)) unless the one model deployed "
    "is an ONNX version, which onnxruntime serves with no script."
)
ENTRY_SCRIPT_MISSING = "The entry script {script!r} is not in the uploaded source directory."
BAD_ENTRY_SCRIPT = "The entry script is a relative path inside the source directory ending in .py: {script!r} is not."
NO_COMPUTE = "Workspace {workspace!r} has no compute cluster to run the endpoint on: create one first."
UNKNOWN_COMPUTE = "No compute target named {name!r} in this workspace."
NOT_THIS_REPLICA = "Only the run of replica {pk} may report that it is ready."
NOT_A_REPLICA = "Port {port} of the replica's node does not answer as a TrainHub scoring server."
BAD_ADDRESS = "A replica reports a port from 1 to 65535 and a secret of 32 to 64 characters."
NEVER_READY = "The replica stopped before it answered: {reason}"
CRASH_LOOP = (
    "Replicas stopped {count} times within {minutes} minutes (the last: {reason}): no new "
    "replica is started. Fix the scoring script or the model, then update or deploy again."
)
# A replica that keeps dying is not started again forever: this many ends of replicas (but those
# TrainHub stopped itself) within the window fail the endpoint instead.
CRASH_LOOP_ENDS = 5
CRASH_LOOP_WINDOW = timedelta(minutes=10)
REPLICA_DIED = "Replica {pk} (run {run_id}) stopped while serving ({reason}): a new replica replaces it."
REPLICA_NEVER_READY = "Replica {pk} (run {run_id}) stopped before it answered ({reason}); the others serve."
MAX_REPLICAS = 16
BAD_REPLICAS = "replicas (num_replicas) is a whole number from 1 to {most}: {value!r} is not."
TOO_MANY_REPLICAS = (
    "{count} replicas need {count} nodes at once, but compute cluster {cluster!r} has at most {most}: "
    "ask for fewer replicas or raise its max_nodes."
)
KEYS_NOT_KEPT = (
    "The keys of endpoint {name!r} are not kept readable (it was deployed before TrainHub kept them, "
    "or the server's secret key changed since): regen_key('Primary') and regen_key('Secondary') make "
    "new ones that get_keys() then returns."
)
BAD_LIMIT = "{name} is a number above 0 (at most {most}): {value!r} is not."


@dataclass(frozen=True)
class NewKeys:
    primary: str
    secondary: str


def new_endpoint_key() -> str:
    return ENDPOINT_KEY_PREFIX + secrets.token_urlsafe(32)


def _publish_route(endpoint_pk: int, *, wait: bool = False) -> None:
    """Every scoring proxy drops what it keeps of this endpoint (replicas, keys, deletion). With
    `wait`, returns once each proxy that follows the channel said it did (or after
    ROUTE_ACK_SECONDS): a regenerated key or a deleted endpoint is refused from then on."""
    redis = get_redis()
    if not wait:
        redis.publish(redis_keys.endpoint_routes_channel(), str(endpoint_pk))
        return
    change = secrets.token_hex(8)
    acks = redis_keys.endpoint_route_acks(change)
    followers = redis.publish(redis_keys.endpoint_routes_channel(), f"{endpoint_pk} {change}")
    deadline = time.monotonic() + ROUTE_ACK_SECONDS
    for _ in range(int(followers)):
        left = deadline - time.monotonic()
        if left <= 0 or redis.blpop([acks], timeout=left) is None:
            logger.warning("Endpoint %s: a scoring proxy did not confirm the change in time", endpoint_pk)
            break
    redis.delete(acks)


def _bump_route(endpoint_pk: int) -> None:
    transaction.on_commit(lambda: _publish_route(endpoint_pk))


def _versions(access: Access, models: list[dict[str, Any]]) -> list[ModelVersion]:
    if not models:
        raise ValidationError(NO_MODELS)
    found = []
    for ref in models:
        name, version = str(ref.get("name", "")), ref.get("version")
        query = ModelVersion.objects.select_related("model", "run").filter(
            model__workspace=access.workspace, model__name=name
        )
        found_version = (query.filter(version=version) if version else query.order_by("-version")).first()
        if found_version is None:
            raise ValidationError(UNKNOWN_VERSION.format(name=name, version=version or "latest"))
        found.append(found_version)
    return found


def _is_onnx(version: ModelVersion) -> bool:
    return version.framework.lower() == "onnx" or version.root.lower().endswith(".onnx")


def _cluster(access: Access, compute_target: str | None):
    clusters = access.workspace.clusters
    if compute_target:
        cluster = clusters.filter(name=compute_target).first()
        if cluster is None:
            raise ValidationError(UNKNOWN_COMPUTE.format(name=compute_target))
        return cluster
    cluster = clusters.order_by("name").first()
    if cluster is None:
        raise ValidationError(NO_COMPUTE.format(workspace=access.workspace.name))
    return cluster


def _check_entry_script(snapshot, entry_script: str) -> str:
    script = entry_script.replace("\\", "/")
    while script.startswith("./"):
        script = script[2:]
    parts = script.split("/")
    if not script.endswith(".py") or script.startswith("/") or ".." in parts:
        raise ValidationError(BAD_ENTRY_SCRIPT.format(script=entry_script))
    if snapshot.files and script not in {str(entry[0]) for entry in snapshot.files}:
        raise ValidationError(ENTRY_SCRIPT_MISSING.format(script=entry_script))
    return script


def _scoring_snapshot(access: Access):
    """The snapshot of an endpoint with no scoring script: one small file, the same every time."""
    text = b"A TrainHub endpoint served by onnxruntime: python -m trainhub.sdk._scoring_server\n"
    return one_file_snapshot(access=access, name="ENDPOINT.txt", text=text)


def _onnx_environment(access: Access, version: ModelVersion) -> EnvironmentChoice:
    base = environment_for_run(workspace=access.workspace, name=DEFAULT_ENVIRONMENT, version=None)
    spec = {**with_packages(base.spec, ONNX_PACKAGES), "environment_variables": {}}
    return EnvironmentChoice(name=f"{base.name} + onnxruntime", version=None, spec=spec)


@dataclass(frozen=True)
class Serving:
    """What a deploy or an update asks to serve (already checked)."""

    versions: list[ModelVersion]
    snapshot: Any
    entry_script: str
    environment: EnvironmentChoice


def serving_check(
    *,
    access: Access,
    models: list[dict[str, Any]],
    entry_script: str | None,
    snapshot_sha256: str | None,
    environment: EnvironmentChoice | None,
) -> Serving:
    """What to serve, checked: the versions exist here, the script is in the snapshot, or the one
    version is ONNX (served with no script, in the default environment plus onnxruntime)."""
    access.require(Action.WRITE)
    versions = _versions(access, models)
    if not entry_script:
        if len(versions) != 1 or not _is_onnx(versions[0]):
            raise ValidationError(NO_ENTRY_SCRIPT)
        return Serving(versions, _scoring_snapshot(access), "", environment or _onnx_environment(access, versions[0]))
    snapshot = Snapshot.objects.filter(workspace=access.workspace, sha256=snapshot_sha256 or "").first()
    if snapshot is None:
        raise ValidationError(SNAPSHOT_UNKNOWN.format(sha=snapshot_sha256), code="snapshot_unknown")
    script = _check_entry_script(snapshot, entry_script)
    if environment is None:
        base = environment_for_run(workspace=access.workspace, name=DEFAULT_ENVIRONMENT, version=None)
        environment = EnvironmentChoice(name=base.name, version=base.version, spec=base.spec)
    return Serving(versions, snapshot, script, environment)


@dataclass(frozen=True)
class ServingSettings:
    """How a deployment configuration is served: replicas, auth, and each replica's limits."""

    replicas: int
    auth_enabled: bool
    cpu_cores: float | None
    memory_gb: float | None


def _number(config: dict[str, Any], name: str, most: float) -> float | None:
    value = config.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= most:
        raise ValidationError(BAD_LIMIT.format(name=name, most=most, value=value))
    return float(value)


def serving_settings(config: dict[str, Any], cluster: Any) -> ServingSettings:
    """The deployment configuration's replicas (`replicas`, or AKS's `num_replicas`, or with AKS's
    autoscale its `autoscale_min_replicas`), `auth_enabled` (off only when said False), `cpu_cores`
    and `memory_gb` (enforced on each replica only when given), checked."""
    config = config or {}
    wanted = config.get("replicas")
    if wanted is None:
        wanted = config.get("num_replicas")
    if wanted is None and config.get("autoscale_enabled"):
        wanted = config.get("autoscale_min_replicas")
    wanted = 1 if wanted is None else wanted
    if isinstance(wanted, bool) or not isinstance(wanted, int) or not 1 <= wanted <= MAX_REPLICAS:
        raise ValidationError(BAD_REPLICAS.format(most=MAX_REPLICAS, value=wanted))
    if wanted > cluster.max_nodes:
        raise ValidationError(TOO_MANY_REPLICAS.format(count=wanted, cluster=cluster.name, most=cluster.max_nodes))
    return ServingSettings(
        replicas=wanted,
        auth_enabled=config.get("auth_enabled") is not False,
        cpu_cores=_number(config, "cpu_cores", 256),
        memory_gb=_number(config, "memory_gb", 4096),
    )


def _deployment_lines(endpoint: Endpoint) -> list[str]:
    config = endpoint.deployment_config or {}
    kind = config.get("kind", "")
    cluster = f"compute cluster {endpoint.cluster.name!r} (vm size {endpoint.cluster.vm_size})"
    if kind == "aci":
        given = ", ".join(f"{k}={config[k]}" for k in ("cpu_cores", "memory_gb") if config.get(k) is not None)
        lines = [
            f"AciWebservice.deploy_configuration({given}) is served as a TrainHub endpoint on {cluster}: "
            "each replica is a run holding a node of it."
        ]
    elif kind == "aks":
        lines = [f"AksWebservice.deploy_configuration(...) is served as a TrainHub endpoint on {cluster}."]
        if config.get("autoscale_enabled"):
            lines.append(
                f"autoscale_enabled: TrainHub does not scale on load; it serves autoscale_min_replicas "
                f"({endpoint.replica_count}) replicas."
            )
    elif kind == "local":
        lines = [
            f"LocalWebservice.deploy_configuration(port={config.get('port')}) is served as a TrainHub "
            f"endpoint on {cluster}, not on this machine's port: call it at its scoring URI."
        ]
    else:
        lines = [f"Serving on {cluster}."]
    lines.append(f"Replicas: {endpoint.replica_count}; requests go to the least busy one that answers.")
    limits = []
    if config.get("cpu_cores") is not None:
        limits.append(f"cpu_cores={config['cpu_cores']} (a CPU quota)")
    if config.get("memory_gb") is not None:
        limits.append(f"memory_gb={config['memory_gb']} (a replica using more is stopped, its log saying why)")
    if limits:
        lines.append("Each replica is limited to " + " and ".join(limits) + ".")
    if not endpoint.auth_enabled:
        lines.append("auth_enabled=False: the scoring URL answers anyone who reaches this server, without a key.")
    return lines


def _replica_limits(endpoint: Endpoint) -> dict[str, float]:
    config = endpoint.deployment_config or {}
    return {k: float(config[k]) for k in ("cpu_cores", "memory_gb") if config.get(k) is not None}


def _replica_submit(endpoint: Endpoint, user: User | None, lines: Sequence[str] = ()) -> Replica:
    access = Access(workspace=endpoint.workspace, role=Role.CONTRIBUTOR)
    versions = list(endpoint.model_versions.select_related("model").order_by("model__name", "version"))
    command = ["python", "-m", "trainhub.sdk._scoring_server", "--endpoint", endpoint.name]
    for version in versions:
        command += ["--model", f"{version.model.name}:{version.version}"]
    if endpoint.entry_script:
        command += ["--entry-script", endpoint.entry_script]
    run = run_submit(
        access=access,
        user=user,
        experiment_name=f"endpoint-{endpoint.name}",
        snapshot_sha256=endpoint.snapshot.sha256,
        compute_target=endpoint.cluster.name,
        environment=EnvironmentChoice(
            name=endpoint.environment_name, version=endpoint.environment_version, spec=endpoint.environment_spec
        ),
        command=command,
        tags={"endpoint": endpoint.name, "generation": str(endpoint.generation)},
        display_name=f"Endpoint {endpoint.name} (generation {endpoint.generation})",
    )
    replica = Replica.objects.create(endpoint=endpoint, run=run, generation=endpoint.generation)
    command += ["--replica", str(replica.pk)]
    Run.objects.filter(pk=run.pk).update(command=command, limits=_replica_limits(endpoint))
    said = [*_deployment_lines(endpoint), *lines]
    transaction.on_commit(lambda: log_append(run.pk, DEPLOY_STREAM, said))
    return replica


def endpoint_deploy(
    *,
    access: Access,
    user: User | None,
    name: str,
    serving: Serving,
    deployment_config: dict[str, Any],
    overwrite: bool = False,
    description: str = "",
    tags: dict[str, Any] | None = None,
) -> tuple[Endpoint, NewKeys | None]:
    """A new endpoint and its replicas; with `overwrite`, an existing one is updated instead.
    Returns the endpoint and its keys (only when it is new)."""
    access.require(Action.WRITE)
    name_validator(name)
    cluster = _cluster(access, (deployment_config or {}).get("compute_target"))
    settings_ = serving_settings(deployment_config, cluster)
    existing = Endpoint.objects.filter(workspace=access.workspace, name=name).first()
    if existing is not None:
        if not overwrite:
            raise ValidationError(NAME_TAKEN.format(name=name), code="name_taken")
        return endpoint_update(access=access, user=user, endpoint=existing, serving=serving), None
    keys = NewKeys(new_endpoint_key(), new_endpoint_key())
    with transaction.atomic():
        endpoint = Endpoint.objects.create(
            workspace=access.workspace,
            name=name,
            description=description or "",
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            cluster=cluster,
            snapshot=serving.snapshot,
            entry_script=serving.entry_script,
            environment_name=serving.environment.name,
            environment_version=serving.environment.version,
            environment_spec=serving.environment.spec,
            deployment_config=dict(deployment_config or {}),
            replica_count=settings_.replicas,
            auth_enabled=settings_.auth_enabled,
            primary_key_hash=hash_token(keys.primary),
            secondary_key_hash=hash_token(keys.secondary),
            primary_key_sealed=seal(keys.primary),
            secondary_key_sealed=seal(keys.secondary),
            created_by=user if user is not None and user.is_authenticated else None,
        )
        endpoint.model_versions.set(serving.versions)
        for _ in range(endpoint.replica_count):
            _replica_submit(endpoint, endpoint.created_by)
    return endpoint, keys


def endpoint_update(*, access: Access, user: User | None, endpoint: Endpoint, serving: Serving) -> Endpoint:
    """Serve new versions (or a new script or environment), replica by replica: the replicas of the
    next generation start beside the serving ones, and each that answers stops one of the old
    generation (which finishes its requests first), so requests are answered throughout."""
    access.require(Action.WRITE)
    with transaction.atomic():
        locked = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.generation += 1
        locked.state = EndpointState.TRANSITIONING
        locked.error = ""
        locked.snapshot = serving.snapshot
        locked.entry_script = serving.entry_script
        locked.environment_name = serving.environment.name
        locked.environment_version = serving.environment.version
        locked.environment_spec = serving.environment.spec
        locked.save()
        locked.model_versions.set(serving.versions)
        # A replica of an older generation still starting is not waited for.
        for replica in locked.replicas.filter(state=ReplicaState.STARTING).select_related("run"):
            _retire(replica)
        starter = user if user is not None and user.is_authenticated else locked.created_by
        for _ in range(locked.replica_count):
            _replica_submit(locked, starter)
    return locked


def _retire(replica: Replica) -> None:
    Replica.objects.filter(pk=replica.pk).update(state=ReplicaState.RETIRED)
    _bump_route(replica.endpoint_id)
    run = replica.run
    transaction.on_commit(
        lambda: run_cancel(
            access=Access(workspace=run.workspace, role=Role.CONTRIBUTOR), run=Run.objects.get(pk=run.pk)
        )
    )


def endpoint_delete(*, access: Access, endpoint: Endpoint) -> None:
    """Stop every replica (their nodes are free once they end) and forget the endpoint."""
    access.require(Action.WRITE)
    with transaction.atomic():
        runs = [r.run for r in endpoint.replicas.select_related("run").exclude(state=ReplicaState.STOPPED)]
        pk = endpoint.pk
        endpoint.delete()
        transaction.on_commit(lambda: _publish_route(pk, wait=True))
        for run in runs:
            transaction.on_commit(partial(run_cancel, access=access, run=run))


def endpoint_regenerate_key(*, access: Access, endpoint: Endpoint, key_type: str) -> str:
    """A new primary or secondary key; the old one stops working at once."""
    access.require(Action.WRITE)
    key = new_endpoint_key()
    which = {"primary": "primary", "secondary": "secondary"}.get(key_type.lower())
    if which is None:
        raise ValidationError("key_type is 'Primary' or 'Secondary'.")
    with transaction.atomic():
        Endpoint.objects.filter(pk=endpoint.pk).update(
            **{f"{which}_key_hash": hash_token(key), f"{which}_key_sealed": seal(key)}
        )
        pk = endpoint.pk
        transaction.on_commit(lambda: _publish_route(pk, wait=True))
    return key


def endpoint_keys(*, access: Access, endpoint: Endpoint) -> NewKeys:
    """The endpoint's two keys, for its workspace's contributors and owners (readers may score
    with their own token, not read keys they could hand to anyone)."""
    access.require(Action.WRITE)
    primary, secondary = unseal(endpoint.primary_key_sealed), unseal(endpoint.secondary_key_sealed)
    if primary is None or secondary is None:
        raise ValidationError(KEYS_NOT_KEPT.format(name=endpoint.name), code="keys_not_kept")
    return NewKeys(primary, secondary)


def replica_ready(*, run: Run, replica: Replica, address: str, port: int, secret: str) -> Replica:
    """The replica's scoring server answers at address:port: requests go to it from now on, and
    for each replica of the newest generation that answers, one of an older generation stops."""
    if replica.run_id != run.pk:
        raise PermissionDenied(NOT_THIS_REPLICA.format(pk=replica.pk))
    if not (isinstance(port, int) and 0 < port < 65536) or not 32 <= len(secret or "") <= 64:
        raise ValidationError(BAD_ADDRESS)
    # The address is the node's, as the scheduler knows it, never what the replica claims.
    placement = run.run_nodes.select_related("node").filter(node_rank=0).first()
    node_address = placement.node.address if placement is not None else ""
    if not node_address:
        raise ValidationError(NOT_A_REPLICA.format(port=port))
    _check_proof(node_address, port, secret)
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().get(pk=replica.endpoint_id)
        locked = Replica.objects.select_for_update().get(pk=replica.pk)
        if locked.state != ReplicaState.STARTING:
            return locked
        locked.state = ReplicaState.READY
        locked.address = node_address
        locked.port = port
        locked.secret = secret
        locked.ready_at = timezone.now()
        locked.save()
        _settle(endpoint)
        _bump_route(endpoint.pk)
    return locked


def _settle(endpoint: Endpoint) -> None:
    """After a replica of the endpoint answered: the old generation keeps only as many replicas as
    the newest one still lacks, and the endpoint is Healthy once the newest has all of its own."""
    ready = endpoint.replicas.filter(state=ReplicaState.READY)
    newest = ready.filter(generation=endpoint.generation).count()
    old = list(ready.filter(generation__lt=endpoint.generation).select_related("run").order_by("generation", "id"))
    for replica in old[: max(0, len(old) - max(0, endpoint.replica_count - newest))]:
        _retire(replica)
    if newest >= endpoint.replica_count:
        endpoint.state = EndpointState.HEALTHY
        endpoint.error = ""
        endpoint.save(update_fields=["state", "error", "updated_at"])


def _check_proof(address: str, port: int, secret: str) -> None:
    """The port is the replica's scoring server (it proves it knows the secret), not another service
    of the node's that requests would otherwise be sent to."""
    connection = http.client.HTTPConnection(address, port, timeout=10)
    try:
        connection.request("GET", PROOF_PATH, headers={REPLICA_HEADER: secret})
        response = connection.getresponse()
        answer = json.loads(response.read(1000) or b"{}")
        shown = answer.get("proof", "") if response.status == 200 and isinstance(answer, dict) else ""
    except (OSError, ValueError, http.client.HTTPException):
        shown = ""
    finally:
        connection.close()
    if not isinstance(shown, str) or not hmac.compare_digest(shown, proof(secret)):
        raise ValidationError(NOT_A_REPLICA.format(port=port))


def replica_run_ended(run: Run) -> None:
    """A replica's run reached a final state: a replica of the serving generation that died is
    replaced (said in the new replica's log), as is one that never answered while others of its
    generation serve; when none of them answers, the deployment fails with the reason. Replicas that
    keep ending stop being replaced."""
    if not run.tags.get("endpoint"):
        return
    with transaction.atomic():
        replica = Replica.objects.select_for_update().filter(run_id=run.pk).first()
        if replica is None:
            return
        was = replica.state
        Replica.objects.filter(pk=replica.pk).update(state=ReplicaState.STOPPED)
        _bump_route(replica.endpoint_id)
        if was in (ReplicaState.RETIRED, ReplicaState.STOPPED):
            return
        endpoint = Endpoint.objects.select_for_update().filter(pk=replica.endpoint_id).first()
        if endpoint is None or replica.generation < endpoint.generation:
            return
        reason = run.status_reason or run.status
        serving = endpoint.replicas.filter(state=ReplicaState.READY, generation=endpoint.generation).exists()
        if was == ReplicaState.STARTING and not serving:
            endpoint.state = EndpointState.FAILED
            endpoint.error = NEVER_READY.format(reason=reason)[:5000]
            endpoint.save(update_fields=["state", "error", "updated_at"])
            return
        recent_ends = endpoint.replicas.filter(
            state=ReplicaState.STOPPED, run__ended_at__gte=timezone.now() - CRASH_LOOP_WINDOW
        ).exclude(run__status=RunStatus.CANCELED)
        if recent_ends.count() >= CRASH_LOOP_ENDS:
            endpoint.state = EndpointState.FAILED
            endpoint.error = CRASH_LOOP.format(
                count=CRASH_LOOP_ENDS, minutes=int(CRASH_LOOP_WINDOW.total_seconds() // 60), reason=reason
            )[:5000]
            endpoint.save(update_fields=["state", "error", "updated_at"])
            return
        endpoint.restarts += 1
        endpoint.state = EndpointState.UNHEALTHY
        said = REPLICA_DIED if was == ReplicaState.READY else REPLICA_NEVER_READY
        line = said.format(pk=replica.pk, run_id=run.run_id, reason=reason)
        endpoint.error = line[:5000]
        endpoint.save(update_fields=["restarts", "state", "error", "updated_at"])
        _replica_submit(endpoint, endpoint.created_by, [line])


def endpoint_record_request(endpoint_pk: int, seconds: float, ok: bool) -> None:
    pipe = get_redis().pipeline(transaction=False)
    key = redis_keys.endpoint_stats(endpoint_pk)
    pipe.hincrby(key, "requests", 1)
    if not ok:
        pipe.hincrby(key, "errors", 1)
    pipe.hincrbyfloat(key, "seconds", seconds)
    pipe.execute()


def endpoint_stats(endpoint_pk: int) -> dict[str, float]:
    raw = get_redis().hgetall(redis_keys.endpoint_stats(endpoint_pk))
    requests = int(raw.get(b"requests", 0))
    seconds = float(raw.get(b"seconds", 0.0))
    return {
        "requests": requests,
        "errors": int(raw.get(b"errors", 0)),
        "mean_latency_ms": round(seconds / requests * 1000, 2) if requests else 0.0,
    }


TRY_NO_REPLICA = "No replica answers yet (the endpoint is {state})."


def endpoint_try(*, endpoint: Endpoint, body: bytes) -> tuple[int, str]:
    """Send `body` to a serving replica (the portal's try-a-request form): (status, answer text)."""
    replicas = serving_replicas(endpoint)
    if not replicas:
        return 503, TRY_NO_REPLICA.format(state=endpoint.state)
    replica = replicas[0]
    connection = http.client.HTTPConnection(
        replica.address, replica.port, timeout=settings.TRAINHUB_ENDPOINT_TIMEOUT_SECONDS
    )
    started = time.perf_counter()
    try:
        connection.request(
            "POST",
            "/score",
            body=body,
            headers={"Content-Type": "application/json", "X-TrainHub-Replica": replica.secret},
        )
        response = connection.getresponse()
        answer = response.read(1_000_000).decode("utf-8", errors="replace")
        status = response.status
    except OSError as error:
        return 502, f"The replica could not be reached: {error}"
    finally:
        connection.close()
    endpoint_record_request(endpoint.pk, time.perf_counter() - started, status < 400)
    return status, answer
