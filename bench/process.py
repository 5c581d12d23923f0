"""Processing bench: 20,000 stored deliveries drained by 2 `amoscore worker` processes.

Prints events/s (one event per delivery, wall time from the workers' start until every row is
processed), the empty-job rate of RQ's SimpleWorker (a job that does nothing) measured in the
same run, and their ratio. Goals: >= 2,000 events/s and >= 8x the empty-job rate.
A temp Postgres database (created and dropped) and a private redis-server on a free port.
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ is first on sys.path; the repo root must be importable.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from sqlalchemy import func, select  # noqa: E402

from app.db import create_schema, insert_ignore, make_engine, make_session_factory  # noqa: E402
from app.models import WebhookDelivery  # noqa: E402
from jobs.intake import dedupe_key, drain_deliveries  # noqa: E402
from jobs.queues import INTAKE_QUEUE, RQJobQueue, worker_redis  # noqa: E402
from tests.faultkit import (  # noqa: E402
    ACCOUNT_ID,
    RedisServer,
    create_database,
    distinct_bodies,
    drop_database,
    kill_tree,
    start_worker,
    worker_env,
)

DELIVERIES = 20_000
WORKERS = 2
EMPTY_JOBS = 2_000
TIME_LIMIT = 180.0  # seconds; past it the bench reports the rate so far


def empty_job_rate(redis_url: str) -> float:
    """Jobs/s of one RQ SimpleWorker (no fork) running jobs that do nothing."""
    import redis
    from rq import Queue, SimpleWorker

    conn = redis.Redis.from_url(redis_url)
    queue = Queue("bench-empty", connection=conn)
    for _ in range(EMPTY_JOBS):
        queue.enqueue("os.getpid", result_ttl=0)
    worker = SimpleWorker([queue], connection=conn)
    started = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    elapsed = time.perf_counter() - started
    assert queue.count == 0
    conn.close()
    return EMPTY_JOBS / elapsed


def main() -> None:
    url = create_database("amoscore_bench")
    redis_server = RedisServer().start()
    procs = []
    try:
        engine = make_engine(url)
        create_schema(engine)
        sessions = make_session_factory(engine)
        now = datetime.now(UTC)
        items = distinct_bodies(DELIVERIES)
        with sessions() as s:
            for i in range(0, DELIVERIES, 2000):
                insert_ignore(s, WebhookDelivery, [
                    {"account_id": ACCOUNT_ID, "dedupe_key": dedupe_key(body, ACCOUNT_ID),
                     "body": body.decode(), "received_at": now, "status": "stored",
                     "attempts": 0} for *_, body in items[i:i + 2000]])
            s.commit()

        empty_rate = empty_job_rate(redis_server.url)

        # One drain job per worker: the drains take disjoint batches (SKIP LOCKED).
        queue = RQJobQueue(worker_redis(redis_server.url))
        for _ in range(WORKERS):
            queue.enqueue(drain_deliveries, ACCOUNT_ID, queue=INTAKE_QUEUE)
        with tempfile.TemporaryDirectory() as var:
            env = worker_env(url, redis_server.url, "bench-secret",
                             AMOSCORE_AMOCRM_BASE_URL="http://127.0.0.1:9", AMOSCORE_VAR_DIR=var)
            started = time.perf_counter()
            procs = [start_worker(env, burst=True) for _ in range(WORKERS)]
            done = 0
            while time.perf_counter() - started < TIME_LIMIT:
                with sessions() as s:
                    done = s.execute(select(func.count()).select_from(WebhookDelivery)
                                     .where(WebhookDelivery.status == "processed")).scalar_one()
                if done >= DELIVERIES or all(p.poll() is not None for p in procs):
                    break
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
        rate = done / elapsed
        print(f"deliveries processed: {done:,} of {DELIVERIES:,} in {elapsed:.1f} s "
              f"by {WORKERS} worker processes (start-up included)")
        print(f"events/s: {rate:,.0f}  (goal >= 2,000)")
        print(f"RQ SimpleWorker empty jobs/s: {empty_rate:,.0f}")
        print(f"ratio events/s / empty jobs/s: {rate / empty_rate:.2f}x  (goal >= 8x)")
        engine.dispose()
    finally:
        for p in procs:
            kill_tree(p)
        redis_server.kill()
        drop_database(url)


if __name__ == "__main__":
    main()
