"""A unix socket in a run's folder, where only that run's processes (in its box) see it, served by
the node: the MPI launch agent's relay (runs/mpi_relay.py) and a Docker MPI run's container relay
(runs/container_relay.py) listen on one each, and a Docker launch's rendezvous store takes its
listening socket from one (SocketHandover). Each connection is served on a thread of its own."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path


class RunSocket:
    """Listens on `folder/name` and hands each connection to `serve` (which closes it) until
    `close()`."""

    def __init__(self, folder: Path, name: str, serve: Callable[[socket.socket], None], thread_name: str):
        self.path = folder / name
        self.closed = threading.Event()
        self._serve = serve
        self.path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A unix socket's path may hold 107 bytes, a run's folder can be deeper: bind through the
        # folder's descriptor.
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.listener.bind(f"/proc/self/fd/{folder_fd}/{name}")
        finally:
            os.close(folder_fd)
        # The run's processes run as the run's uid, not the node's: the run's folder keeps others out.
        self.path.chmod(0o666)
        self.listener.listen(16)
        threading.Thread(target=self._accept, name=thread_name, daemon=True).start()

    def close(self) -> None:
        self.closed.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()


class SocketHandover:
    """Hands `listening` (a socket the node bound) to the first process of the run that connects to
    `folder/name`, then closes the node's copy: how a run's rendezvous store in a container, which
    inherits no descriptor, gets the master port the node listens on before the ranks start."""

    def __init__(self, folder: Path, name: str, listening: socket.socket):
        self.listening = listening
        self.handed = False
        self.lock = threading.Lock()
        self.socket = RunSocket(folder, name, self._hand, thread_name="store-handover")

    def _hand(self, connection: socket.socket) -> None:
        with connection, self.lock:
            if self.handed:
                return
            self.handed = True
            try:
                socket.send_fds(connection, [b"1"], [self.listening.fileno()])
            except OSError:
                pass  # the store went before it took it: the run ends with the store
            self.close()

    def close(self) -> None:
        self.socket.close()
        self.listening.close()
