"""Redis behind a credential no run can read (issue 16): a run that reaches the site's Redis over the
host network can queue nothing for the server's worker or a node, no queued job or Redis key holds a
run's token, and the data directory keeps its secrets to its owner. Real Redis, real node, real
worker, real sandbox."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings
from django.views.debug import technical_500_response
from rq import Queue, Worker

from runs.models import LogChunk, Run, RunProcess
from tests.helpers.ports import free_port
from tests.helpers.processes import BASE_DIR, NodeProcess, process_env, wait_until
from trainhub import redis_keys
from trainhub.compute.models import Node
from trainhub.datadir import REDIS_PASSWORD_FILE
from trainhub.ops.redis_server import redis_answers
from trainhub.redis_conn import get_redis
from trainhub.sandbox import SANDBOXED
from trainhub.sdk import Environment, Experiment, ScriptRunConfig
from trainhub.sdk.runconfig import MpiConfiguration
from trainhub.workspaces.selectors import hash_token

pytestmark = pytest.mark.slow

PROJECTS = Path(__file__).parent / "projects"


def _push_module():
    spec = importlib.util.spec_from_file_location("redis_push", PROJECTS / "redis_push" / "push.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log_text(run_id: str) -> str:
    return "\n".join(c.text for c in LogChunk.objects.filter(run__run_id=run_id).order_by("first_seq"))


def redis_password() -> str:
    return urlsplit(settings.REDIS_URL).password or ""


def assert_no_secret_in(texts: dict[str, str | bytes]) -> None:
    for secret_name, secret in (("the secret key", settings.SECRET_KEY), ("the Redis password", redis_password())):
        assert secret, f"{secret_name} is empty: the check would mean nothing"
        for where, text in texts.items():
            data = text.encode() if isinstance(text, str) else text
            assert secret.encode() not in data, f"{secret_name} appears in {where}"


def everything_in_redis() -> bytes:
    """Every key and value of the session's Redis, zlib-compressed values (RQ's job data) unpacked."""
    connection = redis.Redis.from_url(settings.REDIS_URL)
    found: list[bytes] = []
    for key in connection.scan_iter(count=1000):
        kind = connection.type(key).decode()
        if kind == "string":
            values = [connection.get(key)]
        elif kind == "hash":
            values = [part for pair in connection.hgetall(key).items() for part in pair]
        elif kind == "list":
            values = connection.lrange(key, 0, -1)
        elif kind == "set":
            values = list(connection.smembers(key))
        elif kind == "zset":
            values = [member for member, _ in connection.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [part for _, entry in connection.xrange(key) for pair in entry.items() for part in pair]
        else:
            values = []
        found.append(key)
        for value in values:
            if value is None:
                continue
            found.append(value)
            try:
                found.append(zlib.decompress(value))
            except zlib.error:
                pass
    return b"\n".join(found)


@pytest.fixture
def server_worker(transactional_db, tmp_path):
    """The server's RQ worker on the `default` queue, as `make run` starts it."""
    log_path = tmp_path / "worker.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "trainhub_worker"],
        cwd=BASE_DIR,
        env=process_env(),
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: Worker.all(queue=Queue("default", connection=get_redis())) or process.poll() is not None,
            60,
            message="the server's worker",
        )
        assert process.poll() is None, log_path.read_text()
        yield log_path
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_run_cannot_queue_a_pickled_job_for_the_server_or_a_node(
    ws, node, server_worker, live_server_process, tmp_path
):
    """Attack 1: the run connects to the site's Redis (same host network) without a password, then
    with every credential it finds (its environment, /proc/*/environ and cmdline of the machine's
    processes, the data directory's redis-password file), and pushes a pickled RQ job running a
    shell command onto the server worker's `default` queue and onto its own node's job list.
    Redis refuses every attempt (NOAUTH), neither the worker nor the node executes anything, and
    neither the secret key nor the Redis password appears in any log, output or Redis value. The
    same job pushed with the site's credential does run on the worker (the refusal is what stops
    it there); the node takes ids only and runs no such job even then."""
    node_jobs = redis_keys.node_jobs(Node.objects.get(name=node.name).pk)
    evil = {queue: tmp_path / f"pwned-{number}" for number, queue in enumerate(("default", node_jobs))}
    secret_key_file = settings.DATA_DIR / "secret_key"
    jobs = [f"{queue}=cat {secret_key_file} > {marker}" for queue, marker in evil.items()]
    address = urlsplit(settings.REDIS_URL)
    src = ScriptRunConfig(
        source_directory=str(PROJECTS / "redis_push"),
        script="push.py",
        arguments=[f"{address.hostname}:{address.port}", str(settings.DATA_DIR), *jobs],
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )
    run = Experiment(ws, "redis-push").submit(src)
    details = run.wait_for_completion(raise_on_error=False)
    log = log_text(run.id)
    assert details["status"] == "Completed", log
    assert SANDBOXED in log
    attempts = [line for line in log.splitlines() if line.startswith("ATTACK ")]
    assert "ATTACK no credential: PING -> -NOAUTH" in log
    # HSET and RPUSH on each queue without a credential: Redis answers with an error or hangs up.
    unauthenticated = [line for line in attempts if line.startswith("ATTACK no credential: ")]
    pushes = [line for line in unauthenticated if "RPUSH" in line or "HSET" in line]
    assert len(pushes) == 4 and all(line.split(" -> ")[1].startswith("-") for line in pushes), pushes
    assert "ATTACK read redis-password: FileNotFoundError" in log
    assert not [line for line in attempts if "QUEUED" in line or "-> +OK" in line or "-> :" in line], attempts

    # Controls, after the run: the same commands with the site's credential queue a job that the
    # worker runs; the node takes the one pushed onto its list, says it is no job, and runs nothing.
    push = _push_module()
    connection = redis.Redis.from_url(settings.REDIS_URL)
    controls = {queue: tmp_path / f"control-{number}" for number, queue in enumerate(evil)}
    for queue, marker in controls.items():
        for parts in push.job_commands(queue, f"echo ran > {marker}"):
            connection.execute_command(*parts)
    wait_until(lambda: controls["default"].exists(), 90, message="the control job on the worker")
    wait_until(lambda: "that is no job" in node.log(), 30, message="the node to take the control message")
    assert connection.llen(node_jobs) == 0 and not controls[node_jobs].exists()
    # The worker's queue is worked in order: a job the run had queued would have run before the control.
    assert [marker for marker in evil.values() if marker.exists()] == []

    downloaded = run.download_files(output_directory=str(tmp_path / "downloads"))
    assert_no_secret_in(
        {
            "the run's log": log,
            "the node's log": node.log(),
            "the worker's log": server_worker.read_text(errors="replace"),
            "the web server's log": live_server_process.log(),
            "Redis": everything_in_redis(),
            **{f"the run's file {path}": Path(path).read_bytes() for path in downloaded},
        }
    )


def test_an_mpi_run_finds_no_redis_credential_in_its_launchers(ws, two_nodes, tmp_path):
    """Attack 1 through MPI: every rank of a two-node `mpirun` run scans the environments and command
    lines of the processes it can see (mpirun, the launch agent on node 0, Open MPI's daemon on
    node 1: all of them started inside the run's box) for a Redis URL with a password, then pushes
    a job onto the `default` queue with whatever it found. The agent asks node 0 over a socket in
    the run's folder and holds no Redis URL, so nothing is found and every push is refused."""
    address = urlsplit(settings.REDIS_URL)
    src = ScriptRunConfig(
        source_directory=str(PROJECTS / "redis_push"),
        script="push.py",
        arguments=[f"{address.hostname}:{address.port}", str(settings.DATA_DIR), f"default=touch {tmp_path}/pwned"],
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
        distributed_job_config=MpiConfiguration(node_count=2, process_count_per_node=1),
    )
    run = Experiment(ws, "redis-push-mpi").submit(src)
    details = run.wait_for_completion(raise_on_error=False)
    log = log_text(run.id)
    assert details["status"] == "Completed", log
    nodes = set(RunProcess.objects.filter(run__run_id=run.id).values_list("node_name", flat=True))
    assert nodes == {node.name for node in two_nodes}
    for rank in (0, 1):
        rank_log = "\n".join(
            c.text for c in LogChunk.objects.filter(run__run_id=run.id, stream=f"std_log_process_{rank}")
        )
        assert "ATTACK found 0 credential(s)" in rank_log, rank_log
        assert "ATTACK no credential: PING -> -NOAUTH" in rank_log, rank_log
    assert "QUEUED" not in log and "-> +OK" not in log, log
    assert not (tmp_path / "pwned").exists()
    assert_no_secret_in({"the run's log": log, **{f"node {n.name}'s log": n.log() for n in two_nodes}})


ENVIRONMENT_CHECK = """
import os, sys
password = sys.argv[1]
held = [name for name, value in os.environ.items() if "redis://" in value or "rediss://" in value or password in value]
print("variables naming Redis or holding its password:", held or "none", flush=True)
"""


@pytest.fixture
def tls_redis(tmp_path):
    """The session's Redis also serving TLS on a port of its own, as an administrator sets one up
    for nodes on other machines (a self-signed certificate the node is told to trust)."""
    cert, key = tmp_path / "redis-cert.pem", tmp_path / "redis-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    connection = get_redis()
    port = free_port()
    connection.config_set("tls-cert-file", str(cert))
    connection.config_set("tls-key-file", str(key))
    connection.config_set("tls-auth-clients", "no")
    connection.config_set("tls-port", port)
    try:
        yield port, cert
    finally:
        connection.config_set("tls-port", 0)


def test_a_node_joins_with_the_password_in_a_rediss_url(ws, cluster, live_server_process, tls_redis, tmp_path):
    """README's way for a node on another machine: REDIS_URL=rediss://trainhub:<password>@host:port
    (the TLS port only speaks TLS, so a node that works through it used TLS). The node runs a run
    to the end, and the run's environment holds neither the URL nor the password."""
    port, cert = tls_redis
    password = redis_password()
    url = f"rediss://trainhub:{password}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, username="trainhub", password=password, socket_timeout=5).ping()
    node = NodeProcess(cluster, tmp_path, REDIS_URL=url, TRAINHUB_NODE_SERVER_URL=live_server_process.url).start()
    try:
        project = tmp_path / "check"
        project.mkdir()
        (project / "check.py").write_text(ENVIRONMENT_CHECK)
        src = ScriptRunConfig(
            source_directory=str(project),
            script="check.py",
            arguments=[password],
            compute_target="cpu-cluster",
            environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
        )
        run = Experiment(ws, "rediss-node").submit(src)
        details = run.wait_for_completion(raise_on_error=False)
    finally:
        node.stop()
    log = log_text(run.id)
    assert details["status"] == "Completed", log
    assert RunProcess.objects.get(run__run_id=run.id, rank=0).node_name == node.name
    assert "variables naming Redis or holding its password: none" in log, log
    assert password not in node.log()


WAITER = """
import os, sys, time
print("ready", flush=True)
deadline = time.monotonic() + 120
while not os.path.exists("release") and time.monotonic() < deadline:
    time.sleep(0.1)
os.makedirs("outputs", exist_ok=True)
with open("outputs/token.txt", "w") as handle:
    handle.write(os.environ["TRAINHUB_RUN_TOKEN"])
print("released", flush=True)
"""


def test_a_dispatched_runs_token_is_nowhere_in_redis(ws, node, tmp_path):
    """Attack 4's second half: whoever reads Redis (every key: the node's job key
    `trainhub:run:N:node-job:0`, queues, registries, rendezvous and log keys) while a run runs must
    not find its token. The job carries ids only; the node derives the token from the run's row."""
    project = tmp_path / "waiter"
    project.mkdir()
    (project / "waiter.py").write_text(WAITER)
    src = ScriptRunConfig(
        source_directory=str(project),
        script="waiter.py",
        compute_target="cpu-cluster",
        environment=Environment.get(workspace=ws, name="TrainHub-PyTorch-2.13-CPU"),
    )
    run = Experiment(ws, "token-in-redis").submit(src)
    row = Run.objects.get(run_id=run.id)
    wait_until(lambda: "ready" in log_text(run.id), 120, message="the run running")
    seen = everything_in_redis()
    assert redis_keys.node_job(row.pk, 0).encode() in seen, "the node's job should be in Redis while it runs"
    (Path(settings.TRAINHUB_NODE_WORK_DIR) / node.name / run.id / "release").touch()
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Completed", log_text(run.id)

    token = Path(run.download_file("outputs/token.txt", str(tmp_path / "token.txt"))).read_text()
    assert token.startswith("thr_") and hash_token(token) == Run.objects.get(pk=row.pk).token_hash
    assert token.encode() not in seen, "the run's token sits in Redis"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_directory_keeps_its_secrets_to_its_owner(tmp_path):
    """What `make run` does first (migrate, which loads the settings) and then its Procfile's Redis,
    on a fresh data directory and on an older one left world-readable: the folder ends 0700, the
    database, secret key and Redis password 0600; the Redis refuses a client without the
    credential and serves the one in the data directory; the password is on no process's command
    line or environment and not in what `make run` prints."""
    fresh, older = tmp_path / "fresh", tmp_path / "older"
    older.mkdir(mode=0o755)
    (older / "secret_key").write_text("an older secret key of fifty characters or so, kept as it was")
    (older / "secret_key").chmod(0o644)
    older.chmod(0o755)
    port = free_port()
    session = ("TRAINHUB_", "DJANGO_", "DATABASE_URL", "REDIS_URL")
    for data_dir in (fresh, older):
        env = {k: v for k, v in os.environ.items() if not k.startswith(session)}
        env.update(TRAINHUB_DATA_DIR=str(data_dir), REDIS_URL=f"redis://127.0.0.1:{port}/0")
        migrated = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=BASE_DIR, env=env, capture_output=True
        )
        assert migrated.returncode == 0, migrated.stderr.decode()
        assert _mode(data_dir) == 0o700
        for name in ("db.sqlite3", "secret_key", REDIS_PASSWORD_FILE):
            assert _mode(data_dir / name) == 0o600, name
    assert (older / "secret_key").read_text().startswith("an older secret key")

    env = {k: v for k, v in os.environ.items() if not k.startswith(session)}
    env.update(TRAINHUB_DATA_DIR=str(fresh), REDIS_URL=f"redis://127.0.0.1:{port}/0")
    output = tmp_path / "redis.out"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "trainhub.ops.redis_server"],
        cwd=BASE_DIR,
        env=env,
        stdout=open(output, "wb"),
        stderr=subprocess.STDOUT,
    )
    password = (fresh / REDIS_PASSWORD_FILE).read_text().strip()
    try:
        credentialed = redis.Redis(port=port, username="trainhub", password=password)

        def answers() -> bool:
            try:
                return bool(credentialed.ping())
            except redis.ConnectionError:
                return launcher.poll() is not None

        wait_until(answers, 30, message="the Procfile's Redis")
        assert launcher.poll() is None, output.read_text()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password=password).ping()  # the default user is off
        for pid in [launcher.pid, *_children(launcher.pid)]:
            for part in ("cmdline", "environ"):
                assert password.encode() not in Path(f"/proc/{pid}/{part}").read_bytes(), f"{pid}'s {part}"
        assert _mode(fresh / "redis") == 0o700
    finally:
        launcher.terminate()
        launcher.wait(20)
    assert password not in output.read_text()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            pass
    return found


def test_a_debug_error_page_does_not_show_the_redis_password(rf):
    """With DEBUG on (a development machine), Django's error page lists the settings: REDIS_URL
    and RQ_QUEUES hold the password, and are shown masked like SECRET_KEY."""
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        page = technical_500_response(rf.get("/w/birds/"), *sys.exc_info()).content.decode()
    assert "REDIS_URL" in page and "RQ_QUEUES" in page
    assert_no_secret_in({"the error page": page})


def test_make_runs_redis_launcher_refuses_a_redis_without_its_credential(tmp_path):
    """A Redis without a password already on REDIS_URL's port (a machine's own, say): `make run`
    must not use it, since runs would reach it freely. The launcher stops, saying how to go on."""
    port = free_port()
    other = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: redis_answers(f"redis://127.0.0.1:{port}/0"), 20, message="the other Redis")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINHUB_", "REDIS_URL"))}
        env.update(TRAINHUB_DATA_DIR=str(tmp_path / "data"), REDIS_URL=f"redis://127.0.0.1:{port}/0")
        launcher = subprocess.run(
            [sys.executable, "-m", "trainhub.ops.redis_server"], cwd=BASE_DIR, env=env, capture_output=True, text=True
        )
    finally:
        other.terminate()
        other.wait(10)
    assert launcher.returncode == 1
    assert f"The Redis at redis://trainhub:***@127.0.0.1:{port}/0 refuses TrainHub's credential" in launcher.stderr
    assert (tmp_path / "data" / REDIS_PASSWORD_FILE).read_text().strip() not in launcher.stdout + launcher.stderr
