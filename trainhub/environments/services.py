"""Writes about environments: registering versions, curating, cloning, deprecating, builds."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import django_rq
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from trainhub.environments import curated
from trainhub.environments.builders import (
    BuildError,
    BuildLog,
    MaterialisedEnvironment,
    cached_environment,
    direct_urls_allowed,
    materialise_environment,
    uses_docker,
)
from trainhub.environments.curated import CURATED_NEEDS_PREFIX
from trainhub.environments.docker_builder import cached_image, materialise_image
from trainhub.environments.models import (
    NAME_MESSAGE,
    BuildStatus,
    Environment,
    EnvironmentBuild,
    EnvironmentVersion,
    name_validator,
)
from trainhub.environments.selectors import EnvironmentChoice
from trainhub.environments.spec import SpecError, normalise_spec, spec_hash
from trainhub.workspaces.permissions import Access, Action

RESERVED_NAME = (
    "Names starting with '" + curated.RESERVED_PREFIX + "' are reserved for curated environments, "
    "which administrators make in the admin site. Choose another name: to change a curated "
    "environment, clone it under a name of your own."
)
ANSWERS_TO_PREFIX = "{name!r} is not a cloud curated name: it starts with AzureML- (or TrainHub-)."
ANSWERS_TO_TAKEN = "{name!r} already finds the curated environment {other}: a name finds one environment."
CURATED_STAFF_ONLY = "Only TrainHub administrators (staff) can create or change curated environments."
NAME_TAKEN = "An environment named {name!r} already exists here."
# By name: the job module imports this one.
BUILD_JOB = "trainhub.environments.jobs.build_version_job"
# Build logs can be huge (pip's verbose output); the end says what went wrong.
MAX_STORED_LOG_CHARS = 200_000


@dataclass(frozen=True)
class Registration:
    version: EnvironmentVersion
    created: bool


def _check_name(name: str) -> str:
    name = name.strip()
    try:
        name_validator(name)
    except ValidationError:
        raise ValidationError({"name": NAME_MESSAGE}) from None
    return name


def _normalised(spec: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return normalise_spec(spec, allow_direct_urls=direct_urls_allowed())
    except SpecError as error:
        raise ValidationError({"spec": str(error)}) from None


def _add_version(environment: Environment, spec: dict[str, Any], user: User | None) -> Registration:
    """The next version of `environment` with `spec`, unless its latest has exactly that spec."""
    locked = Environment.objects.select_for_update().get(pk=environment.pk)
    digest = spec_hash(spec)
    latest = locked.versions.order_by("-version").first()
    if latest is not None and latest.spec_hash == digest:
        return Registration(latest, created=False)
    version = EnvironmentVersion.objects.create(
        environment=locked,
        version=(latest.version + 1) if latest else 1,
        spec=spec,
        spec_hash=digest,
        created_by=user if user is not None and user.is_authenticated else None,
    )
    version.environment = environment
    return Registration(version, created=True)


def _environment_for(*, workspace, name: str, user: User | None, description: str) -> Environment:
    environment = Environment.objects.filter(workspace=workspace, name=name).first()
    if environment is not None:
        return environment
    if Environment.objects.filter(workspace=workspace, name__iexact=name).exists():
        raise ValidationError({"name": NAME_TAKEN.format(name=name)})
    try:
        with transaction.atomic():
            return Environment.objects.create(
                workspace=workspace,
                name=name,
                description=description,
                created_by=user if user is not None and user.is_authenticated else None,
            )
    except IntegrityError:
        # Someone registered the same name a moment ago: theirs is the environment to version.
        return Environment.objects.get(workspace=workspace, name=name)


@transaction.atomic
def environment_register(
    *,
    access: Access,
    user: User,
    name: str,
    spec: dict[str, Any],
    description: str = "",
) -> Registration:
    """Register `spec` as the next version of the workspace environment `name` (made if new).

    Re-registering the spec of the latest version returns that version instead of a copy.
    """
    access.require(Action.WRITE)
    if curated.is_reserved(name.strip()):
        raise ValidationError({"name": RESERVED_NAME})
    name = _check_name(name)
    normalised = _normalised(spec)
    environment = _environment_for(workspace=access.workspace, name=name, user=user, description=description)
    return _add_version(environment, normalised, user)


def environment_for_submit(
    *, access: Access, user: User, name: str, spec: dict[str, Any], description: str = ""
) -> EnvironmentChoice:
    """What a run submitted with an environment's spec records: the spec registered as in
    `environment_register` (an unchanged one keeps its version). Call it in the transaction of the
    submit, so that a refused submit registers nothing."""
    version = environment_register(access=access, user=user, name=name, spec=spec, description=description).version
    return EnvironmentChoice(name=version.environment.name, version=version.version, spec=version.spec)


@transaction.atomic
def environment_clone(*, access: Access, user: User, source: EnvironmentVersion, new_name: str) -> Registration:
    """A workspace environment `new_name` whose next version has the spec of `source`."""
    return environment_register(
        access=access,
        user=user,
        name=new_name,
        spec=source.spec,
        description=f"Cloned from {source.environment.name} version {source.version}.",
    )


def _require_staff(user: User | None) -> None:
    if user is None or not user.is_authenticated or not getattr(user, "is_staff", False):
        raise PermissionDenied(CURATED_STAFF_ONLY)


@transaction.atomic
def curated_environment_save(
    *,
    user: User,
    name: str,
    spec: dict[str, Any],
    description: str = "",
    deprecated: bool = False,
    environment: Environment | None = None,
    answers_to: list[str] | None = None,
) -> Registration:
    """Create a curated environment, or change one: a changed spec makes its next version.
    `answers_to`, when given, replaces the cloud curated names that find it."""
    _require_staff(user)
    registration = _curated_save(
        user=user,
        name=name,
        spec=spec,
        description=description,
        deprecated=deprecated,
        environment=environment,
    )
    if answers_to is not None:
        curated_answers_to_set(environment=registration.version.environment, names=answers_to)
    return registration


def curated_answers_to_clean(*, environment: Environment | None, names: list[str]) -> list[str]:
    """The cloud curated names (AzureML-…) that are to find `environment` (None: one being made),
    each once; a name another curated environment answers to is refused, so that each name finds
    one environment."""
    cleaned: list[str] = []
    for name in names:
        key = curated.alias_key(name.strip())
        if not key:
            raise ValidationError(ANSWERS_TO_PREFIX.format(name=name))
        if key not in {curated.alias_key(c) for c in cleaned}:
            cleaned.append(name.strip())
    others = Environment.objects.filter(workspace__isnull=True)
    if environment is not None and environment.pk:
        others = others.exclude(pk=environment.pk)
    taken = {curated.alias_key(alias): other.name for other in others for alias in other.answers_to or []}
    for name in cleaned:
        other = taken.get(curated.alias_key(name))
        if other is not None:
            raise ValidationError(ANSWERS_TO_TAKEN.format(name=name, other=other))
    return cleaned


def curated_answers_to_set(*, environment: Environment, names: list[str]) -> None:
    environment.answers_to = curated_answers_to_clean(environment=environment, names=names)
    environment.save(update_fields=["answers_to"])


def _curated_save(
    *,
    user: User | None,
    name: str,
    spec: dict[str, Any],
    description: str,
    deprecated: bool,
    environment: Environment | None,
) -> Registration:
    name = _check_name(name)
    if not name.startswith(curated.RESERVED_PREFIX):
        raise ValidationError({"name": CURATED_NEEDS_PREFIX})
    normalised = _normalised(spec)
    others = Environment.objects.filter(workspace__isnull=True, name__iexact=name)
    if environment is not None:
        if not environment.is_curated:
            raise ValidationError(CURATED_STAFF_ONLY)
        others = others.exclude(pk=environment.pk)
    if others.exists():
        raise ValidationError({"name": NAME_TAKEN.format(name=name)})
    if environment is None:
        environment = Environment.objects.create(
            workspace=None,
            name=name,
            description=description,
            deprecated=deprecated,
            created_by=user,
        )
    else:
        environment.name = name
        environment.description = description
        environment.deprecated = deprecated
        environment.save(update_fields=["name", "description", "deprecated"])
    return _add_version(environment, normalised, user)


@transaction.atomic
def environment_set_deprecated(*, user: User, environment: Environment, deprecated: bool) -> None:
    _require_staff(user)
    Environment.objects.filter(pk=environment.pk).update(deprecated=deprecated)
    environment.deprecated = deprecated


# ---------------------------------------------------------------- builds


def _log_tail(log: str) -> str:
    if len(log) <= MAX_STORED_LOG_CHARS:
        return log
    dropped = len(log) - MAX_STORED_LOG_CHARS
    return f"[… {dropped} earlier characters of the build log dropped]\n" + log[-MAX_STORED_LOG_CHARS:]


def record_build(
    *,
    spec_hash: str,
    node: str,
    status: str = BuildStatus.BUILDING,
    version: EnvironmentVersion | None = None,
    log: str = "",
    reason: str = "",
    cache_hit: bool = False,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> EnvironmentBuild:
    """A build of a spec on a node, as the node saw it; finish it with `build_finish`."""
    if status not in BuildStatus.values:
        raise ValidationError(f"A build's status is one of {', '.join(BuildStatus.values)}.")
    return EnvironmentBuild.objects.create(
        spec_hash=spec_hash,
        node=node[:255],
        status=status,
        version=version,
        log=_log_tail(log),
        reason=reason.splitlines()[0][:500] if reason else "",
        cache_hit=cache_hit,
        started_at=started_at or timezone.now(),
        finished_at=finished_at,
    )


def build_finish(
    *, build: EnvironmentBuild, status: str, log: str, reason: str = "", cache_hit: bool = False
) -> EnvironmentBuild:
    if status not in (BuildStatus.SUCCEEDED, BuildStatus.FAILED):
        raise ValidationError("A build finishes succeeded or failed.")
    build.status = status
    build.log = _log_tail(log)
    build.reason = reason.splitlines()[0][:500] if reason else ""
    build.cache_hit = cache_hit
    build.finished_at = timezone.now()
    build.save(update_fields=["status", "log", "reason", "cache_hit", "finished_at"])
    return build


class _RecordedLog(BuildLog):
    """A build log that also keeps the build row current, so the portal shows progress."""

    INTERVAL_SECONDS = 1.0

    def __init__(self, build: EnvironmentBuild, log: Callable[[str], None]) -> None:
        super().__init__(log)
        self.build = build
        self.flushed_at = 0.0

    def __call__(self, line: str) -> None:
        super().__call__(line)
        now = time.monotonic()
        if now - self.flushed_at >= self.INTERVAL_SECONDS:
            self.flushed_at = now
            EnvironmentBuild.objects.filter(pk=self.build.pk).update(log=_log_tail(self.text()))


def materialise(spec: dict, *, cache_dir: Path, log: Callable[[str], None]) -> MaterialisedEnvironment:
    """The environment of `spec` on this node, from the builder its kind needs."""
    if uses_docker(spec):
        return materialise_image(spec, cache_dir=cache_dir, log=log)
    return materialise_environment(spec, cache_dir=cache_dir, log=log)


def cached(spec: dict, *, cache_dir: Path, log: Callable[[str], None]) -> MaterialisedEnvironment | None:
    """The environment of `spec` when this node has it built, from the builder its kind needs."""
    if uses_docker(spec):
        return cached_image(spec, cache_dir=cache_dir, log=log)
    return cached_environment(spec, cache_dir=cache_dir, log=log)


def materialise_recorded(
    spec: dict[str, Any],
    *,
    cache_dir: Path,
    node: str,
    log: Callable[[str], None],
    version: EnvironmentVersion | None = None,
) -> MaterialisedEnvironment:
    """`materialise` (a virtualenv, or an image for a Docker environment), with each real build on
    this node recorded for the portal.

    For executors: a cache hit writes nothing; a build (or a failed one) becomes an
    EnvironmentBuild with its log and reason. Raises BuildError as the builder does.
    """
    hit = cached(spec, cache_dir=cache_dir, log=log)
    if hit is not None:
        return hit
    build = record_build(spec_hash=spec_hash(spec), node=node, version=version)
    return _build_recorded(build, spec, cache_dir, log)


def build_version(
    *,
    version: EnvironmentVersion,
    cache_dir: Path,
    node: str,
    log: Callable[[str], None] | None = None,
) -> EnvironmentBuild:
    """Materialise `version` into `cache_dir` on this machine and record how it went, hit or not.

    Not atomic: the build takes seconds to minutes, and its row shows progress meanwhile.
    """
    build = record_build(spec_hash=version.spec_hash, node=node, version=version)
    try:
        _build_recorded(build, version.spec, cache_dir, log or (lambda _line: None))
    except BuildError:
        pass  # recorded on the build row, which is what the caller gets
    build.refresh_from_db()
    return build


def _build_recorded(
    build: EnvironmentBuild, spec: dict[str, Any], cache_dir: Path, log: Callable[[str], None]
) -> MaterialisedEnvironment:
    recorded = _RecordedLog(build, log)
    try:
        built = materialise(spec, cache_dir=cache_dir, log=recorded)
    except BuildError as error:
        build_finish(
            build=build,
            status=BuildStatus.FAILED,
            log=error.log or recorded.text(),
            reason=error.reason,
        )
        raise
    build_finish(build=build, status=BuildStatus.SUCCEEDED, log=recorded.text(), cache_hit=built.cache_hit)
    return built


def build_enqueue(*, user: User, version: EnvironmentVersion) -> None:
    """Build `version` on the server's worker (the admin's "build now") once the request commits."""
    _require_staff(user)
    transaction.on_commit(lambda: django_rq.get_queue("default").enqueue(BUILD_JOB, version.pk))


# ---------------------------------------------------------------- demo


@transaction.atomic
def seed_demo(*, workspace, user) -> None:
    """`make run`'s curated PyTorch environments: the lean CPU one, and the full one that answers
    to the cloud SDK's curated PyTorch names. Idempotent: a second call changes nothing. One whose
    latest version is a spec TrainHub shipped before gets the current one (an administrator's own
    edit is kept)."""
    for seeded in curated.SEEDED:
        environment = Environment.objects.filter(workspace__isnull=True, name=seeded.name).first()
        latest = environment.versions.order_by("-version").first() if environment is not None else None
        superseded = latest is not None and latest.spec in [_normalised(s) for s in seeded.earlier_specs]
        if environment is None or latest is None or superseded:
            registration = _curated_save(
                user=user,
                name=seeded.name,
                spec=seeded.spec,
                description=seeded.description,
                deprecated=False,
                environment=environment,
            )
            environment = registration.version.environment
        if seeded.answers_to and not environment.answers_to:
            environment.answers_to = list(seeded.answers_to)
            environment.save(update_fields=["answers_to"])
