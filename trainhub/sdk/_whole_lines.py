"""Whole lines on a pipe shared by several processes (standard library only).

A per-node launch (`torchrun`, `python -m torch.distributed.launch`) starts its ranks with
`python -u`, all writing to the launcher's one pipe. Unbuffered, `print` writes a line's text
and its newline in two writes, so the lines of two ranks printing at once come out as
"AB\\n\\n". Imported at start-up by the `sitecustomize` TrainHub puts on a run's PYTHONPATH
when TRAINHUB_WHOLE_LINES is set, this makes stdout and stderr line-buffered: each line
reaches the pipe in one write (atomic up to the pipe's buffer size), still as soon as it ends.

In a rank the launcher started (torchrun sets TORCHELASTIC_RESTART_COUNT and RANK for its
workers), each line also starts with a tag naming the rank, so that the node files it under that
rank's own log (`std_log_process_<rank>`) rather than the launcher's; the rank announces itself
once as it starts (its local rank and pid), before it prints anything. Lines a process writes
below Python (C libraries writing to the file descriptor) carry no tag and stay the launcher's.
"""

from __future__ import annotations

import io
import os
import re
import sys
from typing import Any, TextIO

# A line of a rank: TAG, the rank, TAG, the text. Its announcement is a line whose text starts with
# ANNOUNCE. Control characters no program prints at the start of a line.
TAG = "\x1f"
ANNOUNCE = "\x1e"
WORKER_VARIABLE = "TORCHELASTIC_RESTART_COUNT"
ANNOUNCED_VARIABLE = "TRAINHUB_RANK_ANNOUNCED"
_LINE_ENDS = re.compile(r"(?<=\n)")

# The sitecustomize on a run's PYTHONPATH. Besides the whole lines above, every Python process of a
# run ends its torch.distributed process group, if one is still up, as Python begins to exit (the
# last of the exit handlers: the script's own run first), while the interpreter is whole. Left to
# Python's teardown, a gloo process group now and then took its process down with it:
# "terminate called without an active exception", SIGABRT, the script's work done and printed
# (the guide's MPI all_reduce script, which never ends its group: 5 of 220 ranks under two busy
# loops; 0 of 120 with the group ended first). torch asks scripts to end it themselves; many don't.
# Nothing is imported for it at start-up: a process that never loaded torch.distributed does nothing.
# Not in a process that ends with an uncaught exception (Python printed it and kept it as
# sys.last_value), nor in one that called sys.exit with a failing status (noted on the way, since
# an exit handler is not told the status): ending its group there breaks its peers' collectives
# while it is still tearing down, and a peer that failed of that and exited first was named the
# failed rank instead of it.
SITECUSTOMIZE = (
    '"""Written by TrainHub on a run\'s PYTHONPATH: see trainhub/sdk/_whole_lines.py."""\n'
    "import atexit\n"
    "import os\n"
    "import sys\n\n"
    'if os.environ.get("TRAINHUB_WHOLE_LINES"):\n'
    "    from trainhub.sdk._whole_lines import install\n\n"
    "    install()\n\n"
    "_exit = sys.exit\n"
    "_exit_status = [None]\n\n\n"
    "def _exit_noting_status(status=None):\n"
    "    _exit_status[0] = status\n"
    "    _exit(status)\n\n\n"
    "sys.exit = _exit_noting_status\n\n\n"
    "def _end_process_group():\n"
    '    distributed = sys.modules.get("torch.distributed")\n'
    '    if hasattr(sys, "last_value") or _exit_status[0] not in (None, 0):\n'
    "        return\n"
    "    try:\n"
    "        if distributed is not None and distributed.is_available() and distributed.is_initialized():\n"
    "            distributed.destroy_process_group()\n"
    "    except Exception:\n"
    "        pass\n\n\n"
    "atexit.register(_end_process_group)\n"
)


def _line_buffered(stream: TextIO) -> TextIO:
    if not isinstance(stream, io.TextIOWrapper):
        return stream
    binary = stream.buffer
    if isinstance(binary, io.FileIO):  # -u: no buffer below the text layer
        binary = io.BufferedWriter(binary)
    return io.TextIOWrapper(binary, encoding=stream.encoding, errors=stream.errors, line_buffering=True)


class _RankTagged:
    """A text stream that starts every line it writes with the rank's tag."""

    def __init__(self, stream: Any, rank: str):
        self._stream = stream
        self._prefix = f"{TAG}{rank}{TAG}"
        self._at_line_start = True

    def write(self, text: str) -> int:
        pieces = []
        for piece in _LINE_ENDS.split(text):
            if piece:
                if self._at_line_start:
                    pieces.append(self._prefix)
                pieces.append(piece)
                self._at_line_start = piece.endswith("\n")
        self._stream.write("".join(pieces))
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def split_tagged(line: str) -> tuple[int, str] | None:
    """(rank, text) of a line a tagged rank wrote, None for any other line."""
    if not line.startswith(TAG):
        return None
    rank, tag, text = line[1:].partition(TAG)
    if not tag or not rank.isdigit():
        return None
    return int(rank), text


def install() -> None:
    sys.stdout = _line_buffered(sys.stdout)
    sys.stderr = _line_buffered(sys.stderr)
    rank = os.environ.get("RANK", "")
    if WORKER_VARIABLE not in os.environ or not rank.isdigit():
        return
    sys.stdout = _RankTagged(sys.stdout, rank)
    sys.stderr = _RankTagged(sys.stderr, rank)
    if os.environ.get(ANNOUNCED_VARIABLE) != rank:
        # Once per rank: processes it starts (multiprocessing, DataLoader workers) inherit this.
        os.environ[ANNOUNCED_VARIABLE] = rank
        local_rank = os.environ.get("LOCAL_RANK", "0")
        sys.stdout.write(f"{ANNOUNCE}started local_rank={local_rank} pid={os.getpid()}\n")
