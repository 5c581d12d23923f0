"""Shared fixtures: real Postgres and Redis of this machine, each test run in its own database.

Pure tests (metrics, calendar, parser) need none of these. The suite refuses any network
address outside loopback: amoCRM is reached only through `responses`.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("AMOSCORE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
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
    from sqlalchemy import create_engine, text

    name = f"amoscore_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - turn any connection error into a clear skip reason
        pytest.fail(f"Postgres at {PG_ADMIN_URL} is not reachable: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    from app.db import create_schema, make_engine

    engine = make_engine(url)
    create_schema(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


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


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database of its own for this test run (flushed before use)."""
    import redis

    db = int(os.environ.get("AMOSCORE_TEST_REDIS_DB", "13"))
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
