"""Reads about environments, always as seen from one workspace: the curated ones plus its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from django.db.models import Max, Q, QuerySet
from django.http import Http404

from trainhub.environments import curated
from trainhub.environments.models import Environment, EnvironmentBuild, EnvironmentVersion
from trainhub.workspaces.models import Workspace

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

ENVIRONMENT_NOT_FOUND = "No environment named {name!r} in workspace {workspace!r} or among the curated environments."
VERSION_NOT_FOUND = "Environment {name!r} has no version {version} (its latest is {latest})."
MAX_BUILDS_SHOWN = 50


@dataclass(frozen=True)
class EnvironmentChoice:
    """What a run records of its environment: the name and version chosen, and the full spec."""

    name: str
    version: int | None
    spec: dict[str, Any]


class _LatestVersion(TypedDict):
    latest_version: int | None


def visible_environments(workspace: Workspace) -> QuerySet[WithAnnotations[Environment, _LatestVersion]]:
    """Curated environments first, then the workspace's own, each by name."""
    return (
        Environment.objects.filter(Q(workspace__isnull=True) | Q(workspace=workspace))
        .select_related("workspace", "created_by")
        .annotate(latest_version=Max("versions__version"))
        .order_by("workspace_id", "name")
    )


def environment_get(workspace: Workspace, name: str) -> Environment:
    # Curated names carry the reserved prefix, so a curated and a workspace name never collide.
    environment: Environment | None = visible_environments(workspace).filter(name=name).first()
    if environment is None:
        environment = curated_for_azure_name(workspace, name)
    if environment is None:
        raise Http404(ENVIRONMENT_NOT_FOUND.format(name=name, workspace=workspace.name))
    return environment


def curated_for_azure_name(workspace: Workspace, name: str) -> Environment | None:
    """The curated environment that answers to a cloud curated name (as written, or with
    TrainHub- for AzureML-, in any capitalisation)."""
    key = curated.alias_key(name)
    if key is None:
        return None
    for environment in visible_environments(workspace).filter(workspace__isnull=True):
        if any(curated.alias_key(alias) == key for alias in environment.answers_to or []):
            return environment
    return None


def versions_of(environment: Environment) -> QuerySet[EnvironmentVersion]:
    return environment.versions.select_related("created_by").order_by("-version")


def version_get(environment: Environment, version: int | None = None) -> EnvironmentVersion:
    """The given version, or the latest when `version` is None."""
    versions = versions_of(environment).select_related("environment", "environment__workspace")
    found = versions.first() if version is None else versions.filter(version=version).first()
    if found is None:
        latest = versions.first()
        raise Http404(
            VERSION_NOT_FOUND.format(
                name=environment.name, version=version, latest=latest.version if latest else "none"
            )
        )
    return found


def latest_versions(workspace: Workspace) -> list[EnvironmentVersion]:
    """The latest version of each environment the workspace sees, in list order."""
    environments = list(visible_environments(workspace))
    wanted = Q(pk__in=[])
    for environment in environments:
        if environment.latest_version is not None:
            wanted |= Q(environment=environment, version=environment.latest_version)
    found = {v.environment_id: v for v in EnvironmentVersion.objects.filter(wanted).select_related("created_by")}
    versions = []
    for environment in environments:
        version = found.get(environment.pk)
        if version is not None:
            version.environment = environment
            versions.append(version)
    return versions


def builds_of(version: EnvironmentVersion) -> QuerySet[EnvironmentBuild]:
    """Builds of the version's spec on every node, newest first: equal specs share their builds."""
    return EnvironmentBuild.objects.filter(spec_hash=version.spec_hash).order_by("-started_at")[:MAX_BUILDS_SHOWN]


def environment_for_run(*, workspace: Workspace, name: str, version: int | None) -> EnvironmentChoice:
    """What a run submitted with this environment records: its name, version and full spec.

    One query for a name as it is stored (every submit reads this); a cloud curated name, or a
    name or version that is not there, takes the longer way that finds it or says why not."""
    versions = EnvironmentVersion.objects.filter(
        Q(environment__workspace__isnull=True) | Q(environment__workspace=workspace), environment__name=name
    )
    versions = versions.order_by("-version") if version is None else versions.filter(version=version)
    row = versions.values_list("environment__name", "version", "spec").first()
    if row is not None:
        return EnvironmentChoice(name=row[0], version=row[1], spec=row[2])
    found = version_get(environment_get(workspace, name), version)
    return EnvironmentChoice(name=found.environment.name, version=found.version, spec=found.spec)
