"""The box: where member code runs on a node (a run's ranks and launchers, environment builds,
exports), unprivileged and out of sight of the site's data, other runs and the node's variables.

A box is a bubblewrap (`bwrap`) sandbox, started under the rank supervisor (trainhub/supervisor.py;
for a rank, usually a spare one the node started after its previous run, waiting for its command,
so that no Python starts between a rank's start and its box):

- its own PID and IPC namespaces: it sees and signals none of the node's or other boxes' processes;
- the machine's file system read-only, with the site's data folders (the secret key, the database,
  stored files and models, uploads, run folders, node caches), /run (the Docker and database
  sockets), the node user's home folder and the TrainHub CLI credentials hidden behind empty
  read-only folders; what the box needs is put back (its working folder and `writable` paths
  writable, `read_only` paths read-only);
- a private /tmp and /dev/shm (folders of the node's, given by the caller), a minimal /dev
  (GPUs put back), every capability dropped, no new privileges;
- on a node running as root, every process of the box runs as the box's unprivileged uid (no passwd
  entry needed); a node that is not root cannot change uid and runs them as its own user, in a user
  namespace;
- EXACTLY the variables the caller gives: bwrap reads them (and its options) from a memfd, so
  neither bwrap's nor the supervisor's environment nor any command line of the node holds them.

TRAINHUB_NODE_SANDBOX: "auto" (the default) and "true" refuse to start a node where the box does not
work (no bwrap, no user namespaces); only "false" runs member code unboxed, said loudly in the node's
log and every run's log. Docker environments run each rank in a container (runs/containers.py)
instead; an MPI launch's mpirun and Open MPI's daemons run in the box there too.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import json
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from trainhub.box_waiter import encode_command, encode_plan

logger = logging.getLogger(__name__)

OFF = ("false", "0", "no", "off")
NOT_SANDBOXED = (
    "WARNING: this node runs member code WITHOUT its box ({why}): a run's processes can read "
    "everything the node's user can, the server's secret key and database included, and see other "
    "runs' processes. Unset TRAINHUB_NODE_SANDBOX (or set it to true) to refuse to run them unboxed."
)
SANDBOX_REQUIRED = (
    "TRAINHUB_NODE_SANDBOX is {setting!r} but the box that runs member code does not work on this node: "
    "{why}. Install bubblewrap (apt-get install bubblewrap) and allow user namespaces, or set "
    "TRAINHUB_NODE_SANDBOX=false to run members' code unboxed."
)
SANDBOXED = (
    "Processes run in a box: an unprivileged user, their own process namespace, a private /tmp and "
    "/dev/shm; the file system is read-only but for the run folder, and the server's data is hidden."
)
SAME_UID = (
    "This node does not run as root, so it cannot give each run a user of its own: runs are boxed "
    "(own process namespace, private /tmp, the site's data hidden) but run as the node's user."
)
NO_INTERPRETER = "{python} is no executable file on this machine: a user-managed environment's processes cannot start."
UNCOVERS_HIDDEN = (
    "The user-managed environment's interpreter {python} belongs to {folder}, which holds {hidden}: the "
    "run's box keeps that hidden, so it would have to show it. Use a Python of a folder of its own (a "
    "virtualenv or conda environment), or submit the environment with user_managed_dependencies = False."
)
# uids of boxes: TRAINHUB_RUN_UID_BASE + KINDS.index(kind) * UID_SPAN + key % UID_SPAN.
BOX_KINDS = ("run", "build", "export")
UID_SPAN = 100_000
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The supervisor takes nothing from its environment or the current folder: -I (no PYTHON*
# variables, no script folder on sys.path) and -S (standard library only; site costs ~80 ms).
# It is imported, not run as a script, so that its compiled code is read from __pycache__ (a
# script is compiled at every start: ~1.5 ms of CPU per rank). Its folder comes last on sys.path:
# the standard library's names still come first.
SUPERVISOR_ARGV = (
    sys.executable,
    "-I",
    "-S",
    "-c",
    f"import sys; sys.path.append({str(Path(__file__).parent)!r}); import supervisor; "
    "sys.exit(supervisor.main(sys.argv[1:]))",
)
GPU_DEVICES = ("/dev/nvidia*", "/dev/dri")
# What the first process of a root node's box keeps, to drop to the box's uid (none is left after).
UID_DROP_CAPABILITIES = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH")
# A spare box's waiter (trainhub/box_waiter.py), imported as the supervisor is; its socket's number follows.
WAITER_ARGV = (
    sys.executable,
    "-I",
    "-S",
    "-c",
    f"import sys; sys.path.append({str(Path(__file__).parent)!r}); import box_waiter; "
    "sys.exit(box_waiter.serve(int(sys.argv[2])))",
    "--spare-box",
)
# Where a box of a root node finds its variables (see Box.popen), and what sets them.
ENV_FILE = "/dev/.trainhub-env"
SET_ENV_AND_EXEC = f'set -a && . {ENV_FILE} && set +a && exec "$@"'
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class SandboxUnavailable(Exception):
    """The box cannot run here (no bwrap, no user namespaces) and the node may not run code unboxed."""


def box_uid(kind: str, key: int) -> int:
    """The unprivileged uid of the box of a run (kind "run", key its pk), a build ("build") or an
    export ("export"): distinct per kind and key within UID_SPAN, from TRAINHUB_RUN_UID_BASE."""
    base = int(getattr(settings, "TRAINHUB_RUN_UID_BASE", 200_000))
    return base + BOX_KINDS.index(kind) * UID_SPAN + key % UID_SPAN


def node_is_root() -> bool:
    return os.geteuid() == 0


def hidden_folders() -> list[Path]:
    """What a box must never see: where the site keeps its data, the machine's service sockets and
    the node user's home folder (what a box needs there is put back). Existing folders only,
    shallowest first."""
    candidates = [
        Path(settings.DATA_DIR),
        Path(settings.STORAGES["default"].get("OPTIONS", {}).get("location") or settings.DATA_DIR),
        Path(settings.TRAINHUB_UPLOAD_DIR),
        Path(settings.TRAINHUB_NODE_WORK_DIR),
        Path(settings.TRAINHUB_DATA_CACHE_DIR),
        Path(settings.TRAINHUB_ENV_CACHE_DIR),
        Path.home(),
        Path.home() / ".trainhub",
        Path("/root"),
        Path("/run"),
    ]
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        candidates.append(Path(str(database["NAME"])).parent)
    found = {path.absolute() for path in candidates if path.absolute() != Path("/") and path.is_dir()}
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


@dataclass(frozen=True)
class Box:
    """One box: where `popen` starts member code (see the module docstring).

    uid: the box's processes run as this uid (and gid) when the node is root; ignored otherwise.
    workdir: the working folder of the box's processes, writable. writable, read_only: what else
    the box sees of the node's hidden folders (or of /tmp), put back writable or read-only; paths
    outside hidden folders are visible read-only anyway. tmp: the node's folder that is /tmp in the
    box; shm: the one that is /dev/shm (None: a private tmpfs per box). Give boxes that must
    share /dev/shm (a run's ranks on one node) the same shm. network: False for a private network
    namespace with nothing but loopback.

    prepare() creates tmp and shm and hands workdir, tmp, shm and writable to the uid (recursively,
    never following symlinks); cleanup() removes tmp and shm. Call them once per box, not per process.
    """

    uid: int
    workdir: Path
    tmp: Path
    writable: tuple[Path, ...] = ()
    read_only: tuple[Path, ...] = ()
    shm: Path | None = None
    network: bool = True
    # cgroup folders every process of the box is held in (a run's limits, runs/limits.py).
    cgroups: tuple[Path, ...] = ()

    def prepare(self) -> None:
        for folder in (self.tmp, self.shm):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o700)
        if node_is_root():
            for path in (self.workdir, self.tmp, self.shm, *self.writable):
                if path is not None:
                    chown_tree(path, self.uid)

    def cleanup(self) -> None:
        for folder in (self.tmp, self.shm):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def popen(self, argv: Sequence[str], env: dict[str, str], **popen_kwargs: Any) -> subprocess.Popen:
        """Start `argv` in the box, in workdir, with exactly `env` (nothing of the caller's; PATH is a
        system one when env has none; names that are not shell identifiers are left out), under the
        supervisor: SIGTERM to the returned process stops everything in the box (SIGTERM to its
        processes, SIGKILL after a grace period), and it all dies with the node. popen_kwargs go to
        subprocess.Popen (stdout, stderr, stdin, start_new_session, pass_fds...); env and cwd are ours.
        Raises SandboxUnavailable where no box can run and the node may not run code unboxed."""
        problem = sandbox_problem()
        if problem is not None:
            raise SandboxUnavailable(SANDBOX_REQUIRED.format(setting=settings.TRAINHUB_NODE_SANDBOX, why=problem))
        if not node_is_root():
            return _start(
                self.bwrap_arguments(env),
                [*self.command_prefix(), *argv],
                self.workdir,
                popen_kwargs,
                cgroups=self.cgroups,
            )
        if _is_rank_start(popen_kwargs):
            process = _hand_to_spare_box(self, argv, env, popen_kwargs.get("pass_fds", ()))
            if process is not None:
                return process
        # As root, nothing of the run may reach a process that still has privileges (setpriv: an
        # LD_PRELOAD of the run would run as root): the variables are set only after the uid drop, by
        # a shell that reads them from a file bwrap copies into the box (from a memfd).
        script = "".join(f"{name}={shlex.quote(value)}\n" for name, value in env.items() if IDENTIFIER.match(name))
        env_fd = _memfd(script.encode())
        try:
            options = self.bwrap_arguments({"PATH": SYSTEM_PATH})
            options += ["--perms", "0444", "--ro-bind-data", str(env_fd), ENV_FILE]
            command = [*self.command_prefix(), "/bin/sh", "-c", SET_ENV_AND_EXEC, "trainhub-box", *argv]
            kwargs = dict(popen_kwargs, pass_fds=(*popen_kwargs.get("pass_fds", ()), env_fd))
            return _start(options, command, self.workdir, kwargs, cgroups=self.cgroups)
        finally:
            os.close(env_fd)

    def run(
        self, argv: Sequence[str], env: dict[str, str], *, timeout: float | None = None, **popen_kwargs: Any
    ) -> subprocess.CompletedProcess:
        """popen, then wait for the end (stopping the box after `timeout` seconds and raising
        subprocess.TimeoutExpired); stdout/stderr as popen_kwargs ask (e.g. capture_output=True)."""
        if popen_kwargs.pop("capture_output", False):
            popen_kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        with self.popen(argv, env, **popen_kwargs) as process:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.terminate()
                process.communicate()
                raise
            return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)

    def bwrap_arguments(self, env: dict[str, str]) -> list[str]:
        """bwrap's options for this box and `env`, which bwrap reads from a memfd (see popen)."""
        options = _box_namespaces(network=self.network)
        options += ["--bind", str(self.tmp), "/tmp"]
        options += ["--bind", str(self.shm), "/dev/shm"] if self.shm is not None else ["--tmpfs", "/dev/shm"]
        options += self._mounts()
        options += ["--clearenv"]
        for name, value in env.items():
            options += ["--setenv", name, value]
        options += ["--chdir", str(self.workdir.absolute()), "--cap-drop", "ALL"]
        if node_is_root():
            # bwrap sets up the mounts as root (it reaches the 0700 data folder) and enters the box's
            # folders (its uid's, 0700); then the box drops to its uid (command_prefix): setpriv needs
            # these capabilities for that, and no process of the box keeps any.
            options += [arg for cap in UID_DROP_CAPABILITIES for arg in ("--cap-add", cap)]
        return options

    def command_prefix(self) -> list[str]:
        """What follows bwrap's options on its command line, before the box's command."""
        if not node_is_root():
            return ["--"]
        drop = [_setpriv(), f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"]
        return ["--", *drop, "--inh-caps=-all", "--bounding-set=-all", "--"]

    def spare_steps(
        self, spare_arguments: list[str], spare_steps: list[tuple[str, Path, bool]]
    ) -> tuple[list[Path], list[tuple[str, Path, Path]], list[Path]] | None:
        """What a spare box started with `spare_arguments`, the mount plan `spare_steps` of the node
        when it was made (see warm_supervisor), still lacks to be this box: (the spare's mounts below
        /tmp and /dev/shm, taken away first; the steps in order:
        kind "rw" or "ro" for a bind of source at target, "dir" for a folder or "tmpfs" for a hidden
        folder's cover at target; the covers, made read-only after them). The box's /tmp and
        /dev/shm come first, then what the spare had below them again (the node's own folders may
        lie under /tmp, as in tests), then this box's own mounts, in order. None where no spare
        can be this box: it is not a root node's rank box, the node's devices changed since the
        spare was made, what every box of the node has (the hidden folders' covers, node_read_only:
        the steps this box's plan, made now, marks as such) is not what the spare has, or one of this
        box's own mounts would cover one the spare has already."""
        if not node_is_root() or not self.network or self.shm is None:
            return None
        namespaces = _box_namespaces(network=True)
        if spare_arguments[: len(namespaces)] != namespaces:
            return None
        steps, covers = self._mount_plan()

        def kept_by_spare(path: Path) -> bool:
            return not (_within(path, TMP) or _within(path, SHM))

        kept = [(kind, path) for kind, path, _ in spare_steps if kept_by_spare(path)]
        common = [(kind, path) for kind, path, everywhere in steps if everywhere and kept_by_spare(path)]
        own = [(kind, path) for kind, path, everywhere in steps if (kind, path) not in common]
        if common != kept or any(_within(path, top) for _, path in common for _, top in own):
            return None
        binds: list[tuple[str, Path, Path]] = [("rw", self.tmp, Path("/tmp")), ("rw", self.shm, Path("/dev/shm"))]
        below = [path for kind, path, _ in reversed(spare_steps) if kind != "dir" and not kept_by_spare(path)]
        return below, binds + [(kind, path, path) for kind, path in own], covers

    def _mounts(self) -> list[str]:
        """bwrap's options for _mount_plan's steps, then the hidden folders' covers made read-only."""
        steps, covers = self._mount_plan()
        options = [arg for kind, path, _ in steps for arg in _STEP_OPTIONS[kind](path)]
        return options + [arg for folder in covers for arg in ("--remount-ro", str(folder))]

    def _mount_plan(self) -> tuple[list[tuple[str, Path, bool]], list[Path]]:
        """Hide the hidden folders and put back what the box needs, shallowest path first, so that
        a hidden folder inside a put-back one (the data folder inside a checkout) is hidden again.
        (the steps in order: (kind, path, whether every run's box on this node has it), the tmpfs
        covering hidden folders, made read-only once everything is in place)."""
        writable = [self.workdir.absolute(), *(p.absolute() for p in self.writable)]
        read_only = [Path(p).absolute() for p in self.read_only if Path(p).exists()]
        return _mount_plan(writable, read_only)


# What each step of a mount plan is to bwrap.
_STEP_OPTIONS = {
    "tmpfs": lambda path: ["--perms", "0755", "--tmpfs", str(path)],
    "dir": lambda path: ["--perms", "0755", "--dir", str(path)],
    "ro": lambda path: ["--ro-bind", str(path), str(path)],
    "rw": lambda path: ["--bind", str(path), str(path)],
}


def _box_namespaces(*, network: bool) -> list[str]:
    """bwrap's options for a box's namespaces, its read-only view of the machine, /proc and /dev."""
    options = ["--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session"]
    if not network:
        options.append("--unshare-net")
    if not node_is_root():
        options.append("--unshare-user")
    options += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    for device in sorted(d for pattern in GPU_DEVICES for d in glob.glob(pattern)):
        options += ["--dev-bind", device, device]
    return options


TMP, SHM = Path("/tmp"), Path("/dev/shm")


def _within(path: Path, top: Path) -> bool:
    """path.is_relative_to(top) for absolute paths (both lexical), without the ~10 µs of parsing
    Path.is_relative_to costs on Python 3.11: a mount plan asks it hundreds of times per box."""
    inner, outer = str(path), str(top)
    return inner == outer or inner.startswith(outer if outer.endswith("/") else outer + "/")


def _node_read_only_found() -> list[Path]:
    return [path for path in node_read_only() if path.exists()]


def _spare_box_arguments(steps: list[tuple[str, Path, bool]]) -> list[str]:
    """bwrap's options for a spare box (see warm_supervisor) with the mount plan `steps` of what
    every run's box of this root node has (the hidden folders' covers, node_read_only): its
    namespaces, those mounts, and the capabilities its waiter keeps to put the rank's own mounts in
    place (CAP_SYS_ADMIN) and to drop to its uid."""
    options = _box_namespaces(network=True)
    options += [arg for kind, path, _ in steps for arg in _STEP_OPTIONS[kind](path)]
    options += ["--clearenv", "--setenv", "PATH", SYSTEM_PATH, "--cap-drop", "ALL"]
    return options + [arg for cap in (*UID_DROP_CAPABILITIES, "CAP_SYS_ADMIN") for arg in ("--cap-add", cap)]


def node_read_only() -> list[Path]:
    """What every run's box on this node sees read-only: TrainHub's code (mpirun starts its
    remote-launch agent, runs/mpi_agent.py, with the node's own Python) and the node's Python."""
    return [Path(p).absolute() for p in (settings.BASE_DIR, Path(sys.prefix), Path(sys.base_prefix))]


def _mount_plan(writable: list[Path], read_only: list[Path]) -> tuple[list[tuple[str, Path, bool]], list[Path]]:
    """Box._mount_plan for these folders put back (absolute; read_only ones that exist)."""
    writable, read_only = list(dict.fromkeys(writable)), list(dict.fromkeys(read_only))
    hidden = hidden_folders()
    resolv = Path("/etc/resolv.conf").resolve()
    if any(_within(resolv, h) for h in hidden):
        read_only.append(resolv)  # systemd-resolved keeps it under /run
    common = {Path("/tmp"), resolv, *hidden, *node_read_only()}
    # /tmp is the box's own already: what lies there on the node is gone unless put back.
    operations: list[tuple[Path, int, str]] = [(Path("/tmp"), 0, "gone")]
    operations += [(h, 0, "hide") for h in hidden]
    operations += [(p, 1, "ro") for p in read_only]
    operations += [(p, 2, "rw") for p in writable]
    operations.sort(key=lambda op: (len(op[0].parts), op[1]))
    steps: list[tuple[str, Path, bool]] = []
    covered: list[Path] = []  # the tmpfs (or private /tmp) covering what is hidden or gone
    visible_roots: list[Path] = []
    tmpfs: list[Path] = []
    for path, _, kind in operations:
        inside = [c for c in covered + visible_roots if path != c and _within(path, c)]
        top = max(inside, key=lambda c: len(c.parts), default=None)
        if kind in ("hide", "gone"):
            if top is None or top in visible_roots:  # else it is out of sight already
                if kind == "hide":
                    steps.append(("tmpfs", path, True))
                    tmpfs.append(path)
                covered.append(path)
            continue
        if top is not None and top in covered:
            # bwrap would make the folders leading to it root's and 0700
            for parent in reversed(path.parents):
                if parent != top and _within(parent, top):
                    steps.append(("dir", parent, path in common))
        steps.append((kind, path, path in common))
        visible_roots.append(path)
    return steps, tmpfs


def python_folders(python: Path) -> list[Path]:
    """What a box needs to run `python` (a virtualenv's): the virtualenv and the installation its
    interpreter links to (which may lie in a hidden folder, e.g. a pyenv under the home folder)."""
    python = Path(python).absolute()
    return [python.parent.parent, python.resolve().parent.parent]


def interpreter_folders(python: Path) -> list[Path]:
    """python_folders of an interpreter TrainHub did not build (a user-managed environment's, on the
    submitting machine). Raises SandboxUnavailable where it is no executable file, or where putting
    its folders back would uncover what the box hides (an interpreter directly in the home folder)."""
    python = Path(python).absolute()
    if not (python.is_file() and os.access(python, os.X_OK)):
        raise SandboxUnavailable(NO_INTERPRETER.format(python=python))
    folders = python_folders(python)
    for folder in folders:
        for hidden in hidden_folders():
            if hidden.is_relative_to(folder):
                raise SandboxUnavailable(UNCOVERS_HIDDEN.format(python=python, folder=folder, hidden=hidden))
    return folders


def chown_tree(root: Path, uid: int) -> None:
    """Hand `root` and what it holds to `uid`, but for files linked from elsewhere too (a staged
    input's hard links into the node's data cache): the box may read them, never own them."""
    os.chown(root, uid, uid, follow_symlinks=False)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if name in files and os.lstat(path).st_nlink > 1:
                continue
            os.chown(path, uid, uid, follow_symlinks=False)


@functools.cache
def _setpriv() -> str:
    return shutil.which("setpriv") or "/usr/bin/setpriv"


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("trainhub-box", 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _start(
    bwrap_arguments: list[str] | None,
    argv: list[str],
    cwd: Path,
    popen_kwargs: dict[str, Any],
    env: dict[str, str] | None = None,
    cgroups: Sequence[Path] = (),
) -> subprocess.Popen:
    """The supervisor, started with nothing of the caller's environment. Boxed, bwrap's options (the
    command's variables among them) go through a memfd; unboxed, the command's variables do."""
    joined = [arg for folder in cgroups for arg in ("--cgroup", str(folder))]
    if bwrap_arguments is not None:
        payload_fd = _memfd(b"".join(arg.encode() + b"\0" for arg in bwrap_arguments))
        head = [*joined, "--sandboxed", "--", _bwrap(), "--args", str(payload_fd), *argv]
    else:
        payload_fd = _memfd(b"".join(f"{k}={v}".encode() + b"\0" for k, v in (env or {}).items()))
        head = [*joined, "--env-fd", str(payload_fd), "--", *argv]
    try:
        kwargs = dict(popen_kwargs)
        kwargs["pass_fds"] = (*kwargs.get("pass_fds", ()), payload_fd)
        if not _is_rank_start(popen_kwargs):
            return subprocess.Popen([*SUPERVISOR_ARGV, *head], cwd=cwd, env={"PATH": SYSTEM_PATH}, **kwargs)
        # A rank's start: this thread's spare takes the command, if it has one.
        process = _hand_to_spare(head, cwd, kwargs["pass_fds"])
        if process is None:
            process = subprocess.Popen([*SUPERVISOR_ARGV, *head], cwd=cwd, env={"PATH": SYSTEM_PATH}, **kwargs)
        return process
    finally:
        os.close(payload_fd)


# How the executor starts a rank (runs/executor.py): spare supervisors are started that way.
SPARE_POPEN: dict[str, Any] = {
    "stdin": subprocess.DEVNULL,
    "stdout": subprocess.PIPE,
    "stderr": subprocess.STDOUT,
    "start_new_session": True,
}
# A spare dies with the thread that started it (PR_SET_PDEATHSIG follows the parent thread), so
# each thread keeps its own: (the supervisor, the node's end of its socket).
_spares = threading.local()


def warm_supervisor() -> None:
    """Start a spare supervisor for this thread's next rank start, unless it has one: a Python
    started ahead of time and waiting for its command (about 10 ms of CPU less on each rank's
    start). Started as every supervisor is, with nothing of the node's environment. On a root node
    that boxes runs, a spare box too (see _warm_spare_box). The node calls it when it has time: as
    it starts, as a run's ranks have ended (so that the spares are ready when the next run's rank
    starts) and after each run (not as a rank starts, when the spare's start would take the CPU
    from the rank's)."""
    if node_is_root() and settings.TRAINHUB_NODE_SANDBOX.lower() not in OFF and sandbox_problem() is None:
        _warm_spare_box()
    spare = getattr(_spares, "ready", None)
    if spare is not None and spare[0].poll() is None:
        return
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        process = subprocess.Popen(
            [*SUPERVISOR_ARGV, "--spare", str(theirs.fileno())],
            cwd="/",
            env={"PATH": SYSTEM_PATH},
            pass_fds=(theirs.fileno(),),
            **SPARE_POPEN,
        )
    except OSError:
        ours.close()
        return
    finally:
        theirs.close()
    _spares.ready = (process, ours)


def _hand_to_spare(head: list[str], cwd: Path, fds: Sequence[int]) -> subprocess.Popen | None:
    """This thread's spare supervisor, running `head` in `cwd` with `fds`; None when it has none
    that is waiting."""
    spare = getattr(_spares, "ready", None)
    _spares.ready = None
    if spare is None:
        return None
    process, channel = spare
    message = _memfd(json.dumps({"cwd": str(Path(cwd).absolute()), "fds": list(fds), "argv": head}).encode())
    try:
        if process.poll() is not None:
            return None
        socket.send_fds(channel, [b"c"], [message, *fds])
    except OSError:
        process.kill()
        process.wait()
        return None
    finally:
        os.close(message)
        channel.close()
    return process


def _is_rank_start(popen_kwargs: dict[str, Any]) -> bool:
    return popen_kwargs.keys() - {"pass_fds"} == SPARE_POPEN.keys() and all(
        popen_kwargs[key] == value for key, value in SPARE_POPEN.items()
    )


@dataclass(frozen=True)
class _SpareBox:
    process: subprocess.Popen
    channel: socket.socket  # the node's end of the waiter's socket
    arguments: list[str]  # bwrap's options it was started with
    steps: list[tuple[str, Path, bool]]  # the node's mount plan they hold (_mount_plan), as it was then


def _warm_spare_box() -> None:
    """A spare box for this thread's next rank, unless it has one: a supervisor, bwrap with what
    every run's box has, and in it a waiter (trainhub/box_waiter.py) that has started before any
    member code exists. The rank then starts without bwrap, setpriv and a shell: the waiter puts
    the rank's own mounts in place, drops to its uid and execs the command (see _hand_to_spare_box)."""
    spare = getattr(_spares, "box", None)
    if spare is not None and spare.process.poll() is None:
        return
    steps = _mount_plan([], _node_read_only_found())[0]
    arguments = _spare_box_arguments(steps)
    try:  # a node short of files or processes goes on without a spare (its ranks start through bwrap)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        return
    try:
        payload_fd = _memfd(b"".join(arg.encode() + b"\0" for arg in arguments))
    except OSError:
        ours.close()
        theirs.close()
        return
    command = ["--sandboxed", "--", _bwrap(), "--args", str(payload_fd), "--", *WAITER_ARGV, str(theirs.fileno())]
    try:
        process = subprocess.Popen(
            [*SUPERVISOR_ARGV, *command],
            cwd="/",
            env={"PATH": SYSTEM_PATH},
            pass_fds=(payload_fd, theirs.fileno()),
            **SPARE_POPEN,
        )
    except OSError:
        ours.close()
        return
    finally:
        theirs.close()
        os.close(payload_fd)
    _spares.box = _SpareBox(process, ours, arguments, steps)


def _hand_to_spare_box(
    box: Box, argv: Sequence[str], env: dict[str, str], fds: Sequence[int]
) -> subprocess.Popen | None:
    """This thread's spare box, become `box` and running `argv` with exactly `env` (as Box.popen
    gives them) and `fds`; None when it has none that can be this box (then it is stopped). The
    waiter gets the rank's own mounts as detached copies made here (open_tree), and the command and
    its variables in a memfd it reads once it has dropped to the box's uid."""
    spare: _SpareBox | None = getattr(_spares, "box", None)
    _spares.box = None
    if spare is None:
        return None  # its spare went to the run's first process on this node (or none could be made)
    handed = False
    opened: list[int] = []
    try:
        split = box.spare_steps(spare.arguments, spare.steps)
        if split is None:
            _not_from_spare(
                "it is not this box (own network, hidden folders or devices changed, or a mount over its own)"
            )
            return None
        if spare.process.poll() is not None:
            _not_from_spare(f"it ended (exit code {spare.process.returncode})")
            return None
        try:
            _join_cgroups(spare.process.pid, box.cgroups)
        except OSError as error:
            _not_from_spare(f"its processes could not join the run's cgroups ({error})")
            return None
        detach, steps, covers = split
        plan: list[tuple[str, str, bool]] = []
        for kind, source, target in steps:
            if kind in ("dir", "tmpfs"):
                plan.append((kind, str(target), True))
                continue
            opened.append(_detached_mount(source, read_only=kind == "ro"))
            plan.append(("mount", str(target), source.is_dir()))
        variables = {"PATH": SYSTEM_PATH, "PWD": str(box.workdir.absolute())}
        variables |= {name: value for name, value in env.items() if IDENTIFIER.match(name)}
        covered = [str(folder) for folder in covers]
        plan_data = encode_plan(
            uid=box.uid,
            cwd=str(box.workdir.absolute()),
            fds=list(fds),
            detach=[str(path) for path in detach],
            steps=plan,
            covers=covered,
        )
        opened.append(_memfd(plan_data))
        opened.append(_memfd(encode_command(list(argv), variables)))
        socket.send_fds(spare.channel, [b"go"], [opened[-2], opened[-1], *opened[:-2], *fds])
        handed = True
        return spare.process
    except OSError as error:
        _not_from_spare(str(error))
        return None
    finally:
        for fd in opened:
            os.close(fd)
        spare.channel.close()
        if not handed:
            spare.process.kill()
            spare.process.wait()


def _not_from_spare(why: str) -> None:
    """Said in the node's log: a rank that could have started from the spare box starts through bwrap."""
    logger.info("A rank starts through bwrap, not from the node's spare box: %s.", why)


def _join_cgroups(pid: int, folders: Sequence[Path]) -> None:
    """The supervisor `pid` and everything below it (bwrap, the waiter) into each of `folders`, as a
    supervisor joins its run's cgroups before it starts anything. OSError where one cannot be joined.
    A spare box may still be starting (bwrap forking its namespace's init, that one the waiter): a
    process forked by one not yet moved stays behind, so the tree is read again until a reading
    finds none that was not moved (what a moved process forks is born in its cgroups)."""
    if not folders:
        return
    from trainhub.supervisor import descendants

    moved: set[int] = set()
    while pids := [member for member in (pid, *descendants(pid)) if member not in moved]:
        for folder in folders:
            with open(folder / "cgroup.procs", "w") as procs:
                for member in pids:
                    procs.write(str(member))
                    procs.flush()
        moved.update(pids)


OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC, AT_RECURSIVE, AT_EMPTY_PATH = 1, os.O_CLOEXEC, 0x8000, 0x1000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MS_PRIVATE = 0x1, 0x2, 0x4, 1 << 18
SYS_OPEN_TREE, SYS_MOUNT_SETATTR = 428, 442  # the same numbers on x86-64 and arm64


class _MountAttributes(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _detached_mount(source: Path, *, read_only: bool) -> int:
    """A detached copy of the mounts at `source` (open_tree), as bwrap's --bind (--ro-bind) makes
    them: nosuid, nodev (read-only), private; its file descriptor."""
    libc = _libc()
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE
    fd = libc.syscall(
        ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(-100), ctypes.c_char_p(os.fsencode(source)), ctypes.c_uint(flags)
    )
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"open_tree {source}")
    attributes = _MountAttributes(
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (MOUNT_ATTR_RDONLY if read_only else 0), 0, MS_PRIVATE, 0
    )
    done = libc.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(fd),
        ctypes.c_char_p(b""),
        ctypes.c_uint(AT_EMPTY_PATH | AT_RECURSIVE),
        ctypes.byref(attributes),
        ctypes.c_size_t(ctypes.sizeof(attributes)),
    )
    if done < 0:
        error = ctypes.get_errno()
        os.close(fd)
        raise OSError(error, f"mount_setattr {source}")
    return fd


def start_unboxed(argv: Sequence[str], env: dict[str, str], cwd: Path, **popen_kwargs: Any) -> subprocess.Popen:
    """Start `argv` under the supervisor WITHOUT a box (TRAINHUB_NODE_SANDBOX=false, or a helper of
    the node's own such as the container helper): the supervisor still takes nothing of `env`, which
    reaches only the command."""
    return _start(None, list(argv), cwd, popen_kwargs, env=env)


@functools.cache
def _bwrap() -> str:
    return shutil.which("bwrap") or "bwrap"


@functools.cache
def sandbox_problem() -> str | None:
    """Why no box can run on this machine, or None when one can (asked once per process): a box of
    `true` is started the way the node starts them."""
    if shutil.which("bwrap") is None:
        return "bwrap (Debian's bubblewrap) is not installed"
    if node_is_root() and shutil.which("setpriv") is None:
        return "setpriv (Debian's util-linux) is not installed"
    with tempfile.TemporaryDirectory(prefix="trainhub-box-probe-") as folder:
        probe = Box(uid=box_uid("build", 0), workdir=Path(folder) / "work", tmp=Path(folder) / "tmp")
        probe.workdir.mkdir()
        probe.prepare()
        try:
            process = _start(
                probe.bwrap_arguments({}),
                [*probe.command_prefix(), "true"],
                probe.workdir,
                {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT},
            )
            output, _ = process.communicate(timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"bwrap does not start: {error}"
    if process.returncode != 0:
        return f"bwrap fails here: {output.decode(errors='replace').strip() or f'exit code {process.returncode}'}"
    return None


def node_sandbox_support(setting: str) -> tuple[bool, str]:
    """Whether a node starting now boxes member code (setting: auto, true or false), and a line
    saying so. Unless told false, a node refuses to start where the box does not work."""
    if setting.lower() in OFF:
        return False, NOT_SANDBOXED.format(why="TRAINHUB_NODE_SANDBOX is false")
    problem = sandbox_problem()
    if problem is not None:
        raise ImproperlyConfigured(SANDBOX_REQUIRED.format(setting=setting, why=problem))
    return True, "runs boxed" if node_is_root() else f"runs boxed. {SAME_UID}"


def run_box(*, uid: int, workdir: Path, box_folder: Path, read_only: Iterable[Path], say) -> Box | None:
    """The box of a run's processes on this node (its private /tmp and /dev/shm in `box_folder`), or
    None, said in the run's log, when TRAINHUB_NODE_SANDBOX=false lets the node run them unboxed.
    `read_only`: what the run reads besides its folder (its virtualenv, the in-run SDK, its staged
    inputs). Raises SandboxUnavailable where the box does not work."""
    try:
        enabled, note = node_sandbox_support(settings.TRAINHUB_NODE_SANDBOX)
    except ImproperlyConfigured as error:
        raise SandboxUnavailable(str(error)) from None
    if not enabled:
        logger.warning("%s", note)
        say(note)
        return None
    wanted = [*(Path(p).absolute() for p in read_only), *node_read_only()]
    say(SANDBOXED if node_is_root() else f"{SANDBOXED} {SAME_UID}")
    return Box(
        uid=uid,
        workdir=workdir.absolute(),
        tmp=box_folder / "tmp",
        shm=box_folder / "shm",
        read_only=tuple(p for p in wanted if not p.is_relative_to(workdir.absolute())),
    )
