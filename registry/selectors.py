"""Reads about registered models, versions, their files and ONNX exports, scoped to a workspace."""

from __future__ import annotations

from django.db.models import Count, Max, Q, QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import Http404

from registry.models import Model, ModelBlob, ModelFile, ModelVersion, OnnxExport
from runs.models import Run
from trainhub.workspaces.models import Workspace

MODEL_NOT_FOUND = "No model {name!r} in this workspace."
VERSION_NOT_FOUND = "Model {name!r} has no version {version}."
NO_VERSIONS = "Model {name!r} has no versions left."
FILE_NOT_FOUND = "Version {name}:{version} has no file {path!r}."
EXPORT_NOT_FOUND = "No ONNX export {pk} in this workspace."


def _with_tag(versions: QuerySet[ModelVersion], tag: str, index: int = 0) -> QuerySet[ModelVersion]:
    """'key' keeps versions having that tag; 'key=value' those where it has that value."""
    key, sep, value = tag.partition("=")
    key = key.strip()
    if not sep:
        return versions.filter(tags__has_key=key)
    alias = f"tag_value_{index}"
    # Cast to text: compared as JSON, a plain string value is not valid JSON on SQLite.
    value_of_key = Cast(KeyTextTransform(key, "tags"), TextField())
    return versions.alias(**{alias: value_of_key}).filter(**{alias: value.strip()})


def models_of(workspace: Workspace, *, search: str = "") -> QuerySet[Model]:
    """Models with at least one version, with their latest version number and version count.

    `search` matches a name (substring) or a tag of any version ('key' or 'key=value')."""
    models = workspace.models.annotate(latest_version=Max("versions__version"), version_count=Count("versions")).filter(
        version_count__gt=0
    )
    search = search.strip()
    if search:
        tagged = _with_tag(ModelVersion.objects.filter(model__workspace=workspace), search)
        models = models.filter(Q(name__icontains=search) | Q(pk__in=tagged.values("model_id")))
    return models.order_by("-updated_at", "name")


def recent_versions(workspace: Workspace, limit: int = 5) -> list[ModelVersion]:
    """The workspace's newest model versions, of every model."""
    versions = ModelVersion.objects.filter(model__workspace=workspace).select_related("model", "run")
    return list(versions.order_by("-created_at", "-id")[:limit])


def export_source_of(version: ModelVersion) -> OnnxExport | None:
    """The export that made this version, when it is an ONNX export of another."""
    return version.exported_from.select_related("source", "source__model").first()


def latest_versions(models: list[Model]) -> dict[int, ModelVersion]:
    wanted = [(m.pk, number) for m in models if (number := getattr(m, "latest_version", None))]
    if not wanted:
        return {}
    condition = Q()
    for model_pk, number in wanted:
        condition |= Q(model_id=model_pk, version=number)
    return {v.model_id: v for v in ModelVersion.objects.filter(condition)}


def model_get(workspace: Workspace, name: str) -> Model:
    model = workspace.models.filter(name=name).first()
    if model is None:
        raise Http404(MODEL_NOT_FOUND.format(name=name))
    return model


def versions_of(model: Model) -> QuerySet[ModelVersion]:
    return model.versions.select_related("created_by", "run__experiment").order_by("-version")


def version_get(workspace: Workspace, name: str, version: int | None = None) -> ModelVersion:
    """A version by number, or the latest one when `version` is None."""
    model = model_get(workspace, name)
    versions = ModelVersion.objects.select_related(
        "model", "model__workspace", "created_by", "run", "run__experiment"
    ).filter(model=model)
    found = versions.filter(version=version).first() if version is not None else versions.order_by("-version").first()
    if found is None:
        if version is None:
            raise Http404(NO_VERSIONS.format(name=name))
        raise Http404(VERSION_NOT_FOUND.format(name=name, version=version))
    return found


def versions_list(
    workspace: Workspace,
    *,
    name: str | None = None,
    tags: list[str] | None = None,
    latest: bool = False,
) -> list[ModelVersion]:
    """Versions of the workspace, newest first; `tags` are 'key' or 'key=value', all must match."""
    versions = ModelVersion.objects.select_related("model", "created_by", "run__experiment").filter(
        model__workspace=workspace
    )
    if name:
        versions = versions.filter(model__name=name)
    for index, tag in enumerate(tags or []):
        versions = _with_tag(versions, tag, index)
    versions = versions.order_by("model__name", "-version")
    if not latest:
        return list(versions)
    seen: set[int] = set()
    newest = []
    for version in versions:
        if version.model_id not in seen:
            seen.add(version.model_id)
            newest.append(version)
    return newest


def files_of(version: ModelVersion) -> QuerySet[ModelFile]:
    return version.files.order_by("path")


def file_get(version: ModelVersion, path: str) -> ModelFile:
    found = version.files.filter(path=path).first()
    if found is None:
        raise Http404(FILE_NOT_FOUND.format(name=version.model.name, version=version.version, path=path))
    return found


def versions_of_run(run: Run) -> QuerySet[ModelVersion]:
    return run.model_versions.select_related("model").order_by("model__name", "version")


def blob_get(workspace: Workspace, sha256: str) -> ModelBlob | None:
    return workspace.model_blobs.filter(sha256=sha256).first()


def exports_of(version: ModelVersion) -> QuerySet[OnnxExport]:
    return version.onnx_exports.select_related("run", "run__experiment", "result", "result__model").order_by("-id")


def export_get(workspace: Workspace, pk: int) -> OnnxExport:
    found = (
        OnnxExport.objects.select_related("source", "source__model", "run", "result", "result__model")
        .filter(pk=pk, source__model__workspace=workspace)
        .first()
    )
    if found is None:
        raise Http404(EXPORT_NOT_FOUND.format(pk=pk))
    return found
