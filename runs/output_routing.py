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
# ... and its exit code: "exitcode  : -6 (pid: 1234)" (negative: the signal that ended it).
LAUNCHER_FAILED_EXIT_CODE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
RANK_STARTED = re.compile(r"started local_rank=(\d+) pid=(\d+)")
RANK_STREAM = "std_log_process_"
# Where a Python traceback starts, and where faulthandler's report of a crash does (a rank killed
# by a signal from native code: a segmentation fault, an abort in a C++ library).
TRACEBACK_STARTS = ("Traceback (most recent call last)", "Fatal Python error: ")
# The lines of faulthandler's report after its first: blank, indented frames, and these.
CRASH_REPORT_LINES = (
    " ",
    "Current thread ",
    "Thread 0x",
    "Stack (most recent call first)",
    "Extension modules:",
    "Python runtime state:",
    "Garbage-collecting",
)


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


def launcher_failed_exit_code(tails: Mapping[str, Iterable[str]], launcher_stream: str) -> int | None:
    """The exit code torchrun gives for its root-cause rank, as a shell reports it (128 + the signal
    for a rank a signal ended), else None."""
    lines = list(tails.get(launcher_stream, []))
    start = next((i for i, line in enumerate(lines) if "Root Cause" in line), None)
    for line in lines[start:] if start is not None else []:
        match = LAUNCHER_FAILED_EXIT_CODE.search(line)
        if match:
            code = int(match.group(1))
            return 128 - code if code < 0 else code
    return None


def crash_report(lines: list[str]) -> list[str]:
    """faulthandler's last report among `lines`. A rank that dies in native code writes it below
    Python, so a launcher's rank writes it untagged, into its launcher's output."""
    start = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith("Fatal Python error: ")), None)
    if start is None:
        return []
    end = start + 1
    while end < len(lines) and (not lines[end] or lines[end].startswith(CRASH_REPORT_LINES)):
        end += 1
    while end > start + 1 and not lines[end - 1]:
        end -= 1
    return lines[start:end]


def mpi_failed_rank(tails: Mapping[str, Iterable[str]]) -> int:
    """The rank mpirun names as the one that failed, else the first with a traceback, else 0."""
    for line in tails.get("mpirun", []):
        match = MPI_FAILED_RANK.search(line)
        if match:
            return int(match.group(1))
    return rank_with_traceback(tails, default=0)
