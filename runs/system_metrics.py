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
        # After the command name: state is fields[0], utime fields[11], stime fields[12], rss fields[21].
        seconds += (int(fields[11]) + int(fields[12])) / TICKS
        resident += int(fields[21]) * PAGE_BYTES
        alive.append(pid)
    return seconds, resident, alive


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

    last: dict[int, tuple[float, float]] = field(default_factory=dict)

    def sample(self, roots: dict[int, int]) -> dict[int, dict[str, float]]:
        """{rank: {metric: value}} for the ranks given as {rank: root pid}; a rank's first sample
        only starts its clock (its CPU share needs an interval)."""
        now = time.monotonic()
        found: dict[int, dict[str, float]] = {}
        on_gpus = gpus.nvidia_smi() is not None and bool(roots)
        used = gpus.gpu_processes() if on_gpus else []
        devices = gpus.gpus() if used else []
        for rank, root in roots.items():
            seconds, resident, pids = _tree(root)
            values = {MEMORY: round(resident / 2**20, 1)}
            if rank in self.last:
                before, at = self.last[rank]
                if now > at:
                    values[CPU] = round(max(0.0, seconds - before) / (now - at) * 100, 1)
            self.last[rank] = (seconds, now)
            values.update(gpu_usage(pids, used, devices))
            found[rank] = values
        return found


def batch(rank: int, values: dict[str, float]) -> dict[str, Any]:
    """One rank's sample as a metrics batch (the body of the run's metrics endpoint)."""
    return {"rank": rank, "metrics": [{"name": name, "values": [value]} for name, value in values.items()]}
