"""The environment's usual failures as one line for the terminal, instead of a traceback.

A missing config, a database or Redis that is not there, amoCRM refusing: each names what to
set or check. The messages never carry a URL or a secret (a database URL may hold a password).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config.settings import Settings

# The drivers SQLAlchemy imports for URL schemes amoscore does not ship.
_DB_DRIVERS = frozenset({"MySQLdb", "pymysql", "psycopg2", "cx_Oracle", "oracledb", "pyodbc",
                         "asyncpg", "aiosqlite", "pymssql"})
DATABASE_URL_HINT = ("expected postgresql://USER@HOST:PORT/DB or sqlite:///PATH "
                     "(DATABASE_URL, or replay's --database)")


def require_stored_database(settings: Settings) -> None:
    """For the commands that only read the database: on the embedded default a file that is
    not there is another folder or a forgotten DATABASE_URL, not an empty ledger (creating it
    printed empty figures as if they were the account's)."""
    from config.settings import MissingSetting

    if settings.database_url or settings.embedded_database.exists():
        return
    raise MissingSetting(
        f"DATABASE_URL is not set and there is no embedded database at "
        f"{settings.embedded_database.absolute()}: set DATABASE_URL, or run from the folder "
        f"that holds {settings.embedded_database}")


def environment_error(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for a failure of the environment; None for anything else (a bug,
    which keeps its traceback)."""
    from config.errors import ConfigError
    from config.settings import BadSetting, MissingSetting

    if isinstance(exc, ConfigError):
        return f"{exc} (AMOSCORE_CONFIG names the account YAML or a folder of them)", 2
    if isinstance(exc, MissingSetting | BadSetting):
        return str(exc), 2
    module = type(exc).__module__
    if isinstance(exc, ModuleNotFoundError) and exc.name in _DB_DRIVERS:
        return f"no driver for this database URL's scheme; {DATABASE_URL_HINT}", 2
    if module.startswith("sqlalchemy"):
        from sqlalchemy import exc as sa_exc

        if isinstance(exc, sa_exc.ArgumentError | sa_exc.NoSuchModuleError):
            return f"not a database URL amoscore can use; {DATABASE_URL_HINT}", 2
        # Connecting failed, or the connection died: the database is not there. An error of a
        # statement on a live connection (SQLite calls a syntax error "operational") is a bug.
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) and (
                exc.statement is None or exc.connection_invalidated):
            detail = str(getattr(exc, "orig", exc)).strip().splitlines()
            return f"cannot use the database: {detail[0] if detail else type(exc).__name__}", 1
        return None
    if module.startswith("redis"):
        from redis.exceptions import ConnectionError as RedisDown
        from redis.exceptions import TimeoutError as RedisSlow

        if isinstance(exc, RedisDown | RedisSlow):  # AuthenticationError is a ConnectionError
            return f"cannot reach Redis (REDIS_URL): {exc}", 1
        return None
    if module.startswith("requests"):
        from requests.exceptions import ConnectionError as Unreachable
        from requests.exceptions import Timeout

        if isinstance(exc, Unreachable | Timeout):
            return f"amoCRM could not be reached ({type(exc).__name__})", 1
        return None
    if module.startswith("integrations.amocrm"):
        return str(exc), 1
    return None
