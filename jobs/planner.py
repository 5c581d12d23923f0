"""Turns a deal's ledger into metric rows, desired field values and desired tasks."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from config.account import AccountConfig
from jobs.runtime import Runtime


def plan_deals(session: Session, rt: Runtime, account: AccountConfig, deal_ids: Iterable[int],
               now: datetime) -> None:
    """Recompute what depends on these deals (filled in as the metric families land)."""
    return None
