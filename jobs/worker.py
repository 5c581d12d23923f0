"""`amoscore worker`: an RQ worker with the scheduler, and the periodic jobs enqueued on time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from rq import Queue, Worker

from config.settings import from_env
from jobs.queues import (
    JOB_TIMEOUT,
    QUEUE_NAMES,
    SYNC_QUEUE,
    WORKER_TTL,
    due_sync_key,
    next_due_key,
    periodic_key,
    sync_waiting_key,
    worker_redis,
)
from jobs.runtime import Runtime, build_runtime, set_runtime

log = logging.getLogger("amoscore.worker")

# (stable id, job function, its arguments, interval in seconds)
PeriodicJob = tuple[str, Callable[..., Any], tuple[Any, ...], int]


def periodic_jobs(runtime: Runtime) -> list[PeriodicJob]:
    """(stable id, function, args, interval seconds) of every periodic job."""
    from jobs.intake import sweep
    from jobs.sync import sync_account

    accounts = list(runtime.accounts.values())
    # One sweep serves every account (the spool and the stale rows are not per account): at
    # the shortest interval any account asks for, not once per account each interval.
    jobs: list[PeriodicJob] = (
        [("sweep", sweep, (), min(a.sync.sweeper_seconds for a in accounts))] if accounts else [])
    for account in accounts:
        jobs.append((f"sync-{account.account_id}", sync_account, (account.account_id,),
                     min(account.sync.events_pull_seconds, account.sync.flush_seconds)))
    return jobs


def tick_once(runtime: Runtime, conn: Redis, jobs: list[PeriodicJob], now: float) -> None:
    """Enqueue each periodic job once per interval across all workers (SET NX as the lock),
    and an account's sync at once when its next check has fallen due (once per due instant)."""
    from jobs.sync import sync_account

    def enqueue_sync(account_id: int, job_id: str) -> None:
        """The account's sync, unless one waits in the queue already."""
        if not conn.set(sync_waiting_key(account_id), 1, nx=True, ex=2 * JOB_TIMEOUT):
            return
        try:
            runtime.queue.enqueue(sync_account, account_id, job_id=job_id, queue=SYNC_QUEUE)
        except Exception:
            conn.delete(sync_waiting_key(account_id))  # nothing waits after all
            raise

    for job_id, func, args, interval in jobs:
        try:
            if not conn.set(periodic_key(job_id), 1, nx=True, ex=interval):
                continue
            if func is sync_account:
                enqueue_sync(args[0], job_id=f"{job_id}-{int(now)}")
            else:
                runtime.queue.enqueue(func, *args, job_id=f"{job_id}-{int(now)}", queue=SYNC_QUEUE)
        except Exception:  # noqa: BLE001 - keep ticking through a Redis outage
            log.warning("worker.periodic_enqueue_failed job=%s", job_id)
    for account_id in runtime.accounts:
        try:
            due = conn.get(next_due_key(account_id))
            if due is None or int(due) > now:
                continue
            if conn.set(due_sync_key(account_id, int(due)), 1, nx=True, ex=3600):
                enqueue_sync(account_id, job_id=f"sync-{account_id}-due-{int(due)}")
        except Exception:  # noqa: BLE001 - the periodic sync still comes within an interval
            log.warning("worker.due_enqueue_failed account=%s", account_id)


def _tick(runtime: Runtime, conn: Redis, stop: threading.Event) -> None:
    jobs = periodic_jobs(runtime)
    while not stop.is_set():
        tick_once(runtime, conn, jobs, time.time())
        stop.wait(1.0)


def run_worker(*, burst: bool = False) -> None:
    settings = from_env()
    if not settings.redis_url:
        raise SystemExit("amoscore worker needs REDIS_URL (the embedded default runs jobs in process)")
    if not settings.database_url:
        # The embedded SQLite file is this folder's, not the web process's database: the
        # worker would take jobs and find none of the bodies they name.
        raise SystemExit("amoscore worker needs DATABASE_URL (the web process's PostgreSQL; "
                         "the embedded SQLite file is for one process at a time)")
    runtime = build_runtime(settings, for_web=False)
    set_runtime(runtime)
    # Forked work horses must not share the parent's database connections.
    runtime.engine.dispose()
    conn = worker_redis(runtime.settings.redis_url)
    stop = threading.Event()
    if not burst:
        threading.Thread(target=_tick, args=(runtime, conn, stop), daemon=True).start()
    worker = Worker([Queue(n, connection=conn) for n in QUEUE_NAMES], connection=conn,
                    worker_ttl=WORKER_TTL)
    try:
        # RQ logs every job at INFO through its own handler: at the CLI's level (warnings
        # unless -v), so a stopped account's warning is not buried under "Job OK" lines.
        worker.work(with_scheduler=True, burst=burst,
                    logging_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()))
    finally:
        stop.set()
