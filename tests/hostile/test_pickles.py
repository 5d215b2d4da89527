"""A model whose pickle runs a shell command when loaded (`__reduce__`): it registers, lists,
downloads and exports without the payload ever running in the server process."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from registry.models import OnnxExport
from runs.models import LogChunk
from runs.models import Run as RunRow
from trainhub.sdk import Model
from trainhub.sdk._onnx_export import NOT_A_MODULE
from trainhub.sdk.model import ExportFailedError

EVIL_PICKLE = """
import os, sys, torch

class Payload:
    def __reduce__(self):
        # Said in the log of whatever loads it, and written to a file where its loader can write.
        return (os.system, ("echo PWNED by ${TRAINHUB_RUN_ID:-no-run}; echo $PPID >> " + sys.argv[2],))

torch.save(Payload(), sys.argv[1])
"""


def log_text(run_id: str) -> str:
    return "\n".join(c.text for c in LogChunk.objects.filter(run__run_id=run_id).order_by("first_seq"))


def make_evil_model(folder, marker) -> str:
    """A torch.save file whose unpickling runs a shell command that appends to `marker`."""
    path = folder / "model.pt"
    subprocess.run([sys.executable, "-c", EVIL_PICKLE, str(path), str(marker)], check=True)
    assert not marker.exists()
    return str(path)


def test_the_server_never_unpickles_a_registered_model(sdk_ws, live_url, client_for, owner, tmp_path):
    marker = tmp_path / "pwned.txt"
    model = Model.register(sdk_ws, make_evil_model(tmp_path, marker), "evil", show_progress=False)
    client = client_for(owner)
    for url in ("/w/birds/models/", "/w/birds/models/evil/", "/w/birds/models/evil/1/"):
        assert client.get(url).status_code == 200
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    for url in ("/w/birds/models/", "/w/birds/models/evil/1/", "/w/birds/models/evil/1/download"):
        assert session.get(live_url + url, timeout=30).status_code == 200
    Model(sdk_ws, name="evil")
    Model.list(sdk_ws)
    model.download(str(tmp_path / "copy"))
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_hostile_pickle_runs_only_inside_the_export_job(ws, node, tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = Model.register(ws, make_evil_model(tmp_path, marker), "evil", show_progress=False)
    assert not marker.exists()  # registering never loaded it

    with pytest.raises(ExportFailedError) as failure:
        evil.export_onnx(sample_input_shape=[1, 8])

    export = OnnxExport.objects.get()
    assert export.message == NOT_A_MODULE.format(file="evil:1 model.pt", kind="int")
    assert str(failure.value).startswith("ONNX export of evil:1 failed: " + export.message)
    # The payload ran once, in the export job's own run, inside its box: it said so in that run's
    # log, and the file it wrote went to the box's private /tmp, not the machine's (where the web
    # server or the node would have written it).
    export_run = RunRow.objects.get(pk=export.run_id)
    said = [line for line in log_text(export_run.run_id).splitlines() if "PWNED" in line]
    assert said == [f"PWNED by {export_run.run_id}"]
    assert not marker.exists()
