"""Stop waiting for the database before amoCRM stops waiting for us.

libpq has no read timeout, and psycopg raises a 1 s connect_timeout to 2 s: a Postgres that
accepts a connection and then stops answering (a frozen host, a full disk, a path that drops
packets) would hold a webhook past amoCRM's 2 s, and amoCRM disables a hook after 100 failed
answers in 2 hours. ``statement_timeout`` needs a live server to enforce it. So the store
runs in a helper thread and the request waits for it only so long; then the body is spooled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")

STORE_SECONDS = 1.5  # leaves time to spool (one fsync) inside amoCRM's 2 s


class StoreTimeout(RuntimeError):
    """The database did not answer in time; the caller spools the body instead."""


class StoreDeadline:
    """Runs a call in a helper thread and waits at most ``seconds`` for it.

    A call that overran keeps running (its INSERT may still land: the spooled copy then loads
    as a duplicate, so nothing is doubled). While one is still stuck, later calls fail at once
    instead of queuing behind it: an outage then costs no wait and holds no bodies in memory.
    """

    def __init__(self, seconds: float = STORE_SECONDS, threads: int = 4) -> None:
        self.seconds = seconds
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="amoscore-store")
        self._lock = threading.Lock()
        self._stuck = 0

    @property
    def stuck(self) -> int:
        """Calls still running past their deadline."""
        return self._stuck

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self._stuck:
            raise StoreTimeout("an earlier store is still waiting for the database")
        future = self._pool.submit(fn, *args, **kwargs)
        try:
            return future.result(timeout=self.seconds)
        except FutureTimeout:
            with self._lock:
                self._stuck += 1
            future.add_done_callback(self._unstick)
            raise StoreTimeout(f"the database did not answer within {self.seconds} s") from None

    def _unstick(self, _future: Future[Any]) -> None:
        with self._lock:
            self._stuck -= 1
