"""What a node's machine is doing, as its heartbeat reports it for the cluster page (beside its load
averages): the share of its CPUs busy since the last look, memory in use, and each NVIDIA GPU's
utilisation and memory (trainhub/compute/gpus.py: nothing is run on a machine without one)."""

from __future__ import annotations

from typing import Any

from trainhub.compute import gpus


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat's first line."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _memory_mb() -> tuple[float, float] | None:
    """(used, total) MB: what the kernel cannot hand out without swapping (MemTotal - MemAvailable)."""
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                name, _, rest = line.partition(":")
                values[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if "MemTotal" not in values or "MemAvailable" not in values:
        return None
    return (values["MemTotal"] - values["MemAvailable"]) / 1024, values["MemTotal"] / 1024


class UsageProbe:
    """Reads the machine's usage; the CPU share is over the time since the previous read."""

    def __init__(self) -> None:
        self.last_cpu = _cpu_times()

    def read(self) -> dict[str, Any]:
        usage: dict[str, Any] = {}
        now = _cpu_times()
        if now is not None and self.last_cpu is not None and now[1] > self.last_cpu[1]:
            busy = (now[0] - self.last_cpu[0]) / (now[1] - self.last_cpu[1])
            usage["cpu_percent"] = round(100 * min(1.0, max(0.0, busy)), 1)
        self.last_cpu = now
        memory = _memory_mb()
        if memory is not None:
            usage["memory_used_mb"], usage["memory_total_mb"] = round(memory[0]), round(memory[1])
        usage["gpus"] = [
            {
                "index": gpu.index,
                "utilization_percent": gpu.utilization_percent,
                "memory_used_mb": gpu.memory_used_mb,
                "memory_total_mb": gpu.memory_total_mb,
            }
            for gpu in gpus.gpus()
        ]
        return usage
