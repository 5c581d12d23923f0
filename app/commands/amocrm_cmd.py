"""`amoscore amocrm status` and `amoscore amocrm resume`: the shared pause and stop switch.

A 403 stops every worker's traffic to the account (more bad calls make an IP block worse);
only an admin, after checking the account and the integration in amoCRM, lifts the stop. The
switch lives in Redis, seen by every process, and the sync and backfill also keep the stop in
the database (a Redis restarted without persistence forgets it); resume clears both. Without
REDIS_URL, on the embedded default (SQLite), only the database's stop exists (a 429 pause lives
inside one process), and these commands show and clear that one; with Postgres they need the
workers' REDIS_URL.
"""

from __future__ import annotations

import click


def _limiter(account_id: int | None):  # type: ignore[no-untyped-def]
    from app.commands.errors import require_stored_database
    from app.commands.oauth_cmd import _pick_account

    settings, account = _pick_account(account_id)
    require_stored_database(settings)
    return settings, account, _shared_limiter(settings, account.account_id)


def _shared_limiter(settings, account_id: int):  # type: ignore[no-untyped-def]
    """The workers' limiter in Redis, or None on a SQLite database without REDIS_URL (the
    embedded default: no switch is shared). With Postgres the workers run on Redis: without
    REDIS_URL this shell would see, and clear, half of the stop."""
    from integrations.amocrm.ratelimit import redis_limiter

    if settings.redis_url:
        return redis_limiter(settings.redis_url, account_id)
    if settings.effective_database_url.startswith("sqlite"):
        return None
    raise click.UsageError("REDIS_URL is not set: the workers keep the stop in Redis as well as "
                           "in the database; set the REDIS_URL they use")


def _stored_stop(settings, account_id: int, *, clear: bool = False) -> str | None:  # type: ignore[no-untyped-def]
    """The stop the sync keeps in the database (it outlives a Redis restart); cleared if asked.
    Only reads (and that one delete): no schema is created or migrated here (the callers have
    made sure an embedded database exists)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from app.db import make_engine, make_session_factory
    from jobs.sync import clear_stored_stop, stored_stop

    engine = make_engine(settings.effective_database_url)
    try:
        if not inspect(engine).has_table("sync_checkpoints"):  # never migrated: nothing kept
            return None
        with make_session_factory(engine)() as session:
            reason = stored_stop(session, account_id)
            if clear and reason is not None:
                clear_stored_stop(session, account_id)
                session.commit()
        return reason
    except SQLAlchemyError as exc:
        if clear:
            raise click.ClickException(
                f"the stop kept in the database could not be cleared ({exc.__class__.__name__}): "
                "run the command again once the database answers; until then every sync "
                "stays stopped") from None
        click.echo(f"note: the database could not be read ({exc.__class__.__name__}); "
                   "only the stop kept in Redis is shown", err=True)
        return None
    finally:
        engine.dispose()


@click.group("amocrm", short_help="Show or lift the pause or stop of an account's API traffic.")
def amocrm_group() -> None:
    """The shared pause (after a 429) and stop (after a 403) of an account's API traffic."""


@amocrm_group.command("status", short_help="Is the account's amoCRM traffic running, paused or stopped?")
@click.option("--account", "account_id", type=int, help="Account id (when the config has several).")
def status(account_id: int | None) -> None:
    """Show whether the account's amoCRM traffic is running, paused or stopped (without
    --account: every configured account's)."""
    if account_id is None:
        from app.commands.errors import require_stored_database
        from config.loader import load_accounts
        from config.settings import from_env

        settings = from_env()
        accounts = load_accounts(settings.config_path)
        if len(accounts) > 1:
            require_stored_database(settings)
            for account in accounts:
                _status_line(settings, account, _shared_limiter(settings, account.account_id))
            return
    _status_line(*_limiter(account_id))


def _status_line(settings, account, limiter) -> None:  # type: ignore[no-untyped-def]
    reason = ((limiter.stopped_reason() if limiter else None)
              or _stored_stop(settings, account.account_id))
    wait = limiter.pause_left() if limiter else 0.0
    if reason:
        click.echo(f"account {account.account_id}: stopped: {reason}")
    elif wait > 0:
        click.echo(f"account {account.account_id}: paused for {wait:.0f} s more (429 back-off)")
    else:
        click.echo(f"account {account.account_id}: running")


@amocrm_group.command("resume", short_help="Lift a stop once its cause is fixed in amoCRM.")
@click.option("--account", "account_id", type=int, help="Account id (when the config has several).")
def resume(account_id: int | None) -> None:
    """Lift a stop once the cause is fixed in amoCRM; the next sync sends what waited."""
    settings, account, limiter = _limiter(account_id)
    # Redis first: a sync starting in between then still finds the database's stop (and keeps
    # quiet), rather than meeting Redis's and storing it again after this command cleared it.
    in_redis = limiter.stopped_reason() if limiter else None
    if in_redis:
        limiter.clear_stop()
    # Redis may have forgotten the stop (restarted without persistence); the database has not.
    stored = _stored_stop(settings, account.account_id, clear=True)
    reason = in_redis or stored
    if not reason:
        click.echo(f"account {account.account_id} was not stopped; nothing to do")
        return
    click.echo(f"account {account.account_id} resumed (it was stopped: {reason})")
