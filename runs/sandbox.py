"""Keeps a run's processes away from the site's secrets: on a node, each rank of a virtualenv
environment starts inside a bubblewrap (`bwrap`) sandbox.

Inside it the file system is the machine's, read-only, except that the site's data folders (the
secret key, the SQLite database, stored files and models, uploads, other runs' folders, the node
caches), /run (the Docker and database sockets) and the TrainHub CLI credentials are hidden behind
empty read-only folders. What the run needs is put back: its own folder (writable), its environment's
virtualenv, the in-run SDK and its staged inputs (read-only). /tmp and /dev (with /dev/shm) stay
the machine's, and so does the network, so rendezvous, gloo and mpirun work as before. Every
capability is dropped, so a rank running as root cannot unmount what hides the secrets.

TRAINHUB_NODE_SANDBOX: "auto" (the default) sandboxes when bwrap works on the node and otherwise
warns, in the node's log and in every run's log; "true" refuses to start a node without it;
"false" turns it off. Docker environments run in containers (runs/containers.py) instead.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

OFF = ("false", "0", "no", "off")
NOT_SANDBOXED = (
    "WARNING: this node runs the run's processes without a sandbox ({why}): they can read "
    "everything the node's user can, the server's secret key and database included. Install "
    "bubblewrap (apt-get install bubblewrap) or set TRAINHUB_NODE_SANDBOX=true to refuse such nodes."
)
SANDBOX_REQUIRED = "TRAINHUB_NODE_SANDBOX is {setting!r} but the run sandbox does not work on this node: {why}"
SANDBOXED = (
    "Processes run in a sandbox: the file system is read-only but for the run folder, /tmp and "
    "/dev/shm, and the server's data is hidden."
)
# Started with every option the ranks get, so that a node whose kernel refuses one of them finds
# out at once, not at its first run.
# fmt: off
BASE_OPTIONS = (
    "--ro-bind", "/", "/",
    "--dev-bind", "/dev", "/dev",
    "--proc", "/proc",
    "--bind", "/tmp", "/tmp",  # WRITABLE
    "--die-with-parent",
    "--cap-drop", "ALL",
)
# fmt: on
WRITABLE = Path("/tmp")


class SandboxUnavailable(Exception):
    """TRAINHUB_NODE_SANDBOX is true and bwrap does not work here."""


@functools.cache
def sandbox_problem() -> str | None:
    """Why bwrap cannot sandbox a process on this machine, or None when it can (asked once per process)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bwrap (Debian's bubblewrap) is not installed"
    try:
        probe = subprocess.run(
            [bwrap, *BASE_OPTIONS, "--", "true"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap does not start: {error}"
    if probe.returncode != 0:
        return f"bwrap fails here: {probe.stderr.strip() or f'exit code {probe.returncode}'}"
    return None


def node_sandbox_support(setting: str) -> tuple[bool, str]:
    """Whether a node starting now sandboxes its runs (setting: auto, true or false), and a line
    saying so. A node told true refuses to start without a working bwrap."""
    if setting.lower() in OFF:
        return False, NOT_SANDBOXED.format(why="TRAINHUB_NODE_SANDBOX is false")
    problem = sandbox_problem()
    if problem is None:
        return True, "runs sandboxed"
    if setting.lower() == "auto":
        return False, NOT_SANDBOXED.format(why=problem)
    raise ImproperlyConfigured(SANDBOX_REQUIRED.format(setting=setting, why=problem))


def hidden_folders() -> list[Path]:
    """What a run must never see: where the site keeps its data, and the machine's service sockets."""
    candidates = [
        Path(settings.DATA_DIR),
        Path(settings.STORAGES["default"].get("OPTIONS", {}).get("location") or settings.DATA_DIR),
        Path(settings.TRAINHUB_UPLOAD_DIR),
        Path(settings.TRAINHUB_NODE_WORK_DIR),
        Path(settings.TRAINHUB_DATA_CACHE_DIR),
        Path(settings.TRAINHUB_ENV_CACHE_DIR),
        Path.home() / ".trainhub",
        Path("/run"),
    ]
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        candidates.append(Path(str(database["NAME"])).parent)
    return _outermost(path.absolute() for path in candidates if path.absolute() != Path("/"))


def _outermost(paths: Iterable[Path], *, files: bool = False) -> list[Path]:
    """The folders (and with `files`, the files) that exist, without those inside another of
    them, outermost first."""
    kept: list[Path] = []
    for path in sorted({p for p in paths if p.is_dir() or (files and p.is_file())}, key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(outer) for outer in kept):
            kept.append(path)
    return kept


@dataclass(frozen=True)
class Sandbox:
    """The bwrap command line that starts one rank with only what its run needs."""

    run_folder: Path
    read_only: tuple[Path, ...]
    hidden: tuple[Path, ...]
    # What the run reads that lies in the writable /tmp (a checkout and its virtualenv there):
    # made read-only before the hidden folders inside it are covered.
    protected: tuple[Path, ...] = ()

    def command(self, argv: list[str]) -> list[str]:
        options = list(BASE_OPTIONS)
        for path in self.protected:
            options += ["--ro-bind", str(path), str(path)]
        for folder in self.hidden:
            options += ["--tmpfs", str(folder)]
        resolv = Path("/etc/resolv.conf").resolve()
        if any(resolv.is_relative_to(folder) for folder in self.hidden):
            options += ["--ro-bind", str(resolv), str(resolv)]  # systemd-resolved keeps it under /run
        options += ["--symlink", "/dev/shm", "/run/shm", "--bind", str(self.run_folder), str(self.run_folder)]
        for path in self.read_only:
            options += ["--ro-bind", str(path), str(path)]
        for folder in self.hidden:
            options += ["--remount-ro", str(folder)]  # what covers them takes no writes either
        return ["bwrap", *options, "--chdir", str(self.run_folder), "--", *argv]


def run_sandbox(run_folder: Path, read_only: Iterable[Path], say) -> Sandbox | None:
    """The sandbox of a run's processes on this node, or None (saying why in the run's log) when
    TRAINHUB_NODE_SANDBOX lets the node run them without one. `read_only`: what the run reads
    besides its folder (its virtualenv, the in-run SDK, its staged inputs)."""
    setting = settings.TRAINHUB_NODE_SANDBOX
    try:
        enabled, note = node_sandbox_support(setting)
    except ImproperlyConfigured as error:
        raise SandboxUnavailable(str(error)) from None
    if not enabled:
        logger.warning("%s", note)
        say(note)
        return None
    hidden = hidden_folders()
    run_folder = run_folder.absolute()
    # mpirun starts its remote-launch agent (runs/mpi_agent.py) with the node's own Python.
    wanted = [Path(p).absolute() for p in (*read_only, settings.BASE_DIR, sys.prefix)]
    # Only what lies behind a hidden folder needs putting back (the rest is visible already), and
    # never a folder that holds a hidden one.
    needed = [
        p for p in wanted if any(p.is_relative_to(h) for h in hidden) and not any(h.is_relative_to(p) for h in hidden)
    ]
    # An input that is one file (ds.path('fowl/labels.txt')) is put back alone.
    kept = [p for p in _outermost(needed, files=True) if not p.is_relative_to(run_folder)]
    protected = [p for p in _outermost(wanted, files=True) if p.is_relative_to(WRITABLE) and p != WRITABLE]
    say(SANDBOXED)
    return Sandbox(
        run_folder=run_folder,
        read_only=tuple(kept),
        hidden=tuple(hidden),
        protected=tuple(p for p in protected if not p.is_relative_to(run_folder)),
    )
