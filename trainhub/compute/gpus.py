"""This machine's NVIDIA GPUs as `nvidia-smi` reports them: each GPU's utilisation and memory, and
which processes hold how much memory on which GPU. Probed once per process: on a machine without
nvidia-smi (or where it finds no GPU) it is never run again, so the CPU-only path costs nothing."""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading
from dataclasses import dataclass

QUERY_GPUS = ("--query-gpu=index,uuid,utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits")
QUERY_PROCESSES = ("--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits")
# nvidia-smi answers in tens of milliseconds; a driver that hangs must not hold a node's sampling.
TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    utilization_percent: float | None  # None: "[N/A]" or "[Not Supported]"
    memory_used_mb: float | None
    memory_total_mb: float | None


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    gpu_uuid: str
    memory_mb: float | None


def _number(text: str) -> float | None:
    """A value of nvidia-smi's CSV without units; "[N/A]", "[Not Supported]" and the like are None."""
    try:
        return float(text)
    except ValueError:
        return None


def _rows(output: str, width: int) -> list[list[str]]:
    rows = [[part.strip() for part in line.split(",")] for line in output.splitlines() if line.strip()]
    return [row for row in rows if len(row) == width]


def parse_gpus(output: str) -> list[Gpu]:
    """The GPUs of `nvidia-smi --query-gpu=index,uuid,utilization.gpu,memory.used,memory.total
    --format=csv,noheader,nounits`: one line per GPU, e.g. `0, GPU-5f7c…, 37, 1234, 16384`."""
    return [
        Gpu(int(index), uuid, _number(utilization), _number(used), _number(total))
        for index, uuid, utilization, used, total in _rows(output, 5)
        if index.isdigit()
    ]


def parse_processes(output: str) -> list[GpuProcess]:
    """The compute processes of `nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory
    --format=csv,noheader,nounits`: one line per process and GPU, e.g. `4242, GPU-5f7c…, 1021`
    (no line at all when none runs)."""
    return [GpuProcess(int(pid), uuid, _number(used)) for pid, uuid, used in _rows(output, 3) if pid.isdigit()]


def _query(path: str, arguments: tuple[str, ...]) -> str:
    result = subprocess.run(
        [path, *arguments], capture_output=True, text=True, timeout=TIMEOUT_SECONDS, stdin=subprocess.DEVNULL
    )
    # "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver" exits non-zero.
    return result.stdout if result.returncode == 0 else ""


@functools.cache
def nvidia_smi() -> str | None:
    """The path of nvidia-smi when it is on PATH and sees at least one GPU, else None. Asked once."""
    path = shutil.which("nvidia-smi")
    if path is None:
        return None
    try:
        return path if parse_gpus(_query(path, QUERY_GPUS)) else None
    except (OSError, subprocess.SubprocessError):
        return None


def _ask(arguments: tuple[str, ...]) -> str:
    """nvidia-smi's answer to a query; "" where it has no GPU or fails."""
    path = nvidia_smi()
    if path is None:
        return ""
    try:
        return _query(path, arguments)
    except (OSError, subprocess.SubprocessError):
        return ""


def gpus() -> list[Gpu]:
    """Every GPU of this machine now; [] where there is none."""
    return parse_gpus(_ask(QUERY_GPUS))


def gpu_processes() -> list[GpuProcess]:
    """Every process holding memory on a GPU of this machine now, by the machine's process ids."""
    return parse_processes(_ask(QUERY_PROCESSES))


class GpuWatch:
    """nvidia-smi asked in a thread of its own: ask() answers at once with what nvidia-smi said last
    (its compute processes, and the GPUs when any holds memory) and starts the next question unless
    one is under way, so the caller (a node's log-pumping loop) never waits for nvidia-smi: tens of
    milliseconds each, up to TIMEOUT_SECONDS for a driver that hangs."""

    def __init__(self) -> None:
        self._answer: tuple[list[GpuProcess], list[Gpu]] = ([], [])
        self._asking = threading.Lock()

    def ask(self) -> tuple[list[GpuProcess], list[Gpu]]:
        if self._asking.acquire(blocking=False):
            threading.Thread(target=self._query, name="nvidia-smi", daemon=True).start()
        return self._answer

    def _query(self) -> None:
        try:
            used = gpu_processes()
            self._answer = (used, gpus() if used else [])
        finally:
            self._asking.release()
