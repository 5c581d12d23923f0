"""The one place that knows queue names, RQ options and how work is enqueued.

Production: RQ on Redis. Embedded default (no REDIS_URL): an in-process queue that runs the
same job functions at once, so the same delivery statuses and results come out.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

# redis and rq are imported where a real queue is built: the embedded default and replay
# never touch them, and redis alone pulls in ~10 MB (cryptography, opentelemetry).
if TYPE_CHECKING:
    import redis

log = logging.getLogger("amoscore.queue")

INTAKE_QUEUE = "amoscore-intake"  # normalise stored deliveries
SYNC_QUEUE = "amoscore-sync"  # events pull, due checks, write-back flush, sweeper
QUEUE_NAMES = (INTAKE_QUEUE, SYNC_QUEUE)

# The workers' timer keys in Redis.


def sync_waiting_key(account_id: int) -> str:
    """Set while a sync of the account waits in the queue: the timer adds no second one (a
    sync that outlasts its interval made the queue grow without end behind a backlog)."""
    return f"amoscore:sync_waiting:{account_id}"


def periodic_key(job_id: str) -> str:
    """Held for a periodic job's interval by the worker that enqueued it (SET NX)."""
    return f"amoscore:periodic:{job_id}"


def next_due_key(account_id: int) -> str:
    """When the account's next check falls due (Unix seconds), as the last sync planned it."""
    return f"amoscore:next_due:{account_id}"


def due_sync_key(account_id: int, due: int) -> str:
    """Taken by the worker that enqueues the sync for that due instant (once per instant)."""
    return f"amoscore:due_sync:{account_id}:{due}"


JOB_TIMEOUT = 300  # seconds; a "queued" delivery older than this is re-enqueued by the sweeper
RESULT_TTL = 60
FAILURE_TTL = 7 * 24 * 3600
RETRY_INTERVALS = [5, 15, 60, 300, 900]  # seconds before each of RQ's 5 retries
WORKER_TTL = 20  # a killed worker's jobs are found abandoned within this
DRAIN_FLAG_TTL = 5  # seconds a "drain already scheduled" flag lives

# The receiver must answer within 2 s even when Redis hangs: short timeouts, no retries.
RECEIVER_SOCKET_TIMEOUT = 0.5

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]+$")


class EnqueueFailed(RuntimeError):
    """The queue could not take the job; the caller leaves the row for the sweeper."""


class JobQueue(Protocol):
    runs_inline: bool  # True when enqueue runs the job before returning

    def enqueue(self, func: Callable[..., Any], *args: Any, job_id: str | None = None,
                queue: str = INTAKE_QUEUE) -> None: ...

    def claim_drain(self, account_id: int) -> bool: ...

    def release_drain(self, account_id: int) -> None: ...


def receiver_redis(url: str) -> redis.Redis:
    """A Redis client for the web process: fails fast rather than holding a webhook."""
    import redis

    return redis.Redis.from_url(
        url,
        socket_timeout=RECEIVER_SOCKET_TIMEOUT,
        socket_connect_timeout=RECEIVER_SOCKET_TIMEOUT,
        retry_on_timeout=False,
        retry=None,
    )


def worker_redis(url: str) -> redis.Redis:
    import redis

    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise ValueError(f"job id {job_id!r} must match [A-Za-z0-9_-]+ (RQ rejects ':')")
    return job_id


class RQJobQueue:
    """Enqueue onto RQ; every RQ option is set here."""

    runs_inline = False

    def __init__(self, connection: redis.Redis) -> None:
        import redis
        from rq import Queue, Retry

        self.connection = connection
        self._local = threading.local()
        self._queues = {name: Queue(name, connection=connection) for name in QUEUE_NAMES}
        self._retry = Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS)
        self._error = redis.RedisError  # what a failed call raises (redis is imported here)
        self._closed = redis.ConnectionError

    def enqueue(self, func: Callable[..., Any], *args: Any, job_id: str | None = None,
                queue: str = INTAKE_QUEUE) -> None:
        try:
            self._queues[queue].enqueue(
                func, *args,
                job_id=check_job_id(job_id) if job_id else None,
                job_timeout=JOB_TIMEOUT, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
                retry=self._retry,
            )
        except self._error as exc:
            raise EnqueueFailed(str(exc)) from exc

    def claim_drain(self, account_id: int) -> bool:
        """True when no drain job is pending for the account (so the caller enqueues one)."""
        # Every webhook makes this call, so it goes straight to a connection of this thread's
        # own: redis-py's command layer (retry wrapper, response callbacks) and the pool's
        # checkout (a poll() for stray data each time) cost more CPU than the command.
        for attempt in (1, 2):
            conn = self._claim_connection()
            try:
                conn.send_command("SET", f"amoscore:drain:{account_id}", 1, "NX", "EX",
                                  DRAIN_FLAG_TTL)
                return conn.read_response() is not None  # OK when set, nil when already there
            except self._error as exc:
                conn.disconnect()  # a half-read reply must not reach the next call; reconnects
                # A connection the server dropped while idle (its timeout, a failover) fails
                # at once: try a new one. A frozen Redis times out: no second wait.
                if attempt == 1 and isinstance(exc, self._closed):
                    continue
                raise EnqueueFailed(str(exc)) from exc
        raise AssertionError("unreachable")

    def _claim_connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.pid != os.getpid():  # a forked child opens its own
            conn = self.connection.connection_pool.make_connection()
            self._local.conn = conn
        return conn

    def release_drain(self, account_id: int) -> None:
        try:
            self.connection.delete(f"amoscore:drain:{account_id}")
        except self._error:
            log.warning("queue.release_drain_failed account=%s", account_id)


class InProcessQueue:
    """Runs jobs in this process (embedded default, replay, tests): each at once, or, when
    ``deferred``, when the owner calls ``run_pending`` (replay drains the deliveries of many
    lines in one batch, right before the sync that reads them).

    Like RQ, a failing job does not fail the caller: the error is logged and kept in
    ``failed``, and the delivery rows it held stay stored for the sweeper.
    """

    runs_inline = True

    def __init__(self, *, deferred: bool = False) -> None:
        self.deferred = deferred
        self.ran = 0
        self.failed: list[tuple[str, BaseException]] = []
        self.pending: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._drains: set[int] = set()
        # One job at a time: the web's threads run jobs inline, and two drains of one account
        # at once on SQLite (where the ledger lock is Postgres's) could each write back the
        # state they read.
        self._one_at_a_time = threading.RLock()

    def enqueue(self, func: Callable[..., Any], *args: Any, job_id: str | None = None,
                queue: str = INTAKE_QUEUE) -> None:
        if job_id:
            check_job_id(job_id)
        if self.deferred:
            self.pending.append((func, args))
        else:
            self._run(func, args)

    def run_pending(self) -> None:
        """Run the deferred jobs in the order they were enqueued."""
        while self.pending:
            func, args = self.pending.pop(0)
            self._run(func, args)

    def _run(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            with self._one_at_a_time:
                self.ran += 1
                func(*args)
        except Exception as exc:  # noqa: BLE001 - a queue records job failures, as RQ does
            log.exception("job.failed func=%s", getattr(func, "__name__", func))
            self.failed.append((getattr(func, "__name__", str(func)), exc))

    def claim_drain(self, account_id: int) -> bool:
        """Deferred: one pending drain per account, as the Redis flag gives RQ."""
        if not self.deferred:
            return True
        if account_id in self._drains:
            return False
        self._drains.add(account_id)
        return True

    def release_drain(self, account_id: int) -> None:
        self._drains.discard(account_id)
