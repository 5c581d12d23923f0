"""The drain job: one delivery that cannot be processed never blocks the others."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Deal, WebhookDelivery
from jobs import ingest
from jobs.intake import drain_with, store_delivery
from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration
ACCOUNT = 32427762


def test_a_poison_delivery_is_set_aside_and_the_batch_goes_through(runtime, monkeypatch):
    lead = (FIXTURES / "webhooks" / "leads__add.txt").read_text().strip()
    bodies = [lead.replace("32966269", str(32966269 + i)) for i in range(5)]
    now = runtime.clock()
    with runtime.sessions() as s:
        for body in bodies:
            store_delivery(s, account_id=ACCOUNT, body=body, received_at=now)
        s.commit()
    real = ingest.EVENT_HANDLERS["leads.add"]

    def explode_on_the_third(batch, d, at):  # type: ignore[no-untyped-def]
        if d["id"] == 32966271:
            raise RuntimeError("a bug the tests did not foresee")
        return real(batch, d, at)

    monkeypatch.setitem(ingest.EVENT_HANDLERS, "leads.add", explode_on_the_third)
    assert drain_with(runtime, ACCOUNT) == 5
    with runtime.sessions() as s:
        rows = {d.body.count("32966271"): d for d in s.execute(select(WebhookDelivery)).scalars()}
        deals = sorted(d.id for d in s.execute(select(Deal)).scalars())
    bad = rows[1]
    assert bad.status == "unsupported"
    assert bad.reason == "processing failed: RuntimeError: a bug the tests did not foresee"
    assert deals == [32966269, 32966270, 32966272, 32966273]
    with runtime.sessions() as s:
        statuses = sorted(d.status for d in s.execute(select(WebhookDelivery)).scalars())
    assert statuses == ["processed"] * 4 + ["unsupported"]
