"""A spare box's waiter (standard library only): started in a box made ahead of a rank (see
`warm_supervisor` in trainhub/sandbox.py), as root with the few capabilities that take, before any
member code exists. When the rank starts it gets the run's own mounts, drops to the box's uid with
no capability left, and only then reads the run's command and variables and execs the command in
place of itself: no bwrap, setpriv or shell starts on the rank's path.

Started as `python -I -S -c ... --spare-box FD`: FD is a socket on which the node sends, once, the
plan (a memfd: mount steps, uid, folder, the numbers of the files the command gets), the command (a
memfd the waiter reads only once unprivileged), the detached mounts the plan names (made outside by
open_tree) and the files for the command. A closed socket ends the waiter (a spare not needed).
Both memfds hold NUL-separated fields (see encode_plan, encode_command). The waiter imports only C
modules beside os and sys (json, socket and ctypes would each add milliseconds to every spare).
"""

from __future__ import annotations

import _ctypes
import _socket
import array
import os
import struct
import sys

AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MNT_DETACH = 2
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_SILENT = 1, 2, 4, 32, 4096, 32768
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CAPABILITY_VERSION_3 = 0x20080522
SYS_MOVE_MOUNT = 429  # the same number on every architecture the node runs on (x86-64, arm64)
MOUNT_POINT_MOVED = (
    "The box's mount point {path} leads elsewhere (a symbolic link on its way): the rank does not start."
)
CAPABILITY_LEFT = "The box's process still has a capability ({line}): the rank does not start."


class _CLong(_ctypes._SimpleCData):
    _type_ = "l"


class _CFunction(_ctypes.CFuncPtr):
    """A C function of the process (libc's): int and bytes arguments, a long result, errno kept."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _CLong


class _Libc:
    _handle = _ctypes.dlopen(None, os.RTLD_LOCAL)  # type: ignore[arg-type]  # None: the process itself


def _function(name: str) -> _CFunction:
    return _CFunction((name, _Libc()))  # type: ignore[arg-type]  # any object with a _handle


_syscall, _mount, _umount2, _prctl, _capset = (
    _function(name) for name in ("syscall", "mount", "umount2", "prctl", "capset")
)


class Refused(Exception):
    pass


def _check(result: int, what: str) -> None:
    if result < 0:
        error = _ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _move_mount(fd: int, target: str) -> None:
    flags = MOVE_MOUNT_F_EMPTY_PATH
    _check(_syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, os.fsencode(target), flags), f"move_mount {target}")


def _make_folder(path: str) -> None:
    """What bwrap's `--perms 0755 --dir` does: the folder, 0755, where it is not yet."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    os.chmod(path, 0o755)


def _mount_point(path: str, folder: bool) -> None:
    """Where a bind goes, made as bwrap makes it (a folder 0755 or an empty file 0444), and refused
    where it resolves elsewhere (a link planted by a process of the run, in its /tmp)."""
    if folder:
        _make_folder(path)
    elif not os.path.lexists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444))
    if os.path.realpath(path) != path:
        raise Refused(MOUNT_POINT_MOVED.format(path=path))


def _drop_privileges(uid: int) -> None:
    """setpriv --reuid=UID --regid=UID --clear-groups --inh-caps=-all --bounding-set=-all: the
    bounding set emptied while it may be, then the uid, which clears the permitted, effective and
    ambient sets, then the inheritable set. Checked: a process with a capability left never execs."""
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        last = int(handle.read())
    for capability in range(last + 1):
        _check(_prctl(PR_CAPBSET_DROP, capability, 0, 0, 0), "PR_CAPBSET_DROP")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    _check(_capset(struct.pack("=II", CAPABILITY_VERSION_3, 0), bytes(24)), "capset")
    _check(_prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Cap") and int(line.split()[1], 16):
                raise Refused(CAPABILITY_LEFT.format(line=line.strip()))


def _place(fds: list[int], wanted: list[int]) -> None:
    """The command's files at the numbers the node gave them (inheritable), out of the way first."""
    above = max([*fds, *wanted, 2]) + 1
    moved = [os.dup2(fd, above + i) for i, fd in enumerate(fds)]
    for fd in fds:
        os.close(fd)
    for fd, number in zip(moved, wanted, strict=True):
        os.dup2(fd, number)
        os.close(fd)


def encode_plan(
    *, uid: int, cwd: str, fds: list[int], detach: list[str], steps: list[tuple[str, str, bool]], covers: list[str]
) -> bytes:
    """The plan's memfd: the uid, the folder, the command's file numbers, the spare's mounts to take
    away first (below /tmp, where the rank's own /tmp goes), the steps (kind "dir", "tmpfs" or
    "mount", path, whether a mount's source is a folder; one detached mount per "mount"), then the
    hidden folders' covers to make read-only."""
    fields = [str(uid), cwd, str(len(fds)), *map(str, fds), str(len(detach)), *detach, str(len(steps))]
    fields += [field for kind, path, folder in steps for field in (kind, path, "1" if folder else "0")]
    return "\0".join([*fields, *covers]).encode()


def encode_command(argv: list[str], env: dict[str, str]) -> bytes:
    return "\0".join([str(len(argv)), *argv, *(f"{name}={value}" for name, value in env.items())]).encode()


def _read_fields(fd: int) -> list[str]:
    with os.fdopen(fd, "rb") as handle:
        return handle.read().decode().split("\0")


def _receive(channel_fd: int) -> list[int]:
    """The files the node sends with its one message (socket.recv_fds without the socket module)."""
    channel = _socket.socket(fileno=channel_fd)
    try:
        _, ancillary, _, _ = channel.recvmsg(16, _socket.CMSG_LEN(253 * 4), _socket.MSG_CMSG_CLOEXEC)
    finally:
        channel.close()
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def serve(channel_fd: int) -> int:
    fds = _receive(channel_fd)
    if len(fds) < 2:
        return 0
    plan_fd, command_fd, *rest = fds
    fields = _read_fields(plan_fd)
    uid, cwd, count = int(fields[0]), fields[1], int(fields[2])
    wanted = [int(fd) for fd in fields[3 : 3 + count]]
    at = 4 + count + int(fields[3 + count])
    detach = fields[4 + count : at]
    first, end = at + 1, at + 1 + 3 * int(fields[at])
    steps = [(fields[at], fields[at + 1], fields[at + 2] == "1") for at in range(first, end, 3)]
    covers = fields[end:]
    mounts = sum(kind == "mount" for kind, _, _ in steps)
    passed = rest[mounts:]
    try:
        for path in detach:
            _check(_umount2(os.fsencode(path), MNT_DETACH), f"umount {path}")
        remaining = iter(rest[:mounts])
        for step, path, folder in steps:
            if step in ("dir", "tmpfs"):
                _make_folder(path)
                if os.path.realpath(path) != path:
                    raise Refused(MOUNT_POINT_MOVED.format(path=path))
                if step == "tmpfs":  # bwrap's --perms 0755 --tmpfs
                    _check(_mount(b"tmpfs", os.fsencode(path), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755"), "tmpfs")
                continue
            _mount_point(path, folder)
            fd = next(remaining)
            _move_mount(fd, path)
            os.close(fd)
        for path in covers:
            flags = MS_SILENT | MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
            _check(_mount(None, os.fsencode(path), None, flags, None), f"remount {path} read-only")
        os.chdir(cwd)
        _drop_privileges(uid)
    except (OSError, Refused) as error:
        print(f"The box does not start: {error}", file=sys.stderr, flush=True)
        return 126
    # Unprivileged from here on: the run's variables and command.
    command = _read_fields(command_fd)
    argv = command[1 : 1 + int(command[0])]
    env = dict(entry.split("=", 1) for entry in command[1 + len(argv) :] if entry)
    _place(passed, wanted)
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as error:
        print(f"Cannot start {argv[0]!r}: {error.strerror}", file=sys.stderr, flush=True)
    return 127


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[2])))
