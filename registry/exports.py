"""ONNX export of a version, as a TrainHub run on a node: the server never loads a model.

Loading a pickled model executes code, so the web server only ever moves a model's bytes. An
export is a run in the experiment `onnx-export`, in the model's own environment (the
environment of the run that made it, else the default curated one) plus onnx and onnxruntime,
with the source of the run that made it as its snapshot (so the model's classes import).
The run executes `python -m trainhub.sdk._onnx_export`, which fetches the version's file
with the run's token, loads it, exports, checks with `onnx.checker`, compares PyTorch and
onnxruntime on the same sample input, and reports back. A passing export becomes the next
version of the model `<name>-onnx` (file `model.onnx`); the parity figure is stored on the
export and as a property of that version. The export fails when the maximum absolute
difference is above the tolerance (DEFAULT_TOLERANCE unless the caller gives one).
"""

from __future__ import annotations

import copy
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from registry import services
from registry.models import ModelBlob, ModelVersion, OnnxExport
from runs.models import Run, Snapshot
from runs.services import one_file_snapshot, run_submit
from trainhub.environments.selectors import EnvironmentChoice, environment_for_run
from trainhub.workspaces.permissions import Access, Action

EXPORT_EXPERIMENT = "onnx-export"
ONNX_SUFFIX = "-onnx"
ONNX_FILE = "model.onnx"
DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = 1e-4
EXPORT_PACKAGES = ("onnx>=1.17", "onnxruntime>=1.20")
DEFAULT_ENVIRONMENT = "TrainHub-PyTorch-2.13-CPU"
MODEL_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".torchscript", ".pkl", ".bin")
MAX_INPUT_ELEMENTS = 1 << 26

BAD_SHAPE = "sample_input_shape is a list of 1 to 8 positive whole numbers, e.g. [1, 3, 224, 224]."
SHAPE_TOO_LARGE = "sample_input_shape has more than {limit} elements."
BAD_OPSET = "opset is an ONNX opset number from 7 to 25."
BAD_TOLERANCE = "tolerance is a positive number, e.g. 1e-4."
ALREADY_ONNX = "Version {name}:{version} is already an ONNX model."
NO_MODEL_FILE = (
    "Version {name}:{version} is a folder without exactly one model file ({suffixes}): "
    "register the file to export on its own."
)
NO_COMPUTE = "Workspace {workspace!r} has no compute target to run the export on: create one first."
UNKNOWN_COMPUTE = "No compute target named {name!r} in this workspace."
NOT_THIS_EXPORT = "Only the token of the run doing this export may report on it."
ALREADY_REPORTED = "ONNX export {pk} already reported its result."
EXPORT_RESULT_MISSING = "The export did not upload {file}: no uploaded file {sha!r} in this workspace."


def _check_request(sample_input_shape: Any, opset: Any, tolerance: Any) -> tuple[list[int], int, float]:
    if not isinstance(sample_input_shape, (list, tuple)) or not 1 <= len(sample_input_shape) <= 8:
        raise ValidationError(BAD_SHAPE)
    shape = []
    for dim in sample_input_shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValidationError(BAD_SHAPE)
        shape.append(dim)
    elements = 1
    for dim in shape:
        elements *= dim
    if elements > MAX_INPUT_ELEMENTS:
        raise ValidationError(SHAPE_TOO_LARGE.format(limit=MAX_INPUT_ELEMENTS))
    if isinstance(opset, bool) or not isinstance(opset, int) or not 7 <= opset <= 25:
        raise ValidationError(BAD_OPSET)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance > 0:
        raise ValidationError(BAD_TOLERANCE)
    return shape, opset, float(tolerance)


def _model_file(version: ModelVersion) -> str:
    paths = list(version.files.values_list("path", flat=True))
    if not version.is_folder and len(paths) == 1:
        return paths[0]
    candidates = [p for p in paths if p.lower().endswith(MODEL_SUFFIXES)]
    if len(candidates) != 1:
        raise ValidationError(
            NO_MODEL_FILE.format(name=version.model.name, version=version.version, suffixes=", ".join(MODEL_SUFFIXES))
        )
    return candidates[0]


def with_packages(spec: dict[str, Any], packages: tuple[str, ...]) -> dict[str, Any]:
    """A copy of an environment spec with pip packages added (ones it pins stay)."""
    cloned = copy.deepcopy(spec)
    pip = list(cloned.get("pip") or [])
    named = {_package_name(p) for p in pip if isinstance(p, str)}
    pip += [p for p in packages if _package_name(p) not in named]
    cloned["pip"] = pip
    return cloned


def _package_name(requirement: str) -> str:
    name = requirement.strip()
    for separator in ("[", "=", "<", ">", "!", "~", ";", " "):
        name = name.split(separator, 1)[0]
    return name.lower().replace("_", "-")


def _export_environment(access: Access, version: ModelVersion) -> EnvironmentChoice:
    run = version.run
    if run is not None:
        name, spec = run.environment_name, run.environment_spec
    else:
        base = environment_for_run(workspace=access.workspace, name=DEFAULT_ENVIRONMENT, version=None)
        name, spec = base.name, base.spec
    # The packages and the interpreter are the model's, but never the run's variables: a
    # PYTHONPATH or LD_PRELOAD of the spec would make the export import the member's code.
    spec = {**with_packages(spec, EXPORT_PACKAGES), "environment_variables": {}}
    return EnvironmentChoice(name=f"{name} + onnx", version=None, spec=spec)


def _export_snapshot(access: Access) -> Snapshot:
    """The snapshot of an export of a model with no run: one small file, the same every time."""
    text = b"An ONNX export job of TrainHub: python -m trainhub.sdk._onnx_export\n"
    return one_file_snapshot(access=access, name="EXPORT.txt", text=text)


def _compute_target(access: Access, version: ModelVersion, compute_target: str | None) -> str:
    clusters = access.workspace.clusters
    if compute_target:
        if not clusters.filter(name=compute_target).exists():
            raise ValidationError(UNKNOWN_COMPUTE.format(name=compute_target))
        return compute_target
    if version.run is not None and clusters.filter(pk=version.run.cluster_id).exists():
        return version.run.cluster.name
    first = clusters.order_by("name").first()
    if first is None:
        raise ValidationError(NO_COMPUTE.format(workspace=access.workspace.name))
    return first.name


def onnx_export_start(
    *,
    access: Access,
    user: User | None,
    version: ModelVersion,
    sample_input_shape: list[int],
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    compute_target: str | None = None,
) -> OnnxExport:
    """Submit the run that exports `version` to ONNX; the export is recorded before it starts."""
    access.require(Action.WRITE)
    shape, opset, tolerance = _check_request(sample_input_shape, opset, tolerance)
    if version.framework.lower() == "onnx":
        raise ValidationError(ALREADY_ONNX.format(name=version.model.name, version=version.version))
    source_path = _model_file(version)
    target = _compute_target(access, version, compute_target)
    environment = _export_environment(access, version)
    snapshot = version.run.snapshot if version.run is not None else _export_snapshot(access)
    with transaction.atomic():
        export = OnnxExport.objects.create(
            source=version,
            source_path=source_path,
            sample_input_shape=shape,
            opset=opset,
            tolerance=tolerance,
            created_by=user if user is not None and user.is_authenticated else None,
        )
        command = [
            "python",
            "-m",
            "trainhub.sdk._onnx_export",
            "--export-id",
            str(export.pk),
            "--model",
            version.model.name,
            "--version",
            str(version.version),
            "--file",
            source_path,
            "--shape",
            ",".join(str(d) for d in shape),
            "--opset",
            str(opset),
            "--tolerance",
            repr(tolerance),
        ]
        run = run_submit(
            access=access,
            user=user,
            experiment_name=EXPORT_EXPERIMENT,
            snapshot_sha256=snapshot.sha256,
            compute_target=target,
            environment=environment,
            command=command,
            tags={
                "model": version.model.name,
                "version": str(version.version),
                "onnx_export": str(export.pk),
            },
            display_name=f"ONNX export of {version.model.name}:{version.version}",
        )
        export.run = run
        export.save(update_fields=["run"])
    return export


def onnx_export_report(
    *,
    access: Access,
    export: OnnxExport,
    run: Run,
    passed: bool,
    max_abs_diff: float | None,
    message: str = "",
    onnx_sha256: str | None = None,
    onnx_size: int | None = None,
    details: dict[str, Any] | None = None,
) -> OnnxExport:
    """What the export's run found; a passing export registers `<name>-onnx`'s next version."""
    access.require(Action.WRITE)
    if export.run_id != run.pk:
        raise PermissionDenied(NOT_THIS_EXPORT)
    details = {str(k): str(v)[:200] for k, v in (details or {}).items()}
    with transaction.atomic():
        locked = OnnxExport.objects.select_for_update().get(pk=export.pk)
        if locked.passed is not None:
            raise ValidationError(ALREADY_REPORTED.format(pk=export.pk))
        # The job's own verdict is checked against the tolerance recorded when it was asked for.
        passed = bool(passed) and max_abs_diff is not None and max_abs_diff <= locked.tolerance
        locked.passed = passed
        locked.max_abs_diff = max_abs_diff
        locked.message = (message or "")[:5000]
        locked.details = details
        locked.reported_at = timezone.now()
        if passed:
            blob = ModelBlob.objects.filter(workspace=access.workspace, sha256=onnx_sha256 or "").first()
            if blob is None or (onnx_size is not None and blob.size != onnx_size):
                raise ValidationError(EXPORT_RESULT_MISSING.format(file=ONNX_FILE, sha=onnx_sha256))
            source = export.source
            locked.result = services.version_register_from_uploads(
                access=access,
                user=run.created_by,
                model_name=f"{source.model.name}{ONNX_SUFFIX}",
                root=ONNX_FILE,
                is_folder=False,
                files=[services.UploadedFileRef(path=ONNX_FILE, sha256=blob.sha256, size=blob.size)],
                run=run,
                tags={"onnx": "true", "source": f"{source.model.name}:{source.version}"},
                properties={
                    "source_model": source.model.name,
                    "source_version": source.version,
                    "onnx_opset": locked.opset,
                    "sample_input_shape": ",".join(str(d) for d in locked.sample_input_shape),
                    "parity_max_abs_diff": repr(max_abs_diff),
                    "parity_tolerance": repr(locked.tolerance),
                },
                description=f"ONNX export of {source.model.name}:{source.version}",
                framework="Onnx",
                framework_version=details.get("onnx", ""),
            )
        locked.save()
    return locked
