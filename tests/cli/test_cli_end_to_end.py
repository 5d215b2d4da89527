"""The `trainhub` command in a real shell, as a user types it, against a live server and a real
node: login, workspace, compute, env, run submit (progress bar, followed log, exit codes), run
list/show/logs -f/cancel/download, and a model registered from the run and downloaded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.processes import BASE_DIR, process_env, run_folder
from tests.helpers.proxy import LosingProxy
from tests.helpers.site import module_site

pytestmark = pytest.mark.slow

TRAINHUB = str(BASE_DIR / ".venv" / "bin" / "trainhub")
PROJECTS = Path(__file__).resolve().parents[1] / "runs" / "projects"
NEVER_LOSE = r"(?!)"


def shell(folder: Path, command: str, home: Path, stdin: str = "") -> subprocess.CompletedProcess:
    """`command` typed in bash in `folder`: `trainhub` is on the PATH, no token in the environment."""
    env = process_env(HOME=str(home), PATH=f"{Path(TRAINHUB).parent}:{os.environ['PATH']}")
    env.pop("TRAINHUB_TOKEN", None)
    env.pop("TRAINHUB_CREDENTIALS", None)
    return subprocess.run(
        ["bash", "-c", command], cwd=folder, env=env, input=stdin, capture_output=True, text=True, timeout=240
    )


@pytest.fixture(scope="module")
def user(django_db_blocker, live_server_process, tmp_path_factory):
    """A home with credentials from `trainhub login`, a project folder with its config.json, a node."""
    home, project = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("project")
    for script in (
        PROJECTS / "tiny" / "train.py",
        PROJECTS / "scripts" / "fail.py",
        PROJECTS / "scripts" / "print_slowly.py",
    ):
        shutil.copy(script, project)
    with module_site(django_db_blocker, live_server_process, home) as site:
        login = shell(
            project, f"trainhub login --server {site.url} --workspace birds --token-stdin", home, stdin=site.token
        )
        assert login.returncode == 0, login.stderr
        created = shell(
            project, "trainhub compute create cpu --vm-size LOCAL_CPU --max-nodes 1 --provisioner manual", home
        )
        assert created.returncode == 0, created.stderr
        site.start_nodes("cpu", 1)
        yield {"home": home, "project": project, "site": site, "login": login}


def trainhub(user, command: str, stdin: str = "") -> subprocess.CompletedProcess:
    return shell(user["project"], command, user["home"], stdin)


def as_json(done: subprocess.CompletedProcess):
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_login_with_a_revoked_token_fails_and_writes_nothing(live_url, workspace, owner, tmp_path):
    from tests.conftest import issue_token
    from trainhub.workspaces.models import ApiToken
    from trainhub.workspaces.services import token_revoke

    token = issue_token(workspace, owner)
    token_revoke(token=ApiToken.objects.get())
    done = shell(tmp_path, f"trainhub login --server {live_url} --workspace birds --token-stdin", tmp_path, token)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("trainhub: error: ")
    assert not (tmp_path / "config.json").exists() and not (tmp_path / ".trainhub").exists()


def test_login_keeps_the_token_out_of_config_json(user):
    config = json.loads((user["project"] / "config.json").read_text())
    assert config == {"server_url": user["site"].url, "workspace_name": "birds"}
    credentials = user["home"] / ".trainhub" / "credentials"
    assert user["site"].token in credentials.read_text()
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert "Logged in to birds" in user["login"].stdout and "as owner" in user["login"].stdout
    assert as_json(trainhub(user, "trainhub workspace show --json"))["role"] == "owner"


def test_compute_list_and_show(user):
    assert [c["name"] for c in as_json(trainhub(user, "trainhub --json compute list"))] == ["cpu"]
    shown = trainhub(user, "trainhub compute show cpu")
    assert shown.stdout.splitlines()[0].startswith("cpu\tLOCAL_CPU\t0-1 nodes\t1 up")
    unknown = trainhub(user, "trainhub compute show nope")
    assert unknown.returncode == 1 and "no compute target named 'nope'" in unknown.stderr


def test_env_list_show_create_clone_export(user):
    listed = trainhub(user, "trainhub env list")
    assert "TrainHub-PyTorch-2.13-CPU:1\tcurated" in listed.stdout
    assert as_json(trainhub(user, "trainhub env show TrainHub-PyTorch-2.13-CPU --json"))["spec"]["pip"] == [
        "torch==2.13.0",
        "numpy",
    ]
    (user["project"] / "requirements.txt").write_text("numpy\n")
    created = trainhub(user, "trainhub env create mine --pip-requirements requirements.txt")
    assert created.stdout.strip() == "Registered mine:1"
    cloned = trainhub(user, "trainhub env clone mine:1 mine-too")
    assert cloned.stdout.strip() == "Registered mine-too:1 (a copy of mine:1)"
    exported = trainhub(user, "trainhub env export mine-too --directory exported")
    assert exported.returncode == 0, exported.stderr
    assert "numpy" in (user["project"] / "exported" / "conda_dependencies.yml").read_text()
    reserved = trainhub(user, "trainhub env clone mine TrainHub-Mine")
    assert reserved.returncode == 1 and "reserved for curated environments" in reserved.stderr


def test_submit_follows_the_log_then_download_register_and_fetch_the_model(user):
    done = trainhub(user, "trainhub run submit --script train.py --compute cpu --experiment cli -- --num_epochs 4")
    assert done.returncode == 0, done.stderr
    assert "Uploading snapshot" in done.stderr  # the progress bar
    epochs = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert epochs == ["0", "1", "2", "3"] and "Status: Completed" in done.stdout
    run_id = done.stdout.split("Run ", 1)[1].split(" submitted", 1)[0]
    printed_sha = done.stdout.split("model sha256 ", 1)[1].split()[0]

    listed = as_json(trainhub(user, "trainhub run list --experiment cli --json"))
    assert [(r["run_id"], r["status"]) for r in listed] == [(run_id, "Completed")]
    assert "epoch 3 loss" in trainhub(user, f"trainhub run logs {run_id}").stdout
    assert as_json(trainhub(user, f"trainhub run show {run_id}"))["arguments"] == ["--num_epochs", "4"]

    fetched = trainhub(user, f"trainhub run download {run_id} --target-dir out")
    assert fetched.returncode == 0, fetched.stderr
    assert hashlib.sha256((user["project"] / "out" / "outputs" / "model.pt").read_bytes()).hexdigest() == printed_sha

    registered = trainhub(user, f"trainhub model register --name cli-model --path outputs/model.pt --run-id {run_id}")
    assert registered.stdout.strip() == "Registered cli-model:1"
    listed_models = as_json(trainhub(user, "trainhub --json model list"))
    assert [(m["name"], m["version"], m["run_id"]) for m in listed_models] == [("cli-model", 1, run_id)]
    downloaded = trainhub(user, "trainhub model download cli-model --target-dir model")
    assert downloaded.returncode == 0, downloaded.stderr
    assert hashlib.sha256((user["project"] / "model" / "model.pt").read_bytes()).hexdigest() == printed_sha


def test_export_onnx_json_keeps_stdout_for_the_json(user):
    """`model export-onnx --json`: the export's log goes to stderr, stdout is the new version as JSON."""
    made = subprocess.run(
        [
            str(BASE_DIR / ".venv" / "bin" / "python"),
            "-c",
            "import torch; torch.jit.script(torch.nn.Linear(8, 2)).save('scripted.pt')",
        ],
        cwd=user["project"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    registered = trainhub(user, "trainhub model register --name cli-scripted --path scripted.pt")
    assert registered.returncode == 0, registered.stderr

    done = trainhub(user, "trainhub model export-onnx cli-scripted --shape 1,8 --compute-target cpu --json")
    assert done.returncode == 0, done.stderr
    exported = json.loads(done.stdout)
    assert (exported["name"], exported["version"], exported["exported_from"]) == (
        "cli-scripted-onnx",
        1,
        "cli-scripted:1",
    )
    assert "onnx.checker: model.onnx is valid" in done.stderr

    human = trainhub(user, "trainhub model export-onnx cli-scripted:1 --shape 1,8 --compute-target cpu")
    assert human.returncode == 0, human.stderr
    assert "Exported cli-scripted:1 to cli-scripted-onnx:2: max abs difference " in human.stdout


def test_a_failing_run_exits_non_zero_with_one_line(user):
    done = trainhub(user, "trainhub run submit --script fail.py --compute cpu --experiment cli-fail")
    assert done.returncode == 1
    assert "ZeroDivisionError" in done.stdout and "Status: Failed" in done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("trainhub: error: Run cli-fail_")
    assert " ended Failed: " in done.stderr.strip().splitlines()[-1]


def test_logs_follow_a_running_run_and_cancel_stops_one(user, tmp_path):
    submitted = as_json(
        trainhub(
            user,
            "trainhub run submit --json --no-wait --script print_slowly.py --compute cpu --experiment cli-slow -- go",
        )
    )
    env = process_env(HOME=str(user["home"]))
    env.pop("TRAINHUB_TOKEN", None)
    follower = subprocess.Popen(
        [TRAINHUB, "run", "logs", "-f", submitted["run_id"]],
        cwd=user["project"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    before = [follower.stdout.readline().strip()]
    while before[-1] != "first line":  # the log opens with the node's preparing lines
        assert before[-1] or follower.poll() is None, before
        before.append(follower.stdout.readline().strip())
    assert "LATER-LINE after the page opened" not in before
    with user["site"].blocker.unblock():
        (run_folder(submitted["run_id"]) / "go").touch()  # in the run's folder: its /tmp is its own
    rest, errors = follower.communicate(timeout=120)
    assert follower.returncode == 0, errors
    assert "LATER-LINE after the page opened" in rest

    waiting = as_json(
        trainhub(
            user,
            "trainhub --json run submit --no-wait --script print_slowly.py --compute cpu --experiment cli-slow "
            "-- never",
        )
    )
    canceled = trainhub(user, f"trainhub run cancel {waiting['run_id']}")
    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout.strip() == f"Run {waiting['run_id']}: Canceled"


def test_usage_and_unknown_run_errors(user):
    usage = trainhub(user, "trainhub run submit --script train.py")
    assert usage.returncode == 2 and "the following arguments are required: --compute" in usage.stderr
    unknown = trainhub(user, "trainhub run show no-such-run")
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1 and unknown.stderr.startswith("trainhub: error: ")


def test_json_submit_keeps_stdout_for_the_json(user):
    done = trainhub(user, "trainhub run submit --json --script fail.py --compute cpu --experiment cli-json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["status"] == "Failed"
    assert "ZeroDivisionError" in done.stderr and "Status: Failed" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("trainhub: error: Run cli-json_")


def test_submit_names_its_environment_and_the_server_looks_it_up(user):
    """--env goes with the submit (no Environment.get before it); an unknown name is refused by it."""
    with LosingProxy(user["site"].url, NEVER_LOSE) as proxy:
        config = user["project"] / "proxied.json"
        config.write_text(json.dumps({"server_url": proxy.url, "workspace_name": "birds", "token": user["site"].token}))
        done = trainhub(
            user,
            "trainhub --config proxied.json run submit --script train.py --compute cpu --experiment cli-env "
            "--env TrainHub-PyTorch-2.13-CPU:1 -- --num_epochs 1",
        )
        unknown = trainhub(
            user, "trainhub --config proxied.json run submit --script train.py --compute cpu --env no-such-env"
        )
        paths = [path.split("?")[0] for _, path, _ in proxy.seen]

    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split("Run ", 1)[1].split(" submitted", 1)[0]
    shown = as_json(trainhub(user, f"trainhub run show {run_id}"))
    assert shown["environment"] == {"name": "TrainHub-PyTorch-2.13-CPU", "version": 1}
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "trainhub: error: No environment named 'no-such-env' in workspace 'birds' or among the curated environments.\n"
    )
    assert not [path for path in paths if "/environments" in path], paths
