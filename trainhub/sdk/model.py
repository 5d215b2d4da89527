"""`Model`: versions of a registered model, as in the guide — register, get, list, download,
tags, delete, and export to ONNX (done by a job on a node, never on this machine or the server)."""

from __future__ import annotations

import builtins
import hashlib
import importlib.metadata
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

from trainhub.sdk import exceptions
from trainhub.sdk._deployment import inference_payload
from trainhub.sdk._downloads import ChecksumMismatchError, TargetExistsError, download_checked, target_inside
from trainhub.sdk._uploads import CHUNK_BYTES, known_sha256, progress_bar
from trainhub.sdk.webservice import Webservice

__all__ = ["ChecksumMismatchError", "ExportFailedError", "InferenceConfig", "Model", "OnnxExport", "TargetExistsError"]

FINAL_EXPORT_STATES = ("Succeeded", "Failed", "Canceled")


class ExportFailedError(exceptions.TrainHubError):
    """An ONNX export failed (loading, exporting, the checker, or parity above the tolerance)."""


def _tag_filters(tags: Any) -> list[str]:
    """The guide's tag filters — ['key'], [['key', 'value']], or a dict — as 'key' / 'key=value'."""
    if not tags:
        return []
    if isinstance(tags, dict):
        return [f"{k}={v}" if v is not None else str(k) for k, v in tags.items()]
    filters = []
    for tag in tags:
        if isinstance(tag, (list, tuple)):
            filters.append(f"{tag[0]}={tag[1]}" if len(tag) > 1 else str(tag[0]))
        else:
            filters.append(str(tag))
    return filters


def _framework_version() -> str:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def local_files(model_path: str | os.PathLike[str]) -> tuple[str, bool, list[tuple[str, Path]]]:
    """(root name, is folder, [(path in the version, local file)]) of a local file or folder.

    Symlinks are not followed (as run outputs never copy them): the version holds regular files."""
    given = Path(model_path).expanduser()
    if given.is_symlink() or not given.exists():
        raise exceptions.UserErrorException(f"model_path {str(model_path)!r} is not a file or folder here.")
    given = given.resolve()
    root = given.name
    if given.is_file():
        return root, False, [(root, given)]
    found: list[tuple[str, Path]] = []
    for folder, dirnames, filenames in os.walk(given):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(folder, d)))
        for name in sorted(filenames):
            absolute = Path(folder) / name
            if absolute.is_symlink() or not absolute.is_file():
                continue
            found.append((f"{root}/{absolute.relative_to(given).as_posix()}", absolute))
    if not found:
        raise exceptions.UserErrorException(f"The folder {str(model_path)!r} holds no regular files to register.")
    return root, True, found


def upload_files(workspace: Any, files: list[tuple[str, Path]], *, show_progress: bool = True) -> list[dict[str, Any]]:
    """Upload each file the server does not hold yet (by sha256), resuming any upload of it that
    was cut off before; returns the version's files. A file larger than one chunk is sent without
    hashing it, and the server names it (unless this process knows its sha256 already: then the
    server is asked first)."""
    manifest = []
    for path, local in files:
        size = local.stat().st_size
        sha256 = known_sha256(local)
        bar = progress_bar(f"Uploading {path}", show_progress)
        if sha256 is None and size > CHUNK_BYTES:
            sha256 = workspace._store.upload_model_blob_keyed(local, on_progress=bar)["sha256"]
        else:
            sha256 = sha256 or _sha256_of(local)
            workspace._store.upload_model_blob(sha256, local, on_progress=bar)
        manifest.append({"path": path, "sha256": sha256, "size": size})
    return manifest


def register_local(
    workspace: Any,
    model_path: str | os.PathLike[str],
    model_name: str,
    *,
    run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    description: str | None = None,
    model_framework: str | None = None,
    model_framework_version: str | None = None,
    show_progress: bool = True,
) -> Model:
    root, is_folder, files = local_files(model_path)
    manifest = upload_files(workspace, files, show_progress=show_progress)
    details = workspace._store.register_model_version(
        model_name,
        {
            "run_id": run_id,
            "root": root,
            "is_folder": is_folder,
            "files": manifest,
            "tags": dict(tags or {}),
            "properties": dict(properties or {}),
            "description": description or "",
            "framework": model_framework or "PyTorch",
            "framework_version": model_framework_version or _framework_version(),
        },
    )
    return Model(workspace, _details=details)


class Model:
    """One version of a registered model (the latest unless `version` or `id` says which)."""

    def __init__(
        self,
        workspace: Any,
        name: str | None = None,
        id: str | None = None,
        tags: Any = None,
        properties: Any = None,
        version: int | None = None,
        run_id: str | None = None,
        _details: dict[str, Any] | None = None,
        **_ignored: Any,
    ):
        self.workspace = workspace
        if _details is None:
            if id:
                name, _, number = id.partition(":")
                version = int(number) if number else version
            if not name:
                raise exceptions.UserErrorException("Give Model a name (or an id 'name:version').")
            _details = workspace._store.get_model_version(name, version)
        self._apply(_details)

    def _apply(self, details: dict[str, Any]) -> None:
        self._details = details
        self.name: str = details["name"]
        self.version: int = details["version"]
        self.id: str = details["id"]
        self.tags: dict[str, str] = dict(details["tags"])
        self.properties: dict[str, str] = dict(details["properties"])
        self.description: str = details["description"]
        self.model_framework: str = details["framework"]
        self.model_framework_version: str = details["framework_version"]
        self.run_id: str | None = details["run_id"]
        self.experiment_name: str | None = details["experiment"]
        self.environment: dict[str, Any] | None = details["environment"]
        self.snapshot: str | None = details["snapshot"]
        self.created_by: str | None = details["created_by"]
        self.created_time: str = details["created_at"]
        self.files: list[dict[str, Any]] = list(details["files"])
        self.root: str = details["root"]
        self.is_folder: bool = details["is_folder"]
        self.size: int = details["size"]
        self.url: str = self.workspace.url + details["portal_url"]

    # ------------------------------------------------------------ class-level

    @staticmethod
    def register(
        workspace: Any,
        model_path: str | os.PathLike[str],
        model_name: str,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        description: str | None = None,
        model_framework: str | None = None,
        model_framework_version: str | None = None,
        show_progress: bool = True,
        **_ignored: Any,
    ) -> Model:
        """Register a local file or folder as the next version of `model_name` (uploads it)."""
        return register_local(
            workspace,
            model_path,
            model_name,
            tags=tags,
            properties=properties,
            description=description,
            model_framework=model_framework,
            model_framework_version=model_framework_version,
            show_progress=show_progress,
        )

    @staticmethod
    def list(
        workspace: Any,
        name: str | None = None,
        tags: Any = None,
        latest: bool = False,
        **_ignored: Any,
    ) -> list[Model]:
        """Versions, newest first per model; `tags` as ['key'], [['key', 'value']] or a dict."""
        params: dict[str, Any] = {"tag": _tag_filters(tags), "latest": latest}
        if name:
            params["name"] = name
        found = workspace._store.list_model_versions(params)
        return [Model(workspace, _details=details) for details in found]

    @staticmethod
    def deploy(
        workspace: Any,
        name: str,
        models: builtins.list[Model],
        inference_config: InferenceConfig | None = None,
        deployment_config: dict[str, Any] | None = None,
        deployment_target: Any = None,
        overwrite: bool = False,
        show_output: bool = False,
        **_ignored: Any,
    ) -> Any:
        """Serve `models` as the endpoint `name` on a compute cluster: a replica runs the inference
        config's entry script (init() once, run(raw_data) per request) in its run's box, or, with no
        inference config and one ONNX version, onnxruntime. Returns the Webservice; its
        wait_for_deployment() waits until it answers."""
        config = dict(deployment_config or {})
        if deployment_target is not None and not config.get("compute_target"):
            target = deployment_target
            config["compute_target"] = target if isinstance(target, str) else target.name
        payload = inference_payload(inference_config, workspace) if inference_config is not None else {}
        payload.update(
            name=name,
            models=[{"name": m.name, "version": m.version} for m in models],
            deployment_config={k: v for k, v in config.items() if k not in ("tags", "description") and v is not None},
            overwrite=bool(overwrite),
            description=config.get("description") or "",
            tags=dict(config.get("tags") or {}),
        )
        details = workspace._store.deploy_endpoint(payload)
        service = Webservice(workspace, name, _details=details)
        if show_output:
            service.wait_for_deployment(show_output=True)
        return service

    @staticmethod
    def get_model_path(model_name: str, version: int | None = None, _workspace: Any = None) -> str:
        """Inside an endpoint's scoring script: where a deployed model's files are (the file itself
        when the version is one file). Elsewhere: the same under ./azureml-models."""
        root = Path(os.environ.get("TRAINHUB_MODELS_ROOT") or Path.cwd() / "azureml-models")
        folder = root / model_name
        found = folder.iterdir() if folder.is_dir() else iter(())
        versions = sorted((p for p in found if p.name.isdigit()), key=lambda p: int(p.name))
        if version is not None:
            versions = [p for p in versions if p.name == str(int(version))]
        if not versions:
            raise exceptions.UserErrorException(
                f"Model {model_name}{'' if version is None else f':{version}'} is not deployed here (looked in {root})."
            )
        entries = list(versions[-1].iterdir())
        if len(entries) == 1 and entries[0].is_file():
            return str(entries[0])
        return str(versions[-1])

    # ------------------------------------------------------------ this version

    def download(
        self,
        target_dir: str = ".",
        exist_ok: bool = False,
        exists_ok: bool | None = None,
        show_progress: bool = False,
    ) -> str:
        """Download the version's file or folder into `target_dir`; returns its path there.

        Every file is checked against its registered sha256; a partial download resumes."""
        exist_ok = exist_ok if exists_ok is None else exists_ok
        target_root = os.path.normpath(os.path.join(target_dir, self.root))
        targets = [(f, target_inside(target_dir, f["path"])) for f in self.files]
        if not exist_ok:
            present = [path for _, path in targets if os.path.exists(path)]
            if present:
                raise TargetExistsError(present[0])
        for model_file, target in targets:
            download_checked(
                partial(self.workspace._store.open_model_file, self.name, self.version, model_file["path"]),
                target,
                size=model_file["size"],
                sha256=model_file["sha256"],
                label=f"{self.id} {model_file['path']}",
                show_progress=show_progress,
            )
        return target_root

    def add_tags(self, tags: dict[str, Any]) -> None:
        self._apply(self.workspace._store.update_model_tags(self.name, self.version, {"add": dict(tags)}))

    def remove_tags(self, tags: Any) -> None:
        names = list(tags) if not isinstance(tags, str) else [tags]
        self._apply(
            self.workspace._store.update_model_tags(self.name, self.version, {"remove": [str(n) for n in names]})
        )

    def delete(self) -> None:
        """Delete this version; its number is never given to another version."""
        self.workspace._store.delete_model_version(self.name, self.version)

    def get_details(self) -> dict[str, Any]:
        return dict(self._details)

    def export_onnx(
        self,
        sample_input_shape: builtins.list[int] | tuple[int, ...],
        opset: int = 17,
        compute_target: Any = None,
        tolerance: float | None = None,
        wait: bool = True,
        show_output: bool = False,
        timeout_seconds: float = 1800,
    ) -> Model | OnnxExport:
        """Export to ONNX on a node; returns the new version of '<name>-onnx' (or, with
        wait=False, the export to follow). Raises ExportFailedError when it fails."""
        payload: dict[str, Any] = {
            "sample_input_shape": [int(d) for d in sample_input_shape],
            "opset": int(opset),
        }
        if tolerance is not None:
            payload["tolerance"] = float(tolerance)
        if compute_target is not None:
            payload["compute_target"] = compute_target if isinstance(compute_target, str) else compute_target.name
        export = OnnxExport(self.workspace, self.workspace._store.start_onnx_export(self.name, self.version, payload))
        if not wait:
            return export
        return export.wait_for_completion(show_output=show_output, timeout_seconds=timeout_seconds)

    def __repr__(self) -> str:
        workspace = getattr(self.workspace, "name", None)
        return f"Model(workspace={workspace!r}, name={self.name!r}, version={self.version})"


class InferenceConfig:
    """What a deployment runs: `entry_script` (init() and run(raw_data)) from `source_directory`
    (the entry script's folder when None), in `environment` (the default curated one when None)."""

    def __init__(
        self,
        entry_script: str | None = None,
        runtime: str | None = None,
        conda_file: str | None = None,
        extra_docker_file_steps: str | None = None,
        source_directory: str | os.PathLike[str] | None = None,
        enable_gpu: bool | None = None,
        description: str | None = None,
        base_image: str | None = None,
        base_image_registry: Any = None,
        cuda_version: str | None = None,
        environment: Any = None,
        **_ignored: Any,
    ):
        if source_directory is None and entry_script:
            source_directory, entry_script = os.path.dirname(entry_script) or ".", os.path.basename(entry_script)
        self.entry_script = entry_script
        self.source_directory = str(source_directory) if source_directory is not None else None
        self.environment = environment
        self.description = description


class OnnxExport:
    """An ONNX export running on a node: its state, its run, and the parity figure it found."""

    def __init__(self, workspace: Any, details: dict[str, Any]):
        self.workspace = workspace
        self._details = details

    @property
    def id(self) -> int:
        return self._details["id"]

    @property
    def run_id(self) -> str | None:
        return self._details["run_id"]

    @property
    def max_abs_diff(self) -> float | None:
        return self._details["max_abs_diff"]

    def get_details(self) -> dict[str, Any]:
        self._details = self.workspace._store.get_onnx_export(self.id)
        return dict(self._details)

    def get_status(self) -> str:
        return self.get_details()["state"]

    def wait_for_completion(
        self, show_output: bool = False, timeout_seconds: float = 1800, poll_seconds: float = 0.5
    ) -> Model:
        if show_output and self.run_id:
            # Imported here: experiment.py needs pathspec, which the in-run SDK (standard library
            # only) lacks, and scoring scripts import this module inside runs.
            from trainhub.sdk.experiment import Experiment
            from trainhub.sdk.run import Run

            Run(Experiment(self.workspace, "onnx-export"), self.run_id).wait_for_completion(
                show_output=True, raise_on_error=False
            )
        deadline = time.monotonic() + timeout_seconds
        # Until the run ended too, so that its log is complete when this returns.
        while (details := self.get_details())["state"] not in FINAL_EXPORT_STATES or (
            details["run_status"] not in (None, "Completed", "Failed", "Canceled")
        ):
            if time.monotonic() > deadline:
                raise exceptions.TrainHubError(f"ONNX export {self.id} did not finish in {timeout_seconds} s.")
            time.sleep(poll_seconds)
        if details["state"] != "Succeeded" or not details["result"]:
            raise ExportFailedError(
                f"ONNX export of {details['source']} failed: "
                f"{details['reason'] or details['state']}"
                + (
                    f" (max abs difference {details['max_abs_diff']:.3g}, tolerance {details['tolerance']:g})"
                    if details["max_abs_diff"] is not None
                    else ""
                ),
            )
        return Model(self.workspace, id=details["result"])

    def __repr__(self) -> str:
        source, state = self._details["source"], self._details["state"]
        return f"OnnxExport(id={self.id}, source={source!r}, state={state!r})"
