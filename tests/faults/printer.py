"""A run that prints numbered lines until told to stop, and the checks of its log."""

from __future__ import annotations

from pathlib import Path

from runs.models import LogChunk
from trainhub.sdk import Environment, ScriptRunConfig

PRINTER = """
import os, sys, time
i = 0
while not os.path.exists(sys.argv[1]):
    print(f"line {i}", flush=True)
    i += 1
    time.sleep(0.02)
for _ in range(50):
    print(f"line {i}", flush=True)
    i += 1
print("the end", flush=True)
"""


def printer_config(ws, folder: Path, stop: str) -> ScriptRunConfig:
    """The printer as a run on cpu-cluster; it prints until a file named `stop` exists in its run
    folder (tests.helpers.processes.run_folder: its /tmp is its own), then 50 lines more."""
    project = folder / "printer"
    project.mkdir(exist_ok=True)
    (project / "printer.py").write_text(PRINTER)
    return ScriptRunConfig(
        source_directory=str(project),
        script="printer.py",
        arguments=[stop],
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )


def printed_lines(run_id: str) -> int:
    return sum(c.line_count for c in LogChunk.objects.filter(run__run_id=run_id, stream="std_log_process_0"))


def assert_every_line_in_order(run_id: str) -> None:
    chunks = list(LogChunk.objects.filter(run__run_id=run_id).order_by("first_seq"))
    expected = 1
    for chunk in chunks:
        assert chunk.first_seq == expected, f"sequence gap before {chunk.first_seq} (expected {expected})"
        expected += chunk.line_count
    printed = [line for c in chunks if c.stream == "std_log_process_0" for line in c.text.split("\n")]
    numbered = [line for line in printed if line.startswith("line ")]
    assert numbered == [f"line {i}" for i in range(len(numbered))]
    assert printed[-1] == "the end"
