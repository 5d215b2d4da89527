"""Two hosts made of network namespaces, a node in each, one Redis and one database: a 2×2 gloo
DDP run whose ranks talk across the namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
from urllib.parse import urlparse

import pytest
from django.conf import settings

from runs.models import RunProcess
from tests.helpers.processes import NodeProcess, wait_until
from tests.runs.conftest import script_config
from trainhub.compute.models import Node
from trainhub.redis_conn import get_redis
from trainhub.sdk import Experiment
from trainhub.sdk.runconfig import PyTorchConfiguration

pytestmark = pytest.mark.slow

SUBNET = "10.213.{}.{}"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def hosts():
    """[(namespace, address, interface)] and the host's address on their bridge."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (ip); this machine has neither")
    tag = os.getpid() % 200 + 20
    bridge, host_address = f"thbr{tag}", SUBNET.format(tag, 1)
    made = []
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{host_address}/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        if shutil.which("iptables"):
            # Docker's engine sets the FORWARD policy to DROP, which also drops bridged traffic.
            subprocess.run(
                ["iptables", "-I", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"], capture_output=True
            )
        for index in range(2):
            namespace, outer, inner = f"thns{tag}-{index}", f"thh{tag}{index}", f"thn{tag}{index}"
            address = SUBNET.format(tag, index + 2)
            ip("netns", "add", namespace)
            made.append((namespace, outer))
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", namespace)
            ip("link", "set", outer, "master", bridge)
            ip("link", "set", outer, "up")
            ip("netns", "exec", namespace, "ip", "addr", "add", f"{address}/24", "dev", inner)
            ip("netns", "exec", namespace, "ip", "link", "set", inner, "up")
            ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
            made[-1] = (namespace, outer, address, inner)
        yield [(m[0], m[2], m[3]) for m in made], host_address
    except subprocess.CalledProcessError as error:
        pytest.skip(f"network namespaces cannot be made here: {error.stderr.decode().strip()}")
    finally:
        for entry in made:
            subprocess.run(["ip", "netns", "del", entry[0]], capture_output=True)
            subprocess.run(["ip", "link", "del", entry[1]], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        if shutil.which("iptables"):
            subprocess.run(
                ["iptables", "-D", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"], capture_output=True
            )


@pytest.fixture
def shared_redis(hosts):
    """The session's Redis, also listening on the bridge so the namespaces reach it."""
    _, host_address = hosts
    redis = get_redis()
    before = redis.config_get("bind")["bind"], redis.config_get("protected-mode")["protected-mode"]
    redis.config_set("bind", f"127.0.0.1 {host_address}")
    redis.config_set("protected-mode", "no")
    # As README says nodes on another machine join: a REDIS_URL that carries the password.
    url = urlparse(settings.REDIS_URL)
    yield f"redis://{url.username}:{url.password}@{host_address}:{url.port}{url.path}"
    redis.config_set("bind", before[0])
    redis.config_set("protected-mode", before[1])


def test_ddp_ranks_talk_across_two_hosts(ws, cluster, hosts, shared_redis, tmp_path, transactional_db):
    namespaces, _ = hosts
    nodes = []
    try:
        for namespace, address, interface in namespaces:
            nodes.append(
                NodeProcess(
                    cluster,
                    tmp_path,
                    prefix=("ip", "netns", "exec", namespace),
                    REDIS_URL=shared_redis,
                    TRAINHUB_NODE_ADDRESS=address,
                    GLOO_SOCKET_IFNAME=interface,
                    # The node's own variables reach its runs only where the administrator names them.
                    TRAINHUB_NODE_PASS_ENV="LANG,LC_*,TZ,GLOO_SOCKET_IFNAME",
                ).start(wait=False)
            )
        wait_until(lambda: Node.objects.filter(cluster=cluster, state="idle").count() == 2, 60, message="two nodes")
        assert set(Node.objects.values_list("address", flat=True)) == {a for _, a, _ in namespaces}
        src = script_config(
            ws, "ddp", "ddp_check.py", distributed_job_config=PyTorchConfiguration(process_count=4, node_count=2)
        )
        run = Experiment(ws, "multi-host").submit(src)
        details = run.wait_for_completion()
        assert details["status"] == "Completed", details["status_reason"]
        from runs.models import LogChunk

        lines = [line for c in LogChunk.objects.filter(run__run_id=run.id) for line in c.text.split("\n")]
        master = Node.objects.get(name=RunProcess.objects.get(run__run_id=run.id, rank=0).node_name).address
        assert sum(f"master {master}" in line for line in lines) == 4
        assert sum("all_reduce sum 10.0 expected 10.0" in line for line in lines) == 4
        hosts_used = {p.node_name for p in RunProcess.objects.filter(run__run_id=run.id)}
        assert hosts_used == {n.name for n in nodes}
    finally:
        for node in nodes:
            node.stop()
