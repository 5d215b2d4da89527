"""Small builders: data uploaded and placed in a datastore through the API, as the SDK does it."""

from __future__ import annotations

import hashlib

from django.test import Client


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
