"""The REST store: one method per endpoint of the API the SDK calls, so no facade builds a URL.

Standard library only (a running script's `Run.get_context()` reaches its server through it).
Each method returns the server's JSON answer (or, for downloads, the streamed response); the
transport beneath adds the token, retries as its policy allows and turns errors into typed ones.
The POSTs whose repeat must not store twice (run submits, metric batches, model registrations) carry an
`Idempotency-Key`, fresh per call and the same for every attempt of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from trainhub.sdk._transport import DEFAULT_TIMEOUT, IDEMPOTENCY_HEADER, Response, Transport, new_idempotency_key
from trainhub.sdk._uploads import upload_file, upload_file_keyed

LONG = (5, 600)


def _keyed() -> dict[str, str]:
    return {IDEMPOTENCY_HEADER: new_idempotency_key()}


class RestStore:
    """The endpoints of one workspace (and the few outside any workspace) on one server."""

    def __init__(self, transport: Transport, workspace_name: str):
        self.transport = transport
        self.workspace_name = workspace_name

    def _path(self, path: str) -> str:
        return f"workspaces/{self.workspace_name}/{path.lstrip('/')}".rstrip("/")

    def _get(self, path: str, **kwargs: Any) -> Any:
        return self.transport.get(self._path(path), **kwargs)

    def _post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.transport.post(self._path(path), json=json, **kwargs)

    def _patch(self, path: str, json: Any) -> Any:
        return self.transport.patch(self._path(path), json=json)

    def _stream(
        self, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        return self.transport.request(
            "GET", self._path(path), params=params, headers=headers, stream=True, timeout=LONG
        )

    def _upload(self, path: str, local: Path, on_progress: Any) -> dict[str, Any]:
        return upload_file(self.transport, self._path(path), local, on_progress=on_progress)

    # ------------------------------------------------------------ workspace

    def get_workspace(self) -> dict[str, Any]:
        return self._get("")

    def list_vm_sizes(self) -> list[dict[str, Any]]:
        return self.transport.get("vm-sizes")

    # ------------------------------------------------------------ experiments and runs

    def list_experiments(self) -> list[dict[str, Any]]:
        return self._get("experiments")

    def submit_run(self, experiment: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"experiments/{experiment}/runs", json=payload, headers=_keyed())

    def submit_sweep(self, experiment: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"experiments/{experiment}/sweeps", json=payload, headers=_keyed())

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._get(f"sweeps/{sweep_id}")

    def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._post(f"sweeps/{sweep_id}/cancel")

    def list_runs(self, experiment: str, status: str | None = None) -> list[dict[str, Any]]:
        return self._get(f"experiments/{experiment}/runs", params={"status": status} if status else {})

    def upload_snapshot(self, sha256: str, local: Path, on_progress: Any = None) -> dict[str, Any]:
        return self._upload(f"snapshots/{sha256}", local, on_progress)

    def get_snapshot(self, sha256: str) -> dict[str, Any]:
        return self._get(f"snapshots/{sha256}")

    def get_run(self, run_id: str, *, wait: float | None = None) -> dict[str, Any]:
        """With `wait`, the server answers for a run that has not ended once it ends, or after that
        many seconds."""
        if wait is None:
            return self._get(f"runs/{run_id}")
        return self._get(f"runs/{run_id}", params={"wait": wait}, timeout=wait + DEFAULT_TIMEOUT)

    def claim_local_run(self, run_id: str) -> dict[str, Any]:
        """compute_target="local": the submitter's runner takes its run (runs/local_runner.py)."""
        return self._post(f"runs/{run_id}/local/claim")

    def report_local_run(self, run_id: str, report: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"runs/{run_id}/local/report", json=report)

    def upload_local_run_file(self, run_id: str, path: str, sha256: str, local: Path) -> dict[str, Any]:
        return self._upload(f"runs/{run_id}/local/files/{sha256}?path={quote(path, safe='')}", local, None)

    def update_run(self, run_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._patch(f"runs/{run_id}", changes)

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return self._post(f"runs/{run_id}/cancel")

    def get_run_logs(
        self, run_id: str, after: int, *, wait: float | None = None, known: int | None = None
    ) -> dict[str, Any]:
        """With `wait`, the server holds an answer with no line past `known` up to that many seconds,
        until the run prints or changes status."""
        params = {"after": after, "wait": wait, "known": known}
        return self._get(f"runs/{run_id}/logs", params=params, timeout=(wait or 0) + DEFAULT_TIMEOUT)

    def list_run_files(self, run_id: str) -> list[dict[str, Any]]:
        return self._get(f"runs/{run_id}/files")

    def open_run_file(self, run_id: str, name: str) -> Response:
        return self._stream(f"runs/{run_id}/file", params={"path": name})

    # ------------------------------------------------------------ metrics

    def log_metrics(self, run_id: str, batch: dict[str, Any], *, retry_seconds: float | None = None) -> Any:
        return self._post(f"runs/{run_id}/metrics", json=batch, headers=_keyed(), retry_seconds=retry_seconds)

    def get_metrics(self, run_id: str, name: str | None, rank: int) -> dict[str, Any]:
        return self._get(f"runs/{run_id}/metrics", params={"name": name, "rank": rank}, timeout=120)

    def get_metrics_summary(self, run_id: str) -> dict[str, Any]:
        return self._get(f"runs/{run_id}/metrics/summary", timeout=120)

    # ------------------------------------------------------------ model registry

    def register_model_version(self, model_name: str, registration: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"models/{model_name}/versions", json=registration, headers=_keyed())

    def upload_model_blob(self, sha256: str, local: Path, on_progress: Any = None) -> dict[str, Any]:
        return self._upload(f"model-blobs/{sha256}", local, on_progress)

    def upload_model_blob_keyed(self, local: Path, on_progress: Any = None) -> dict[str, Any]:
        return upload_file_keyed(self.transport, self._path("model-blobs"), local, on_progress=on_progress)

    def get_model_version(self, model_name: str, version: int | None = None) -> dict[str, Any]:
        if version is None:
            return self._get(f"models/{model_name}")
        return self._get(f"models/{model_name}/versions/{int(version)}")

    def list_model_versions(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._get("models", params=params)

    def update_model_tags(self, model_name: str, version: int, change: dict[str, Any]) -> dict[str, Any]:
        return self._patch(f"models/{model_name}/versions/{version}/tags", change)

    def delete_model_version(self, model_name: str, version: int) -> None:
        self.transport.delete(self._path(f"models/{model_name}/versions/{version}"))

    def open_model_file(
        self, model_name: str, version: int, name: str, headers: dict[str, str] | None = None
    ) -> Response:
        return self._stream(f"models/{model_name}/versions/{version}/file", params={"path": name}, headers=headers)

    def start_onnx_export(self, model_name: str, version: int, request: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"models/{model_name}/versions/{version}/onnx-exports", json=request)

    def get_onnx_export(self, export_id: int) -> dict[str, Any]:
        return self._get(f"onnx-exports/{export_id}")

    def report_onnx_export(self, export_id: int, report: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"onnx-exports/{export_id}/report", json=report)

    # ------------------------------------------------------------ endpoints

    def deploy_endpoint(self, deployment: dict[str, Any]) -> dict[str, Any]:
        return self._post("endpoints", json=deployment)

    def list_endpoints(self) -> list[dict[str, Any]]:
        return self._get("endpoints")

    def get_endpoint(self, name: str) -> dict[str, Any]:
        return self._get(f"endpoints/{name}")

    def update_endpoint(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._patch(f"endpoints/{name}", changes)

    def delete_endpoint(self, name: str) -> None:
        self.transport.delete(self._path(f"endpoints/{name}"))

    def regenerate_endpoint_key(self, name: str, key_type: str) -> dict[str, Any]:
        return self._post(f"endpoints/{name}/keys", json={"key_type": key_type})

    def get_endpoint_keys(self, name: str) -> dict[str, str]:
        return self._get(f"endpoints/{name}/keys")

    def get_endpoint_logs(self, name: str, after: int) -> dict[str, Any]:
        return self._get(f"endpoints/{name}/logs", params={"after": after})

    def endpoint_replica_ready(self, name: str, replica: int | str, where: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"endpoints/{name}/replicas/{replica}/ready", json=where)

    def score(self, scoring_uri: str, body: bytes) -> tuple[int, bytes]:
        """An endpoint's answer to `body` (status and content, whatever the status)."""
        return self.transport.exchange(
            "POST", scoring_uri, data=body, headers={"Content-Type": "application/json"}, timeout=(10, 120)
        )

    # ------------------------------------------------------------ environments

    def get_environment(self, name: str, version: int | None = None) -> dict[str, Any]:
        params = {"version": int(version)} if version is not None else None
        return self._get(f"environments/{quote(name, safe='')}", params=params)

    def list_environments(self) -> list[dict[str, Any]]:
        return self._get("environments")

    def register_environment(self, registration: dict[str, Any]) -> dict[str, Any]:
        return self._post("environments", json=registration)

    # ------------------------------------------------------------ compute

    def get_compute(self, name: str) -> dict[str, Any]:
        return self._get(f"computes/{name}")

    def list_computes(self) -> list[dict[str, Any]]:
        return self._get("computes")

    def create_compute(self, configuration: dict[str, Any]) -> dict[str, Any]:
        return self._post("computes", json=configuration)

    def update_compute(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._patch(f"computes/{name}", changes)

    def delete_compute(self, name: str) -> None:
        self.transport.delete(self._path(f"computes/{name}"))

    # ------------------------------------------------------------ datastores and datasets

    def get_datastore(self, name: str) -> dict[str, Any]:
        return self._get(f"datastores/{name}")

    def get_default_datastore(self) -> dict[str, Any]:
        return self._get("default-datastore")

    def create_datastore(self, name: str) -> dict[str, Any]:
        return self._post("datastores", json={"name": name})

    def list_datastores(self) -> list[dict[str, Any]]:
        return self._get("datastores")

    def list_datastore_files(self, name: str, prefix: str) -> list[dict[str, Any]]:
        return self._get(f"datastores/{name}/files", params={"prefix": prefix})

    def put_datastore_files(self, name: str, files: list[dict[str, str]], overwrite: bool) -> list[dict[str, Any]]:
        return self._post(f"datastores/{name}/files", json={"files": files, "overwrite": overwrite})

    def post_data_blob_batch(self, tar: bytes) -> dict[str, Any]:
        return self.transport.request(
            "POST", self._path("data-blobs"), data=tar, headers={"Content-Type": "application/x-tar"}, timeout=LONG
        ).json()

    def upload_data_blob(self, sha256: str, local: Path, on_progress: Any = None) -> dict[str, Any]:
        return self._upload(f"data-blobs/{sha256}", local, on_progress)

    def upload_data_blob_keyed(self, local: Path, on_progress: Any = None) -> dict[str, Any]:
        return upload_file_keyed(self.transport, self._path("data-blobs"), local, on_progress=on_progress)

    def open_data_blob(self, sha256: str, headers: dict[str, str] | None = None) -> Response:
        return self._stream(f"data-blobs/{sha256}/content", headers=headers)

    def register_dataset(self, name: str, registration: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"datasets/{name}/versions", json=registration)

    def get_dataset(self, name: str, version: int | str = "latest") -> dict[str, Any]:
        if version == "latest":
            return self._get(f"datasets/{name}")
        return self._get(f"datasets/{name}/versions/{int(version)}")

    def list_dataset_files(self, name: str, version: int) -> list[dict[str, Any]]:
        return self._get(f"datasets/{name}/versions/{version}/files")
