"""A rank starts under a spare supervisor, one the node started before it was needed and that waits
for its command (trainhub/sandbox.py): the rank must get exactly what a supervisor started for it
gives, box included, and no spare may outlive the thread that started it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from trainhub.sandbox import Box, box_uid, python_folders, start_unboxed, warm_supervisor

# How the executor starts a rank (runs/executor.py).
RANK_START = dict(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
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
    return "--spare" in process.args, output, process.wait()


def spares_of_this_process() -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/children") as children:
            for pid in children.read().split():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                        if b"--spare" in cmdline.read().split(b"\0"):
                            found.append(int(pid))
                except FileNotFoundError:
                    continue
    return found


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

    def start_and_leave_a_spare():
        warm_supervisor()
        ended(start_unboxed(["true"], {}, tmp_path, **RANK_START))
        warm_supervisor()
        # /proc shows its command line once its exec is through.
        return wait_for(lambda: len(spares_of_this_process()) == 1)

    assert in_own_thread(start_and_leave_a_spare), "a spare waits while its thread runs"
    assert wait_for(lambda: spares_of_this_process() == []), "the spare ended with its thread"


def wait_for(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
