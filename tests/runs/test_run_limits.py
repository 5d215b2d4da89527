"""A run's limits on a node (runs/limits.py): every process of its box is held by the run's cgroup,
so one that holds more memory than memory_gb is stopped by the kernel and the cgroup says so, and
cpu_cores becomes a CPU quota."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runs.limits import PERIOD_US, LimitsUnavailable, make_run_cgroup
from tests.helpers.processes import wait_until
from trainhub.sandbox import (
    SPARE_POPEN,
    Box,
    box_uid,
    node_is_root,
    node_read_only,
    python_folders,
    sandbox_problem,
    warm_supervisor,
)

# How the executor starts a rank (runs/executor.py).
RANK_START = SPARE_POPEN

GROW = "import sys\nheld = bytearray(b'x') * int(sys.argv[1])\nprint('held', len(held), flush=True)\n"


def boxed(tmp_path: Path, key: int, limits: dict[str, float], *, as_the_node_makes: bool = False):
    if sandbox_problem() is not None:
        pytest.skip(f"No box on this machine: {sandbox_problem()}")
    try:
        cgroup = make_run_cgroup(900_000 + key, limits)
    except LimitsUnavailable as why:
        pytest.skip(f"No cgroups for runs on this machine: {why}")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "grow.py").write_text(GROW)
    box = Box(
        uid=box_uid("run", 900_000 + key),
        workdir=tmp_path / "work",
        tmp=tmp_path / "tmp",
        # A run's box as runs/preparation.py makes it (which a spare box can become) or a lean one.
        shm=tmp_path / "shm" if as_the_node_makes else None,
        read_only=(*python_folders(Path(sys.executable)), *(node_read_only() if as_the_node_makes else ())),
        cgroups=tuple(cgroup.folders),
    )
    box.prepare()
    return box, cgroup


def test_a_boxed_process_past_its_memory_limit_is_stopped_and_the_cgroup_says_why(tmp_path):
    box, cgroup = boxed(tmp_path, 1, {"memory_gb": 0.125})
    try:
        small = box.run([sys.executable, "grow.py", str(16 << 20)], {}, capture_output=True, timeout=60)
        assert small.returncode == 0 and b"held 16777216" in small.stdout
        assert not cgroup.out_of_memory()
        big = box.run([sys.executable, "grow.py", str(512 << 20)], {}, capture_output=True, timeout=60)
        assert big.returncode != 0 and b"held" not in big.stdout
        assert cgroup.out_of_memory()
    finally:
        box.cleanup()
        cgroup.remove()
    assert not any(folder.exists() for folder in cgroup.folders)


def test_cpu_cores_is_a_quota_on_the_boxs_processes(tmp_path):
    box, cgroup = boxed(tmp_path, 2, {"cpu_cores": 0.5})
    try:
        (folder,) = cgroup.folders
        quota = (folder / ("cpu.max" if cgroup.version == "v2" else "cpu.cfs_quota_us")).read_text().split()[0]
        assert int(quota) == PERIOD_US // 2
        process = box.popen(["sleep", "30"], {}, stdout=subprocess.DEVNULL)
        try:

            def members() -> set[int]:
                return {int(pid) for pid in (folder / "cgroup.procs").read_text().split()}

            # The supervisor joins before it starts the box, so everything it starts is there too.
            wait_until(lambda: process.pid in members() and len(members()) >= 3, 30, message="the box in the cgroup")
        finally:
            process.terminate()
            process.wait(10)
    finally:
        box.cleanup()
        cgroup.remove()
    assert os.path.exists(folder) is False


def test_a_rank_handed_to_a_spare_box_still_starting_is_held_to_its_limits(tmp_path):
    """The node makes its next spare box as a run's ranks end, and the next run's rank may be handed
    to it while bwrap is still starting the waiter in it: every process of the spare, the one the
    rank becomes included, must be in the run's cgroup (one forked as the spare was moved was not)."""
    if not node_is_root():
        pytest.skip("spare boxes are made by nodes that run as root only; this test runs as another user")
    box, cgroup = boxed(tmp_path, 3, {"memory_gb": 0.125}, as_the_node_makes=True)
    ended = {}

    def start_at_once():
        warm_supervisor()  # no wait: the rank is handed over while the spare box starts
        process = box.popen([sys.executable, "grow.py", str(512 << 20)], {}, **RANK_START)
        ended.update(spare_box="--spare-box" in process.args, output=process.stdout.read(), code=process.wait(60))

    try:
        thread = threading.Thread(target=start_at_once)
        thread.start()
        thread.join()
        assert ended["spare_box"], "the rank was handed to the spare box"
        assert ended["code"] != 0 and b"held" not in ended["output"]
        assert cgroup.out_of_memory()
    finally:
        box.cleanup()
        cgroup.remove()
