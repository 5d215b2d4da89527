"""Registry figures: a 1 GB version file downloaded over loopback from a live daphne (throughput
with curl and with the SDK, the server's peak RSS), the same as a streamed zip, and the bytes the
server writes to register a 1 GiB run output and a 1 GiB local file (the server's first upload, and one
after it)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _harness import Harness, PeakRss, rss_mb

SIZE = 1024 * 1024 * 1024
BLOCK = 16 * 1024 * 1024


def make_big_file(path: Path) -> str:
    """1 GB of incompressible bytes (a random 16 MB block, each copy salted), and its sha256."""
    digest = hashlib.sha256()
    block = bytearray(os.urandom(BLOCK))
    with open(path, "wb") as handle:
        for index in range(SIZE // BLOCK):
            block[:8] = index.to_bytes(8, "little")
            handle.write(block)
            digest.update(block)
    return digest.hexdigest()


def io_counters(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/io") as io:
        return {key: int(value) for key, value in (line.split(": ") for line in io)}


def tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def download(url: str, token: str, server_pid: int) -> tuple[float, float, int, float]:
    """(GB/s, server peak RSS MB, bytes, server CPU s per GB); curl is the client."""
    cpu_before = cpu_seconds(server_pid)
    with PeakRss(server_pid) as peak:
        started = time.perf_counter()
        result = subprocess.run(
            [
                "curl",
                "-sf",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                "-H",
                f"Authorization: Bearer {token}",
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        seconds = time.perf_counter() - started
    size = int(float(result.stdout))
    return (
        size / seconds / 1e9,
        peak.peak,
        size,
        (cpu_seconds(server_pid) - cpu_before) / (size / 1e9),
    )


def main() -> None:
    with Harness() as harness:
        from django.contrib.auth import get_user_model
        from django.core.files.storage import default_storage

        from runs.services import run_file_store
        from tests.runs.builders import make_cluster, make_run
        from trainhub.workspaces import services
        from trainhub.workspaces.models import Role
        from trainhub.workspaces.permissions import Access

        user = get_user_model().objects.create_user("bench", password="bench-password-1")
        workspace = services.workspace_create(name="bench", user=user)
        token = services.token_create(access=Access(workspace, Role.OWNER), user=user, name="bench").secret
        run = make_run(workspace, make_cluster(workspace), status="Completed")
        scratch = Path(tempfile.mkdtemp(prefix="trainhub-bench-registry-"))
        try:
            big = scratch / "model.pt"
            make_big_file(big)
            run_file_store(run=run, path="outputs/model.pt", local_path=big)
            run_file_store(run=run, path="outputs/folder/model.pt", local_path=big)
            storage = Path(default_storage.location)

            server = harness.server()
            pid = server.process.pid
            import requests

            headers = {"Authorization": f"Bearer {token}"}
            api = f"{server.url}/api/v1/workspaces/bench"
            before_bytes, before_io = tree_size(storage), io_counters(pid)
            started = time.perf_counter()
            answer = requests.post(
                f"{api}/models/big/versions",
                headers=headers,
                timeout=120,
                json={"run_id": run.run_id, "model_path": "outputs/model.pt"},
            )
            answer.raise_for_status()
            register_seconds = time.perf_counter() - started
            after_io = io_counters(pid)
            storage_growth = tree_size(storage) - before_bytes
            requests.post(
                f"{api}/models/big-folder/versions",
                headers=headers,
                timeout=120,
                json={"run_id": run.run_id, "model_path": "outputs/folder"},
            ).raise_for_status()

            idle_rss = rss_mb(pid)
            file_url = f"{api}/models/big/versions/1/file?path=model.pt"
            runs = [download(file_url, token, pid) for _ in range(3)]
            best = max(runs, key=lambda r: r[0])
            peak_rss = max(r[1] for r in runs)
            zip_rate, zip_rss, zip_size, zip_cpu = download(f"{api}/models/big-folder/versions/1/download", token, pid)

            from trainhub.sdk import Model, Workspace

            ws = Workspace.get("bench", url=server.url, token=token)
            with PeakRss(pid) as sdk_peak:
                sdk_started, sdk_cpu = time.perf_counter(), sum(os.times()[:2])
                Model(ws, name="big", version=1).download(target_dir=str(scratch / "sdk"), show_progress=False)
                sdk_rate = SIZE / (time.perf_counter() - sdk_started) / 1e9
                sdk_cpu = sum(os.times()[:2]) - sdk_cpu
            shutil.rmtree(scratch / "sdk")

            local_before = io_counters(pid)
            storage_before = tree_size(storage)
            with open(big, "ab") as handle:
                handle.write(b"local copy")  # another hash than the run's file
            upload_cpu, client_cpu = cpu_seconds(pid), sum(os.times()[:2])
            with PeakRss(pid) as upload_peak:
                upload_started = time.perf_counter()
                Model.register(ws, str(big), "uploaded", show_progress=False)
                upload_seconds = time.perf_counter() - upload_started
            upload_cpu, client_cpu = cpu_seconds(pid) - upload_cpu, sum(os.times()[:2]) - client_cpu
            local_after = io_counters(pid)

            wrote = after_io["wchar"] - before_io["wchar"]
            to_disk = after_io["write_bytes"] - before_io["write_bytes"]
            rates = ", ".join(f"{r[0]:.2f}" for r in runs)
            upload_growth = tree_size(storage) - storage_before
            upload_disk = local_after["write_bytes"] - local_before["write_bytes"]
            # Again, as a server that took an upload before finds it: its chunk buffers made.
            with open(big, "ab") as handle:
                handle.write(b"again")
            again_cpu, again_started = cpu_seconds(pid), time.perf_counter()
            Model.register(ws, str(big), "uploaded", show_progress=False)
            again_seconds, again_cpu = time.perf_counter() - again_started, cpu_seconds(pid) - again_cpu
            print("Registry (1 GiB file, loopback, live daphne)")
            print(
                f"  register a 1 GiB run output:   {storage_growth} bytes added to storage; "
                f"the server wrote {wrote} bytes ({to_disk} to disk) in {register_seconds:.3f} s"
            )
            cpu = min(r[3] for r in runs)
            print(f"  download (single file, curl):  {best[0]:.2f} GB/s (best of {rates})")
            print(
                f"  download (SDK Model.download): {sdk_rate:.2f} GB/s, sha256 checked; "
                f"server peak RSS {sdk_peak.peak:.0f} MB; client CPU {sdk_cpu / (SIZE / 2**30):.2f} s per GiB"
            )
            print(f"  server CPU per GB downloaded:  {cpu:.2f} s (single file), {zip_cpu:.2f} s (zip)")
            memory = f"{idle_rss:.0f} MB idle, {peak_rss:.0f} MB peak"
            print(f"  server RSS:                    {memory}")
            print(
                f"  download (folder as zip):      {zip_rate:.2f} GB/s, {zip_size} bytes, "
                f"server peak RSS {zip_rss:.0f} MB"
            )
            uploaded = big.stat().st_size
            per_gib = uploaded / 2**30
            total_cpu = (upload_cpu + client_cpu) / per_gib
            print(
                f"  upload (SDK Model.register):   {uploaded / upload_seconds / 1e9:.2f} GB/s (1 GiB in "
                f"{upload_seconds:.2f} s, sha256 included; load average {os.getloadavg()[0]:.1f}); CPU per GiB: "
                f"server {upload_cpu / per_gib:.2f} s, client {client_cpu / per_gib:.2f} s, "
                f"{total_cpu:.2f} s in all: at most {2 / total_cpu * 2**30 / 1e9:.2f} GB/s on 2 idle cores; "
                f"server peak RSS {upload_peak.peak:.0f} MB"
            )
            print(
                f"  upload again (buffers made):   {big.stat().st_size / again_seconds / 1e9:.2f} GB/s "
                f"(the server's chunk buffers made by the upload before); server CPU per GiB "
                f"{again_cpu / (big.stat().st_size / 2**30):.2f} s"
            )
            print(
                f"  register a 1 GiB local file:   uploaded in {upload_seconds:.1f} s; storage "
                f"grew {upload_growth} bytes, the server wrote {upload_disk} bytes to disk "
                f"({upload_disk / upload_growth:.2f} copies: resumable chunks, one staging file renamed into storage)"
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
