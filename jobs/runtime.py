"""What a job needs to run — settings, accounts, database, queue, clock — built once per process.

Web processes build it in ``create_app``; RQ workers build it in ``amoscore worker`` before
forking (the pool is disposed first); replay builds its own with a simulated clock.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db import create_schema, make_engine, make_session_factory
from config.account import AccountConfig
from config.settings import Settings
from jobs.queues import InProcessQueue, JobQueue, RQJobQueue, receiver_redis, worker_redis


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    settings: Settings
    accounts: dict[int, AccountConfig]
    engine: Engine
    sessions: sessionmaker[Session]
    queue: JobQueue
    clock: Callable[[], datetime] = wall_clock
    redis: Any = None  # redis.Redis for limiter/locks, None embedded
    dry_run_override: bool | None = None  # replay forces dry-run (or --send forces sending)
    client_factory: Callable[[AccountConfig], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def account(self, account_id: int) -> AccountConfig:
        return self.accounts[account_id]

    def dry_run(self, account: AccountConfig) -> bool:
        if self.dry_run_override is not None:
            return self.dry_run_override
        return account.writeback.dry_run


_current: Runtime | None = None
_building = threading.Lock()  # the web's threads may all ask at once (inline jobs)


def set_runtime(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def get_runtime() -> Runtime:
    """The process's runtime; an RQ work horse builds it from the environment on first use."""
    global _current
    if _current is None:
        with _building:
            if _current is None:
                _current = build_runtime(for_web=False)
    return _current


def build_runtime(settings: Settings | None = None, *, for_web: bool,
                  accounts: tuple[AccountConfig, ...] | None = None) -> Runtime:
    from config import settings as settings_mod
    from config.loader import load_accounts

    settings = settings or settings_mod.from_env()
    if accounts is None:
        accounts = load_accounts(settings.config_path)
    url = settings.effective_database_url
    engine = make_engine(url)
    if url.startswith("sqlite"):
        # The embedded default brings its schema along (16 ms when it is current): a new user's
        # first `amoscore report` or `backfill` crashed on "no such table" before. Postgres is
        # migrated by the release step (`amoscore db upgrade`), never by whoever starts first.
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        with open(settings.var_dir / ".migrate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two web workers starting at once
            create_schema(engine)
    conn = None
    queue: JobQueue
    if settings.redis_url:
        conn = receiver_redis(settings.redis_url) if for_web else worker_redis(settings.redis_url)
        queue = RQJobQueue(conn)
    else:
        queue = InProcessQueue()
    return Runtime(settings=settings, accounts={a.account_id: a for a in accounts}, engine=engine,
                   sessions=make_session_factory(engine), queue=queue, redis=conn)
