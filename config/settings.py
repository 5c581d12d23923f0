"""Process settings from the environment (code defaults → environment). Read only when asked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class MissingSetting(RuntimeError):
    """A required environment variable is not set; the message names it."""


class BadSetting(ValueError):
    """An environment variable holds something unusable; the message names it, not its value."""


@dataclass(frozen=True)
class Settings:
    database_url: str  # "" = the embedded SQLite file
    redis_url: str  # "" = the in-process queue
    config_path: str  # AMOSCORE_CONFIG: one account YAML or a folder of them
    var_dir: Path = Path("var")
    spool_dir: Path = Path("var/spool")
    max_content_length: int = 1024 * 1024
    log_level: str = "WARNING"  # AMOSCORE_LOG_LEVEL: the web process's (the CLI has -v)

    @property
    def embedded_database(self) -> Path:
        """The SQLite file used when DATABASE_URL is unset."""
        return self.var_dir / "amoscore.sqlite3"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.embedded_database}"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    var_dir = Path(env.get("AMOSCORE_VAR_DIR", "var"))
    redis_url = env.get("REDIS_URL", "")
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise BadSetting("REDIS_URL must start with redis://, rediss:// or unix:// "
                         "(or be unset for the in-process queue)")
    for name in ("REDIS_URL", "DATABASE_URL"):
        _check_url(name, env.get(name, ""))
    body_bytes = env.get("AMOSCORE_MAX_BODY_BYTES", str(1024 * 1024))
    if not body_bytes.isdigit():
        raise BadSetting("AMOSCORE_MAX_BODY_BYTES must be a whole number of bytes")
    log_level = env.get("AMOSCORE_LOG_LEVEL", "WARNING").upper()
    if log_level not in LOG_LEVELS:
        raise BadSetting(f"AMOSCORE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    return Settings(
        database_url=env.get("DATABASE_URL", ""),
        redis_url=redis_url,
        config_path=env.get("AMOSCORE_CONFIG", "config/account.example.yaml"),
        var_dir=var_dir,
        spool_dir=Path(env.get("AMOSCORE_SPOOL_DIR", str(var_dir / "spool"))),
        max_content_length=int(body_bytes),
        log_level=log_level,
    )


def _check_url(name: str, url: str) -> None:
    """A URL whose port cannot be read (often a password holding "/" or "#", not percent-
    encoded) failed later with the password's first characters in the error."""
    from urllib.parse import urlsplit

    try:
        _ = urlsplit(url).port  # reading it is the check
    except ValueError:
        raise BadSetting(f"{name} cannot be read as a URL: percent-encode any '/', '#', '?' or "
                         "'@' in its password (e.g. '/' as %2F)") from None


AMOCRM_BASE_URL_ENV = "AMOSCORE_AMOCRM_BASE_URL"


def amocrm_base_url(own: str, env: Mapping[str, str] | None = None) -> str:
    """Where to reach an account's amoCRM: ``AMOSCORE_AMOCRM_BASE_URL`` when set (a staging
    copy, a test's server), else the account's own address (``own``)."""
    env = os.environ if env is None else env
    return env.get(AMOCRM_BASE_URL_ENV) or own


def require_env(name: str, env: Mapping[str, str] | None = None) -> str:
    """The value of a secret's variable, or MissingSetting naming it."""
    env = os.environ if env is None else env
    value = env.get(name)
    if not value:
        raise MissingSetting(f"environment variable {name} is not set (amoscore needs it)")
    return value
