"""Shared fixtures: real Postgres and Redis of this machine, each test run in its own database.

Pure tests (metrics, calendar, parser) need none of these. The suite refuses any network
address outside loopback: amoCRM is reached only through `responses`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_BASE = os.environ.get("AMOSCORE_TEST_REDIS", "redis://127.0.0.1:6379")
FIXTURES = Path(__file__).parent / "fixtures"

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> object:
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and not (
        str(host).startswith("127.") or host in ("localhost", "::1") or self.family == socket.AF_UNIX
    ):
        raise OSError(f"network access to {host} refused in tests (use responses)")
    return _real_connect(self, address)  # type: ignore[arg-type]


socket.socket.connect = _loopback_only  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh Postgres database for this test run, dropped at the end."""
    from tests.faultkit import PG_ADMIN_URL, create_database, drop_database

    try:
        url = create_database("amoscore_t")
    except Exception as exc:  # noqa: BLE001 - turn any connection error into a clear reason
        pytest.fail(f"Postgres at {PG_ADMIN_URL} is not reachable: {exc}")
    try:
        from app.db import create_schema, make_engine

        engine = make_engine(url)
        create_schema(engine)
        engine.dispose()
        yield url
    finally:
        drop_database(url)


@pytest.fixture()
def pg_engine(pg_url: str):  # type: ignore[no-untyped-def]
    """An engine on the run's database, with every table emptied before the test."""
    from sqlalchemy import text

    from app.db import make_engine
    from app.models import Base

    engine = make_engine(pg_url)
    with engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def either_engine(request, tmp_path):  # type: ignore[no-untyped-def]
    """The test once on each dialect: a SQLite file with the schema (the embedded default) and
    the run's Postgres (production)."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_engine")
        return
    from app.db import create_schema, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'either.sqlite3'}")
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database of its own for this test run (flushed before use)."""
    import redis

    # A db per run (by pid) so two runs on one machine do not drain each other's queues.
    db = int(os.environ.get("AMOSCORE_TEST_REDIS_DB", str(1 + os.getpid() % 15)))
    url = f"{REDIS_BASE}/{db}"
    try:
        redis.Redis.from_url(url).flushdb()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_BASE} is not reachable: {exc}")
    return url


@pytest.fixture()
def redis_conn(redis_url: str):  # type: ignore[no-untyped-def]
    import redis

    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


# --- the receiver and a worker on the real services -----------------------------------------

SECRET = "s3cr3t-hook"
TEST_ENV = {"AMOSCORE_WEBHOOK_SECRET": SECRET, "AMOCRM_LONG_LIVED_TOKEN": "test-token",
            "AMOSCORE_FERNET_KEY": "x" * 43 + "="}


@pytest.fixture(scope="session")
def example_account():  # type: ignore[no-untyped-def]
    from config.loader import load_account

    return load_account(Path(__file__).parent.parent / "config" / "account.example.yaml")


@pytest.fixture()
def runtime(pg_engine, redis_conn, redis_url, example_account, tmp_path):  # type: ignore[no-untyped-def]
    """A Runtime on the run's Postgres database and Redis db, with RQ as the queue."""
    from app.db import make_session_factory
    from config.settings import Settings
    from jobs.queues import RQJobQueue, receiver_redis
    from jobs.runtime import Runtime, set_runtime

    settings = Settings(database_url=str(pg_engine.url.render_as_string(hide_password=False)),
                        redis_url=redis_url, config_path="", var_dir=tmp_path,
                        spool_dir=tmp_path / "spool")
    rt = Runtime(settings=settings, accounts={example_account.account_id: example_account},
                 engine=pg_engine, sessions=make_session_factory(pg_engine),
                 queue=RQJobQueue(receiver_redis(redis_url)), redis=redis_conn)
    set_runtime(rt)
    yield rt
    set_runtime(None)


@pytest.fixture()
def client(runtime):  # type: ignore[no-untyped-def]
    from app.web import create_app

    app = create_app({"RUNTIME": runtime, "ENV": TEST_ENV})
    return app.test_client()


def run_worker(runtime) -> int:  # type: ignore[no-untyped-def]
    """Run a real RQ worker (no fork) until the queues are empty; returns jobs failed."""
    import redis
    from rq import Queue, SimpleWorker

    from jobs.queues import QUEUE_NAMES

    conn = redis.Redis.from_url(runtime.settings.redis_url)
    queues = [Queue(n, connection=conn) for n in QUEUE_NAMES]
    worker = SimpleWorker(queues, connection=conn)
    worker.work(burst=True)
    return sum(q.failed_job_registry.count for q in queues)


def post_fixture(client, name: str, secret: str = SECRET):  # type: ignore[no-untyped-def]
    body = (FIXTURES / "webhooks" / f"{name}.txt").read_bytes().strip()
    return client.post(f"/webhooks/amocrm/{secret}", data=body,
                       content_type="application/x-www-form-urlencoded")
