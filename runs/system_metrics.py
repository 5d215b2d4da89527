"""What each rank costs the machine while it runs: CPU (percent of one core) and resident memory of
its whole process tree, read from /proc by the node and kept as the run's `system/` metrics, so
the run page charts them beside the script's own."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from trainhub.supervisor import descendants

CPU = "system/cpu_percent"
MEMORY = "system/memory_mb"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def tree_usage(root: int) -> tuple[float, int]:
    """CPU seconds used so far and resident bytes now, of `root` and every process below it."""
    seconds, resident = 0.0, 0
    for pid in [root, *descendants(root)]:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended between the listing and the read
        # After the command name: state is fields[0], utime fields[11], stime fields[12], rss fields[21].
        seconds += (int(fields[11]) + int(fields[12])) / TICKS
        resident += int(fields[21]) * PAGE_BYTES
    return seconds, resident


@dataclass
class Sampler:
    """Per rank, the points since the last sample: CPU as the share of one core over the interval."""

    last: dict[int, tuple[float, float]] = field(default_factory=dict)

    def sample(self, roots: dict[int, int]) -> dict[int, dict[str, float]]:
        """{rank: {metric: value}} for the ranks given as {rank: root pid}; a rank's first sample
        only starts its clock (its CPU share needs an interval)."""
        now = time.monotonic()
        found: dict[int, dict[str, float]] = {}
        for rank, root in roots.items():
            seconds, resident = tree_usage(root)
            values = {MEMORY: round(resident / 2**20, 1)}
            if rank in self.last:
                before, at = self.last[rank]
                if now > at:
                    values[CPU] = round(max(0.0, seconds - before) / (now - at) * 100, 1)
            self.last[rank] = (seconds, now)
            found[rank] = values
        return found
