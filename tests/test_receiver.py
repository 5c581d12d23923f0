"""The receiver under hostile input, on the real Postgres and Redis: what is stored, with which
status and reason, and what HTTP answer amoCRM gets (never a 5xx for a body we could store)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.models import Deal, FieldValue, ResponsibleChange, StageChange, WebhookDelivery
from jobs.intake import dedupe_key
from tests.conftest import FIXTURES, SECRET, TEST_ENV, run_worker

ACME = 32427762  # the example account: fixtures are its deliveries

pytestmark = pytest.mark.integration
EXTRA = FIXTURES / "webhooks_extra"
URL = f"/webhooks/amocrm/{SECRET}"
FORM = "application/x-www-form-urlencoded"


def extra(name: str) -> bytes:
    return (EXTRA / f"{name}.txt").read_bytes().strip()


def post(client, body: bytes, secret: str = SECRET):  # type: ignore[no-untyped-def]
    return client.post(f"/webhooks/amocrm/{secret}", data=body, content_type=FORM)


def deliveries(runtime) -> list[WebhookDelivery]:  # type: ignore[no-untyped-def]
    with runtime.sessions() as s:
        return list(s.execute(select(WebhookDelivery).order_by(WebhookDelivery.id)).scalars())


def rows(runtime, model):  # type: ignore[no-untyped-def]
    with runtime.sessions() as s:
        return list(s.execute(select(model)).scalars())


def ts(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


# --- routing and account checks ----------------------------------------------------------------


def test_wrong_secret_is_404_and_nothing_stored(client, runtime):
    resp = post(client, extra("leads__status_multi"), secret="not-the-secret")
    assert resp.status_code == 404
    assert deliveries(runtime) == []


def test_a_wrong_secret_is_logged_once_a_minute_without_the_secret(client, runtime, caplog,
                                                                  monkeypatch):
    """A 404 loses the delivery (amoCRM retries it at most twice): the operator must see it."""
    import logging

    from app.web import webhooks

    monkeypatch.setattr(webhooks, "_UNKNOWN_SECRETS", webhooks.UnknownSecrets())
    with caplog.at_level(logging.WARNING, logger="amoscore.webhook"):
        for _ in range(3):
            assert post(client, extra("leads__status_multi"), secret="old-secret-1").status_code == 404
    lines = [r.getMessage() for r in caplog.records if "unknown_secret" in r.getMessage()]
    assert len(lines) == 1 and "posts=1" in lines[0] and "_PREVIOUS" in lines[0]
    assert "old-secret-1" not in caplog.text


def test_the_previous_secret_keeps_the_old_hook_url_working_while_it_is_changed(runtime):
    """Set the new secret, keep the old one in <variable>_PREVIOUS, restart, then edit the
    hook's URL in amoCRM: deliveries to either URL are stored, none gets 404 meanwhile."""
    from app.web import create_app

    new = "n3w-s3cr3t-hook-value"
    env = {**TEST_ENV, "AMOSCORE_WEBHOOK_SECRET": new, "AMOSCORE_WEBHOOK_SECRET_PREVIOUS": SECRET}
    client = create_app({"RUNTIME": runtime, "ENV": env}).test_client()
    assert post(client, extra("leads__status_multi"), secret=SECRET).status_code == 200
    assert post(client, extra("leads__update_newer"), secret=new).status_code == 200
    assert [d.account_id for d in deliveries(runtime)] == [ACME, ACME]
    done = create_app({"RUNTIME": runtime, "ENV": {**TEST_ENV,
                                                  "AMOSCORE_WEBHOOK_SECRET": new}}).test_client()
    assert post(done, extra("leads__status_multi"), secret=SECRET).status_code == 404


def test_foreign_account_id_is_403_and_a_rejected_row(client, runtime):
    body = extra("leads__status_multi").replace(b"account%5Bid%5D=32427762", b"account%5Bid%5D=999")
    assert b"999" in body
    resp = post(client, body)
    assert resp.status_code == 403
    [d] = deliveries(runtime)
    assert d.status == "rejected" and "999" in d.reason
    assert run_worker(runtime) == 0
    assert rows(runtime, Deal) == []  # a rejected body is never normalised


def test_subdomain_only_matching_is_stored_and_processed(client, runtime):
    body = extra("leads__status_subdomain_only")
    assert b"account%5Bid%5D" not in body
    assert post(client, body).status_code == 200
    assert run_worker(runtime) == 0
    [d] = deliveries(runtime)
    assert (d.status, d.account_id, d.reason) == ("processed", 32427762, None)
    [stage] = rows(runtime, StageChange)
    assert (stage.deal_id, stage.old_status_id, stage.status_id) == (23802130, 47888833, 47873533)


def test_subdomain_only_not_matching_is_rejected(client, runtime):
    body = extra("leads__status_subdomain_only").replace(b"=acme", b"=evilcorp")
    assert post(client, body).status_code == 403
    [d] = deliveries(runtime)
    assert d.status == "rejected" and "evilcorp" in d.reason


def test_oversized_body_is_413_and_nothing_stored(runtime):
    from app.web import create_app

    app = create_app({"RUNTIME": runtime, "ENV": TEST_ENV, "max_content_length": 2048})
    body = extra("leads__status_multi")
    body += b"&pad=" + b"x" * (2049 - len(body) - 5)
    assert len(body) > 2048
    resp = app.test_client().post(URL, data=body, content_type=FORM)
    assert resp.status_code == 413
    assert deliveries(runtime) == []
    # At the limit itself the body is taken.
    fits = extra("leads__status_multi")
    fits += b"&pad=" + b"x" * (2048 - len(fits) - 5)
    assert len(fits) == 2048
    assert app.test_client().post(URL, data=fits, content_type=FORM).status_code == 200


def test_non_utf8_body_is_200_and_unsupported(client, runtime):
    body = extra("leads__status_multi") + b"&leads%5Bstatus%5D%5B0%5D%5Bname%5D=\xff\xfe\xd0"
    resp = post(client, body)
    assert resp.status_code == 200
    [d] = deliveries(runtime)
    assert d.status == "unsupported" and "UTF-8" in d.reason
    assert d.dedupe_key == dedupe_key(body, ACME)  # the raw bytes, not the lossy text, are the key


def test_ignored_root_is_processed_with_reason(client, runtime):
    assert post(client, extra("customers__add")).status_code == 200
    assert run_worker(runtime) == 0
    [d] = deliveries(runtime)
    assert d.status == "processed"
    assert d.reason == "ignored: customers.add"


def test_unknown_root_is_unsupported_naming_it(client, runtime):
    assert post(client, extra("widgets__install")).status_code == 200
    assert run_worker(runtime) == 0
    [d] = deliveries(runtime)
    assert d.status == "unsupported" and "widgets.install" in d.reason


def test_unknown_root_without_account_is_unsupported_at_once(client, runtime):
    assert post(client, b"widgets%5Binstall%5D%5B0%5D%5Bid%5D=1").status_code == 200
    [d] = deliveries(runtime)
    # Without account[id]/[subdomain] the receiver cannot even attribute it: no worker needed.
    assert d.status == "unsupported" and "account" in d.reason


# --- duplicates and ordering -------------------------------------------------------------------


def test_duplicate_delivery_is_one_row_processed_once(client, runtime):
    body = extra("leads__update_newer")
    assert post(client, body).status_code == 200
    assert post(client, body).status_code == 200
    assert run_worker(runtime) == 0
    assert post(client, body).status_code == 200  # a retry after processing changes nothing
    assert run_worker(runtime) == 0
    [d] = deliveries(runtime)
    assert (d.status, d.attempts) == ("processed", 1)
    assert len(rows(runtime, Deal)) == 1
    assert len(rows(runtime, StageChange)) == 1


def test_out_of_order_updates_keep_the_newer_state(client, runtime):
    assert post(client, extra("leads__update_newer")).status_code == 200
    assert run_worker(runtime) == 0
    assert post(client, extra("leads__update_older")).status_code == 200
    assert run_worker(runtime) == 0
    [deal] = rows(runtime, Deal)
    assert (deal.price, deal.status_id, deal.updated_at) == (210000, 76789231, ts(1748310000))
    stages = sorted((s.at, s.status_id) for s in rows(runtime, StageChange))
    assert stages == [(ts(1748305000), 76789230), (ts(1748310000), 76789231)]
    assert {d.status for d in deliveries(runtime)} == {"processed"}


# --- multi-entity and Cyrillic bodies -------------------------------------------------------


def test_two_leads_in_one_status_body(client, runtime):
    assert post(client, extra("leads__status_multi")).status_code == 200
    assert run_worker(runtime) == 0
    deals = {d.id: d for d in rows(runtime, Deal)}
    assert set(deals) == {32966301, 32966302}
    assert (deals[32966301].name, deals[32966301].status_id, deals[32966301].price) == (
        "Откатные ворота, Петров", 76789231, 95000)
    assert (deals[32966302].name, deals[32966302].status_id, deals[32966302].price) == (
        "Шлагбаум «Ёлка», Сидорова", 142, 240000)
    stages = sorted((s.deal_id, s.old_status_id, s.status_id, s.at) for s in rows(runtime, StageChange))
    assert stages == [(32966301, 76789230, 76789231, ts(1748300000)),
                      (32966302, 76789231, 142, ts(1748300060))]


def test_leads_and_contacts_in_one_body(client, runtime):
    assert post(client, extra("leads_contacts__update_mixed")).status_code == 200
    assert run_worker(runtime) == 0
    [d] = deliveries(runtime)
    assert (d.status, d.reason) == ("processed", "ignored: contacts.update")
    [deal] = rows(runtime, Deal)
    assert (deal.id, deal.name, deal.price) == (32966303, "Распашные ворота, Кузнецов", 132000)
    [resp] = rows(runtime, ResponsibleChange)
    assert resp.responsible_user_id == 10000698
    assert rows(runtime, FieldValue) == []  # no custom_fields sent: nothing observed


# --- hypothesis: random bodies never get a 5xx ------------------------------------------------

VALID = sorted((FIXTURES / "webhooks").glob("*.txt")) + sorted(EXTRA.glob("*.txt"))
VALID_BODIES = [p.read_bytes().strip() for p in VALID]
# Bodies that carry this hook's account id and parse into handled events.
PROCESSABLE = [b for p, b in zip(VALID, VALID_BODIES, strict=True)
               if p.stem not in ("customers__add", "widgets__install")]

_key_part = st.one_of(
    st.sampled_from(["leads", "contacts", "talk", "message", "task", "account", "widgets",
                     "add", "update", "status", "delete", "note", "0", "1", "id", "status_id",
                     "custom_fields", "values", "enum", "updated_at", "subdomain"]),
    st.text(min_size=0, max_size=6),
)
_bracket_key = st.builds(
    lambda head, parts, style: head + "".join(
        f"[{p}]" if style == 0 else (f"%5B{p}%5D" if style == 1 else f"[{p}") for p in parts),
    _key_part, st.lists(_key_part, max_size=5), st.integers(0, 2))
_value = st.one_of(st.integers(-2**70, 2**70).map(str), st.text(max_size=12),
                   st.sampled_from(["", "32427762", "acme", "142", "１２", "²", "9" * 30]))
_pairs_body = st.lists(st.tuples(_bracket_key, _value), max_size=8).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", errors="surrogatepass"))
_truncated = st.builds(lambda b, f: b[: int(len(b) * f)], st.sampled_from(VALID_BODIES),
                       st.floats(0, 1))
_junk_appended = st.builds(lambda b, j: b + j, st.sampled_from(VALID_BODIES),
                           st.one_of(st.binary(max_size=40),
                                     _pairs_body.map(lambda p: b"&" + p)))
_account = st.one_of(
    st.sampled_from([b"", b"&account%5Bid%5D=32427762", b"&account%5Bsubdomain%5D=acme"]),
    st.builds(lambda k, v: b"&account%5B" + k + b"%5D=" + quote(v, errors="surrogatepass").encode(),
              st.sampled_from([b"id", b"subdomain"]), _value))


def _mutate(body: bytes, index: int, value: str) -> bytes:
    """A real fixture with one value replaced (ids out of range, words for numbers, …)."""
    pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    key, _ = pairs[index % len(pairs)]
    pairs[index % len(pairs)] = (key, value)
    return urlencode(pairs, errors="surrogatepass").encode("ascii")


_mutated = st.builds(_mutate, st.sampled_from(VALID_BODIES), st.integers(0, 60), _value)
BODIES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda b, a: b + a, _pairs_body, _account),
    _truncated,
    _junk_appended,
    _mutated,
    st.sampled_from(VALID_BODIES),
)


def test_random_bodies_never_5xx(client, runtime):
    seen: dict[str, int] = {}

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(BODIES)
    def post_one(body: bytes) -> None:
        resp = post(client, body)
        assert resp.status_code in (200, 403, 413), (resp.status_code, body)
        seen[dedupe_key(body, ACME)] = resp.status_code

    post_one()
    for body in VALID_BODIES:  # every valid fixture is posted at least once, whatever was drawn
        resp = post(client, body)
        assert resp.status_code == 200
        seen[dedupe_key(body, ACME)] = 200
    failed = run_worker(runtime)

    with runtime.sessions() as s:
        got = {d.dedupe_key: d for d in s.execute(select(WebhookDelivery)).scalars()}
        total = s.execute(select(func.count()).select_from(WebhookDelivery)).scalar_one()
    # Everything answered was stored (404 is impossible here: the secret is right).
    assert set(seen) == set(got) and total == len(got)
    for key, delivery in got.items():
        if delivery.status in ("rejected", "unsupported"):
            assert delivery.reason, delivery.body
        if delivery.status == "rejected":
            assert seen[key] == 403
    for body in PROCESSABLE:
        d = got[dedupe_key(body, ACME)]
        assert d.status == "processed", (d.status, d.reason, body[:80])
    stuck = [d for d in got.values() if d.status in ("stored", "queued")]
    assert failed == 0 and stuck == [], [(d.body[:80], d.status) for d in stuck[:5]]


# --- the receiver's hot path, written out for the driver -----------------------------------------


def test_receive_sql_names_every_column_the_model_fills_at_arrival():
    import re

    from jobs.intake import RECEIVE_SQL_PG

    columns = re.search(r"\(([^)]*)\) VALUES", RECEIVE_SQL_PG).group(1)  # type: ignore[union-attr]
    written = {c.strip() for c in columns.split(",")}
    model = set(WebhookDelivery.__table__.columns.keys())
    # id comes from the sequence; processed_at only when a drain has handled the row.
    assert written == model - {"id", "processed_at"}


def test_driver_insert_stores_what_the_orm_insert_stores(runtime):
    """receive_delivery's written-out statement and store_delivery's built one give the same
    row (bar id and dedupe_key, which differ with the body), and a duplicate gives None."""
    from jobs.intake import receive_delivery, store_delivery

    at = datetime(2026, 3, 2, 6, 0, 5, 123456, tzinfo=UTC)
    first = receive_delivery(runtime.engine, account_id=ACME, body=b"a=\xd0\x96", received_at=at,
                             status="queued", reason=None)
    assert first is not None
    assert receive_delivery(runtime.engine, account_id=ACME, body=b"a=\xd0\x96", received_at=at,
                            status="queued", reason=None) is None
    with runtime.sessions() as s:
        second = store_delivery(s, account_id=ACME, body=b"b=\xd0\x96", received_at=at,
                                status="queued")
        s.commit()
    by_id = {d.id: d for d in deliveries(runtime)}
    assert len(by_id) == 2

    def shape(d: WebhookDelivery) -> dict:
        return {k: v for k, v in vars(d).items()
                if not k.startswith("_") and k not in ("id", "dedupe_key", "body")}

    assert shape(by_id[first]) == shape(by_id[second])
    assert by_id[first].received_at == at and by_id[first].queued_at == at
    assert by_id[first].body == "a=Ж" and by_id[first].dedupe_key == dedupe_key(b"a=\xd0\x96", ACME)


def test_drain_claim_is_taken_once_until_released(runtime, redis_conn):
    queue = runtime.queue
    assert queue.claim_drain(ACME) is True
    assert queue.claim_drain(ACME) is False
    assert 0 < redis_conn.ttl(f"amoscore:drain:{ACME}") <= 5
    queue.release_drain(ACME)
    assert queue.claim_drain(ACME) is True


def test_drain_claim_against_a_dead_redis_raises_enqueue_failed():
    from jobs.queues import EnqueueFailed, RQJobQueue, receiver_redis
    from tests.faultkit import free_port

    queue = RQJobQueue(receiver_redis(f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(EnqueueFailed):
        queue.claim_drain(ACME)


def test_drain_claim_survives_redis_dropping_the_idle_connection(runtime, redis_conn):
    """Redis (its timeout setting, a failover) closes the receiver's idle connection: the next
    claim opens a new one instead of failing the enqueue."""
    queue = runtime.queue
    assert queue.claim_drain(ACME) is True
    queue.release_drain(ACME)
    mine = queue._claim_connection()  # this thread's connection
    mine.send_command("CLIENT", "ID")
    client_id = mine.read_response()
    # Only this connection: the machine's Redis may serve other clients.
    assert redis_conn.client_kill_filter(_id=client_id) == 1
    assert queue.claim_drain(ACME) is True
    assert queue._claim_connection() is mine  # the same object, reconnected


def test_the_web_process_loads_its_own_spool_once_the_database_takes_bodies_again(
        runtime, tmp_path):
    """The web host's spool is on its own disk (a web dyno): the worker's sweeper never sees
    it. Bodies spooled while the database was away waited there for ever (and went with the
    host). The next body the database takes starts loading the spool from the web process."""
    from dataclasses import replace

    from app.web import create_app
    from jobs import spool

    web_runtime = replace(runtime, settings=replace(runtime.settings,
                                                    spool_dir=tmp_path / "web-disk"))
    lead = (FIXTURES / "webhooks" / "leads__add.txt").read_text().strip()
    spooled = lead.replace("32966269", "32966280")
    spool.write(web_runtime.settings.spool_dir, account_id=ACME, body=spooled,
                received_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC), status="stored", reason=None)
    app = create_app({"RUNTIME": web_runtime, "ENV": TEST_ENV})
    loader = app.extensions["amoscore.spool_loader"]
    started = []
    poke = loader.poke
    loader.poke = lambda: started.append(poke()) or started[-1]  # type: ignore[method-assign]
    assert post(app.test_client(), lead.encode()).status_code == 200
    assert started[0] is not None
    started[0].join(timeout=10)
    stored = {d.body: (d.status, d.received_at) for d in deliveries(runtime)}
    assert stored == {lead: ("queued", stored[lead][1]),
                      spooled: ("stored", datetime(2026, 3, 2, 9, 0, tzinfo=UTC))}
    assert list(web_runtime.settings.spool_dir.glob("*.json")) == []
    # Nothing spooled now: the next body looks (the wait between looks cut short) and starts
    # no loader.
    loader._next_check = 0.0
    assert post(app.test_client(), lead.replace("32966269", "32966281").encode()
                ).status_code == 200
    assert started[1] is None


def test_an_unreadable_spool_folder_does_not_fail_a_stored_webhook(runtime, tmp_path):
    """The loader's look at the spool used to raise on anything but a missing folder: the
    body, already stored, was answered 500 (amoCRM counts it a failure)."""
    from dataclasses import replace

    from app.web import create_app

    not_a_folder = tmp_path / "spool"
    not_a_folder.write_text("a file where the folder should be")
    web_runtime = replace(runtime, settings=replace(runtime.settings, spool_dir=not_a_folder))
    app = create_app({"RUNTIME": web_runtime, "ENV": TEST_ENV})
    body = (FIXTURES / "webhooks" / "leads__add.txt").read_bytes().strip()
    assert post(app.test_client(), body).status_code == 200
    assert [d.status for d in deliveries(runtime)] == ["queued"]


def test_an_error_in_the_receiver_logs_no_secret(runtime, caplog, monkeypatch):
    """Flask logs "Exception on <path>" for an unexpected error; the path holds the secret."""
    from app.web import create_app, webhooks

    def broken(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr(webhooks, "receive_delivery", broken)
    app = create_app({"RUNTIME": runtime, "ENV": TEST_ENV})
    with caplog.at_level("ERROR"):
        assert post(app.test_client(), b"leads%5Badd%5D%5B0%5D%5Bid%5D=1").status_code == 500
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Exception on /webhooks/amocrm/*** [POST]" in logged
    assert SECRET not in logged and SECRET not in caplog.text


def test_two_loaders_racing_on_one_spool_store_each_body_once(runtime, monkeypatch):
    """The web process and the sweeper may load one folder at once: each body is stored once
    and neither fails on the file the other removed."""
    from jobs import spool
    from jobs.intake import load_spool

    lead = (FIXTURES / "webhooks" / "leads__add.txt").read_text().strip()
    bodies = [lead.replace("32966269", str(32966290 + i)) for i in range(3)]
    for body in bodies:
        spool.write(runtime.settings.spool_dir, account_id=ACME, body=body,
                    received_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC), status="stored",
                    reason=None)
    real_pending = spool.pending
    other: list[int] = []

    def racing(spool_dir):  # type: ignore[no-untyped-def]
        files = real_pending(spool_dir)
        oldest = next(files)  # this loader has read the oldest file …
        monkeypatch.setattr(spool, "pending", real_pending)
        other.append(load_spool(runtime))  # … when the other stores and removes them all
        yield oldest  # this one goes on: its store is a duplicate, its file is gone
        yield from files  # and it finds the rest gone

    monkeypatch.setattr(spool, "pending", racing)
    load_spool(runtime)  # no error
    assert other == [3]
    assert sorted(d.body for d in deliveries(runtime)) == sorted(bodies)
    assert list(runtime.settings.spool_dir.glob("*.json")) == []
