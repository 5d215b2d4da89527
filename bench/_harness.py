"""A throwaway TrainHub for benchmarks: its own data directory, Redis, database, server and nodes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]
# bench/runs.py must not shadow the `runs` app: the project comes first, this folder not at all.
sys.path[:] = [str(BASE_DIR)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

PASSWORD = "bench-password-1"

# Prints `rate` numbered, time-stamped lines a second for `seconds`; with a third argument, only
# once that file exists (so that viewers can connect first).
PRINTER = textwrap.dedent(
    """
    import os, sys, time
    rate, seconds = int(sys.argv[1]), float(sys.argv[2])
    while len(sys.argv) > 3 and not os.path.exists(sys.argv[3]):
        time.sleep(0.05)
    total = int(rate * seconds)
    start = time.time()
    for i in range(total):
        target = start + i / rate
        delay = target - time.time()
        if delay > 0.0005:
            time.sleep(delay)
        print(f"L {i} {time.time():.6f}")
    sys.stdout.flush()
    """
)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """Samples a process's resident memory every 10 ms while it is entered (a download, an upload)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = rss_mb(pid)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


class Harness:
    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="trainhub-bench-"))
        self.processes: list[subprocess.Popen] = []
        self.server_url = ""

    def __enter__(self) -> Harness:
        from tests.helpers.ports import free_port

        port = free_port()
        from trainhub.datadir import redis_url_with_credentials
        from trainhub.ops.redis_server import start_redis_server

        # Configured as under `make run`: user `trainhub`, its password in the data directory.
        redis_url = redis_url_with_credentials(f"redis://127.0.0.1:{port}/0", self.data_dir)
        self.redis = start_redis_server(redis_url, self.data_dir / "redis", persistent=False, stdout=subprocess.DEVNULL)
        os.environ.update(
            {
                "TRAINHUB_DATA_DIR": str(self.data_dir),
                "REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "DJANGO_SETTINGS_MODULE": "trainhub.settings",
                "DJANGO_ALLOW_ASYNC_UNSAFE": "true",
            }
        )
        os.environ.pop("DATABASE_URL", None)
        import django

        django.setup()
        from django.core.management import call_command

        from trainhub.ops.redis_server import wait_for_redis

        wait_for_redis(redis_url)
        call_command("migrate", verbosity=0)
        return self

    def workspace(self, max_nodes: int = 2):
        """A user, workspace `bench` with the curated environment, a manual cluster `cpu`, a token."""
        from django.contrib.auth import get_user_model

        from trainhub.compute.models import ComputeCluster
        from trainhub.environments.services import seed_demo
        from trainhub.workspaces import services
        from trainhub.workspaces.models import Role
        from trainhub.workspaces.permissions import Access

        user = get_user_model().objects.create_user("bench", password=PASSWORD)
        workspace = services.workspace_create(name="bench", user=user)
        seed_demo(workspace=workspace, user=user)
        cluster = ComputeCluster.objects.create(
            workspace=workspace, name="cpu", vm_size="LOCAL_CPU", max_nodes=max_nodes, provisioner="manual"
        )
        token = services.token_create(access=Access(workspace, Role.OWNER), user=user, name="bench").secret
        return user, workspace, cluster, token

    def server(self):
        from tests.helpers.processes import Server

        server = Server(self.data_dir).start()
        self.processes.append(server.process)
        self.server_url = server.url
        return server

    def sdk_workspace(self, nodes: int = 2):
        """The workspace with `nodes` nodes and a server: (server, the SDK's Workspace)."""
        from trainhub.sdk import Workspace

        _, _, cluster, token = self.workspace(max_nodes=max(2, nodes))
        server = self.server()
        for _ in range(nodes):
            self.node(cluster)
        return server, Workspace.get("bench", url=server.url, token=token)

    def node(self, cluster, **env: str):
        from tests.helpers.processes import NodeProcess

        if self.server_url:
            # Runs send their metrics and outputs to this server, not to `make run`'s port.
            env.setdefault("TRAINHUB_NODE_SERVER_URL", self.server_url)
        node = NodeProcess(cluster, self.data_dir, **env).start()
        self.processes.append(node.process)
        return node

    def __exit__(self, *exc) -> None:
        import signal

        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.redis.terminate()
        self.redis.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def now() -> float:
    return time.time()


def submit(
    ws, folder: Path, script: str, arguments=(), experiment: str = "bench", compute_target: str = "cpu", **config
):
    """A run of `folder/script` on the harness's cluster, in the curated environment
    (`config`: more ScriptRunConfig arguments, e.g. distributed_job_config)."""
    from trainhub.sdk import Environment, Experiment, ScriptRunConfig

    src = ScriptRunConfig(
        source_directory=str(folder),
        script=script,
        arguments=list(arguments),
        compute_target=compute_target,
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
        **config,
    )
    return Experiment(ws, experiment).submit(src, show_progress=False)


def login_cookie(server, username: str, password: str) -> str:
    """The Cookie header of a signed-in browser session, for WebSocket clients."""
    import requests

    session = requests.Session()
    session.get(f"{server.url}/accounts/login/")
    session.post(
        f"{server.url}/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": f"{server.url}/accounts/login/"},
    )
    return "; ".join(f"{k}={v}" for k, v in session.cookies.items())
