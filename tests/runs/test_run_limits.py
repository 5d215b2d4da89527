"""A run's limits on a node (runs/limits.py): every process of its box is held by the run's cgroup,
so one that holds more memory than memory_gb is stopped by the kernel and the cgroup says so, and
cpu_cores becomes a CPU quota."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runs.limits import PERIOD_US, LimitsUnavailable, make_run_cgroup
from tests.helpers.processes import wait_until
from trainhub.sandbox import Box, box_uid, python_folders, sandbox_problem

GROW = "import sys\nheld = bytearray(b'x') * int(sys.argv[1])\nprint('held', len(held), flush=True)\n"


def boxed(tmp_path: Path, key: int, limits: dict[str, float]):
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
        read_only=tuple(python_folders(Path(sys.executable))),
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
