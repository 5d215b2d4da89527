"""Where a process's output lines go, and what they say about a failure: pure functions on lines,
used by the executor (runs/executor.py) as it reads each process's pipe.

Streams are the run's log names: `std_log_process_<rank>` for a rank, `launcher_node_<n>` for what a
per-node launcher prints itself, `mpirun` for mpirun's own lines."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Mapping

MPI_TAG = re.compile(r"\[\d+,(\d+)\]<std(?:out|err)>:")
MPI_FAILED_RANK = re.compile(r"Process name: \[\[\d+,\d+\],(\d+)\]")
# torchrun's failure summary: "rank      : 3 (local_rank: 1)" under "Root Cause (first observed failure)".
LAUNCHER_FAILED_RANK = re.compile(r"^\s*rank\s*:\s*(\d+) \(local_rank: \d+\)")
RANK_STARTED = re.compile(r"started local_rank=(\d+) pid=(\d+)")
RANK_STREAM = "std_log_process_"
# Where a Python traceback starts, and where faulthandler's report of a crash does (a rank killed
# by a signal from native code: a segmentation fault, an abort in a C++ library).
TRACEBACK_STARTS = ("Traceback (most recent call last)", "Fatal Python error: ")


def rank_stream(rank: int) -> str:
    return f"{RANK_STREAM}{rank}"


def split_mpi_output(line: str, pending: dict[str, str]) -> list[tuple[str, str]]:
    """Route a line of `mpirun --tag-output` to the ranks' streams.

    Open MPI tags every write, so one physical line can hold pieces of a rank's line;
    a piece ends the rank's line only where the physical line ends."""
    parts = MPI_TAG.split(line)
    found: list[tuple[str, str]] = []
    if parts[0]:
        found.append(("mpirun", parts[0]))
    last = None
    for index in range(1, len(parts), 2):
        stream = f"{RANK_STREAM}{parts[index]}"
        pending[stream] = pending.get(stream, "") + parts[index + 1]
        last = stream
    if last is not None:
        found.append((last, pending.pop(last)))
    return found


def rank_started(announcement: str) -> tuple[int, int | None]:
    """(local rank, pid) of a per-node launcher's rank that announced its start (0, None if unsaid)."""
    match = RANK_STARTED.search(announcement)
    return (int(match.group(1)), int(match.group(2))) if match else (0, None)


def last_traceback(lines: list[str]) -> str:
    """The last traceback (or crash report) of a log's tail, else its last 30 lines."""
    start = None
    for index, line in enumerate(lines):
        if line.startswith(TRACEBACK_STARTS):
            start = index
    return "\n".join(lines[start:]) if start is not None else "\n".join(lines[-30:])


def signal_named(exit_code: int | None) -> str:
    """ " (SIGSEGV)" for an exit code that says a signal ended the process (128 + its number, as a
    shell reports it; negative from Popen), else ""."""
    if exit_code is None:
        return ""
    number = -exit_code if exit_code < 0 else exit_code - 128
    if number <= 0:
        return ""
    try:
        return f" ({signal.Signals(number).name})"
    except ValueError:
        return ""


def rank_with_traceback(tails: Mapping[str, Iterable[str]], default: int) -> int:
    """The first rank whose log shows a traceback, else `default`."""
    for stream, lines in tails.items():
        if stream.startswith(RANK_STREAM) and any("Traceback" in line for line in lines):
            return int(stream.rsplit("_", 1)[1])
    return default


def launcher_failed_rank(tails: Mapping[str, Iterable[str]], launcher_stream: str, default: int) -> int:
    """The rank torchrun names as the root cause, else the first of its ranks with a traceback."""
    lines = list(tails.get(launcher_stream, []))
    for marker in ("Root Cause", ""):
        start = next((i for i, line in enumerate(lines) if marker in line), len(lines))
        for line in lines[start:]:
            match = LAUNCHER_FAILED_RANK.search(line)
            if match:
                return int(match.group(1))
    return rank_with_traceback(tails, default)


def mpi_failed_rank(tails: Mapping[str, Iterable[str]]) -> int:
    """The rank mpirun names as the one that failed, else the first with a traceback, else 0."""
    for line in tails.get("mpirun", []):
        match = MPI_FAILED_RANK.search(line)
        if match:
            return int(match.group(1))
    return rank_with_traceback(tails, default=0)
