"""Issue 22's new way in: an endpoint's scoring script is member code, run in its replica's box. A
score.py that tries, in init() and in run(), to read the server's secret key, its database and data
directory, the node's variables, and to talk to the site's Redis, finds nothing; its answers and the
service's log hold no secret; the replica's port answers no caller without the server's secret; and
the endpoint still serves."""

from __future__ import annotations

import http.client
import json
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection

from endpoints.models import Replica
from tests.hostile.test_containment_box import assert_no_secret

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HOSTILE_SCORE = """
import json
import os
import socket


def attack():
    found = {}
    for path in json.loads(os.environ.get("ATTACK_PATHS", "[]")) or ATTACK_PATHS:
        try:
            with open(path, "rb") as handle:
                found[path] = "READ " + repr(handle.read(64))
        except OSError as error:
            found[path] = f"REFUSED {type(error).__name__}"
        try:
            found[path + " (listing)"] = "LISTED " + repr(os.listdir(path)[:5])
        except OSError as error:
            found[path + " (listing)"] = f"REFUSED {type(error).__name__}"
    leaked = sorted(name for name in os.environ if "SECRET" in name or "REDIS" in name or "DATABASE" in name)
    found["variables"] = "LEAKED " + ",".join(leaked) if leaked else "REFUSED none"
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=3) as redis:
            redis.sendall(b"PING\\r\\n")
            found["redis"] = "ANSWERED " + redis.recv(100).decode(errors="replace").strip()
    except OSError as error:
        found["redis"] = f"REFUSED {type(error).__name__}"
    return found


def init():
    print("ATTACK init", json.dumps(attack(), sort_keys=True), flush=True)


def run(raw_data):
    return attack()
"""


def test_a_hostile_scoring_script_reads_nothing_of_the_site_and_its_port_answers_only_the_server(ws, node, tmp_path):
    import torch

    from trainhub.sdk import Environment, Model
    from trainhub.sdk.model import InferenceConfig

    redis = urlsplit(settings.REDIS_URL)
    targets = [
        str(settings.DATA_DIR / "secret_key"),
        str(settings.DATA_DIR / "redis-password"),
        str(connection.settings_dict["NAME"]),
        str(settings.DATA_DIR),
        "/proc/1/environ",
    ]
    source = tmp_path / "deploy"
    source.mkdir()
    header = f"ATTACK_PATHS = {targets!r}\nREDIS_HOST = {redis.hostname!r}\nREDIS_PORT = {redis.port}\n"
    (source / "score.py").write_text(header + textwrap.dedent(HOSTILE_SCORE))
    torch.save(torch.nn.Linear(2, 1), tmp_path / "model.pt")
    model = Model.register(ws, str(tmp_path / "model.pt"), "hostile", show_progress=False)
    config = InferenceConfig(
        entry_script="score.py",
        source_directory=str(source),
        environment=Environment.get(ws, "TrainHub-PyTorch-2.13-CPU"),
    )

    service = Model.deploy(ws, "hostile", [model], config)
    service.wait_for_deployment()
    answer = service.run("{}")
    log = service.get_logs()

    assert set(answer) == {*targets, *(f"{t} (listing)" for t in targets), "variables", "redis"}
    for what, result in answer.items():
        if what == "redis":
            # The site's Redis is on the host network: it answers, but only to refuse (NOAUTH).
            assert result == "REFUSED ConnectionRefusedError" or result.startswith("ANSWERED -NOAUTH"), result
        elif what.startswith("/proc/1/environ"):
            assert "SECRET" not in result and "REDIS" not in result, result
        elif what.endswith("(listing)"):
            # The box hides the data directory behind an empty folder; only the mount points of what
            # it puts back (the run's folder, its virtualenv) show.
            hidden = ("secret_key", "redis-password", Path(targets[2]).name, "uploads", "files")
            assert result.startswith("REFUSED") or not any(f"'{name}'" in result for name in hidden), (what, result)
        else:
            assert result.startswith("REFUSED"), (what, result)
    assert "ATTACK init" in log
    assert_no_secret(json.dumps(answer), "the service's answer")
    assert_no_secret(log, "the service's log")
    if redis.password:
        assert redis.password not in log and redis.password not in json.dumps(answer)

    # Straight to the replica's port, without the secret the server sends: refused.
    replica = Replica.objects.get(endpoint__name="hostile", state="ready")
    direct = http.client.HTTPConnection(replica.address, replica.port, timeout=10)
    direct.request("POST", "/score", body=b"{}", headers={"X-TrainHub-Replica": "guess"})
    refused = direct.getresponse()
    assert refused.status == 403 and b"through TrainHub only" in refused.read()
    direct.close()
    service.delete()
