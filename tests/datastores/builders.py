"""Small builders: data uploaded and placed in a datastore through the API, as the SDK does it."""

from __future__ import annotations

import hashlib

from django.http import HttpResponse
from django.test import Client

from tests.runs.builders import make_cluster, make_snapshot
from trainhub.workspaces.models import Workspace


def upload(client: Client, workspace: str, files: dict[str, bytes], datastore: str = "workspaceblobstore") -> None:
    base = f"/api/v1/workspaces/{workspace}"
    assert client.get(f"{base}/default-datastore").status_code == 200
    for content in files.values():
        sha = hashlib.sha256(content).hexdigest()
        answer = client.put(f"{base}/data-blobs/{sha}", data=content, content_type="application/octet-stream")
        assert answer.status_code == 201, answer.content
    entries = [{"path": path, "sha256": hashlib.sha256(content).hexdigest()} for path, content in files.items()]
    answer = client.post(f"{base}/datastores/{datastore}/files", {"files": entries}, content_type="application/json")
    assert answer.status_code == 200 and {o["outcome"] for o in answer.json()} == {"stored"}, answer.content


def submit(client: Client, workspace: Workspace, arguments: list[str]) -> HttpResponse:
    """Submit a run with these arguments through the API (a cluster and a snapshot made for it)."""
    if not workspace.clusters.filter(name="cpu").exists():
        make_cluster(workspace, name="cpu")
    snapshot = make_snapshot(workspace)
    return client.post(
        f"/api/v1/workspaces/{workspace.name}/experiments/data/runs",
        {
            "snapshot": snapshot.sha256,
            "compute_target": "cpu",
            "environment": {"name": "TrainHub-PyTorch-2.13-CPU"},
            "script": "train.py",
            "arguments": arguments,
        },
        content_type="application/json",
    )
