"""A rank starts under a spare supervisor, one the node started before it was needed and that waits
for its command, or on a root node in a spare box, made before it was needed with a waiter in it
(trainhub/sandbox.py, trainhub/box_waiter.py): the rank must get exactly what a supervisor and a
box started for it give, and no spare may outlive the thread that started it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from trainhub.box_waiter import MOUNT_POINT_MOVED
from trainhub.sandbox import (
    SPARE_POPEN,
    Box,
    box_uid,
    node_is_root,
    node_read_only,
    python_folders,
    start_unboxed,
    warm_supervisor,
)

# How the executor starts a rank (runs/executor.py).
RANK_START = SPARE_POPEN
REPORT = 'id -u; pwd; env | sort; ls /proc/self/fd | sort -n | tr "\\n" " "; echo; exit 3'


def in_own_thread(starts):
    """`starts` called in a thread of its own, which then ends (and with it what it started and
    left running: a supervisor dies with the thread that started it); what it returned."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=starts()))
    thread.start()
    thread.join()
    return result["value"]


def ended(process: subprocess.Popen) -> tuple[bool, str, int]:
    """(whether a spare ran it, its output, its exit code)."""
    output = process.stdout.read().decode()
    return bool({"--spare", "--spare-box"} & set(process.args)), output, process.wait()


def ended_in(process: subprocess.Popen) -> tuple[str, str, int]:
    """(what ran it: "spare box", "spare" or "fresh", its output, its exit code)."""
    output = process.stdout.read().decode()
    started = "spare box" if "--spare-box" in process.args else "spare" if "--spare" in process.args else "fresh"
    return started, output, process.wait()


def rank_box(tmp_path: Path, key: int) -> Box:
    """A box as the node makes for a run's ranks (runs/preparation.py): its environment's Python and
    what every run's box of the node sees read-only."""
    work = tmp_path / "work"
    work.mkdir()
    box = Box(
        uid=box_uid("run", key),
        workdir=work,
        tmp=tmp_path / "tmp",
        shm=tmp_path / "shm",
        read_only=(*python_folders(Path(sys.executable)), *node_read_only()),
    )
    box.prepare()
    return box


def spares_of_thread(thread: int) -> list[int]:
    """The living spares (a spare supervisor, a spare box's) that this process's thread with native
    id `thread` started (only its own: other tests' threads may keep theirs)."""
    with open(f"/proc/{os.getpid()}/task/{thread}/children") as children:
        return [int(pid) for pid in children.read().split() if is_a_spare(int(pid))]


def is_a_spare(pid: int) -> bool:
    """Whether `pid` is a living spare (a dead one's command line is empty)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return bool({b"--spare", b"--spare-box"} & set(cmdline.read().split(b"\0")))
    except FileNotFoundError:
        return False


def test_a_boxed_rank_from_a_spare_sees_what_a_fresh_supervisor_gives(tmp_path):
    """The same command in the same box, started twice in one thread: the first has no spare and
    starts a supervisor for it, the second takes the spare the node started in between. Same uid,
    folder, variables (exactly the given ones) and open files, same exit code."""
    work = tmp_path / "work"
    work.mkdir()
    box = Box(
        uid=box_uid("run", 7),
        workdir=work,
        tmp=tmp_path / "tmp",
        shm=tmp_path / "shm",
        read_only=tuple(python_folders(Path(sys.executable))),
    )
    box.prepare()
    env = {"PATH": "/usr/bin:/bin", "RUN_VALUE": "it's $HOME; `x`"}

    def twice():
        fresh = ended(box.popen(["/bin/sh", "-c", REPORT], env, **RANK_START))
        warm_supervisor()
        return fresh, ended(box.popen(["/bin/sh", "-c", REPORT], env, **RANK_START))

    (spared, *fresh), (spared_next, *spare) = in_own_thread(twice)
    assert not spared and spared_next
    assert fresh == spare
    output, code = spare
    assert code == 3
    lines = output.splitlines()
    assert lines[0] == str(box.uid) and lines[1] == str(work)
    assert {line.split("=", 1)[0] for line in lines[2:-1]} == {"PATH", "RUN_VALUE", "PWD"}
    assert f"RUN_VALUE={env['RUN_VALUE']}" in lines
    # 0-2: /dev/null and the output pipe; 3: ls reading the folder. Nothing of the node's.
    assert lines[-1].split() == ["0", "1", "2", "3"]
    box.cleanup()


def test_an_unboxed_rank_from_a_spare_gets_its_variables_and_folder(tmp_path):
    def twice():
        env = {"PATH": "/usr/bin:/bin", "ONLY": "this"}
        fresh = ended(start_unboxed(["/bin/sh", "-c", REPORT], env, tmp_path, **RANK_START))
        warm_supervisor()
        return fresh, ended(start_unboxed(["/bin/sh", "-c", REPORT], env, tmp_path, **RANK_START))

    (spared, *fresh), (spared_next, *spare) = in_own_thread(twice)
    assert not spared and spared_next
    assert fresh == spare
    output, code = spare
    lines = output.splitlines()
    assert code == 3 and lines[1] == str(tmp_path)
    assert {line.split("=", 1)[0] for line in lines[2:-1]} == {"ONLY", "PATH", "PWD"}
    assert lines[-1].split() == ["0", "1", "2", "3"]


def test_no_spare_outlives_the_thread_that_started_it(tmp_path):
    """A spare gets SIGTERM when the thread that started it ends (it could not be handed a rank that
    must die with the node): none is left once the threads that started ranks have ended."""

    spares = 2 if node_is_root() else 1  # a spare box too

    def start_and_leave_a_spare():
        warm_supervisor()
        ended(start_unboxed(["true"], {}, tmp_path, **RANK_START))
        warm_supervisor()
        # /proc shows its command line once its exec is through.
        thread = threading.get_native_id()
        wait_for(lambda: len(spares_of_thread(thread)) == spares)
        return spares_of_thread(thread)

    left = in_own_thread(start_and_leave_a_spare)
    assert len(left) == spares, "spares wait while their thread runs"
    assert wait_for(lambda: not any(is_a_spare(pid) for pid in left)), "the spares ended with their thread"


def wait_for(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# What a box shows its rank: identity, capabilities, signals, variables, open files, folder, the
# mounts (source, where, options, type) and what the box's first process keeps.
BOX_REPORT = (
    "id; grep -E '^(Cap|NoNewPrivs|Seccomp|Sig(Ign|Blk))' /proc/self/status; grep -E '^(Uid|Cap)' /proc/1/status; "
    "awk '{print $4, $5, $6, $(NF-2)}' /proc/self/mountinfo | grep -v ' /dev/.trainhub-env ' | sort; "
    "umask; pwd; env | sort; ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; exit 3"
)


@pytest.mark.skipif(not node_is_root(), reason="spare boxes are made by nodes that run as root")
def test_a_rank_from_a_spare_box_is_in_the_box_a_fresh_start_gives(tmp_path):
    """The same command in a run's box, started twice in one thread: first by bwrap, setpriv and a
    shell, then from the spare box the node made in between (its waiter puts the rank's folder,
    /tmp and /dev/shm in place, drops to the uid and execs the command). Same uid, no capability
    in any process of the box, the same mounts and options, exactly the given variables, the same
    open files (one passed by the node at its number), same exit code."""
    box = rank_box(tmp_path, 8)
    env = {"PATH": "/usr/bin:/bin", "RUN_VALUE": "it's $HOME; `x`", "LD_PRELOAD": "", "not-a-name": "x"}
    read_end, write_end = os.pipe()
    number = 40
    os.dup2(read_end, number, inheritable=False)

    def twice():
        fresh = ended_in(box.popen(["/bin/sh", "-c", BOX_REPORT], env, pass_fds=(number,), **RANK_START))
        warm_supervisor()
        return fresh, ended_in(box.popen(["/bin/sh", "-c", BOX_REPORT], env, pass_fds=(number,), **RANK_START))

    try:
        (fresh_start, *fresh), (spare_start, *spare) = in_own_thread(twice)
    finally:
        for fd in (read_end, write_end, number):
            os.close(fd)
    assert (fresh_start, spare_start) == ("fresh", "spare box")
    assert fresh == spare
    output, code = spare
    assert code == 3
    lines = output.splitlines()
    assert lines[0] == f"uid={box.uid} gid={box.uid} groups={box.uid}"
    own, first = (
        [line.split() for line in lines if line.startswith("Cap")][:5],
        [line.split() for line in lines if line.startswith("Cap")][5:],
    )
    assert len(own) == len(first) == 5 and all(int(value, 16) == 0 for _, value in own)
    # the box's first process (bwrap's, as root) keeps no capability: none it could use or pass on
    assert all(int(value, 16) == 0 for name, value in first if name != "CapBnd:")
    assert "NoNewPrivs:\t1" in lines
    assert any(line.startswith(f"{tmp_path / 'tmp'} /tmp rw,nosuid,nodev") for line in lines)
    assert any(line.startswith(f"{box.workdir} {box.workdir} rw,nosuid,nodev") for line in lines)
    assert str(box.workdir) in lines
    assert {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("uid=")} == {
        "LD_PRELOAD",
        "PATH",
        "PWD",
        "RUN_VALUE",
    }
    assert f"RUN_VALUE={env['RUN_VALUE']}" in lines
    # 0-2: /dev/null and the output pipe; 3: ls reading the folder; the node's file at its number.
    assert lines[-1].split() == ["0", "1", "2", "3", str(number)]
    box.cleanup()


@pytest.mark.skipif(not node_is_root(), reason="spare boxes are made by nodes that run as root")
def test_a_link_planted_in_tmp_on_the_way_to_the_runs_folder_stops_the_next_rank(tmp_path):
    """Attack: a rank renames the folders the box made in its /tmp on the way to the run's folder
    (here the node's folders lie under /tmp) and leaves a link in their place, so that the next
    rank's box would put the run's folder where the link leads. That rank, from a spare box
    (whose waiter makes those folders as root) as from a fresh one, does not start and says why;
    nothing is made where the link leads."""
    box = rank_box(tmp_path, 9)
    top = box.workdir.parts[2]  # /tmp/<top>/...
    plant = f"mv /tmp/{top} /tmp/moved && mkdir /tmp/elsewhere && ln -s /tmp/elsewhere /tmp/{top}"

    def plant_then_start():
        planted = ended_in(box.popen(["/bin/sh", "-c", plant], {}, **RANK_START))
        fresh = ended_in(box.popen(["/bin/sh", "-c", "echo STARTED"], {}, **RANK_START))
        warm_supervisor()
        return planted, fresh, ended_in(box.popen(["/bin/sh", "-c", "echo STARTED"], {}, **RANK_START))

    planted, fresh, spare = in_own_thread(plant_then_start)
    assert planted[2] == 0, planted
    assert fresh[0] == "fresh" and fresh[2] != 0 and "STARTED" not in fresh[1]
    assert spare[0] == "spare box" and spare[2] != 0 and "STARTED" not in spare[1]
    assert MOUNT_POINT_MOVED.format(path=f"/tmp/{top}") in spare[1]
    assert os.listdir(tmp_path / "tmp" / "elsewhere") == []
    box.cleanup()


@pytest.mark.skipif(not node_is_root(), reason="spare boxes are made by nodes that run as root")
def test_a_folder_hidden_after_the_spare_box_was_made_stays_hidden_from_the_next_rank(tmp_path, settings, caplog):
    """A spare box made, then the node's hidden folders change (here its upload folder moves into
    TrainHub's checkout, which every box sees read-only): the spare box has no cover for it, so the
    next rank starts through bwrap (from the spare supervisor), and sees an empty folder there, not
    what the node keeps in it. A checkout under /tmp (a clone there) is the exception: what lies below
    /tmp is mounted again at every hand-over, after the rank's own /tmp, with the covers of the
    node's hidden folders as they are then, so the spare box becomes the rank's box, new cover and
    all."""
    box = rank_box(tmp_path, 10)
    uploads = Path(tempfile.mkdtemp(prefix="uploads-", dir=settings.BASE_DIR))
    (uploads / "secret").write_text("the node's")

    def spare_then_hidden():
        warm_supervisor()
        settings.TRAINHUB_UPLOAD_DIR = str(uploads)
        return ended_in(box.popen(["/bin/sh", "-c", f"ls -A {uploads}; echo listed"], {}, **RANK_START))

    try:
        started, output, code = in_own_thread(spare_then_hidden)
    finally:
        shutil.rmtree(uploads)
    below_tmp = Path(settings.BASE_DIR).absolute().is_relative_to("/tmp")
    assert (started, output, code) == ("spare box" if below_tmp else "spare", "listed\n", 0)
    # The node's log says why a rank did not start from the spare box.
    said = "A rank starts through bwrap, not from the node's spare box: it is not this box"
    assert (said in caplog.text) != below_tmp, caplog.text
    box.cleanup()
