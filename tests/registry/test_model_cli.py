"""`trainhub model …` in a real subprocess, as a user types it: download with checksum checks,
list, show, register, and one-line errors with a non-zero exit code."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from registry.models import ModelFile
from tests.helpers.processes import BASE_DIR, process_env
from tests.registry.builders import register, run_with_outputs

TRAINHUB = str(BASE_DIR / ".venv" / "bin" / "trainhub")
WEIGHTS = os.urandom(2 * 1024 * 1024 + 3)


@pytest.fixture
def project(live_url, owner_token, tmp_path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    config = {"server_url": live_url, "workspace_name": "birds", "token": owner_token}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def trainhub(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = process_env()
    env.pop("TRAINHUB_TOKEN", None)
    return subprocess.run([TRAINHUB, *args], cwd=project, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def registered(workspace, owner):
    run = run_with_outputs(workspace, {"outputs/model.pt": WEIGHTS})
    register(workspace, owner, run, tags={"stage": "dev"})
    register(workspace, owner, run, tags={"stage": "prod"})
    return run


def test_download_fetches_the_latest_version_checked(project, registered):
    done = trainhub(project, "model", "download", "pytorch-birds", "--target-dir", "model")
    assert done.returncode == 0, done.stderr
    assert (project / "model" / "model.pt").read_bytes() == WEIGHTS
    assert done.stdout.strip() == "Downloaded pytorch-birds:2 to model/model.pt (sha256 checked)"
    assert "model.pt" in done.stderr and "B/s" in done.stderr  # the progress bar


def test_download_of_a_named_version_refuses_to_overwrite(project, registered):
    assert trainhub(project, "model", "download", "pytorch-birds:1").returncode == 0
    again = trainhub(project, "model", "download", "pytorch-birds:1")
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == (
        "trainhub: error: model.pt already exists: add --exist-ok to replace it."
    )
    assert trainhub(project, "model", "download", "pytorch-birds:1", "--exist-ok").returncode == 0


def test_a_damaged_file_fails_the_download(project, registered):
    stored = ModelFile.objects.filter(version__version=1).get()
    with default_storage.open(stored.storage_name, "wb") as handle:  # bit rot in storage
        handle.write(bytes([WEIGHTS[0] ^ 0xFF]) + WEIGHTS[1:])  # never the byte it was
    done = trainhub(project, "model", "download", "pytorch-birds:1")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("trainhub: error: The download of pytorch-birds:1 model.pt does not match its sha256")
    assert not (project / "model.pt").exists()
    assert not (project / "model.pt.part").exists()


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("nope", "trainhub: error: No model 'nope' in this workspace."),
        ("pytorch-birds:7", "trainhub: error: Model 'pytorch-birds' has no version 7."),
        (
            "pytorch-birds:x",
            "trainhub: error: 'pytorch-birds:x': a version is a number, as in NAME:3.",
        ),
    ],
)
def test_unknown_models_fail_with_one_line(project, registered, spec, error):
    done = trainhub(project, "model", "download", spec)
    assert done.returncode == 1
    assert done.stderr.strip() == error
    assert done.stdout == ""


def test_without_a_config_it_says_where_it_looked(tmp_path):
    done = trainhub(tmp_path, "model", "list")
    assert done.returncode == 1
    assert done.stderr.startswith("trainhub: error: No config.json found")


def test_list_show_and_register(project, registered):
    listing = trainhub(project, "model", "list")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.startswith("pytorch-birds:2\t")
    assert len(listing.stdout.splitlines()) == 1
    every = trainhub(project, "model", "list", "--all-versions", "--tag", "stage=dev")
    assert [line.split("\t")[0] for line in every.stdout.splitlines()] == ["pytorch-birds:1"]

    shown = json.loads(trainhub(project, "model", "show", "pytorch-birds:1").stdout)
    assert shown["run_id"] == registered.run_id
    assert shown["files"] == [{"path": "model.pt", "size": len(WEIGHTS), "sha256": hashlib.sha256(WEIGHTS).hexdigest()}]

    (project / "local.pt").write_bytes(b"local weights")
    made = trainhub(project, "model", "register", "--name", "local", "--path", "local.pt", "--tag", "k=v")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "Registered local:1"
    from_run = trainhub(
        project,
        "model",
        "register",
        "--name",
        "again",
        "--path",
        "outputs/model.pt",
        "--run-id",
        registered.run_id,
    )
    assert from_run.stdout.strip() == "Registered again:1"
    bad = trainhub(project, "model", "register", "--name", "x", "--path", "../x", "--run-id", registered.run_id)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "trainhub: error: model_path '../x' climbs out with '..'; name a path inside the run."
