"""Datastore figures: uploading 1,000 small files and one 1 GB file to a live server with the SDK,
each against a plain local copy of the same files, and the bytes a node copies for a run's input
the first and the second time (BENCH_BIG_MB sets the big file's size)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from _harness import Harness, PeakRss

SMALL_FILES = 1000
SMALL_BYTES = 4096
BIG_BYTES = int(os.environ.get("BENCH_BIG_MB", "1024")) * 1024 * 1024
BLOCK = 16 * 1024 * 1024

READER = "import os, sys\nprint('files', sum(len(f) for _, _, f in os.walk(sys.argv[1])))\n"


def make_files(folder: Path) -> None:
    for index in range(SMALL_FILES):
        (folder / "small" / f"{index // 100:02d}").mkdir(parents=True, exist_ok=True)
        (folder / "small" / f"{index // 100:02d}" / f"{index:04d}.bin").write_bytes(os.urandom(SMALL_BYTES))
    block = bytearray(os.urandom(BLOCK))
    (folder / "big").mkdir()
    with open(folder / "big" / "big.bin", "wb") as handle:
        for index in range(BIG_BYTES // BLOCK):
            block[:8] = index.to_bytes(8, "little")  # no two blocks alike
            handle.write(block)


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare(label: str, source: Path, size: int, upload, server_pid: int) -> None:
    copy_seconds = timed(lambda: shutil.copytree(source, source.with_name(source.name + "-copy")))
    cpu, own = cpu_seconds(server_pid), sum(os.times()[:2])
    with PeakRss(server_pid) as peak:
        upload_seconds = timed(upload)
    cpu, own = cpu_seconds(server_pid) - cpu, sum(os.times()[:2]) - own
    mb = size / 1e6
    # Per GiB only for the big file: for 4 MB of small files it would be the requests' cost, scaled.
    if size >= 2**26:
        gib = size / 2**30
        server = (
            f"server CPU {cpu / gib:.2f} s, client {own / gib:.2f} s per GiB, at most "
            f"{2 / ((cpu + own) / gib) * 2**30 / 1e9:.2f} GB/s on 2 idle cores; server peak RSS {peak.peak:.0f} MB; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
    else:
        server = f"server CPU {cpu:.2f} s, client {own:.2f} s"
    print(
        f"{label}: upload {upload_seconds:.2f} s ({mb / upload_seconds:.1f} MB/s, "
        f"{size / upload_seconds / 1e9:.2f} GB/s; {server}), plain local copy "
        f"{copy_seconds:.2f} s ({mb / copy_seconds:.1f} MB/s): {upload_seconds / copy_seconds:.1f}x the copy"
    )


def copied_per_run(ws, datastore, folder: Path) -> list[str]:
    from runs.models import LogChunk
    from trainhub.sdk import Environment, Experiment, ScriptRunConfig

    folder.mkdir()
    (folder / "read.py").write_text(READER)
    lines = []
    for _ in range(2):
        config = ScriptRunConfig(
            source_directory=str(folder),
            script="read.py",
            arguments=[datastore.path("small").as_mount()],
            compute_target="cpu",
            environment=Environment.get(ws, "TrainHub-PyTorch-2.13-CPU"),
        )
        run = Experiment(ws, "data").submit(config)
        assert run.wait_for_completion()["status"] == "Completed"
        text = "\n".join(chunk.text for chunk in LogChunk.objects.filter(run__run_id=run.id))
        staged = [line for line in text.split("\n") if "bytes copied to this node" in line]
        lines += [line.split(": ", 1)[1].split(" -> ")[0] for line in staged]
    return lines


def main() -> None:
    with Harness() as harness:
        _, _, cluster, token = harness.workspace()
        server = harness.server()
        harness.node(cluster)
        from trainhub.sdk import Workspace

        ws = Workspace.get("bench", url=server.url, token=token)
        datastore = ws.get_default_datastore()
        scratch = Path(tempfile.mkdtemp(prefix="trainhub-bench-datastores-"))
        try:
            make_files(scratch)
            compare(
                f"{SMALL_FILES} files of {SMALL_BYTES} B",
                scratch / "small",
                SMALL_FILES * SMALL_BYTES,
                lambda: datastore.upload(str(scratch / "small"), "small", show_progress=False),
                server.process.pid,
            )
            again = timed(lambda: datastore.upload(str(scratch / "small"), "small", show_progress=False))
            print(f"{SMALL_FILES} files uploaded again (all skipped by checksum): {again:.2f} s")
            compare(
                f"one file of {BIG_BYTES / 1e6:.0f} MB",
                scratch / "big",
                BIG_BYTES,
                lambda: datastore.upload(str(scratch / "big"), "big", show_progress=False),
                server.process.pid,
            )
            first, second = copied_per_run(ws, datastore, scratch / "source")
            print(f"run input on a node, first run: {first}")
            print(f"run input on the same node, second run: {second}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
