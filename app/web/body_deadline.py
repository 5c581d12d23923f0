"""A deadline for reading a whole request body, under gunicorn's gthread workers.

gunicorn cuts no request once its headers are read, and a socket timeout bounds each read only:
a client that trickles a byte every half second would hold a thread for its whole
Content-Length. One daemon thread per process shuts the reading side of a socket whose body is
late; the read then ends and werkzeug answers 400 (amoCRM would send the webhook again).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class BodyDeadlines:
    def __init__(self, seconds: float, tick: float = 0.1) -> None:
        self.seconds = seconds
        self.tick = tick
        self._due: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def reading(self, sock: socket.socket | None) -> Iterator[None]:
        """Within the block, ``sock``'s reads end once ``seconds`` have passed (None: no limit,
        as under a server that hands over no socket)."""
        if sock is None:
            yield
            return
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
