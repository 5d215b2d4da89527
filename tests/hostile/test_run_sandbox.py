"""A run's script runs as the node's user, yet must not reach the site's data: each attack is a
real run on a real node that tries to read, copy into outputs/ or plant files, and every attempt
must fail inside the run, with nothing of it stored, downloadable or registrable."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import default_storage
from django.db import connection

from registry.models import ModelFile
from runs.models import LogChunk
from trainhub.sandbox import SANDBOXED, node_sandbox_support, sandbox_problem
from trainhub.sdk import Environment, Experiment, Model, ScriptRunConfig

PROJECT = Path(__file__).parent / "projects" / "snoop"
SQLITE_HEADER = b"SQLite format 3"
MODEL_BYTES = b"another team's private weights " * 4
OTHER_RUN_BYTES = b"another run's checkpoint " * 4


def log_text(run_id: str) -> str:
    return "\n".join(c.text for c in LogChunk.objects.filter(run__run_id=run_id).order_by("first_seq"))


@pytest.fixture
def targets(ws, tmp_path) -> dict[str, Path]:
    """What a run must not reach, each present on the node's machine: the secret key, the database,
    another run's folder, a registered model's file, the storage root and the data folder."""
    weights = tmp_path / "private.pt"
    weights.write_bytes(MODEL_BYTES)
    Model.register(ws, str(weights), "private-model", show_progress=False)
    model_file = Path(default_storage.path(ModelFile.objects.get(version__model__name="private-model").storage_name))
    other_run = Path(settings.TRAINHUB_NODE_WORK_DIR) / "another-node" / "another-run"
    (other_run / "outputs").mkdir(parents=True)
    (other_run / "outputs" / "checkpoint.pt").write_bytes(OTHER_RUN_BYTES)
    found = {
        "secret-key": settings.DATA_DIR / "secret_key",
        "database": Path(connection.settings_dict["NAME"]),
        "other-run": other_run,
        "model-file": model_file,
        "storage": Path(default_storage.location),
        "data-dir": settings.DATA_DIR,
    }
    for name, path in found.items():
        assert path.exists(), f"{name}: {path} should exist on the node's machine for the attack to mean anything"
    return found


def test_a_run_cannot_read_or_copy_the_sites_data(ws, node, targets, tmp_path):
    """The script copies the secret key file, the SQLite database, another run's folder, a model
    version's file, the storage root and the whole data folder into outputs/, and writes a .pth
    into the data folder and into the server's own site-packages."""
    site_packages = Path(sysconfig.get_paths()["purelib"])
    attacks = [f"read:{name}={path}" for name, path in targets.items()] + [
        f"write:data-dir={settings.DATA_DIR}",
        f"write:server-site-packages={site_packages}",
    ]
    src = ScriptRunConfig(
        source_directory=str(PROJECT),
        script="snoop.py",
        arguments=attacks,
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )
    try:
        run = Experiment(ws, "snoop").submit(src)
        assert run.wait_for_completion(raise_on_error=False)["status"] == "Completed", log_text(run.id)
    finally:
        planted = [folder / "planted.pth" for folder in (settings.DATA_DIR, site_packages)]
        leftovers = [path for path in planted if path.exists()]
        for path in leftovers:
            path.unlink()
    assert leftovers == [], "the run planted files outside its folder"

    log = log_text(run.id)
    assert SANDBOXED in log
    assert "snooping done" in log
    assert "ESCAPED" not in log, log
    for name in [*targets, "data-dir", "server-site-packages"]:
        assert f"REFUSED {name}: " in log, f"{name}: no refusal in the log"

    stored = run.get_file_names()
    assert [name for name in stored if name.startswith("outputs/")] == ["outputs/model.pt"]
    downloaded = run.download_files(output_directory=str(tmp_path / "downloads"))
    for path in map(Path, downloaded):
        data = path.read_bytes()
        assert settings.SECRET_KEY.encode() not in data, f"{path}: the secret key"
        assert SQLITE_HEADER not in data, f"{path}: the database"
        assert MODEL_BYTES not in data and OTHER_RUN_BYTES not in data, f"{path}: someone else's files"
    with pytest.raises(Exception, match="has no stored file or folder"):
        run.register_model("stolen", "outputs/secret-key")


def test_a_node_that_must_sandbox_refuses_to_start_without_bwrap(monkeypatch, tmp_path):
    """On a machine without bwrap, a node told TRAINHUB_NODE_SANDBOX=true or left at "auto" stops
    with the reason; only an explicit "false" runs code unboxed, with a warning that runs can read
    the server's data."""
    monkeypatch.setenv("PATH", str(tmp_path))
    sandbox_problem.cache_clear()
    try:
        for setting in ("true", "auto"):
            with pytest.raises(ImproperlyConfigured, match="bubblewrap.*not installed"):
                node_sandbox_support(setting)
        enabled, note = node_sandbox_support("false")
        assert not enabled and "can read everything" in note and "TRAINHUB_NODE_SANDBOX is false" in note
    finally:
        sandbox_problem.cache_clear()


def test_bwrap_works_on_this_machine():
    """The test machine's nodes sandbox their runs (make test installs bubblewrap)."""
    assert sandbox_problem() is None
    assert node_sandbox_support("true") == (True, "runs boxed")
