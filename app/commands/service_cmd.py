"""`amoscore worker`, `amoscore sweep` and `amoscore db upgrade`."""

from __future__ import annotations

import click


@click.command("worker", short_help="Run an RQ worker on amoscore's queues "
                                    "(needs DATABASE_URL and REDIS_URL).")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty (tests, cron).")
def worker_command(burst: bool) -> None:
    """Run an RQ worker (with the scheduler) on amoscore's queues, plus the periodic jobs."""
    from jobs.worker import run_worker

    run_worker(burst=burst)


@click.command("sweep", short_help="Load the spool and enqueue what waits, once.")
def sweep_command() -> None:
    """Run the sweeper once: load the spool, enqueue stored and stale queued deliveries."""
    from jobs.intake import sweep_with
    from jobs.runtime import build_runtime

    result = sweep_with(build_runtime(for_web=False))
    click.echo(" ".join(f"{k}={v}" for k, v in result.items()))


@click.group("db")
def db_group() -> None:
    """Database schema (Alembic migrations)."""


@db_group.command("upgrade", short_help="Bring the database schema to the newest migration.")
def db_upgrade() -> None:
    """Bring the database (DATABASE_URL, or the embedded SQLite file) to the newest schema."""
    from sqlalchemy import make_url

    from app.db import create_schema, make_engine
    from config.settings import from_env

    settings = from_env()
    if not settings.database_url:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    try:
        create_schema(engine)
    finally:
        engine.dispose()
    # Named, so a release step that lost its DATABASE_URL shows it upgraded a local file.
    if settings.database_url:
        which = make_url(settings.database_url).render_as_string(hide_password=True)
    else:
        which = f"{settings.embedded_database.absolute()} (embedded: DATABASE_URL is not set)"
    click.echo(f"database {which} is at the newest migration")


@db_group.command("prune", short_help="Delete handled webhook bodies and seen event ids older "
                                      "than --days.")
@click.option("--days", type=click.IntRange(min=7), required=True,
              help="Keep this many days (at least 7: a redelivery or a late event must still "
                   "find its twin).")
def db_prune(days: int) -> None:
    """Delete handled webhook deliveries (their raw bodies hold clients' messages and phone
    numbers) and the ids of applied events, older than --days. Deliveries still to process,
    and each account's first one, stay; metrics, writes and tasks are not touched. Run it
    from cron, e.g. daily with --days 90."""
    from datetime import UTC, datetime, timedelta

    from app.commands.errors import require_stored_database
    from app.db import make_engine, make_session_factory
    from config.settings import from_env
    from jobs.prune import prune

    settings = from_env()
    require_stored_database(settings)
    engine = make_engine(settings.effective_database_url)
    try:
        with make_session_factory(engine)() as session:
            gone = prune(session, datetime.now(UTC) - timedelta(days=days))
            session.commit()
    finally:
        engine.dispose()
    click.echo(f"deleted {gone['deliveries']} handled deliveries and {gone['seen_events']} "
               f"seen event ids older than {days} days")
