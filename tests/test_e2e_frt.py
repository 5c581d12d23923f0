"""First reaction time, end to end: receiver → RQ worker on Postgres → events pull → due checks →
write-back, amoCRM answered over HTTP by ``responses``.

Calendar of the example account (Europe/Moscow, UTC+3): Mon–Thu 09:00–13:00, 14:00–18:00,
Fri 09:00–13:00, 14:00–17:00. The days used are ordinary working days of April 2026 (no RU
holiday): Tue 14th, Thu 16th, Fri 17th. Target 15, limit 60 business minutes; every expected
number below is counted by hand in the comments.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.models import Interaction, ReactionEpisode, TaskLedger, WriteLog, WrittenValue
from integrations.amocrm.errors import AmoHTTPError
from jobs.queues import SYNC_QUEUE
from tests.e2e_helpers import (
    ACCOUNT_ID,
    MANAGER,
    OTHER_MANAGER,
    amocrm,
    chat_event,
    incoming_message_body,
    lead_body,
    msk,
    unix,
    utc,
)

pytestmark = pytest.mark.integration

FIRST, LAST, ZONE = 752101, 752103, 752105
GREEN, YELLOW, RED = 908201, 908203, 908205
MARKER = re.compile(r"^#amoscore:[0-9a-f]{8}$")


def frt_patch(deal_id: int, *, first: int | None = None, last: int | None = None,
              zone: int | None = None) -> list[dict]:
    """The one-deal PATCH body expected, fields in id order as the executor sends them."""
    values = []
    if first is not None:
        values.append({"field_id": FIRST, "values": [{"value": first}]})
    if last is not None:
        values.append({"field_id": LAST, "values": [{"value": last}]})
    if zone is not None:
        values.append({"field_id": ZONE, "values": [{"enum_id": zone}]})
    return [{"id": deal_id, "custom_fields_values": values, "request_id": str(deal_id)}]


def episodes(runtime, deal_id: int) -> list[tuple]:  # type: ignore[no-untyped-def]
    with runtime.sessions() as s:
        rows = s.scalars(select(ReactionEpisode).where(ReactionEpisode.deal_id == deal_id)
                         .order_by(ReactionEpisode.seq)).all()
        return [(r.seq, r.source, r.opened_at, r.closed_at, r.reacted_by, r.business_seconds,
                 r.wall_seconds, r.zone) for r in rows]


def tasks(runtime) -> list[TaskLedger]:  # type: ignore[no-untyped-def]
    with runtime.sessions() as s:
        rows = s.scalars(select(TaskLedger).order_by(TaskLedger.id)).all()
        s.expunge_all()
        return list(rows)


def test_reply_only_in_events_api_gives_rounded_up_minutes_and_zone(
        runtime, client, example_account) -> None:  # type: ignore[no-untyped-def]
    deal = 5001
    with amocrm(runtime, client, example_account) as e:
        created = msk("2026-04-14 10:00:00")
        assert e.post(lead_body("add", deal, at=created), at=created + timedelta(seconds=2)) == 200
        e.drain()
        asked = msk("2026-04-14 10:03:00")
        assert e.post(incoming_message_body(deal, "m-5001-1", at=asked),
                      at=asked + timedelta(seconds=1)) == 200
        e.drain()
        # The same client message is also an event (counts once); the reply exists only there.
        e.amo.events += [
            chat_event("ev-1", "incoming_chat_message", deal, "m-5001-1", at=asked, created_by=0),
            chat_event("ev-2", "outgoing_chat_message", deal, "r-5001-1",
                       at=msk("2026-04-14 10:17:10"), created_by=MANAGER),
        ]
        e.sync(msk("2026-04-14 10:20:00"))
        # Episode 1 opens at creation 10:00:00 (the message at 10:03 does not restart it) and
        # closes at 10:17:10: 1030 s = 17.17 min → 18; 1030 > 900 → yellow.
        assert e.amo.patches == [frt_patch(deal, first=18, last=18, zone=YELLOW)]

        asked2 = msk("2026-04-14 11:00:00")
        e.post(incoming_message_body(deal, "m-5001-2", at=asked2), at=asked2 + timedelta(seconds=1))
        e.drain()
        e.amo.events.append(chat_event("ev-3", "outgoing_chat_message", deal, "r-5001-2",
                                       at=msk("2026-04-14 11:04:01"), created_by=OTHER_MANAGER))
        e.sync(msk("2026-04-14 11:10:00"))
        # Episode 2: 11:00:00 → 11:04:01 = 241 s = 4.02 min → 5, green. The first minutes (18)
        # did not change, so only the last minutes and the zone are sent.
        assert e.amo.patches[1:] == [frt_patch(deal, last=5, zone=GREEN)]
        assert e.amo.task_posts == []

    assert episodes(runtime, deal) == [
        (1, "lead_added", utc(created), utc(msk("2026-04-14 10:17:10")), MANAGER, 1030.0, 1030.0,
         "yellow"),
        (2, "incoming_chat_message", utc(asked2), utc(msk("2026-04-14 11:04:01")), OTHER_MANAGER,
         241.0, 241.0, "green"),
    ]
    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Interaction)
                        .where(Interaction.kind == "incoming_chat_message")) == 2
        written = {r.field_id: r.value for r in s.scalars(select(WrittenValue)
                                                          .where(WrittenValue.deal_id == deal))}
    assert written == {FIRST: {"v": 18}, LAST: {"v": 5}, ZONE: {"v": GREEN}}


def _open_episode_from_12_30(e, deal: int) -> None:  # type: ignore[no-untyped-def]
    """A deal created at 12:30 and a client message at 12:31; nobody answers."""
    created = msk("2026-04-14 12:30:00")
    e.post(lead_body("add", deal, at=created), at=created + timedelta(seconds=1))
    e.post(incoming_message_body(deal, f"m-{deal}", at=msk("2026-04-14 12:31:00")),
           at=msk("2026-04-14 12:31:01"))
    e.drain()


# Opened 12:30: 30 business minutes to 13:00, lunch, 30 more to 14:30 → the limit (60) is
# reached at 14:30:00; the task is due 30 business minutes later, 15:00:00.
BREACH_TEXT = "Клиент ждёт ответа уже 60 мин. Ответьте ему."


def test_breach_gives_exactly_one_task_and_zone_follows_the_wait(
        runtime, client, example_account) -> None:  # type: ignore[no-untyped-def]
    deal = 5002
    with amocrm(runtime, client, example_account) as e:
        _open_episode_from_12_30(e, deal)
        e.sync(msk("2026-04-14 12:40:00"))  # waited 10 min
        assert e.amo.patches == [frt_patch(deal, zone=GREEN)]
        e.sync(msk("2026-04-14 12:45:00"))  # exactly the target (green ≤ target): nothing new
        assert len(e.amo.patches) == 1
        e.sync(msk("2026-04-14 12:45:01"))  # one second past the target
        assert e.amo.patches[1:] == [frt_patch(deal, zone=YELLOW)]
        e.sync(msk("2026-04-14 14:29:00"))  # 59 min: no task yet
        assert e.amo.task_posts == []
        e.sync(msk("2026-04-14 14:30:00"))  # the wait reaches the limit: one task
        assert len(e.amo.task_posts) == 1
        [task] = e.amo.posted_tasks()
        e.sync(msk("2026-04-14 14:30:01"))  # one second past the limit
        assert e.amo.patches[2:] == [frt_patch(deal, zone=RED)]

        # Later syncs, the same deliveries again (duplicates) and a new change of the deal.
        e.sync(msk("2026-04-14 15:00:00"))
        _open_episode_from_12_30(e, deal)
        e.post(lead_body("update", deal, at=msk("2026-04-14 15:10:00"),
                         created=msk("2026-04-14 12:30:00")), at=msk("2026-04-14 15:10:01"))
        e.drain()
        e.sync(msk("2026-04-14 16:00:00"))
        e.sync(msk("2026-04-15 10:00:00"))
        assert len(e.amo.task_posts) == 1
        assert len(e.amo.patches) == 3

    [row] = tasks(runtime)
    text, marker = task["text"].split("\n")
    assert text == BREACH_TEXT and MARKER.match(marker)
    assert task == {"text": task["text"], "complete_till": unix(msk("2026-04-14 15:00:00")),
                    "entity_id": deal, "entity_type": "leads", "task_type_id": 1,
                    "request_id": f"task-{row.id}", "responsible_user_id": MANAGER}
    assert (row.deal_id, row.rule, row.status, row.amo_task_id, row.text) == (
        deal, "frt_breach", "created", 5_000_000, BREACH_TEXT)
    assert row.complete_till == utc(msk("2026-04-14 15:00:00"))
    assert episodes(runtime, deal)[0][3] is None  # still open


def test_breach_task_whose_answer_was_lost_is_looked_up_not_posted_again(
        runtime, client, example_account) -> None:  # type: ignore[no-untyped-def]
    deal = 5003
    with amocrm(runtime, client, example_account) as e:
        _open_episode_from_12_30(e, deal)
        e.amo.fail_next_task_post = True  # amoCRM creates the task but the answer is a 502
        with pytest.raises(AmoHTTPError):
            e.sync(msk("2026-04-14 14:30:00"))
        assert tasks(runtime)[0].status == "posting"
        e.sync(msk("2026-04-14 14:31:00"))  # GET /api/v4/tasks finds it by its marker
        e.sync(msk("2026-04-14 14:32:00"))
        assert len(e.amo.task_posts) == 1
        assert e.amo.task_lists == 1
    [row] = tasks(runtime)
    assert (row.status, row.amo_task_id) == ("created", 5_000_000)


def test_reply_seen_only_by_the_pull_before_the_limit_prevents_the_task(
        runtime, client, example_account) -> None:  # type: ignore[no-untyped-def]
    """No webhook announces the reply and no sync ran between: the periodic sync job itself
    (run by a real RQ worker at 14:30, when the limit check is due) pulls before checking."""
    from jobs.sync import sync_account

    deal = 5004
    with amocrm(runtime, client, example_account) as e:
        _open_episode_from_12_30(e, deal)
        e.amo.events.append(chat_event("ev-r", "outgoing_chat_message", deal, "r-5004",
                                       at=msk("2026-04-14 14:20:00"), created_by=MANAGER))
        runtime.queue.enqueue(sync_account, ACCOUNT_ID, job_id="sync-e2e-5004", queue=SYNC_QUEUE)
        e.drain(at=msk("2026-04-14 14:30:00"))
        # 12:30 → 13:00 is 30 min, 14:00 → 14:20 is 20 min: 50 business minutes, yellow.
        assert e.amo.patches == [frt_patch(deal, first=50, last=50, zone=YELLOW)]
        e.sync(msk("2026-04-14 15:00:00"))
        assert e.amo.task_posts == []
    assert tasks(runtime) == []
    assert episodes(runtime, deal) == [
        (1, "lead_added", utc(msk("2026-04-14 12:30:00")), utc(msk("2026-04-14 14:20:00")),
         MANAGER, 3000.0, 6600.0, "yellow")]


def test_out_of_hours_message_counts_from_the_next_working_period(
        runtime, client, example_account) -> None:  # type: ignore[no-untyped-def]
    deal = 5005
    with amocrm(runtime, client, example_account) as e:
        evening = msk("2026-04-16 19:00:00")  # Thursday, after 18:00
        e.post(lead_body("add", deal, at=evening), at=evening)
        e.post(incoming_message_body(deal, "m-5005", at=evening + timedelta(seconds=30)),
               at=evening + timedelta(seconds=31))
        e.drain()
        e.sync(msk("2026-04-16 23:00:00"))  # overnight: waited 0 business minutes, green
        e.amo.events.append(chat_event("ev-5005", "outgoing_chat_message", deal, "r-5005",
                                       at=msk("2026-04-17 09:05:00"), created_by=MANAGER))
        e.sync(msk("2026-04-17 09:06:00"))
        # Friday 09:00 → 09:05 is 300 business seconds: exactly 5 minutes, green.
        assert e.amo.patches == [frt_patch(deal, zone=GREEN), frt_patch(deal, first=5, last=5)]
        assert e.amo.task_posts == []
    # Wall clock 19:00 → 09:05 is 14 h 5 min = 50 700 s.
    assert episodes(runtime, deal) == [
        (1, "lead_added", utc(evening), utc(msk("2026-04-17 09:05:00")), MANAGER, 300.0, 50700.0,
         "green")]


def test_our_own_write_echoed_back_sends_nothing(
        runtime, client, example_account) -> None:  # type: ignore[no-untyped-def]
    deal = 5006
    with amocrm(runtime, client, example_account) as e:
        created = msk("2026-04-14 10:00:00")
        e.post(lead_body("add", deal, at=created), at=created)
        e.drain()
        e.amo.events.append(chat_event("ev-5006", "outgoing_chat_message", deal, "r-5006",
                                       at=msk("2026-04-14 10:06:30"), created_by=MANAGER))
        e.sync(msk("2026-04-14 10:10:00"))
        # 390 s = 6.5 min → 7, green.
        assert e.amo.patches == [frt_patch(deal, first=7, last=7, zone=GREEN)]
        # amoCRM announces our PATCH as a lead change carrying the values we wrote.
        echo = lead_body("update", deal, at=msk("2026-04-14 10:10:01"), created=created,
                         fields={FIRST: "7", LAST: "7", ZONE: ("Зелёная", GREEN)})
        assert e.post(echo, at=msk("2026-04-14 10:10:02")) == 200
        e.drain()
        e.sync(msk("2026-04-14 10:11:00"))
        e.sync(msk("2026-04-14 10:20:00"))
        assert len(e.amo.patches) == 1
    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(WriteLog)) == 3


def test_the_workers_timer_runs_the_sync_when_a_check_falls_due(
        runtime, client, example_account, redis_conn) -> None:  # type: ignore[no-untyped-def]
    """The deal opens at 12:30:20, off the minute grid. Each sync tells the workers' timer when
    the next check falls due; the timer enqueues the account's sync at that second, once, so
    the breach task is created when the wait reaches the limit (14:30:20, across lunch), not
    with the next periodic sync, by which time a reply could hide it."""
    from jobs.queues import next_due_key
    from jobs.sync import sync_account
    from jobs.worker import tick_once

    deal, acc = 5031, example_account.account_id
    opened = msk("2026-04-14 12:30:20")
    due_syncs = []

    def tick(at) -> None:  # type: ignore[no-untyped-def]
        before = redis_conn.llen(f"rq:queue:{SYNC_QUEUE}")
        tick_once(runtime, redis_conn, [], at.timestamp())
        due_syncs.append(redis_conn.llen(f"rq:queue:{SYNC_QUEUE}") - before)

    with amocrm(runtime, client, example_account) as e:
        e.post(lead_body("add", deal, at=opened), at=opened + timedelta(seconds=1))
        e.drain()
        e.at(msk("2026-04-14 12:31:00"))
        sync_account(acc)
        assert int(redis_conn.get(next_due_key(acc))) == unix(msk("2026-04-14 12:45:20"))
        tick(msk("2026-04-14 12:45:19"))
        tick(msk("2026-04-14 12:45:20"))
        tick(msk("2026-04-14 12:45:21"))  # the same due instant: not enqueued twice
        e.drain(msk("2026-04-14 12:45:21"))  # the worker runs the due sync: zone yellow
        assert e.amo.patches[-1] == frt_patch(deal, zone=YELLOW)
        assert int(redis_conn.get(next_due_key(acc))) == unix(msk("2026-04-14 14:30:20"))
        tick(msk("2026-04-14 14:30:20"))
        e.drain(msk("2026-04-14 14:30:21"))
        assert len(e.amo.task_posts) == 1
        assert redis_conn.get(next_due_key(acc)) is None  # nothing more to check
    assert due_syncs == [0, 1, 0, 1]
