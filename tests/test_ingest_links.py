"""A chat's unlinked messages join the deal the chat is later linked to, by talk or by contact,
on Postgres and on SQLite, whether the link comes in the same batch or a later one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.db import create_schema, make_engine, make_session_factory
from app.models import Interaction
from integrations.amocrm.webhooks import WebhookEvent
from jobs.ingest import IngestBatch
from jobs.webhook_handlers import collect_webhook_events

ACCOUNT = 32427762
AT = datetime(2025, 5, 26, 12, 0, tzinfo=UTC)


def message(msg: str, *, talk: int | None, contact: int | None, deal: int | None,
            at: datetime = AT) -> WebhookEvent:
    return WebhookEvent("message.add", {
        "id": msg, "talk_id": talk, "contact_id": contact, "created_at": at, "type": "incoming",
        "entity_type": "lead" if deal else "contact", "entity_id": deal, "element_id": None})


def talk(talk_id: int, *, contact: int, deal: int) -> WebhookEvent:
    return WebhookEvent("talk.update", {
        "talk_id": talk_id, "contact_id": contact, "chat_id": None, "entity_type": "lead",
        "entity_id": deal, "rate": 0, "is_read": False, "is_in_work": True, "created_at": AT,
        "updated_at": AT})


@pytest.fixture(params=["postgresql", "sqlite"])
def sessions(request, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "postgresql":
        engine = request.getfixturevalue("pg_engine")
    else:
        engine = make_engine(f"sqlite:///{tmp_path / 'links.db'}")
        create_schema(engine)
    yield make_session_factory(engine)
    engine.dispose()


def write(sessions, *events: WebhookEvent) -> None:  # type: ignore[no-untyped-def]
    batch = IngestBatch(ACCOUNT)
    collect_webhook_events(batch, events, AT)
    with sessions() as s:
        batch.flush(s)
        s.commit()


def deals_of(sessions) -> dict[str, int | None]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return dict(s.execute(select(Interaction.dedupe, Interaction.deal_id)).all())


@pytest.mark.integration
def test_links_in_a_later_batch(sessions):
    write(sessions,
          message("a", talk=10, contact=5, deal=None),    # joins by its talk
          message("b", talk=None, contact=6, deal=None),  # joins by its contact
          message("c", talk=11, contact=6, deal=None),    # has a talk: never joins by contact
          message("d", talk=None, contact=7, deal=None))  # nothing links it
    write(sessions,
          talk(10, contact=5, deal=100),
          message("e", talk=None, contact=6, deal=200),
          talk(10, contact=5, deal=101))  # the talk's messages already joined deal 100
    assert deals_of(sessions) == {"msg:a": 100, "msg:b": 200, "msg:c": None, "msg:d": None,
                                  "msg:e": 200}


@pytest.mark.integration
def test_links_in_the_same_batch_and_first_link_wins(sessions):
    write(sessions,
          message("a", talk=10, contact=5, deal=None),
          message("b", talk=None, contact=6, deal=None),
          message("c", talk=None, contact=6, deal=300),
          talk(10, contact=5, deal=100),
          message("d", talk=10, contact=5, deal=101))
    assert deals_of(sessions) == {"msg:a": 100, "msg:b": 300, "msg:c": 300, "msg:d": 101}


@pytest.mark.integration
def test_a_message_arriving_after_its_talk_was_linked_joins_the_deal(sessions):
    """The link came first (a retried delivery, or two racing): a later unlinked message of
    that talk joins the deal too, and the deal is marked for planning."""
    write(sessions, talk(12, contact=5, deal=400))
    batch = IngestBatch(ACCOUNT)
    collect_webhook_events(batch, [message("late", talk=12, contact=5, deal=None),
                                   message("other", talk=13, contact=8, deal=None)], AT)
    with sessions() as s:
        touched = batch.flush(s)
        s.commit()
    assert deals_of(sessions)["msg:late"] == 400
    assert deals_of(sessions)["msg:other"] is None  # its talk is linked to nothing yet
    assert 400 in touched


@pytest.mark.integration
def test_an_event_message_known_only_by_its_contact_never_joins_a_deal_by_contact(
        sessions, example_account):
    """A returning client's message in a new chat, filed on the contact without a talk: it
    must not join the deal an older chat of that contact is linked to, before or after."""
    from jobs.api_records import apply_events

    write(sessions, talk(300, contact=55504, deal=504))
    event = {"id": "ev-1", "type": "incoming_chat_message", "entity_type": "contact",
             "entity_id": 55504, "created_by": 0, "created_at": int(AT.timestamp()),
             "value_after": [{"message": {"id": "new-1"}}]}
    with sessions() as s:
        apply_events(s, example_account, [event])
        s.commit()
    write(sessions, talk(301, contact=55504, deal=999))
    assert deals_of(sessions) == {"msg:new-1": None}


@pytest.mark.integration
def test_an_event_message_naming_its_talk_joins_the_deal_that_talk_is_linked_to(
        sessions, example_account):
    """A chat event's message may name its talk: the message then joins by talk, the same
    way a webhook's does, whichever comes first."""
    from jobs.api_records import apply_events

    event = {"id": "ev-t", "type": "incoming_chat_message", "entity_type": "contact",
             "entity_id": 8, "created_by": 0, "created_at": int(AT.timestamp()),
             "value_after": [{"message": {"id": "mt", "talk_id": 400}}]}
    with sessions() as s:
        apply_events(s, example_account, [event])
        s.commit()
    write(sessions, talk(400, contact=9, deal=904))  # the talk's contact differs: joined by talk
    assert deals_of(sessions) == {"msg:mt": 904}


def test_a_talk_read_without_updated_at_is_dated_when_received():
    """metrics.md: by updated_at, else by when the delivery was received, not by the talk's
    created_at (when the chat began)."""
    received = datetime(2025, 5, 26, 12, 30, tzinfo=UTC)
    read = WebhookEvent("talk.update", {
        "talk_id": 14, "contact_id": 5, "chat_id": None, "entity_type": "lead", "entity_id": 500,
        "rate": 8, "is_read": True, "is_in_work": True, "created_at": AT, "updated_at": None})
    batch = IngestBatch(ACCOUNT)
    collect_webhook_events(batch, [read], received)
    [reads] = [row for row in batch.interactions.values() if row["kind"] == "talk_read"]
    assert reads["at"] == received
    [rate] = batch.rows[next(m for m in batch.rows if m.__name__ == "TalkRate")]
    assert rate["at"] == received


@pytest.mark.integration
@pytest.mark.parametrize("batches", ["one batch", "two batches"])
def test_a_message_seen_twice_keeps_the_earlier_instant(sessions, batches):
    """Seen first as created 2 s later, then as created at AT: the message is dated AT, in
    whichever batches the two sightings come."""
    later = message("m", talk=10, contact=5, deal=7, at=AT.replace(second=2))
    earlier = message("m", talk=10, contact=5, deal=7)
    if batches == "one batch":
        write(sessions, later, earlier)
    else:
        write(sessions, later)
        write(sessions, earlier)
        write(sessions, later)  # and a third sighting does not move it back
    with sessions() as s:
        assert [at.astimezone(UTC) for at in s.scalars(select(Interaction.at))] == [AT]


@pytest.mark.integration
def test_a_message_arriving_after_a_linked_message_of_its_talk_joins_that_deal(sessions):
    """A chat known only by its messages (no talk hook): the message naming the deal came
    first, the unlinked one of the same talk later. It stayed unlinked for ever, while in the
    other order it joined the deal, so the FRT figures depended on delivery order."""
    write(sessions, message("linked", talk=14, contact=5, deal=600, at=AT.replace(minute=5)),
          message("other", talk=14, contact=5, deal=601, at=AT.replace(minute=9)))
    batch = IngestBatch(ACCOUNT)
    collect_webhook_events(batch, [message("late", talk=14, contact=5, deal=None)], AT)
    with sessions() as s:
        touched = batch.flush(s)
        s.commit()
    assert deals_of(sessions)["msg:late"] == 600  # the talk's earliest linked message's deal
    assert 600 in touched


@pytest.mark.integration
@pytest.mark.parametrize("first", [0, 1])
def test_two_values_of_one_instant_keep_the_larger_whichever_came_first(sessions, first):
    """Two bodies with the same updated_at and different values, in two batches or one: the
    stored value (field history, talk rating) must not depend on which came first."""
    from app.models import FieldValue, TalkRate

    values = [[{"value": "3", "enum_id": None}], [{"value": "9", "enum_id": None}]]
    rates = [3, 9]
    for i in (first, 1 - first):
        batch = IngestBatch(ACCOUNT)
        batch.observe(FieldValue, deal_id=1, field_id=7, values=values[i], at=AT, source="webhook")
        batch.observe(TalkRate, talk_id=5, rate=rates[i], at=AT)
        with sessions() as s:
            batch.flush(s)
            s.commit()
    both = IngestBatch(ACCOUNT)  # and the two in one batch
    for i in (1 - first, first):
        both.observe(FieldValue, deal_id=2, field_id=7, values=values[i], at=AT, source="webhook")
    with sessions() as s:
        both.flush(s)
        s.commit()
        stored = dict(s.execute(select(FieldValue.deal_id, FieldValue.values)).all())
        assert stored == {1: values[1], 2: values[1]}
        assert s.execute(select(TalkRate.rate)).scalars().all() == [9]


@pytest.mark.integration
@pytest.mark.parametrize("first", [0, 1])
def test_the_larger_value_is_the_same_under_a_language_collation(first):
    """Postgres compares text by the database's collation: under en-US "a" < "B", by code
    point (Python, SQLite) "a" > "B". Both values in one batch kept one (Python's choice), in
    two batches the other (the database's): the stored value depended on the batching."""
    from app.db import create_schema, make_engine, make_session_factory
    from app.models import FieldValue
    from tests.faultkit import create_database, drop_database

    url = create_database("amoscore_icu", options="TEMPLATE template0 LOCALE_PROVIDER icu "
                                                  "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
    engine = make_engine(url)
    try:
        create_schema(engine)
        sessions = make_session_factory(engine)
        values = [[{"value": "a", "enum_id": None}], [{"value": "B", "enum_id": None}]]
        for deal, batches in ((1, [[first], [1 - first]]), (2, [[first, 1 - first]])):
            for batch_of in batches:
                batch = IngestBatch(ACCOUNT)
                for i in batch_of:
                    batch.observe(FieldValue, deal_id=deal, field_id=7, values=values[i], at=AT,
                                  source="webhook")
                with sessions() as s:
                    batch.flush(s)
                    s.commit()
        with sessions() as s:
            stored = dict(s.execute(select(FieldValue.deal_id, FieldValue.values)).all())
        assert stored == {1: values[0], 2: values[0]}  # "a" (U+0061) > "B" (U+0042)
    finally:
        engine.dispose()
        drop_database(url)


@pytest.mark.integration
@pytest.mark.parametrize("api_first", [False, True])
def test_a_value_read_through_the_api_at_an_instant_stays_whatever_came_after(sessions,
                                                                            api_first):
    """Two edits within a second sent 9 and 3; the API read of that updated_at says 3, the
    state amoCRM kept. A webhook value of that instant never replaces it."""
    from app.models import FieldValue
    from jobs.api_records import store_api_lead

    def webhook() -> None:
        batch = IngestBatch(ACCOUNT)
        batch.observe(FieldValue, deal_id=1, field_id=7, values=[{"value": "9", "enum_id": None}],
                      at=AT, source="webhook")
        with sessions() as s:
            batch.flush(s)
            s.commit()

    def api() -> None:
        with sessions() as s:
            store_api_lead(s, ACCOUNT, 1, {7: [{"value": "3", "enum_id": None}]}, AT)
            s.commit()

    for step in ((api, webhook) if api_first else (webhook, api)):
        step()
    with sessions() as s:
        assert s.execute(select(FieldValue.values, FieldValue.source)).one() == (
            [{"value": "3", "enum_id": None}], "api")
