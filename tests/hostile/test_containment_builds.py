"""Containment of environment builds and exports (#16): a member's requirements, the sdists they
name and the models they register are untrusted. Each attack is a real environment, run or export
on a real node; the secret must never appear in a log, a file or a response, and every attempt to
read or plant must fail where it was made."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.db import connection

from runs.models import LogChunk
from tests.helpers.processes import NodeProcess
from trainhub.environments import services
from trainhub.environments.builders import find_uv, materialise_environment
from trainhub.environments.models import EnvironmentBuild
from trainhub.environments.spec import spec_hash
from trainhub.sdk import Environment, Experiment, ScriptRunConfig
from trainhub.sdk.exceptions import NotFoundError, UserErrorException
from trainhub.workspaces.selectors import access_for

PROJECTS = Path(__file__).parent / "projects"
NODE_SECRET = "node-secret-7f3a9c0e51b2"


def log_text(run_id: str) -> str:
    return "\n".join(c.text for c in LogChunk.objects.filter(run__run_id=run_id).order_by("first_seq"))


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


def _uv_cache() -> Path:
    uv = find_uv()
    assert uv is not None
    return Path(subprocess.run([str(uv), "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip())


@pytest.fixture
def sdist_server(tmp_path):
    """An index of one: http://127.0.0.1:PORT/ serving the folder where the test puts evil's sdist."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _evil_sdist(folder: Path, own: Path, targets: dict[str, list[str]]) -> str:
    """evil-1.0.tar.gz: the in-tree backend of projects/evil_sdist with the targets it attacks."""
    name = "evil-1.0.tar.gz"
    with tarfile.open(folder / name, "w:gz") as archive:
        for path in sorted((PROJECTS / "evil_sdist").iterdir()):
            archive.add(path, f"evil-1.0/{path.name}")
        for member, data in [
            ("targets.json", json.dumps({"own": str(own), "targets": targets}).encode()),
            ("PKG-INFO", b"Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n"),
        ]:
            info = tarfile.TarInfo(f"evil-1.0/{member}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return name


@pytest.fixture
def permissive_node(cluster, live_server_process, transactional_db, tmp_path):
    """A node whose administrator allows direct URL requirements, with a secret in its environment."""
    process = NodeProcess(
        cluster,
        tmp_path,
        TRAINHUB_NODE_SERVER_URL=live_server_process.url,
        TRAINHUB_ALLOW_DIRECT_URL_REQUIREMENTS="true",
        AWS_SECRET_ACCESS_KEY=NODE_SECRET,
    ).start()
    yield process
    process.stop()


@pytest.mark.slow
def test_an_sdists_build_backend_finds_nothing_and_its_run_cannot_write_its_environment(
    ws, owner, permissive_node, sdist_server, settings, tmp_path
):
    """Attack 3, with direct URLs allowed by the administrator: `evil @ http://127.0.0.1:PORT/evil-
    1.0.tar.gz` is an sdist whose in-tree PEP 517 backend, run by the node's build, reads the secret
    key, the database, the data folder, another build's virtualenv and the node's variables
    (/proc/<node>/environ), and plants a .pth into the environment cache, another build's
    virtualenv and the node's shared uv cache (which other workspaces' builds hard-link from). Then a
    run in the environment built tries to plant a .pth into its own virtualenv and the cache.
    Every attempt fails; the secret key and the node's secret appear in no log."""
    cache = Path(settings.TRAINHUB_ENV_CACHE_DIR)
    other = materialise_environment({"pip": ["six"]}, cache_dir=cache, log=lambda _line: None).root
    other_site = other / "lib" / "python3.11" / "site-packages"
    targets = {
        "secret-key": ["read", str(settings.DATA_DIR / "secret_key")],
        "database": ["read", str(connection.settings_dict["NAME"])],
        "data-dir": ["read", str(settings.DATA_DIR)],
        "other-venv": ["read", str(other / "pyvenv.cfg")],
        "node-environ": ["read", f"/proc/{permissive_node.process.pid}/environ"],
        "env-cache": ["write", str(cache)],
        "other-venv-site-packages": ["write", str(other_site)],
        "shared-uv-cache": ["write", str(_uv_cache())],
    }
    served, url = sdist_server
    spec = {"python": "3.11", "pip": [f"evil @ {url}/evil-1.0.tar.gz"]}
    root = cache / spec_hash(spec)
    site_packages = root / "lib" / "python3.11" / "site-packages"
    _evil_sdist(served, root, targets)
    settings.TRAINHUB_ALLOW_DIRECT_URL_REQUIREMENTS = True
    services.environment_register(access=access_for(owner, "birds"), user=owner, name="evil-env", spec=spec)

    source = tmp_path / "probe"
    shutil.copytree(PROJECTS / "probe", source)
    shutil.copy(PROJECTS / "snoop" / "snoop.py", source)
    src = ScriptRunConfig(
        source_directory=str(source),
        script="probe.py",
        arguments=[f"write:own-site-packages={site_packages}", f"write:own-venv={root}", f"write:env-cache={cache}"],
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="evil-env"),
    )
    planted = [Path(path) / "planted.pth" for action, path in targets.values() if action == "write"]
    planted += [site_packages / "planted.pth", root / "planted.pth"]
    try:
        run = Experiment(ws, "evil-build").submit(src)
        status = run.wait_for_completion(raise_on_error=False)["status"]
    finally:
        leftovers = [path for path in planted if path.exists()]
        for path in leftovers:
            path.unlink()
    log = log_text(run.id)
    assert status == "Completed", log
    assert leftovers == [], "the build or the run planted files outside its box"
    assert "installing again in a box" in log
    assert "ESCAPED" not in log, log
    for name in [*targets, "own-site-packages", "own-venv"]:
        assert f"REFUSED {name}: " in log, f"{name}: no refusal in the log"
    assert "UID 0\n" not in log
    builds = "\n".join(EnvironmentBuild.objects.values_list("log", flat=True))
    for text in (log, builds, permissive_node.log()):
        assert settings.SECRET_KEY not in text
        assert NODE_SECRET not in text
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found = os.lstat(os.path.join(folder, name))
            writable = not stat.S_ISLNK(found.st_mode) and found.st_mode & 0o022
            assert found.st_uid == os.geteuid() and not writable, os.path.join(folder, name)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a training run and an export run, each a real node job
def test_an_onnx_export_runs_none_of_the_runs_variables_or_code_outside_the_box(ws, node, settings, tmp_path):
    """Attack 2, the export's half: the model's run had `environment_variables: {"PYTHONPATH": "."}`
    and a `signal.py` in its snapshot that prints the secret key to whoever imports it. Exporting
    its model reused the run's variables and snapshot, and the shadowing module ran with the
    server's rights. Now the export takes the run's packages and snapshot but not its variables;
    wherever the shadow runs, it is in the box: the secret key appears in no log, and the export
    still succeeds."""
    source = tmp_path / "export"
    shutil.copytree(Path(__file__).parents[1] / "registry" / "projects" / "export", source)
    shutil.copy(PROJECTS / "shadow" / "signal.py", source)
    (source / "shadow-target.txt").write_text(str(settings.DATA_DIR / "secret_key"))
    env = Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU").clone("shadowed")
    env.environment_variables = {"PYTHONPATH": "."}
    env.register(ws)
    src = ScriptRunConfig(
        source_directory=str(source),
        script="train.py",
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="shadowed"),
    )
    run = Experiment(ws, "shadowed").submit(src)
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Completed", log_text(run.id)
    model = run.register_model(model_name="shadowed", model_path="outputs/model.pt")

    exported = model.export_onnx(sample_input_shape=[1, 8], show_output=False)

    assert exported.name == "shadowed-onnx"
    export_run = exported.run_id
    from runs.models import Run as RunRow

    assert RunRow.objects.get(run_id=export_run).environment_spec["environment_variables"] == {}
    logs = {name: log_text(run_id) for name, run_id in (("training", run.id), ("export", export_run))}
    assert "REFUSED shadow in " in logs["training"], logs["training"]
    for name, text in [*logs.items(), ("node", node.log())]:
        assert "ESCAPED" not in text, f"{name}: {text}"
        assert settings.SECRET_KEY not in text, f"{name}: the secret key"


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
