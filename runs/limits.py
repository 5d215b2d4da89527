"""A run's CPU and memory limits on a node (`Run.limits`: {"cpu_cores": 0.5, "memory_gb": 1}), held by a
cgroup of its own that every process of its box joins (the supervisor joins it before it starts the
box, trainhub/supervisor.py), so nothing the run forks escapes it.

cgroup v1 (a `memory` and a `cpu` hierarchy) and v2 (the unified hierarchy, with the memory and cpu
controllers given to the node's cgroup) are both used; the run's cgroup is made inside the node's
own. memory_gb is the most memory (and swap) the run's processes may hold together: past it the
kernel's OOM killer stops one, and the run's reason says so. cpu_cores is a CPU quota (cores' worth
of time per 100 ms period). A node that cannot make cgroups (not root, no writable hierarchy) runs
the run without them, and its log says the limits are not enforced there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
NOT_ENFORCED = "The run's limits ({limits}) are not enforced on node {node}: {why}."
ENFORCED = "Limits of this run's processes on node {node}: {limits} (cgroup {version})."
OUT_OF_MEMORY = "it used more than its memory limit (memory_gb={memory_gb}) and the kernel's OOM killer stopped it"


def describe(limits: dict[str, float]) -> str:
    parts = []
    if limits.get("cpu_cores") is not None:
        parts.append(f"cpu_cores={limits['cpu_cores']:g}")
    if limits.get("memory_gb") is not None:
        parts.append(f"memory_gb={limits['memory_gb']:g}")
    return ", ".join(parts)


class LimitsUnavailable(Exception):
    """No cgroup can hold the run's processes on this node (the reason is the message)."""


@dataclass
class RunCgroup:
    """The cgroup folders of one run (one per v1 hierarchy, or one v2 folder)."""

    version: str
    folders: list[Path] = field(default_factory=list)
    memory_folder: Path | None = None

    def out_of_memory(self) -> bool:
        """Whether the OOM killer stopped one of the run's processes."""
        if self.memory_folder is None:
            return False
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        try:
            text = (self.memory_folder / name).read_text()
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value) > 0
        return False

    def remove(self) -> None:
        """Remove the folders (once the run's processes are gone)."""
        for folder in self.folders:
            try:
                folder.rmdir()
            except OSError:
                pass


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and "" for the v2 one."""
    found: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            found[controller] = path
    return found


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def make_run_cgroup(run_pk: int, limits: dict[str, float]) -> RunCgroup:
    """The run's cgroup with its limits written; raises LimitsUnavailable saying why there is none."""
    if os.geteuid() != 0:
        raise LimitsUnavailable("the node does not run as root, so it cannot make cgroups")
    own = _own_cgroups()
    name = f"trainhub-run-{run_pk}"
    memory_gb, cpu_cores = limits.get("memory_gb"), limits.get("cpu_cores")
    try:
        if (CGROUP_ROOT / "memory").is_dir() or (CGROUP_ROOT / "cpu").is_dir():
            return _v1(name, own, memory_gb, cpu_cores)
        if (CGROUP_ROOT / "cgroup.controllers").is_file():
            return _v2(name, own.get("", "/"), memory_gb, cpu_cores)
    except OSError as error:
        raise LimitsUnavailable(f"{type(error).__name__}: {error}") from None
    raise LimitsUnavailable(f"no cgroup hierarchy under {CGROUP_ROOT}")


def _v1(name: str, own: dict[str, str], memory_gb: float | None, cpu_cores: float | None) -> RunCgroup:
    cgroup = RunCgroup(version="v1")
    try:
        if memory_gb is not None:
            folder = CGROUP_ROOT / "memory" / own.get("memory", "/").lstrip("/") / name
            folder.mkdir(exist_ok=True)
            cgroup.folders.append(folder)
            cgroup.memory_folder = folder
            limit = str(int(memory_gb * 1024**3))
            _write(folder / "memory.limit_in_bytes", limit)
            if (folder / "memory.memsw.limit_in_bytes").exists():
                _write(folder / "memory.memsw.limit_in_bytes", limit)  # no way around it through swap
        if cpu_cores is not None:
            folder = CGROUP_ROOT / "cpu" / own.get("cpu", "/").lstrip("/") / name
            folder.mkdir(exist_ok=True)
            cgroup.folders.append(folder)
            _write(folder / "cpu.cfs_period_us", str(PERIOD_US))
            _write(folder / "cpu.cfs_quota_us", str(max(1000, int(cpu_cores * PERIOD_US))))
    except OSError:
        cgroup.remove()
        raise
    return cgroup


def _v2(name: str, own: str, memory_gb: float | None, cpu_cores: float | None) -> RunCgroup:
    parent = CGROUP_ROOT / own.lstrip("/")
    wanted = [c for c, v in (("memory", memory_gb), ("cpu", cpu_cores)) if v is not None]
    _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    folder = parent / name
    folder.mkdir(exist_ok=True)
    cgroup = RunCgroup(version="v2", folders=[folder])
    try:
        if memory_gb is not None:
            cgroup.memory_folder = folder
            _write(folder / "memory.max", str(int(memory_gb * 1024**3)))
            if (folder / "memory.swap.max").exists():
                _write(folder / "memory.swap.max", "0")
        if cpu_cores is not None:
            _write(folder / "cpu.max", f"{max(1000, int(cpu_cores * PERIOD_US))} {PERIOD_US}")
    except OSError:
        cgroup.remove()
        raise
    return cgroup
