"""Runs one rank's command and guarantees that no process of it outlives it (standard library only).

The node starts it with `python -I -S` (imported from its folder, see SUPERVISOR_ARGV in
trainhub/sandbox.py) and an empty environment, as the leader of a new process group: nothing of a
run reaches it.
The supervisor asks the kernel for SIGTERM when the node dies, adopts orphaned descendants
(child subreaper), and on SIGTERM — or when the command ends — stops every descendant,
including those that left the process group.

With `--sandboxed`, CMD is a sandbox (bwrap, see trainhub/sandbox.py) that dies at once on SIGTERM
and takes its processes down with SIGKILL: the SIGTERM goes to the processes inside it only, so
they may end gracefully, and the sandbox itself is killed only once the grace period is over.
With `--spare FD` first, the supervisor is started before it is needed (one of the node's spares)
and waits for the rest of its command line from the node (see `_wait_for_command`).
With `--env-fd N` (no sandbox), CMD gets the environment read from file descriptor N (NUL-separated
NAME=VALUE entries), which the supervisor itself never takes. Each `--cgroup DIR` first (a run's
limits, runs/limits.py): the supervisor joins that cgroup before it starts CMD, so that everything
CMD starts is held to it; one it cannot join ends it before CMD starts.
"""

from __future__ import annotations

# signal's and ctypes' C halves: the modules build enums and classes at import, a few milliseconds
# of every rank's start.
import _ctypes
import _signal as signal  # type: ignore[import-not-found]
import os
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE_SECONDS = 3.0


class _CInt(_ctypes._SimpleCData):
    _type_ = "i"


class _CFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _CInt


class _Libc:
    """What ctypes.CDLL(None) is to a function pointer: the process's own symbols."""

    _handle = _ctypes.dlopen(None, os.RTLD_LOCAL)  # type: ignore[arg-type]  # None: the process itself


def _prctl(option: int, value: int) -> None:
    try:
        _CFunction(("prctl", _Libc()))(option, value, 0, 0, 0)  # type: ignore[arg-type]  # any object with a _handle
    except (OSError, AttributeError):
        pass


def descendants(root: int) -> list[int]:
    """Every process below `root`. As a child subreaper we adopt orphans, so following the
    kernel's children lists finds them all; a full /proc scan is the fallback."""
    try:
        return _descendants_by_children_lists(root)
    except OSError:
        return _descendants_by_scan(root)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += [int(child) for child in handle.read().split()]
    return found


def _descendants_by_children_lists(root: int) -> list[int]:
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        try:
            children = _children(pid)
        except FileNotFoundError:
            if pid == root:
                raise
            continue
        found += children
        pending += children
    return found


def _descendants_by_scan(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    found, pending = [], [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_tree(grace: float = GRACE_SECONDS, spare: int | None = None) -> None:
    """SIGTERM to every descendant but `spare`, then SIGKILL to all of them after `grace`."""
    me = os.getpid()
    _signal_all([pid for pid in descendants(me) if pid != spare], signal.SIGTERM)
    deadline = time.monotonic() + grace
    pause = 0.002  # a box's init ends a moment after bwrap: wait for it in small steps at first
    while time.monotonic() < deadline:
        _reap()
        if not descendants(me):
            return
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    _signal_all(descendants(me), signal.SIGKILL)
    _reap()


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _read_environment(fd: int) -> dict[str, str]:
    with os.fdopen(fd, "rb") as handle:
        entries = handle.read().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)


def _wait_for_command(fd: int) -> list[str] | None:
    """A spare's command (`--spare FD`, see trainhub/sandbox.py): the node sends it over socket FD
    when a rank starts, in a memfd with the file descriptors it names, which are put at the numbers
    the node gave them. The supervisor then runs as if started with that command line, in the
    folder the node names. None when the node closed the socket instead."""
    import json
    import socket

    with socket.socket(fileno=fd) as channel:
        _, fds, _, _ = socket.recv_fds(channel, 1, 64)
    if not fds:
        return None
    with os.fdopen(fds[0], "rb") as message_file:
        message = json.loads(message_file.read())
    # Out of the way of the numbers they go to first, then to those numbers (inheritable).
    above = max([*fds, *message["fds"]]) + 1
    moved = [os.dup2(fd, above + i) for i, fd in enumerate(fds[1:])]
    for fd in fds[1:]:
        os.close(fd)
    for fd, wanted in zip(moved, message["fds"], strict=True):
        os.dup2(fd, wanted)
        os.close(fd)
    os.chdir(message["cwd"])
    return list(message["argv"])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--spare"] and len(argv) > 1:
        parent = os.getppid()
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            return 137
        try:
            command = _wait_for_command(int(argv[1]))
        except OSError as error:
            print(f"Cannot take the command: {error}", file=sys.stderr, flush=True)
            return 127
        if command is None:
            return 0
        argv = command
    while argv[:1] == ["--cgroup"] and len(argv) > 1:
        try:
            with open(os.path.join(argv[1], "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
        except OSError as error:
            print(f"Cannot hold the run to its limits (cgroup {argv[1]}): {error}", file=sys.stderr, flush=True)
            return 125
        argv = argv[2:]
    sandboxed = argv[:1] == ["--sandboxed"]
    if sandboxed:
        argv = argv[1:]
    environment = None
    if argv[:1] == ["--env-fd"] and len(argv) > 1:
        environment = _read_environment(int(argv[1]))
        argv = argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: supervisor.py [--sandboxed | --env-fd N] -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the node died before we asked
        return 137
    _prctl(PR_SET_CHILD_SUBREAPER, 1)

    stopping = False
    child: int | None = None

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            stop_tree(spare=child if sandboxed else None)
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    child = _spawn(argv, environment)
    if child is None:
        return 127
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            return 127
        except InterruptedError:
            continue
    stop_tree()
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _spawn(argv: list[str], environment: dict[str, str] | None) -> int | None:
    """fork + exec, reporting an exec failure through a pipe (no `subprocess`: it is slow to import)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.set_inheritable(write_end, False)
            if environment is None:
                os.execvp(argv[0], argv)
            os.execvpe(argv[0], argv, environment)
        except OSError as error:
            os.write(write_end, f"Cannot start {argv[0]!r}: {error.strerror}".encode())
        os._exit(127)
    os.close(write_end)
    failure = os.read(read_end, 4096)
    os.close(read_end)
    if failure:
        os.waitpid(pid, 0)
        print(failure.decode(), file=sys.stderr, flush=True)
        return None
    return pid


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
