"""The replay fake of amoCRM, exercised through the real client."""

from __future__ import annotations

import requests

from integrations.amocrm.fake import mount_fake
from tests.test_client_support import BASE, FakeTime, make_client


def _event(i: int, at: int) -> dict:
    return {"id": f"ev{i:04d}", "type": "outgoing_chat_message", "entity_type": "lead",
            "entity_id": 32966269, "created_by": 10000698, "created_at": at,
            "value_after": [{"message": {"id": f"m{i}"}}], "account_id": 32427762}


def _client_with_fake(t: FakeTime):  # type: ignore[no-untyped-def]
    session = requests.Session()
    fake = mount_fake(session, BASE, t.clock)
    return make_client(t, session=session), fake


def test_events_paged_by_100_visible_by_clock_and_filtered() -> None:
    t = FakeTime(start=2000.0)
    client, fake = _client_with_fake(t)
    for i in range(250):
        fake.add_event(_event(i, 1000 + i), visible_at=1500.0)
    fake.add_event(_event(999, 1100), visible_at=5000.0)  # indexed late: not visible yet
    pages = list(client.list_events())
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [e["id"] for p in pages for e in p] == [f"ev{i:04d}" for i in range(250)]
    assert fake.counts["GET"] == 3
    filtered = [e["id"] for p in client.list_events(created_at_from=1240) for e in p]
    assert filtered == [f"ev{i:04d}" for i in range(240, 250)]
    t.now = 6000.0
    assert "ev0999" in [e["id"] for p in client.list_events(created_at_from=1100) for e in p]


def test_events_filtered_by_type_on_every_page() -> None:
    """filter[type] (a comma list) holds on the next pages too: their links repeat it."""
    t = FakeTime(start=2000.0)
    client, fake = _client_with_fake(t)
    for i in range(150):
        fake.add_event(_event(i, 1000 + i), visible_at=1500.0)
        fake.add_event({**_event(500 + i, 1000 + i), "type": "custom_field_value_changed",
                        "value_after": [{"custom_field_value": {"field_id": 1}}]}, visible_at=1500.0)
    asked = ["outgoing_chat_message", "lead_status_changed"]
    pages = list(client.list_events(types=asked))
    assert [len(p) for p in pages] == [100, 50]
    assert {e["type"] for p in pages for e in p} == {"outgoing_chat_message"}
    assert len([e for p in client.list_events() for e in p]) == 300  # no filter: every type


def test_no_events_is_204_and_an_empty_iteration() -> None:
    t = FakeTime()
    client, fake = _client_with_fake(t)
    fake.add_event(_event(1, 100), visible_at=t.now + 60)
    assert list(client.list_events()) == []
    assert fake.counts["GET"] == 1


def test_leads_served_from_the_callers_dict_and_writes_recorded() -> None:
    t = FakeTime()
    client, fake = _client_with_fake(t)
    assert client.get_lead(5) is None
    fake.set_lead(5, {"id": 5, "pipeline_id": 9621010, "status_id": 142})
    lead = client.get_lead(5)
    assert lead is not None and lead.status_id == 142
    result = client.patch_leads([{"id": 5, "custom_fields_values": [], "request_id": "5"}])
    assert result.results["5"]["id"] == 5
    tasks = client.post_tasks([{"text": "t", "entity_id": 5, "entity_type": "leads",
                                "complete_till": 1, "request_id": "a"}])
    assert tasks.results["a"]["id"] == 1
    assert fake.counts == {"GET": 2, "PATCH": 1, "POST": 1}
    assert fake.patched[0]["id"] == 5 and fake.posted_tasks[0]["text"] == "t"


def test_a_replay_done_with_its_stream_lets_the_fake_forget_it() -> None:
    """The stream's events and leads are dropped before the report is built (a month of them
    held the replay's peak memory up): after that the fake knows none of them."""
    t = FakeTime(start=2000.0)
    client, fake = _client_with_fake(t)
    fake.add_event(_event(1, 1000), visible_at=1500.0)
    fake.set_lead(32966269, {"id": 32966269, "name": "Ворота", "custom_fields_values": None})
    assert list(client.list_events()) and client.get_lead(32966269) is not None
    fake.forget_stream()
    assert list(client.list_events()) == []
    assert client.get_lead(32966269) is None
