"""Deadlines for reading a request body, under gunicorn's gthread workers.

gunicorn cuts no request once its headers are read. A socket timeout ends a read that waits
too long (werkzeug answers 400), but bounds each read only: a client that trickles a byte every
half second would hold a thread for its whole Content-Length. So one daemon thread per process
also shuts the reading side of a socket whose whole body is late; the read then ends short.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class BodyDeadlines:
    def __init__(self, seconds: float, *, per_read: float, tick: float = 0.1) -> None:
        self.seconds = seconds
        self.per_read = per_read
        self.tick = tick
        self._due: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def reading(self, sock: socket.socket | None) -> Iterator[None]:
        """Within the block, a read of ``sock`` waits at most ``per_read``, and every read ends
        once ``seconds`` have passed (None: no limit, as under a server that hands over no
        socket)."""
        if sock is None:
            yield
            return
        sock.settimeout(self.per_read)
        with self._lock:
            self._start_watching()
            self._due[sock] = time.monotonic() + self.seconds
        try:
            yield
        finally:
            with self._lock:
                self._due.pop(sock, None)

    def _start_watching(self) -> None:
        # A forked worker inherits the object but not the thread.
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._watch, name="amoscore-body-deadline",
                                        daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            with self._lock:
                late = [sock for sock, due in self._due.items() if due <= now]
                for sock in late:
                    del self._due[sock]
            for sock in late:
                with suppress(OSError):  # the client may be gone already
                    sock.shutdown(socket.SHUT_RD)
