"""Containment of environment builds and exports (#16): a member's requirements, the sdists they
name and the models they register are untrusted. Each attack is a real environment, run or export
on a real node; the secret must never appear in a log, a file or a response, and every attempt to
read or plant must fail where it was made."""

from __future__ import annotations

import base64
import os
import socket
from urllib.parse import urlparse

import pytest

from trainhub.environments.spec import spec_hash
from trainhub.sdk import Environment
from trainhub.sdk.exceptions import NotFoundError, UserErrorException


def test_a_local_or_direct_url_requirement_is_refused_at_creation(ws, live_url):
    """Attack 3: a requirement `pkg @ file:///tmp/somewhere` (a folder with an in-tree build backend
    planted by an earlier run through /tmp) or `pkg @ http://127.0.0.1:PORT/...` (the node fetches any
    URL). The server refuses both when the environment is created, naming the requirement; nothing
    is registered."""
    from trainhub.sdk.environment import CondaDependencies

    for requirement, says in [
        ("pkg @ file:///tmp/somewhere", "local paths and file:// URLs are refused"),
        (f"pkg @ http://127.0.0.1:{urlparse(live_url).port}/api/v1/", "is a direct URL"),
        ("pkg @ git+file:///tmp/somewhere", "local paths and file:// URLs are refused"),
    ]:
        env = Environment("sneaky")
        env.python.conda_dependencies = CondaDependencies.create(pip_packages=["six", requirement])
        with pytest.raises(UserErrorException) as error:
            env.register(ws)
        assert requirement in str(error.value) and says in str(error.value)
    with pytest.raises(NotFoundError):
        Environment.get(workspace=ws, name="sneaky")


LOOPBACK_PROBE = """\
import socket
for name, port in [("redis", {redis}), ("listener", {listener})]:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        print("ESCAPED", name, flush=True)
    except OSError as error:
        print("REFUSED", name, type(error).__name__, flush=True)
"""


def test_a_dockerfiles_run_step_does_not_reach_the_hosts_loopback(tmp_path):
    """Suspected in #16: a `base_dockerfile` RUN step built with the host's network reaches Redis,
    the web server and the database on loopback. The step tries Redis and a listener of the test on
    127.0.0.1: both are out of reach, and the environment's packages still install."""
    from trainhub.environments.docker_builder import (
        DEFAULT_BASE_IMAGE,
        docker_client,
        engine_problem,
        image_tag,
        materialise_image,
    )

    problem = engine_problem()
    if problem is not None:
        pytest.skip(f"No Docker engine answers on this machine ({problem}).")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    probe = LOOPBACK_PROBE.format(redis=urlparse(os.environ["REDIS_URL"]).port, listener=listener.getsockname()[1])
    encoded = base64.b64encode(probe.encode()).decode()
    dockerfile = f"FROM {DEFAULT_BASE_IMAGE}\nRUN echo {encoded} | base64 -d | python3"
    spec = {"pip": ["six"], "docker": {"enabled": True, "base_dockerfile": dockerfile}}
    lines: list[str] = []
    try:
        materialise_image(spec, cache_dir=tmp_path / "envs", log=lines.append)
    finally:
        listener.close()
        if docker_client().images.list(name=image_tag(spec_hash(spec))):
            docker_client().images.remove(image_tag(spec_hash(spec)))
    log = "\n".join(lines)
    assert "REFUSED redis" in log and "REFUSED listener" in log, log
    assert "ESCAPED" not in log
