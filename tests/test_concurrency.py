"""Two jobs of one account at once, on the machine's Postgres: two drains (two workers take
disjoint batches), and a drain committing while a sync plans. A pause injected after a job
has read what it is about to write back forces the interleaving that would lose a change;
the ledger lock makes the other job wait instead, so the pause only times out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.db import make_session_factory
from app.models import Deal, Interaction, TaskLedger, WebhookDelivery
from config.settings import Settings
from jobs import ingest, planner
from jobs.intake import drain_with, store_delivery
from jobs.queues import InProcessQueue
from jobs.runtime import Runtime
from jobs.sync import plan_step
from tests.faultkit import BASE_UNIX, message_body, status_body

pytestmark = pytest.mark.integration

EXTRA = Path(__file__).parent / "fixtures" / "webhooks_extra"
PAUSE = 2.0  # how long a paused job waits for the other one (which the lock holds back)
T0 = datetime.fromtimestamp(BASE_UNIX, UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture()
def rt(pg_engine, example_account, tmp_path):  # type: ignore[no-untyped-def]
    settings = Settings(database_url=str(pg_engine.url.render_as_string(hide_password=False)),
                        redis_url="", config_path="", var_dir=tmp_path, spool_dir=tmp_path / "spool")
    return Runtime(settings=settings, accounts={example_account.account_id: example_account},
                   engine=pg_engine, sessions=make_session_factory(pg_engine),
                   queue=InProcessQueue(), clock=Clock(T0), dry_run_override=True)


class Job(threading.Thread):
    """A job on a thread of its own whose failure fails the test (a thread's exception is
    otherwise only printed, and a crashed drain would look like one that lost the race)."""

    def __init__(self, target: Callable[..., Any], *args: Any, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name=name, daemon=True)
        self.call, self.args, self.kwargs = target, args, kwargs
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.call(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test by finish()
            self.error = exc

    def finish(self, timeout: float) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} still runs after {timeout} s"
        if self.error is not None:
            raise self.error


def deliver(rt: Runtime, account_id: int, body: bytes) -> None:
    with rt.sessions() as s:
        store_delivery(s, account_id=account_id, body=body, received_at=rt.clock(), status="queued")
        s.commit()


def paused_after(real: Callable[..., Any], reached: threading.Event,
                 go_on: threading.Event, only: Callable[..., bool] = lambda *a: True) -> Any:
    def wrapper(*args: Any) -> Any:
        out = real(*args)
        if only(*args):
            reached.set()
            go_on.wait(PAUSE)
        return out
    return wrapper


def test_two_drains_at_once_keep_the_newer_deal_state(rt, example_account, monkeypatch):
    """Worker 1 drains the newer update (price 210000), worker 2 the older one (150000): each
    reads the deal before the other writes. The newer state stays."""
    acc = example_account.account_id
    deliver(rt, acc, (EXTRA / "leads__update_newer.txt").read_bytes().strip())
    deliver(rt, acc, (EXTRA / "leads__update_older.txt").read_bytes().strip())
    first_read, second_read = threading.Event(), threading.Event()
    real = ingest._current_states

    def current_states(session, model, account_id, ids):  # type: ignore[no-untyped-def]
        rows = real(session, model, account_id, ids)
        if model is Deal:
            mine, other = ((first_read, second_read)
                           if threading.current_thread().name == "drain-1"
                           else (second_read, first_read))
            mine.set()
            other.wait(PAUSE)  # without the lock both read the deal before either writes
        return rows

    monkeypatch.setattr(ingest, "_current_states", current_states)
    drains = [Job(drain_with, rt, acc, limit=1, name=f"drain-{n}") for n in (1, 2)]
    drains[0].start()
    assert first_read.wait(PAUSE)  # worker 1 holds the newer delivery
    drains[1].start()
    for t in drains:
        t.finish(4 * PAUSE)
    with rt.sessions() as s:
        deal = s.scalars(select(Deal)).one()
        statuses = s.scalars(select(WebhookDelivery.status)).all()
    assert (deal.price, deal.updated_at) == (210000, datetime.fromtimestamp(1748310000, UTC))
    assert statuses == ["processed", "processed"]


def test_a_message_drained_while_a_sync_plans_is_planned_later(rt, example_account, monkeypatch):
    """The sync has read the deal's ledger when a second worker drains the client's message
    for it. The sync must not clear that drain's "changed" mark: the wait is planned at the
    next sync and, unanswered, gets its breach task."""
    acc, deal = example_account.account_id, 40_000_000
    deliver(rt, acc, status_body(deal, BASE_UNIX, 76789231, 76789230))
    drain_with(rt, acc)
    loaded, drained = threading.Event(), threading.Event()
    monkeypatch.setattr(planner, "load_ledgers",
                        paused_after(planner.load_ledgers, loaded, drained))
    sync = Job(plan_step, rt, example_account, T0 + timedelta(minutes=6), pull=False, name="sync")
    sync.start()
    assert loaded.wait(PAUSE)
    rt.clock.now = T0 + timedelta(minutes=5, seconds=30)  # type: ignore[attr-defined]
    deliver(rt, acc, message_body("m-race", deal, BASE_UNIX + 300))
    drain_with(rt, acc)  # waits for the sync's lock, then commits its mark
    drained.set()
    sync.finish(4 * PAUSE)
    monkeypatch.undo()
    later = T0 + timedelta(days=3)
    plan_step(rt, example_account, later, pull=False)
    with rt.sessions() as s:
        assert s.scalars(select(Interaction.kind).where(Interaction.deal_id == deal)).all() == [
            "incoming_chat_message"]
        tasks = s.execute(select(TaskLedger.deal_id, TaskLedger.rule)).all()
    assert tasks == [(deal, "frt_breach")]
