"""What each rank costs the machine while it runs: CPU (percent of one core) and resident memory of
its whole process tree, read from /proc, and where the node has NVIDIA GPUs the GPU memory its
processes hold and the utilisation of the GPUs they use (trainhub/compute/gpus.py); kept by the node
as the run's `system/` metrics, so the run page charts them beside the script's own."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from trainhub.compute import gpus
from trainhub.supervisor import descendants

CPU = "system/cpu_percent"
MEMORY = "system/memory_mb"
GPU_UTILIZATION = "system/gpu_utilization_percent"
GPU_MEMORY = "system/gpu_memory_mb"
# Open MPI's launcher and the daemon it has the other hosts start (its 4.x and 5.x names).
MPI_LAUNCHERS = {"mpirun", "orterun", "orted", "prterun", "prted"}
MPI_AGENT_NAME = "mpi_agent.py"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def tree_usage(root: int) -> tuple[float, int]:
    """CPU seconds used so far and resident bytes now, of `root` and every process below it."""
    seconds, resident, _ = _tree(root)
    return seconds, resident


def _tree(root: int) -> tuple[float, int, list[int]]:
    seconds, resident, alive = 0.0, 0, []
    for pid in [root, *descendants(root)]:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended between the listing and the read
        if fields[0] in (b"Z", b"X"):
            continue  # it ended and holds nothing any more (0 resident pages) until it is reaped
        # After the command name: state is fields[0], utime fields[11], stime fields[12], rss fields[21].
        seconds += (int(fields[11]) + int(fields[12])) / TICKS
        resident += int(fields[21]) * PAGE_BYTES
        alive.append(pid)
    return seconds, resident, alive


def _namespace_pid(pid: int) -> int | None:
    """The pid `pid` has in its own (innermost) PID namespace: in a box, what the process itself sees."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def launched_ranks(launcher: int, announced: dict[int, int]) -> dict[int, int]:
    """rank → pid (this machine's) of the ranks a per-node launcher (torchrun) started below pid
    `launcher`, found by the pid each rank announced as it started (in its box's PID namespace). A
    rank's own children count in its tree; the launcher itself is no rank's."""
    wanted = {pid: rank for rank, pid in announced.items()}
    found: dict[int, int] = {}
    for pid in descendants(launcher):
        rank = wanted.get(_namespace_pid(pid) or -1)
        if rank is not None and rank not in found:
            found[rank] = pid
    return found


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks since boot) of `pid`."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _reads(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def mpi_launched_ranks(root: int, ranks: list[int]) -> dict[int, int]:
    """rank → pid of the MPI ranks of this host below `root` (mpirun, or Open MPI's daemon started
    for mpirun): the children of mpirun or orted other than mpirun's agents (runs/mpi_agent.py),
    which Open MPI starts in the order of their local ranks; `ranks` are this host's, in that order.
    Only once all of them run, so that one that ended early shifts no other."""
    tree = descendants(root)
    launchers = {pid for pid in tree if _reads(f"/proc/{pid}/comm").strip() in MPI_LAUNCHERS}
    started = []
    for pid in tree:
        stat = _stat(pid)
        if stat is not None and stat[0] in launchers and MPI_AGENT_NAME not in _reads(f"/proc/{pid}/cmdline"):
            started.append((stat[1], pid))
    if len(started) != len(ranks):
        return {}
    return dict(zip(ranks, [pid for _, pid in sorted(started)], strict=True))


def gpu_usage(pids: list[int], used: list[gpus.GpuProcess], devices: list[gpus.Gpu]) -> dict[str, float]:
    """The GPU metrics of the processes `pids`: the memory they hold on any GPU, and the mean
    utilisation of the GPUs they hold memory on; {} when they hold none."""
    tree = set(pids)
    mine = [process for process in used if process.pid in tree]
    if not mine:
        return {}
    values = {GPU_MEMORY: round(sum(process.memory_mb or 0 for process in mine), 1)}
    held = {process.gpu_uuid for process in mine}
    busy = [gpu.utilization_percent for gpu in devices if gpu.uuid in held and gpu.utilization_percent is not None]
    if busy:
        values[GPU_UTILIZATION] = round(sum(busy) / len(busy), 1)
    return values


@dataclass
class Sampler:
    """Per rank, the points since the last sample: CPU as the share of one core over the interval."""

    last: dict[int, tuple[int, float, float]] = field(default_factory=dict)  # rank → root, CPU seconds, when
    gpu_watch: gpus.GpuWatch = field(default_factory=gpus.GpuWatch)

    def sample(self, roots: dict[int, int]) -> dict[int, dict[str, float]]:
        """{rank: {metric: value}} for the ranks given as {rank: root pid}; a rank's first sample
        only starts its clock (its CPU share needs an interval), and its GPU use is what nvidia-smi
        said by the previous sample."""
        now = time.monotonic()
        found: dict[int, dict[str, float]] = {}
        # What nvidia-smi said at the previous sample (it is asked beside the caller, never waited for).
        used, devices = self.gpu_watch.ask() if roots and gpus.nvidia_smi() is not None else ([], [])
        for rank, root in roots.items():
            seconds, resident, pids = _tree(root)
            if not pids:
                continue  # the rank ended since it was listed
            values = {MEMORY: round(resident / 2**20, 1)}
            if rank in self.last:
                measured, before, at = self.last[rank]
                if now > at and measured == root:
                    values[CPU] = round(max(0.0, seconds - before) / (now - at) * 100, 1)
            self.last[rank] = (root, seconds, now)
            values.update(gpu_usage(pids, used, devices))
            found[rank] = values
        return found


def batch(rank: int, values: dict[str, float]) -> dict[str, Any]:
    """One rank's sample as a metrics batch (the body of the run's metrics endpoint)."""
    return {"rank": rank, "metrics": [{"name": name, "values": [value]} for name, value in values.items()]}
