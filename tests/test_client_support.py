"""Shared builders for the amoCRM client, write-back and events tests (no tests here)."""

from __future__ import annotations

from dataclasses import replace

from config.account import (
    AccountConfig,
    AccountInfo,
    AuthConfig,
    ComplaintsConfig,
    FrtConfig,
    PipelinesConfig,
    SurveysConfig,
    SyncConfig,
    UsersConfig,
    WritebackConfig,
)
from integrations.amocrm.auth import StaticTokenAuth
from integrations.amocrm.client import AmoClient
from integrations.amocrm.ratelimit import AccountLimiter, MemoryFlags

BASE = "https://acme.amocrm.ru"
ACCOUNT_ID = 32427762


def make_account(**writeback: object) -> AccountConfig:
    return AccountConfig(
        account=AccountInfo(
            subdomain="acme", id=ACCOUNT_ID, base_domain="amocrm.ru", timezone="Europe/Moscow",
            webhook_secret_env="AMOSCORE_WEBHOOK_SECRET",
            auth=AuthConfig(long_lived_token_env="AMOCRM_LONG_LIVED_TOKEN",
                            encryption_key_env="AMOSCORE_FERNET_KEY"),
        ),
        calendar=None,
        users=UsersConfig(),
        pipelines=PipelinesConfig(sales=(9621010,)),
        frt=FrtConfig(opens_on=("incoming_chat_message",), closes_on=("outgoing_chat_message",)),
        complaints=ComplaintsConfig(),
        referrals=None,
        surveys=SurveysConfig(),
        writeback=replace(WritebackConfig(), **writeback),  # type: ignore[arg-type]
        sync=SyncConfig(),
    )


class FakeTime:
    """An injected clock whose sleep moves it forward, recording each sleep."""

    def __init__(self, start: float = 1_772_431_200.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def memory_limiter(t: FakeTime | None = None, per_second: int = 1000,
                   flags: MemoryFlags | None = None) -> AccountLimiter:
    """A private in-process limiter (its own storage and flags) with a generous limit."""
    kw = {"clock": t.clock, "sleep": t.sleep} if t else {}
    return AccountLimiter(ACCOUNT_ID, per_second, global_per_second=per_second,
                          flags=flags or MemoryFlags(), **kw)


def make_client(t: FakeTime | None = None, limiter: AccountLimiter | None = None,
                token: str = "tok-1", **kw: object) -> AmoClient:
    t = t or FakeTime()
    return AmoClient(BASE, StaticTokenAuth(token), limiter=limiter or memory_limiter(t),
                     clock=t.clock, sleep=t.sleep, **kw)  # type: ignore[arg-type]
