"""The run history's disk fills up while a run's outputs are copied into it: the run is Failed
with a reason naming the file and the full disk, and nothing half-written is kept or registrable."""

from __future__ import annotations

import subprocess

import pytest
from django.conf import settings

from runs.models import RunFile
from trainhub.sdk import Environment, Experiment, ScriptRunConfig
from trainhub.sdk.exceptions import UserErrorException

pytestmark = pytest.mark.slow

WRITER = """
import os
os.makedirs("outputs", exist_ok=True)
open("outputs/a-small.txt", "w").write("fits")
open("outputs/big.bin", "wb").write(os.urandom(3 * 1024 * 1024))
print("outputs written", flush=True)
"""


@pytest.fixture
def full_runs_disk():
    """A 1 MB tmpfs over the folder where run files are stored, for this test only."""
    folder = settings.DATA_DIR / "files" / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_disk_while_storing_outputs_fails_the_run_cleanly(ws, node, full_runs_disk, tmp_path):
    (tmp_path / "write.py").write_text(WRITER)
    src = ScriptRunConfig(
        source_directory=str(tmp_path),
        script="write.py",
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )
    run = Experiment(ws, "disk-full").submit(src)
    details = run.wait_for_completion(raise_on_error=False)

    assert details["status"] == "Failed"
    assert "Storing outputs/big.bin in the run's history failed: No space left on device" in details["status_reason"]
    assert "outputs/big.bin" not in run.get_file_names()
    assert not RunFile.objects.filter(run__run_id=run.id, path="outputs/big.bin").exists()
    assert not (full_runs_disk / run.id / "outputs" / "big.bin").exists(), "the half-written copy was removed"
    with pytest.raises(UserErrorException, match="has no stored file or folder"):
        run.register_model("big", "outputs/big.bin")
