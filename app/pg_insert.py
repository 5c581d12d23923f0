"""One statement over libpq under a deadline, on a connection kept per thread: the receiver's store.

libpq has no read timeout and psycopg has no per-statement one (its ``connect_timeout`` is
raised to 2 s), so a Postgres that keeps the connection but stops answering (a frozen host, a
full disk, a path that drops packets) would hold a webhook past amoCRM's 2 s, and amoCRM
disables a hook after 100 failed answers in 2 hours. ``statement_timeout`` needs a live server
to enforce it. Driving libpq's non-blocking calls here puts connect and statement under one
deadline in the request's own thread. That also spares each webhook the helper thread an
earlier design waited on and the pool's checkout and reset (bench/ingest.py).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg import pq

# psycopg is imported when a statement is first built: it adds ~20 MB, and the embedded
# default and replay (SQLite) import the receiver without ever reaching Postgres.

STORE_SECONDS = 1.5  # leaves time to spool (one fsync) inside amoCRM's 2 s
# After a timeout the next stores fail at once for this long instead of each waiting out its
# own deadline: during an outage a worker then pays one wait per pause, not one per webhook.
PAUSE_SECONDS = 2.0
# A connection idle this long is reopened rather than trusted: a NAT or firewall may have
# dropped it silently, and finding out would cost a timeout and a pause of spooled bodies.
IDLE_SECONDS = 1800.0
_PREPARED = b"amoscore_statement"


class StoreError(RuntimeError):
    """The database could not take the statement; the caller spools the body instead."""


class StoreTimeout(StoreError):
    """The database did not answer in time."""


class PgStatement:
    """Runs one parameterised statement (``$1``…, text parameters) in autocommit, each thread
    on its own connection; returns the first column of the first row, or None.

    A connection that failed or overran is closed, never reused: its state is unknown. An
    overrun statement may still commit on the server; the receiver's spooled copy of the body
    then loads as a duplicate, so nothing is doubled.
    """

    def __init__(self, conninfo: str, sql: str, *, seconds: float = STORE_SECONDS,
                 pause: float = PAUSE_SECONDS, idle: float = IDLE_SECONDS) -> None:
        self._conninfo = conninfo.encode()
        self._sql = sql.encode()
        self.seconds = seconds
        self.pause = pause
        self.idle = idle
        self._local = threading.local()
        self._paused_until = 0.0
        from psycopg import Error, pq

        self._error, self._pq = Error, pq

    def run(self, params: Sequence[str | None]) -> str | None:
        now = time.monotonic()
        if now < self._paused_until:
            raise StoreTimeout("the database did not answer recently; not waiting again yet")
        deadline = now + self.seconds
        try:
            pgconn = self._connection(deadline)
            return self._execute(pgconn, [None if p is None else p.encode() for p in params],
                                 deadline)
        except StoreTimeout:
            self._paused_until = time.monotonic() + self.pause
            self._drop()
            raise
        except StoreError:
            self._drop()
            raise
        except self._error as exc:
            self._drop()
            raise StoreError(str(exc)) from exc

    def close(self) -> None:
        """Close this thread's connection (others close with their threads' exit)."""
        self._drop()

    def _connection(self, deadline: float) -> pq.abc.PGconn:
        pgconn = getattr(self._local, "pgconn", None)
        now = time.monotonic()
        if pgconn is not None and self._local.pid == os.getpid():
            if now - self._local.used < self.idle:
                self._local.used = now
                return pgconn
            self._drop()
        # Inherited across a fork, the socket is the parent's: leave it alone, open our own.
        self._local.pgconn = None
        pq = self._pq
        pgconn = pq.PGconn.connect_start(self._conninfo)
        try:
            while True:
                status = pgconn.connect_poll()
                if status == pq.PollingStatus.OK:
                    break
                if status == pq.PollingStatus.FAILED:
                    raise StoreError(pgconn.error_message.decode(errors="replace").strip()
                                     or "connection failed")
                _wait(pgconn.socket, status == pq.PollingStatus.WRITING, deadline)
            pgconn.nonblocking = 1
            # Prepared once per connection: Postgres then skips parsing and planning the
            # statement on every webhook.
            pgconn.send_prepare(_PREPARED, self._sql)
            self._finish(pgconn, deadline)
        except BaseException:
            pgconn.finish()
            raise
        self._local.pgconn, self._local.pid, self._local.used = pgconn, os.getpid(), now
        return pgconn

    def _execute(self, pgconn: pq.abc.PGconn, params: list[bytes | None],
                 deadline: float) -> str | None:
        pgconn.send_query_prepared(_PREPARED, params)
        return self._finish(pgconn, deadline)

    @staticmethod
    def _finish(pgconn: pq.abc.PGconn, deadline: float) -> str | None:
        """Send what is queued and read the answer: its first value (None for no rows)."""
        while pgconn.flush():  # 1 while the body is still being sent
            _wait(pgconn.socket, True, deadline)
        result = None
        while True:
            _wait(pgconn.socket, False, deadline)
            pgconn.consume_input()
            while not pgconn.is_busy():
                last = pgconn.get_result()
                if last is None:
                    return _first_value(result)
                result = last

    def _drop(self) -> None:
        pgconn = getattr(self._local, "pgconn", None)
        self._local.pgconn = None
        if pgconn is not None and self._local.pid == os.getpid():
            pgconn.finish()


def _first_value(result: pq.abc.PGresult | None) -> str | None:
    from psycopg.pq import ExecStatus

    if result is None:
        raise StoreError("no result")
    if result.status not in (ExecStatus.TUPLES_OK, ExecStatus.COMMAND_OK):
        raise StoreError((result.error_message or b"statement failed").decode(errors="replace")
                         .strip())
    if result.ntuples == 0:
        return None
    value = result.get_value(0, 0)
    return None if value is None else value.decode()


def _wait(fd: int, writing: bool, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise StoreTimeout("the database did not answer in time")
    poller = select.poll()
    poller.register(fd, select.POLLOUT if writing else select.POLLIN)
    if not poller.poll(remaining * 1000):
        raise StoreTimeout("the database did not answer in time")
