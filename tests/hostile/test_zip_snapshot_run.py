"""A zip snapshot sent through the API by another tool (not the SDK's .tar.gz) runs end to end."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
import requests

from runs.models import LogChunk, Snapshot
from trainhub.sdk import Environment, Experiment, ScriptRunConfig
from trainhub.sdk.run import Run as SdkRun

pytestmark = pytest.mark.slow


def project_zip() -> bytes:
    """What `zip -r` of a small project gives: a folder member, a package in it, the script."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("birds/", b"")
        archive.writestr("birds/__init__.py", b"SPECIES = 'heron'\n")
        archive.writestr("train.py", b"from birds import SPECIES\nprint('trained on', SPECIES, flush=True)\n")
    return buffer.getvalue()


def test_a_zip_snapshot_uploaded_through_the_api_runs(ws, node, live_url, owner_token, tmp_path):
    data = project_zip()
    sha256 = hashlib.sha256(data).hexdigest()
    api = f"{live_url}/api/v1/workspaces/birds"
    headers = {"Authorization": f"Bearer {owner_token}"}
    uploaded = requests.put(
        f"{api}/snapshots/{sha256}", data=data, headers={**headers, "Content-Type": "application/zip"}, timeout=30
    )
    assert uploaded.status_code == 201, uploaded.text
    snapshot = Snapshot.objects.get(sha256=sha256)
    assert snapshot.storage_name == f"snapshots/{sha256}.zip"
    assert sorted(name for name, _ in snapshot.files) == ["birds/__init__.py", "train.py"]

    (tmp_path / "train.py").write_text("")  # the SDK builds the submission from a folder holding the script
    config = ScriptRunConfig(
        source_directory=str(tmp_path),
        script="train.py",
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )
    payload = dict(config._submission(ws), snapshot=sha256, tags={})
    submitted = requests.post(f"{api}/experiments/zipped/runs", json=payload, headers=headers, timeout=30)
    assert submitted.status_code == 201, submitted.text
    run = SdkRun(Experiment(ws, "zipped"), submitted.json()["run_id"])
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Completed"
    log = "\n".join(c.text for c in LogChunk.objects.filter(run__run_id=run.id))
    assert "Snapshot " + sha256[:12] + " unpacked: 2 files" in log
    assert "trained on heron" in log
