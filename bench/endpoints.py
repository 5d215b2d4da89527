"""Endpoint figures: requests/s and p50/p95 latency of a small model's scoring at concurrency 1 and
16, through TrainHub's scoring URL (key check + proxy), straight to the replica's port (what the
proxy adds is the difference), and through `mlflow models serve` of the same model (uvicorn, one
worker, on this machine, outside any box).

    .venv/bin/python bench/endpoints.py [--requests 1600]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from _harness import Harness, percentile

SCORE_PY = """
import json, os, torch

def init():
    global model
    model = torch.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model.pt"), weights_only=False)
    model.eval()

def run(raw_data):
    with torch.no_grad():
        return model(torch.tensor(json.loads(raw_data)["data"])).tolist()
"""
BODY = json.dumps({"data": [[0.5, -1.0, 2.0, 0.25]]}).encode()
MLFLOW_BODY = json.dumps({"inputs": [[0.5, -1.0, 2.0, 0.25]]}).encode()


def load(
    host: str, port: int, path: str, headers: dict[str, str], concurrency: int, total: int, body: bytes = BODY
) -> tuple[float, list[float]]:
    """`total` POSTs from `concurrency` threads, each on its own kept connection: (wall seconds, latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = total // concurrency
    failures: list[str] = []

    def worker() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        mine = []
        for _ in range(per_thread):
            started = time.perf_counter()
            try:
                connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as error:
                failures.append(type(error).__name__)
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=60)
                continue
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                failures.append(str(response.status))
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {sorted(set(failures))}")
    return wall, latencies


def report(label: str, concurrency: int, wall: float, latencies: list[float]) -> float:
    p50 = statistics.median(latencies) * 1000
    print(
        f"{label:<28} concurrency {concurrency:>2}: {len(latencies) / wall:7.0f} requests/s, "
        f"p50 {p50:6.2f} ms, p95 {percentile(latencies, 0.95) * 1000:6.2f} ms, "
        f"mean {statistics.fmean(latencies) * 1000:6.2f} ms"
    )
    return p50


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1600, help="requests per measurement (default 1600)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, {load_average()}")
    with Harness() as harness:
        _, _, cluster, token = harness.workspace()
        server = harness.server()
        # The replica fetches its model and reports its port to this server.
        harness.node(cluster, TRAINHUB_NODE_SERVER_URL=server.url)
        from trainhub.sdk import Workspace

        ws = Workspace.get("bench", url=server.url, token=token)
        import torch

        from endpoints.models import Replica
        from trainhub.sdk import Environment, Model
        from trainhub.sdk.model import InferenceConfig

        folder = Path(tempfile.mkdtemp(prefix="bench-endpoint-"))
        (folder / "score.py").write_text(SCORE_PY)
        torch.save(torch.nn.Linear(4, 2), folder / "model.pt")
        model = Model.register(ws, str(folder / "model.pt"), "bench-model", show_progress=False)
        config = InferenceConfig(
            entry_script="score.py",
            source_directory=str(folder),
            environment=Environment.get(ws, "TrainHub-PyTorch-2.13-CPU"),
        )
        started = time.perf_counter()
        service = Model.deploy(ws, "bench", [model], config)
        try:
            service.wait_for_deployment()
        except Exception:
            print(service.get_logs())
            raise
        print(f"deploy -> first answer ready: {time.perf_counter() - started:.1f} s (environment already built)")
        key = service.get_keys()[0]
        replica = Replica.objects.get(endpoint__name="bench", state="ready")
        url = urlsplit(service.scoring_uri)
        through = (url.hostname, url.port, url.path, {"Authorization": f"Bearer {key}"})
        direct = (replica.address, replica.port, "/score", {"X-TrainHub-Replica": replica.secret})
        load(*through, 4, 40)  # warm both paths (connections, the route cache)
        load(*direct, 4, 40)
        for concurrency in (1, 16):
            total = args.requests - args.requests % concurrency
            p50_direct = report("straight to the replica", concurrency, *load(*direct, concurrency, total))
            used = cpu_seconds(server.process.pid)
            p50_hub = report("through TrainHub", concurrency, *load(*through, concurrency, total))
            used = cpu_seconds(server.process.pid) - used
            print(
                f"{'':<28} the proxy adds {p50_hub - p50_direct:.2f} ms at p50 (goal < 2 ms); "
                f"the web process used {used / total * 1000:.2f} ms of CPU per request"
            )
        service.delete()
        mlflow_serve(folder / "model.pt", args.requests)
    print(load_average())


def mlflow_serve(model_file: Path, requests: int) -> None:
    """The same model under `mlflow models serve` (pickled, float64 as MLflow's JSON gives it)."""
    import signal
    import subprocess

    import mlflow.pytorch
    import torch

    from tests.helpers.ports import free_port

    folder = model_file.parent / "mlflow-model"
    mlflow.pytorch.save_model(
        torch.load(model_file, weights_only=False).double(), str(folder), serialization_format="pickle"
    )
    port = free_port()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", str(folder)]
    command += ["--env-manager", "local", "-p", str(port), "-w", "1"]
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        target = ("127.0.0.1", port, "/invocations", {})
        deadline = time.monotonic() + 180
        while True:
            try:
                load(*target, 1, 1, body=MLFLOW_BODY)
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline or server.poll() is not None:
                    print("mlflow models serve did not answer: left out")
                    return
                time.sleep(0.5)
        load(*target, 4, 40, body=MLFLOW_BODY)
        for concurrency in (1, 16):
            total = requests - requests % concurrency
            report("mlflow models serve", concurrency, *load(*target, concurrency, total, body=MLFLOW_BODY))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
