"""Whole lines on a pipe shared by several processes (standard library only).

A per-node launch (`torchrun`, `python -m torch.distributed.launch`) starts its ranks with
`python -u`, all writing to the launcher's one pipe. Unbuffered, `print` writes a line's text
and its newline in two writes, so the lines of two ranks printing at once come out as
"AB\\n\\n". Imported at start-up by the `sitecustomize` TrainHub puts on a run's PYTHONPATH
when TRAINHUB_WHOLE_LINES is set, this makes stdout and stderr line-buffered: each line
reaches the pipe in one write (atomic up to the pipe's buffer size), still as soon as it ends.
"""

from __future__ import annotations

import io
import sys

SITECUSTOMIZE = (
    '"""Written by TrainHub on a run\'s PYTHONPATH: see trainhub/sdk/_whole_lines.py."""\n'
    "import os\n\n"
    'if os.environ.get("TRAINHUB_WHOLE_LINES"):\n'
    "    from trainhub.sdk._whole_lines import install\n\n"
    "    install()\n"
)


def _line_buffered(stream: io.TextIOWrapper) -> io.TextIOWrapper:
    if not isinstance(stream, io.TextIOWrapper):
        return stream
    binary = stream.buffer
    if isinstance(binary, io.FileIO):  # -u: no buffer below the text layer
        binary = io.BufferedWriter(binary)
    return io.TextIOWrapper(binary, encoding=stream.encoding, errors=stream.errors, line_buffering=True)


def install() -> None:
    sys.stdout = _line_buffered(sys.stdout)
    sys.stderr = _line_buffered(sys.stderr)
