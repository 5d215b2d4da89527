"""Hostile model paths and uploads: paths that climb out or are absolute, files a run never stored,
uploads not matching their hash (upload limits: test_upload_limits.py)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import requests
from django.conf import settings

from registry import paths, services
from registry.models import ModelBlob, ModelVersion
from tests.conftest import api_client
from tests.registry.builders import run_with_outputs
from trainhub.sdk import Experiment, Run
from trainhub.sdk.exceptions import UserErrorException


def stored_blobs(sha256: str) -> list[str]:
    """Files in storage for uploads claiming this hash, complete or not."""
    root = settings.DATA_DIR / "files" / "models"
    return [str(p) for p in root.rglob(f"{sha256}-*")] if root.exists() else []


@pytest.fixture
def run(workspace):
    return run_with_outputs(workspace, {"outputs/model.pt": b"weights", "logs/std_log_process_0.txt": b"log"})


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("model_path", "message"),
    [
        (
            "outputs/../../../etc/passwd",
            paths.PATH_CLIMBS.format(path="outputs/../../../etc/passwd"),
        ),
        ("../outputs/model.pt", paths.PATH_CLIMBS.format(path="../outputs/model.pt")),
        ("/etc/passwd", paths.PATH_ABSOLUTE.format(path="/etc/passwd")),
        ("C:/Windows/win.ini", paths.PATH_ABSOLUTE.format(path="C:/Windows/win.ini")),
        ("outputs\\model.pt", paths.PATH_BAD_CHARACTERS.format(path="outputs\\model.pt")),
        ("", paths.PATH_EMPTY),
    ],
)
def test_model_paths_that_leave_the_run_are_refused(owner_token, run, model_path, message):
    answer = api_client(owner_token).post(
        "/api/v1/workspaces/birds/models/stolen/versions",
        data=json.dumps({"run_id": run.run_id, "model_path": model_path}),
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == message
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_a_path_the_run_never_stored_is_refused(owner_token, run):
    """A symlink in outputs/ was never copied into the run's history, so it cannot be named."""
    answer = api_client(owner_token).post(
        "/api/v1/workspaces/birds/models/stolen/versions",
        data=json.dumps({"run_id": run.run_id, "model_path": "outputs/link-to-etc-passwd"}),
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == services.NOT_IN_RUN.format(
        run_id=run.run_id,
        path="outputs/link-to-etc-passwd",
        some="logs/std_log_process_0.txt, outputs/model.pt",
    )


@pytest.mark.django_db
def test_a_prefix_of_a_file_name_is_not_a_folder(owner_token, run):
    answer = api_client(owner_token).post(
        "/api/v1/workspaces/birds/models/m/versions",
        data=json.dumps({"run_id": run.run_id, "model_path": "outputs/mod"}),
        content_type="application/json",
    )
    assert answer.status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("root", "is_folder", "path", "message"),
    [
        (
            "model",
            True,
            "model/../../x",
            paths.PATH_CLIMBS.format(path="model/../../x").replace("model_path", "A file path"),
        ),
        (
            "model",
            True,
            "/etc/passwd",
            paths.PATH_ABSOLUTE.format(path="/etc/passwd").replace("model_path", "A file path"),
        ),
        ("model", True, "other/x", services.FILE_OUTSIDE_ROOT.format(path="other/x", root="model")),
        (
            "..",
            False,
            "..",
            paths.PATH_CLIMBS.format(path="..").replace("model_path", "The registered name"),
        ),
        ("a/b", False, "a/b", services.ROOT_NOT_A_NAME.format(root="a/b")),
    ],
)
def test_upload_manifests_with_bad_paths_are_refused(owner_token, root, is_folder, path, message):
    answer = api_client(owner_token).post(
        "/api/v1/workspaces/birds/models/m/versions",
        data=json.dumps(
            {
                "root": root,
                "is_folder": is_folder,
                "files": [{"path": path, "sha256": "0" * 64, "size": 1}],
            }
        ),
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == message


@pytest.mark.django_db
def test_a_version_cannot_name_a_file_uploaded_to_another_workspace(owner_token, other_workspace, outsider):
    from tests.registry.builders import access_of

    content = b"their secret weights"
    sha = hashlib.sha256(content).hexdigest()
    import io

    services.blob_store(access=access_of(other_workspace, outsider), sha256=sha, stream=io.BytesIO(content))
    answer = api_client(owner_token).post(
        "/api/v1/workspaces/birds/models/m/versions",
        data=json.dumps({"root": "m.pt", "files": [{"path": "m.pt", "sha256": sha, "size": len(content)}]}),
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == services.BLOB_UNKNOWN.format(sha=sha)


def test_an_upload_that_does_not_match_its_hash_is_not_kept(live_url, owner_token):
    response = requests.put(
        f"{live_url}/api/v1/workspaces/birds/model-blobs/{'a' * 64}",
        data=b"not what the hash says",
        headers={"Authorization": f"Bearer {owner_token}"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["detail"] == services.BLOB_HASH_MISMATCH
    assert not ModelBlob.objects.exists()
    assert stored_blobs("a" * 64) == []


def test_run_register_model_refuses_climbing_paths_through_the_sdk(sdk_ws, run):
    sdk_run = Run(Experiment(sdk_ws, run.experiment.name), run.run_id)
    with pytest.raises(UserErrorException, match="climbs out with '..'"):
        sdk_run.register_model("m", "outputs/../../secrets")
    with pytest.raises(UserErrorException, match="is absolute"):
        sdk_run.register_model("m", os.path.abspath("x"))
