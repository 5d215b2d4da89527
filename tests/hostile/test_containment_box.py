"""Issue 16, "each run in its own box": attacks by a member's code on the real stack (a real server,
real node processes, the real box), each trying to reach the server's secrets, another workspace's
concurrent run or the node's own variables. The secret never appears in any log, file or response,
and the other run is untouched."""

from __future__ import annotations

import os
import textwrap
import uuid
import warnings
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from runs.models import LogChunk, Run, RunProcess
from tests.conftest import issue_token
from tests.helpers.processes import NodeProcess, run_folder, run_pids, wait_until
from tests.runs.builders import make_cluster
from trainhub.sandbox import box_uid, node_is_root
from trainhub.sdk import Environment, Experiment, ScriptRunConfig, Workspace

pytestmark = pytest.mark.slow

SQLITE_HEADER = b"SQLite format 3"
CURATED = "TrainHub-PyTorch-2.13-CPU"

# A module of the snapshot that shadows the standard library's `signal` (imported by the rank
# supervisor, subprocess, torch...): it reports who runs it and tries the server's secrets, then
# behaves as the real module so that what imported it goes on.
SHADOW_SIGNAL = """
import os, sys, sysconfig, importlib.util

def _attack():
    found = []
    for path in os.environ.get("ATTACK_TARGETS", "").split(os.pathsep):
        try:
            with open(path, "rb") as handle:
                found.append(f"{path}={handle.read(64)!r}")
        except OSError as error:
            found.append(f"{path}=REFUSED {error.strerror}")
    print(f"SHADOW {__name__} ran as uid={os.getuid()} in {sys.argv[0]!r}: {found}", flush=True)

_attack()
_spec = importlib.util.spec_from_file_location("signal", os.path.join(sysconfig.get_paths()["stdlib"], "signal.py"))
_real = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_real)
globals().update({k: v for k, v in vars(_real).items() if not k.startswith("__")})
"""
SHADOW_SITECUSTOMIZE = SHADOW_SIGNAL.split("_spec =")[0]


# What the node's log says when a rank does not start from its spare box (trainhub/sandbox.py).
NOT_FROM_SPARE = "A rank starts through bwrap, not from the node's spare box:"


def log_text(run_id: str) -> str:
    return "\n".join(c.text for c in LogChunk.objects.filter(run__run_id=run_id).order_by("first_seq"))


def project(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def environment(ws, name: str, **variables: str) -> Environment:
    env = Environment.get(workspace=ws, name=CURATED).clone(name)
    env.environment_variables = variables
    return env.register(ws)


def submit(ws, source: Path, script: str, environment_: Environment, arguments=(), experiment="box"):
    config = ScriptRunConfig(
        source_directory=str(source),
        script=script,
        arguments=list(arguments),
        compute_target="cpu-cluster",
        environment=environment_,
    )
    return Experiment(ws, experiment).submit(config)


def secret_targets() -> list[str]:
    return [str(settings.DATA_DIR / "secret_key"), str(connection.settings_dict["NAME"])]


def assert_no_secret(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    assert settings.SECRET_KEY.encode() not in data, f"{where}: the server's secret key"
    assert SQLITE_HEADER not in data, f"{where}: the database"


def outside_box_environments(run_id: str) -> dict[int, dict[str, str]]:
    """The environment of each process the node started for the run that is NOT in a box (the
    supervisor, bwrap): pid -> variables. A boxed process has a second pid in its own namespace."""
    found = {}
    for supervisor in RunProcess.objects.filter(run__run_id=run_id).values_list("pid", flat=True):
        pending = [supervisor]
        while pending:
            pid = pending.pop()
            try:
                with open(f"/proc/{pid}/status") as status:
                    nspids = next(line.split()[1:] for line in status if line.startswith("NSpid:"))
                with open(f"/proc/{pid}/environ", "rb") as environ:
                    variables = dict(e.decode().split("=", 1) for e in environ.read().split(b"\0") if b"=" in e)
                children = []
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as handle:
                        children += [int(child) for child in handle.read().split()]
            except (OSError, StopIteration):
                continue
            if len(nspids) == 1:
                found[pid] = variables
            pending += children
    return found


def test_attack_2_pythonpath_and_a_shadowing_module_never_run_outside_the_box(ws, node, tmp_path):
    """Attack 2: environment_variables {"PYTHONPATH": "."} and a `signal.py` (and a
    `sitecustomize.py`, `usercustomize.py`) in the snapshot, with `LD_PRELOAD` naming a library of
    the snapshot: the rank supervisor once started outside the sandbox with the run's variables,
    imported the shadowing module and printed the secret key and the workspace list into the log.
    Now whatever runs it runs in the box, as the run's uid, and reads nothing; the processes outside
    the box (supervisor, bwrap) have none of the run's variables; the run still runs."""
    source = project(
        tmp_path / "shadow",
        {
            "signal.py": SHADOW_SIGNAL,
            "sitecustomize.py": SHADOW_SITECUSTOMIZE,
            "usercustomize.py": SHADOW_SITECUSTOMIZE,
            "train.py": """
            import os, signal, sys, time
            while not os.path.exists("go"):
                time.sleep(0.1)
            print("training done", flush=True)
        """,
        },
    )
    env = environment(
        ws, "shadowing", PYTHONPATH=".", LD_PRELOAD="./evil.so", ATTACK_TARGETS=os.pathsep.join(secret_targets())
    )
    run = submit(ws, source, "train.py", env)
    wait_until(
        lambda: RunProcess.objects.filter(run__run_id=run.id, state="running").exists(),
        120,
        message="the rank to start",
    )
    wait_until(
        lambda: (run_folder(run.id)).is_dir() and "SHADOW" in log_text(run.id),
        60,
        message="the shadowing module to run",
    )
    outside = outside_box_environments(run.id)
    if node_is_root():  # the rank started in the node's spare box (its waiter, then the command)
        supervisor = RunProcess.objects.get(run__run_id=run.id, rank=0).pid
        with open(f"/proc/{supervisor}/cmdline", "rb") as cmdline:
            from_spare_box = b"--spare-box" in cmdline.read().split(b"\0")
        # Or through bwrap, where the node's log says why (seen once in a clean-clone run): the
        # attack is then checked against that box; the spare box's own in test_spare_supervisor.py.
        [why] = [line for line in node.log().splitlines() if NOT_FROM_SPARE in line] or [None]
        assert from_spare_box or why is not None, node.log()
        if not from_spare_box:
            warnings.warn(f"the rank started through bwrap: {why}", stacklevel=1)
    (run_folder(run.id) / "go").touch()
    details = run.wait_for_completion(raise_on_error=False)
    log = log_text(run.id)
    assert details["status"] == "Completed", log
    assert "training done" in log

    assert outside, "the supervisor and bwrap, seen from the node's machine"
    for pid, variables in outside.items():
        leaked = {
            "PYTHONPATH",
            "LD_PRELOAD",
            "ATTACK_TARGETS",
            "TRAINHUB_RUN_TOKEN",
            "MLFLOW_TRACKING_TOKEN",
        } & variables.keys()
        assert not leaked, f"process {pid} outside the box has the run's {sorted(leaked)}"
    shadows = [line for line in log.splitlines() if line.startswith("SHADOW")]
    uid = box_uid("run", Run.objects.get(run_id=run.id).pk)
    assert shadows and all(f"uid={uid} " in line for line in shadows), shadows
    assert all("REFUSED" in line for line in shadows), shadows
    assert_no_secret(log, "the run's log")
    for name in run.get_file_names():
        path = tmp_path / "files" / name
        run.download_file(name, str(path))
        assert_no_secret(path.read_bytes(), name)


@pytest.fixture
def other_ws(live_url, live_server_process, other_workspace, outsider, curated_env, tmp_path):
    """Another workspace with a node of its own on the same machine, as runs of different
    workspaces share nodes' machines."""
    from trainhub.environments.services import seed_demo

    seed_demo(workspace=other_workspace, user=outsider)
    cluster = make_cluster(other_workspace, name="cpu-cluster", max_nodes=1)
    process = NodeProcess(cluster, tmp_path, TRAINHUB_NODE_SERVER_URL=live_server_process.url).start()
    yield Workspace.get(other_workspace.name, url=live_url, token=issue_token(other_workspace, outsider))
    process.stop()


VICTIM = """
    import os, time
    with open("outputs/result.txt", "w") as handle:
        handle.write("the victim's own result\\n")
    print("victim ready", flush=True)
    while not os.path.exists("go"):
        time.sleep(0.1)
    with open("outputs/result.txt") as handle:
        print("victim result:", handle.read().strip(), flush=True)
"""

SNOOP = """
    import os, signal, sys
    own = os.environ["TRAINHUB_RUN_TOKEN"]
    victim_folder, victim_pids = sys.argv[1], [int(pid) for pid in sys.argv[2:]]
    seen = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        seen.append(entry)
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                for item in handle.read().split(b"\\0"):
                    if item.startswith(b"TRAINHUB_RUN_TOKEN=") and item.split(b"=", 1)[1].decode() != own:
                        print("FOUND a token:", item.decode(), flush=True)
        except OSError:
            pass
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            if cwd != os.getcwd():
                print("FOUND a folder:", cwd, flush=True)
        except OSError:
            pass
    names = []
    for entry in seen:
        try:
            with open(f"/proc/{entry}/comm") as handle:
                names.append(handle.read().strip())
        except OSError:
            pass
    print("processes seen:", names, flush=True)
    for pid in victim_pids:
        try:
            os.kill(pid, signal.SIGKILL)
            print("KILLED", pid, flush=True)
        except OSError as error:
            print("cannot signal", pid, error.strerror, flush=True)
    for target in ("outputs/result.txt", "outputs/planted.txt"):
        try:
            with open(os.path.join(victim_folder, target), "w") as handle:
                handle.write("overwritten by another workspace")
            print("WROTE", target, flush=True)
        except OSError as error:
            print("cannot write", target, error.strerror, flush=True)
"""


def test_attack_4_a_run_cannot_find_signal_or_overwrite_another_workspaces_run(ws, node, other_ws, tmp_path):
    """Attack 4: a run scans /proc/*/environ for another concurrent run's TRAINHUB_RUN_TOKEN (of
    another workspace) and /proc/<pid>/cwd for its folder, SIGKILLs its processes and overwrites its
    outputs. It sees no process but its own, finds nothing, can signal nothing, writes nothing; the
    other run completes with its outputs intact and its token appears nowhere."""
    victim_source = project(tmp_path / "victim", {"victim.py": VICTIM})
    victim = submit(other_ws, victim_source, "victim.py", Environment.get(workspace=other_ws, name=CURATED))
    wait_until(lambda: "victim ready" in log_text(victim.id), 120, message="the other workspace's run")
    victim_pids = [pid for pid, _ in run_pids(victim.id)]
    assert victim_pids
    with open(f"/proc/{victim_pids[0]}/environ", "rb") as handle:
        token = next(e.split(b"=", 1)[1] for e in handle.read().split(b"\0") if e.startswith(b"TRAINHUB_RUN_TOKEN="))

    snoop_source = project(tmp_path / "snoop", {"snoop.py": SNOOP})
    arguments = [str(run_folder(victim.id)), *map(str, victim_pids)]
    snoop = submit(ws, snoop_source, "snoop.py", Environment.get(workspace=ws, name=CURATED), arguments)
    assert snoop.wait_for_completion(raise_on_error=False)["status"] == "Completed", log_text(snoop.id)
    (run_folder(victim.id) / "go").touch()
    victim_details = victim.wait_for_completion(raise_on_error=False)

    snoop_log = log_text(snoop.id)
    assert "FOUND" not in snoop_log and "KILLED" not in snoop_log and "WROTE" not in snoop_log, snoop_log
    assert "processes seen: ['bwrap']" in snoop_log, "a box sees no process but its own (and bwrap's init)"
    assert snoop_log.count("cannot write") == 2
    assert token.decode() not in snoop_log
    for name in snoop.get_file_names():
        path = tmp_path / "snoop-files" / name
        snoop.download_file(name, str(path))
        assert token not in path.read_bytes(), name

    assert victim_details["status"] == "Completed", log_text(victim.id)
    assert "victim result: the victim's own result" in log_text(victim.id)
    victim.download_file("outputs/result.txt", str(tmp_path / "result.txt"))
    assert (tmp_path / "result.txt").read_text() == "the victim's own result\n"
    assert "outputs/planted.txt" not in victim.get_file_names()


NODE_SECRET = f"aws-{uuid.uuid4().hex}"
SHOW_VARIABLES = """
    import os
    print("AWS_SECRET_ACCESS_KEY =", os.environ.get("AWS_SECRET_ACCESS_KEY", "absent"), flush=True)
    print("LANG =", os.environ.get("LANG", "absent"), flush=True)
    for path in os.environ.get("HOME_SECRET", "").split(os.pathsep):
        try:
            with open(path) as handle:
                print("READ", path, handle.read(), flush=True)
        except OSError as error:
            print("cannot read", path, error.strerror, flush=True)
"""


@pytest.fixture
def home_secret():
    """A file in the home folder of the node's user (outside /tmp, which boxes never see anyway)."""
    path = Path.home() / f".trainhub-test-{uuid.uuid4().hex}"
    path.write_text(NODE_SECRET)
    path.chmod(0o644)  # readable by anyone on the machine: only the box keeps it out of sight
    yield path
    path.unlink()


@pytest.mark.parametrize("pass_env", ["", "AWS_SECRET_ACCESS_KEY,LANG"], ids=["default", "named"])
def test_attack_5_the_nodes_variables_reach_a_run_only_when_named(
    cluster, ws, live_server_process, tmp_path, home_secret, pass_env
):
    """Attack 5: AWS_SECRET_ACCESS_KEY, set where the node was started, was printed by a run; the
    home folder was readable. A run gets the node's variables only from TRAINHUB_NODE_PASS_ENV (by
    default a few harmless ones such as LANG), and never sees the node user's home folder."""
    extra = {"TRAINHUB_NODE_PASS_ENV": pass_env} if pass_env else {}
    node = NodeProcess(
        cluster,
        tmp_path,
        TRAINHUB_NODE_SERVER_URL=live_server_process.url,
        AWS_SECRET_ACCESS_KEY=NODE_SECRET,
        LANG="C.UTF-8",
        **extra,
    ).start()
    try:
        source = project(tmp_path / "show", {"show.py": SHOW_VARIABLES})
        env = environment(ws, "show-home", HOME_SECRET=str(home_secret))
        run = submit(ws, source, "show.py", env)
        details = run.wait_for_completion(raise_on_error=False)
    finally:
        node.stop()
    log = log_text(run.id)
    assert details["status"] == "Completed", log
    assert "LANG = C.UTF-8" in log
    assert f"cannot read {home_secret}" in log
    if pass_env:
        assert f"AWS_SECRET_ACCESS_KEY = {NODE_SECRET}" in log, "named in TRAINHUB_NODE_PASS_ENV"
        assert log.count(NODE_SECRET) == 1
    else:
        assert "AWS_SECRET_ACCESS_KEY = absent" in log
        assert NODE_SECRET not in log


PLANT = """
    import os, sys
    if sys.argv[1] == "plant":
        os.symlink("/etc/passwd", "/tmp/trainhub-next")
        with open("/tmp/trainhub-planted.py", "w") as handle:
            handle.write("print('PLANTED CODE RAN')")
        with open("/dev/shm/planted", "w") as handle:
            handle.write("planted")
        print("planted:", sorted(os.listdir("/tmp")), sorted(os.listdir("/dev/shm")), flush=True)
    else:
        print("next run sees /dev/shm:", sorted(os.listdir("/dev/shm")), flush=True)
        for path in ("/tmp/trainhub-next", "/tmp/trainhub-planted.py", "/dev/shm/planted"):
            print(path, "exists" if os.path.lexists(path) else "absent", flush=True)
"""


def test_a_file_planted_in_tmp_by_one_run_is_not_seen_by_the_next(ws, node, tmp_path):
    """Variant: a symlink and a module planted in /tmp, and a file in /dev/shm, by one run for the
    next (the shared /tmp once let an earlier run plant a build backend). The next run's /tmp and
    /dev/shm are its own and empty, and the node removed the first run's."""
    source = project(tmp_path / "plant", {"plant.py": PLANT})
    env = Environment.get(workspace=ws, name=CURATED)
    first = submit(ws, source, "plant.py", env, ["plant"])
    assert first.wait_for_completion(raise_on_error=False)["status"] == "Completed", log_text(first.id)
    assert "trainhub-next" in log_text(first.id)
    second = submit(ws, source, "plant.py", env, ["look"])
    assert second.wait_for_completion(raise_on_error=False)["status"] == "Completed", log_text(second.id)
    log = log_text(second.id)
    assert "next run sees /dev/shm: []" in log
    for path in ("/tmp/trainhub-next", "/tmp/trainhub-planted.py", "/dev/shm/planted"):
        assert f"{path} absent" in log
    assert "PLANTED CODE RAN" not in log
    assert not Path(f"{run_folder(first.id)}.box").exists(), "the first run's /tmp and /dev/shm were removed"
    assert not any(Path("/tmp").glob("trainhub-planted*"))


def test_a_file_the_run_does_not_own_in_its_outputs_is_never_copied(ws, node, tmp_path):
    """Variant of attack 4: where the kernel lets a user hard-link files it does not own
    (fs.protected_hardlinks=0), a run links a root-only file of the machine into its outputs/ for
    the node to copy into the run's history. Such a link is put there by the test (this machine
    protects hard links); the node copies only the files of the run's own user, and says so."""
    source = project(tmp_path / "linker", {"linker.py": VICTIM})
    run = submit(ws, source, "linker.py", Environment.get(workspace=ws, name=CURATED))
    wait_until(lambda: "victim ready" in log_text(run.id), 120, message="the run to start")
    planted = run_folder(run.id) / "outputs" / "shadow-copy"
    planted.write_text(settings.SECRET_KEY)
    planted.chmod(0o600)
    (run_folder(run.id) / "go").touch()
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Completed", log_text(run.id)
    names = run.get_file_names()
    assert "outputs/result.txt" in names and "outputs/shadow-copy" not in names
    assert "(files the run's user does not own are never copied): outputs/shadow-copy" in log_text(run.id)
    assert_no_secret(log_text(run.id), "the run's log")
