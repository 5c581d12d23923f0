"""Referral discounts: the share of won sales deals that came "from a friend" (metrics.md §3).

Choices where the spec leaves room:

- A deal is referred when any value of its discount field *as last known* (the report's
  ``now``; managers often fill fields in just after moving a deal to won) has an
  ``enum_id`` in ``cfg.enum_ids`` or a text equal to one of ``cfg.values``, ignoring case and
  runs of whitespace (a text field is typed by managers: "скидка от  друга 5%" is the admin's
  "Скидка от друга 5%"). amoCRM sends ids as strings in webhooks, so enum ids are compared as
  integers. A missing field is not referred.
- A deal won several times counts once, in the period (and quarter) of its latest win.
- ``share`` is ``referred / won``, None when nothing was won (the report shows null); the same
  for quarters and managers. ``change`` = this quarter's share − the previous quarter's share
  (the previous one counted over its whole quarter even when it lies before the period), None
  when either is None; ``healthy`` when the share is growing or not falling (metrics.md).
- Quarters are in the account's timezone; ``by_quarter`` lists every quarter the period
  touches, each counted over the whole quarter.
- ``by_manager`` is keyed by the deal's responsible at the win; deals without one count in the
  totals only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

from app.metrics.complaints import SAME_MOVE_WINDOW, StageRecord, same_move
from app.metrics.periods import previous_quarter, quarter_bounds, quarters_touching
from config.account import ReferralsConfig

FieldValues = Sequence[Mapping[str, object]] | None
WON = 142  # amoCRM's status "successfully realized" in every pipeline


def win_instants(stages: Sequence[StageRecord], sales_pipelines: Iterable[int]) -> list[datetime]:
    """Instants a deal reached won (142) in a sales pipeline, from its stage records in order.
    A deal first seen already won (an update of an old deal, say its NPS asked after the win)
    did not become won then: that needs its creation at 142, or a record of the status it
    came from."""
    sales = set(sales_pipelines)
    wins: list[datetime] = []
    previous, previous_at = None, None
    last_win: StageRecord | None = None
    for s in stages:
        state = (s.pipeline_id, s.status_id)
        came_from = (s.old_pipeline_id, s.old_status_id) if s.old_status_id is not None else previous
        became = came_from != state if came_from is not None else s.created
        # The same move seen again (its event a second after the webhook, maybe behind a quick
        # move on): one win, at the first sighting; the later one must not carry it into the
        # next period.
        again = ((previous == state and previous_at is not None
                  and s.at - previous_at <= SAME_MOVE_WINDOW)
                 or (last_win is not None and s.old_status_id is not None
                     # A win again straight from the status it left is a real second win;
                     # the repeat of one sits behind the stage the deal moved on to.
                     and (previous is None or previous[1] != s.old_status_id)
                     and same_move(s, last_win)))
        if s.status_id == WON and s.pipeline_id in sales and became and not again:
            wins.append(s.at)
            last_win = s
        previous, previous_at = state, s.at
    return wins


@dataclass(frozen=True)
class WonDeal:
    """A sales-pipeline deal's wins, its discount field at the latest win, its responsible then."""

    deal_id: int
    wins: tuple[datetime, ...]
    field_values: FieldValues
    responsible: int | None


@dataclass(frozen=True)
class Share:
    won: int
    referred: int
    share: float | None


@dataclass(frozen=True)
class QuarterStats:
    quarter: str
    won: int
    referred: int
    share: float | None
    change: float | None
    healthy: bool | None  # metrics.md: growing or not falling; None when either share is


@dataclass(frozen=True)
class ReferralStats:
    won: int
    referred: int
    share: float | None
    by_quarter: list[QuarterStats]
    by_manager: dict[int, Share]


def _as_int(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw.strip())
    return None


def is_referred(values: FieldValues, cfg: ReferralsConfig) -> bool:
    """Does the discount field's value mean "came from a friend"?"""
    if not values:
        return False
    texts = {_plain(v) for v in cfg.values}
    enum_ids = set(cfg.enum_ids)
    for value in values:
        if _as_int(value.get("enum_id")) in enum_ids:
            return True
        text = value.get("value")
        if isinstance(text, str) and _plain(text) in texts:
            return True
    return False


def _plain(text: str) -> str:
    return " ".join(text.split()).casefold()


def _share(won: int, referred: int) -> Share:
    return Share(won, referred, referred / won if won else None)


def _count(wins: Iterable[tuple[datetime, bool]], start: datetime, end: datetime) -> Share:
    won = referred = 0
    for at, referral in wins:
        if start <= at < end:
            won += 1
            referred += referral
    return _share(won, referred)


def referral_stats(
    deals: Iterable[WonDeal],
    period_start: datetime,
    period_end: datetime,
    tz: ZoneInfo | str,
    cfg: ReferralsConfig,
) -> ReferralStats:
    """Won and referred deals of ``[period_start, period_end)``, per quarter and per manager."""
    latest: list[tuple[datetime, bool, int | None]] = [
        (max(d.wins), is_referred(d.field_values, cfg), d.responsible) for d in deals if d.wins
    ]
    wins = [(at, referral) for at, referral, _ in latest]
    total = _count(wins, period_start, period_end)

    per_manager: dict[int, list[int]] = {}
    for at, referral, responsible in latest:
        if responsible is not None and period_start <= at < period_end:
            counts = per_manager.setdefault(responsible, [0, 0])
            counts[0] += 1
            counts[1] += referral

    by_quarter = []
    for label in quarters_touching(period_start, period_end, tz):
        this = _count(wins, *quarter_bounds(label, tz))
        before = _count(wins, *quarter_bounds(previous_quarter(label), tz))
        change = healthy = None
        if this.won and before.won:  # exact: float shares subtracted leave noise to round
            diff = Fraction(this.referred, this.won) - Fraction(before.referred, before.won)
            change, healthy = float(diff), diff >= 0
        by_quarter.append(QuarterStats(label, this.won, this.referred, this.share, change,
                                       healthy))

    return ReferralStats(
        won=total.won,
        referred=total.referred,
        share=total.share,
        by_quarter=by_quarter,
        by_manager={u: _share(w, r) for u, (w, r) in sorted(per_manager.items())},
    )
