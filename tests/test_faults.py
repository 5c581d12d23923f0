"""Faults with real processes: Redis killed or frozen under load, the database cut away, a worker
SIGKILLed mid-batch. Nothing acknowledged may be lost, nothing may be applied twice.

Each test starts its own redis-server / TCP proxy / worker processes and kills them by pid in a
``finally``; the machine's Postgres and Redis are never stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from app.db import insert_ignore, make_engine, make_session_factory
from app.models import Interaction, StageChange, WebhookDelivery
from config.settings import Settings
from jobs.intake import dedupe_key, schedule_drain, store_delivery, sweep_with
from jobs.queues import JOB_TIMEOUT, RQJobQueue, receiver_redis, worker_redis
from jobs.runtime import Runtime, set_runtime
from tests.conftest import SECRET, TEST_ENV, run_worker
from tests.faultkit import (
    ACCOUNT_ID,
    RedisServer,
    TcpProxy,
    distinct_bodies,
    kill_tree,
    serve_app,
    start_worker,
    worker_env,
)

pytestmark = [pytest.mark.fault, pytest.mark.integration]
ANSWER_BUDGET = 2.0  # seconds amoCRM waits before it counts a delivery as failed


class ShiftedClock:
    """Wall clock plus an offset the test moves (the sweeper's grace periods, without waiting),
    or a pinned instant (a check that must not depend on how long the posting took)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.pinned: datetime | None = None

    def __call__(self) -> datetime:
        return (self.pinned or datetime.now(UTC)) + self.offset


def make_runtime(engine, redis_url: str, account, tmp_path: Path) -> Runtime:  # type: ignore[no-untyped-def]
    settings = Settings(database_url=engine.url.render_as_string(hide_password=False),
                        redis_url=redis_url, config_path="", var_dir=tmp_path,
                        spool_dir=tmp_path / "spool")
    return Runtime(settings=settings, accounts={account.account_id: account}, engine=engine,
                   sessions=make_session_factory(engine), queue=RQJobQueue(receiver_redis(redis_url)),
                   clock=ShiftedClock())


@pytest.fixture()
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.kill()


def post_timed(http: requests.Session, base: str, body: bytes) -> tuple[int, float]:
    started = time.monotonic()
    resp = http.post(f"{base}/webhooks/amocrm/{SECRET}", data=body, timeout=10,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    return resp.status_code, time.monotonic() - started


def statuses(rt: Runtime) -> dict[str, int]:
    with rt.sessions() as s:
        return dict(s.execute(select(WebhookDelivery.status, func.count())
                              .group_by(WebhookDelivery.status)).all())


def assert_ledger_matches(rt: Runtime, items: list[tuple[str, int, int, bytes]]) -> None:
    """Exactly one StageChange per stage body and one Interaction per message body: what each
    body must leave by construction, so a redone delivery shows up as a duplicate here."""
    want_stages = sorted((deal, datetime.fromtimestamp(at, UTC)) for kind, deal, at, _ in items
                         if kind == "stage")
    want_msgs = sorted(f"msg:m-{deal - 40_000_000:08d}" for kind, deal, _, _ in items
                       if kind == "message")
    with rt.sessions() as s:
        stages = sorted(tuple(r) for r in s.execute(select(StageChange.deal_id, StageChange.at)))
        msgs = sorted(s.execute(select(Interaction.dedupe)
                                .where(Interaction.kind == "incoming_chat_message")).scalars())
    assert stages == want_stages
    assert msgs == want_msgs


# --- 1. Redis killed / frozen while amoCRM keeps posting ---------------------------------------


def test_redis_killed_then_frozen_while_posting(pg_engine, private_redis, example_account,
                                                tmp_path):
    from app.web import create_app

    rt = make_runtime(pg_engine, private_redis.url, example_account, tmp_path)
    set_runtime(rt)
    items = distinct_bodies(30)
    before, killed, frozen = items[:3], items[3:23], items[23:]
    http = requests.Session()
    try:
        with serve_app(create_app({"RUNTIME": rt, "ENV": TEST_ENV})) as base:
            for *_, body in before:
                assert post_timed(http, base, body)[0] == 200
            assert statuses(rt) == {"queued": 3}

            private_redis.kill()
            answers = [post_timed(http, base, body) for *_, body in killed]
            assert [code for code, _ in answers] == [200] * 20
            assert max(t for _, t in answers) < ANSWER_BUDGET, answers
            assert statuses(rt) == {"queued": 3, "stored": 20}

            private_redis.start()  # same port, empty: the 3 queued rows' job died with it
            private_redis.freeze()
            try:
                answers = [post_timed(http, base, body) for *_, body in frozen]
            finally:
                private_redis.thaw()
            assert [code for code, _ in answers] == [200] * len(frozen)
            assert max(t for _, t in answers) < ANSWER_BUDGET, answers
            assert statuses(rt) == {"queued": 3, "stored": 27}

        # Nothing runs before the 5 s grace; after it the sweeper enqueues one drain, and a
        # drain takes the account's stored *and* queued rows (the 3 whose job Redis lost too).
        # Pinned: on a loaded machine the 27 posts alone can outlast the grace.
        with rt.sessions() as s:
            first_stored = s.execute(select(func.min(WebhookDelivery.received_at)).where(
                WebhookDelivery.status == "stored")).scalar_one()
        rt.clock.pinned = first_stored + timedelta(seconds=1)  # type: ignore[attr-defined]
        assert sweep_with(rt)["drains_enqueued"] == 0
        rt.clock.pinned = None  # type: ignore[attr-defined]
        rt.clock.offset = timedelta(seconds=6)  # type: ignore[attr-defined]
        assert sweep_with(rt)["drains_enqueued"] == 1
        assert run_worker(rt) == 0
        assert statuses(rt) == {"processed": 30}
        assert_ledger_matches(rt, items)
    finally:
        http.close()
        set_runtime(None)


def test_a_403_stop_outlives_a_redis_restart(pg_engine, pg_url, private_redis, example_account,
                                            tmp_path, monkeypatch):
    """amoCRM answers 403: the account is stopped. Redis is killed and started again, empty
    (no persistence): the stop lived only there, so the next sync called amoCRM again, which
    makes an IP block worse. The database keeps it until `amoscore amocrm resume`."""
    import re

    import responses
    from click.testing import CliRunner

    from app.cli import main
    from jobs.sync import sync_account

    monkeypatch.setenv(example_account.account.auth.long_lived_token_env, "long-lived")
    rt = make_runtime(pg_engine, private_redis.url, example_account, tmp_path)
    set_runtime(rt)
    events = re.compile(r"https://acme\.amocrm\.ru/api/v4/events.*")
    try:
        with responses.RequestsMock() as rsps:
            rsps.get(events, status=403, json={"title": "Forbidden", "status": 403})
            assert sync_account(ACCOUNT_ID) == {"stopped": 1}
            assert len(rsps.calls) == 1
        private_redis.kill()
        private_redis.start()  # same port, nothing kept
        with responses.RequestsMock() as rsps:  # no route: any call to amoCRM would fail
            assert sync_account(ACCOUNT_ID) == {"stopped": 1}
            assert len(rsps.calls) == 0
        resumed = CliRunner().invoke(main, ["amocrm", "resume"], env={
            "AMOSCORE_CONFIG": str(Path(__file__).parent.parent / "config" / "account.example.yaml"),
            "REDIS_URL": private_redis.url, "DATABASE_URL": pg_url})
        assert resumed.exit_code == 0, resumed.output
        assert "resumed (it was stopped: HTTP 403 on GET /api/v4/events" in resumed.output
        with responses.RequestsMock() as rsps:
            rsps.get(events, status=204)
            result = sync_account(ACCOUNT_ID)
            assert "stopped" not in result and len(rsps.calls) >= 1
    finally:
        set_runtime(None)


# --- 2. the database unreachable: bodies go to the spool ---------------------------------------


@pytest.fixture()
def behind_proxy(pg_url, redis_url, redis_conn, example_account, tmp_path):  # type: ignore[no-untyped-def]
    """(proxy, runtime): the runtime reaches the run's database through a TCP proxy the test
    can cut or freeze; the machine's own Postgres is never touched."""
    target = make_url(pg_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()
    engine = make_engine(target.set(port=proxy.port).render_as_string(hide_password=False))
    rt = make_runtime(engine, redis_url, example_account, tmp_path)
    set_runtime(rt)
    try:
        yield proxy, rt
    finally:
        set_runtime(None)
        proxy.cut()
        engine.dispose()


def test_database_cut_spools_and_sweeper_loads(pg_engine, behind_proxy):
    from app.web import create_app

    proxy, rt = behind_proxy
    items = distinct_bodies(12, start=100)
    http = requests.Session()
    try:
        with serve_app(create_app({"RUNTIME": rt, "ENV": TEST_ENV})) as base:
            assert post_timed(http, base, items[0][3])[0] == 200  # warm pool, then cut it
            proxy.cut()
            answers = [post_timed(http, base, body) for *_, body in items[1:]]
            assert [code for code, _ in answers] == [200] * 11
            assert max(t for _, t in answers) < ANSWER_BUDGET, answers
        spooled = sorted(rt.settings.spool_dir.glob("*.json"))
        assert len(spooled) == 11
        bodies = {json.loads(p.read_text(encoding="utf-8"))["body"] for p in spooled}
        assert bodies == {body.decode() for *_, body in items[1:]}
        assert not list(rt.settings.spool_dir.glob(".*.tmp"))  # every write completed

        # While the database is still away the sweep job fails (RQ retries it) and the spool
        # stays intact: no file is removed before its row is committed.
        with pytest.raises(OperationalError):
            sweep_with(rt)
        assert len(list(rt.settings.spool_dir.glob("*.json"))) == 11

        proxy.restore()
        # The connection the cut broke was dropped, not pooled again: the next body is stored,
        # and the web process starts loading its spool by itself.
        later = distinct_bodies(1, start=200)
        app = create_app({"RUNTIME": rt, "ENV": TEST_ENV})
        loaders: list = []
        poke = app.extensions["amoscore.spool_loader"].poke
        app.extensions["amoscore.spool_loader"].poke = lambda: loaders.append(poke())
        with serve_app(app) as base:
            assert post_timed(http, base, later[0][3])[0] == 200
        assert loaders and loaders[0] is not None
        loaders[0].join(timeout=30)
        assert list(rt.settings.spool_dir.glob("*.json")) == []
        items += later
        rt.clock.offset = timedelta(seconds=6)  # type: ignore[attr-defined]
        assert sweep_with(rt) == {"spool_loaded": 0, "drains_enqueued": 1}
        assert run_worker(rt) == 0
        assert statuses(rt) == {"processed": 13}
        assert_ledger_matches(rt, items)
        with rt.sessions() as s:
            stored = set(s.execute(select(WebhookDelivery.body)).scalars())
        assert stored == {body.decode() for *_, body in items}
    finally:
        http.close()


def test_database_frozen_answers_in_time_and_spools(pg_engine, behind_proxy, monkeypatch):
    """A Postgres that keeps the connection but stops answering: the receiver stops waiting
    after STORE_SECONDS and spools; for PAUSE_SECONDS after that the next bodies are spooled
    at once; when the database answers again bodies are stored, and every spooled one loads
    (here by the sweeper: the web process's own loader is kept off), so every body is stored
    exactly once."""
    from app.pg_insert import PAUSE_SECONDS, STORE_SECONDS
    from app.web import create_app, webhooks

    monkeypatch.setattr(webhooks, "SPOOL_CHECK_SECONDS", 3600.0)  # looks once, at the start

    proxy, rt = behind_proxy
    items = distinct_bodies(6, start=300)
    later = distinct_bodies(1, start=310)
    http = requests.Session()
    try:
        app = create_app({"RUNTIME": rt, "ENV": TEST_ENV})
        with serve_app(app) as base:
            assert post_timed(http, base, items[0][3])[0] == 200  # stored, then freeze
            proxy.freeze()
            try:
                answers = [post_timed(http, base, body) for *_, body in items[1:]]
                gave_up = time.monotonic()
                assert [code for code, _ in answers] == [200] * 5
                assert max(t for _, t in answers) < ANSWER_BUDGET, answers
                assert answers[0][1] >= STORE_SECONDS * 0.9, answers  # waited, then gave up
                assert max(t for _, t in answers[1:]) < 0.5, answers  # paused: spooled at once
            finally:
                proxy.thaw()
            time.sleep(max(0.0, gave_up + PAUSE_SECONDS - time.monotonic()))
            assert post_timed(http, base, later[0][3])[0] == 200  # stored again, not spooled
        assert len(list(rt.settings.spool_dir.glob("*.json"))) == 5

        rt.clock.offset = timedelta(seconds=6)  # type: ignore[attr-defined]
        assert sweep_with(rt) == {"spool_loaded": 5, "drains_enqueued": 1}
        assert run_worker(rt) == 0
        assert statuses(rt) == {"processed": 7}
        assert_ledger_matches(rt, items + later)
    finally:
        http.close()


def test_the_web_loader_gives_up_on_a_frozen_database_and_loads_later(pg_engine, behind_proxy):
    """The web process's spool loader meets a database that stops answering: it gives up
    within the receiver's deadline instead of hanging (which would keep its lock, and this
    process would never load its spool again), keeps the files, and loads them later."""
    from app.pg_insert import PAUSE_SECONDS, STORE_SECONDS
    from app.web.webhooks import SpoolLoader
    from jobs import spool

    proxy, rt = behind_proxy
    items = distinct_bodies(3, start=400)
    for *_, body in items:
        spool.write(rt.settings.spool_dir, account_id=ACCOUNT_ID, body=body.decode(),
                    received_at=datetime.now(UTC), status="stored", reason=None)
    loader = SpoolLoader(rt)
    with rt.sessions() as s:  # a pooled connection, as a running web process has
        s.execute(select(func.count()).select_from(WebhookDelivery))
    proxy.freeze()
    try:
        started = time.monotonic()
        thread = loader.poke()
        assert thread is not None
        thread.join(timeout=STORE_SECONDS * 4)
        assert not thread.is_alive()
        assert time.monotonic() - started < STORE_SECONDS * 3
    finally:
        proxy.thaw()
    assert len(list(rt.settings.spool_dir.glob("*.json"))) == 3
    loader._next_check = 0.0
    time.sleep(PAUSE_SECONDS + 0.1)  # the receiver's pause after a timeout, then it tries again
    thread = loader.poke()
    assert thread is not None  # the lock was released
    thread.join(timeout=10)
    assert list(rt.settings.spool_dir.glob("*.json")) == []
    with rt.sessions() as s:
        stored = set(s.execute(select(WebhookDelivery.body)).scalars())
    assert stored == {body.decode() for *_, body in items}


# --- 3. a worker SIGKILLed mid-batch -------------------------------------------------------------


def _processed(rt: Runtime) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(WebhookDelivery)
                         .where(WebhookDelivery.status == "processed")).scalar_one()


def test_worker_sigkilled_mid_batch(pg_engine, pg_url, private_redis, example_account, tmp_path):
    n = 2000
    rt = make_runtime(pg_engine, private_redis.url, example_account, tmp_path)
    items = distinct_bodies(n, start=1000)
    now = rt.clock()
    with rt.sessions() as s:  # what the receiver leaves: stored, enqueued, marked queued
        insert_ignore(s, WebhookDelivery, [
            {"account_id": ACCOUNT_ID, "dedupe_key": dedupe_key(body, ACCOUNT_ID),
             "body": body.decode(), "received_at": now, "status": "queued", "queued_at": now,
             "attempts": 0} for *_, body in items])
        s.commit()
    schedule_drain(RQJobQueue(worker_redis(private_redis.url)), ACCOUNT_ID)
    # A dead amoCRM address: nothing a worker plans may leave the machine.
    env = worker_env(pg_url, private_redis.url, SECRET,
                     AMOSCORE_AMOCRM_BASE_URL="http://127.0.0.1:9", AMOSCORE_VAR_DIR=str(tmp_path))
    first = start_worker(env, burst=True, log=tmp_path / "worker1.log")
    try:
        deadline = time.monotonic() + 20
        while _processed(rt) == 0:
            assert first.poll() is None, (tmp_path / "worker1.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the worker processed nothing in 20 s"
            time.sleep(0.01)
    finally:
        kill_tree(first)
    done_at_kill = _processed(rt)
    assert 0 < done_at_kill < n, "the kill must land mid-drain"
    assert statuses(rt) == {"processed": done_at_kill, "queued": n - done_at_kill}

    # The killed job's rows stay "queued"; the sweeper re-queues them once JOB_TIMEOUT passed.
    rt.clock.offset = timedelta(seconds=JOB_TIMEOUT + 1)  # type: ignore[attr-defined]
    assert sweep_with(rt)["drains_enqueued"] == 1
    second = start_worker(env, burst=True, log=tmp_path / "worker2.log")
    try:
        second.wait(60)
    finally:
        kill_tree(second)
    assert statuses(rt) == {"processed": n}, (tmp_path / "worker2.log").read_text()[-2000:]
    assert_ledger_matches(rt, items)
    with rt.sessions() as s:
        attempts = dict(s.execute(select(WebhookDelivery.attempts, func.count())
                                  .group_by(WebhookDelivery.attempts)).all())
    # The killed batch's attempts += 1 was rolled back with the rest of its transaction: every
    # row shows exactly one committed processing, none was applied twice.
    assert attempts == {1: n}


def test_sweeper_leaves_fresh_queued_rows_alone(pg_engine, private_redis, example_account,
                                               tmp_path):
    """The other side of the re-queue rule: a queued row younger than JOB_TIMEOUT is not taken
    back (its job may still be running)."""
    rt = make_runtime(pg_engine, private_redis.url, example_account, tmp_path)
    now = rt.clock()
    with rt.sessions() as s:
        # As the receiver stores it when the queue took the job.
        store_delivery(s, account_id=ACCOUNT_ID, body=distinct_bodies(1)[0][3], received_at=now,
                       status="queued")
        s.commit()
    rt.clock.offset = timedelta(seconds=JOB_TIMEOUT - 5)  # type: ignore[attr-defined]
    assert sweep_with(rt)["drains_enqueued"] == 0
    assert statuses(rt) == {"queued": 1}
    with rt.sessions() as s:
        s.execute(update(WebhookDelivery).values(queued_at=now - timedelta(seconds=10)))
        s.commit()
    assert sweep_with(rt)["drains_enqueued"] == 1
    assert statuses(rt) == {"stored": 1}


# --- 5. a process SIGKILLed while its task POST is at amoCRM -------------------------------------

_FLUSH_CHILD = """
import sys
from datetime import datetime
from app.db import make_engine, make_session_factory
from config.loader import load_account
from integrations.amocrm.client import client_for
from jobs.writeback import flush
account = load_account(sys.argv[1])
client = client_for(account, {"AMOSCORE_AMOCRM_BASE_URL": sys.argv[3],
                              "AMOCRM_LONG_LIVED_TOKEN": "test-token"}, timeout=60)
flush(make_session_factory(make_engine(sys.argv[2])), account, client,
      datetime.fromisoformat(sys.argv[4]), dry_run=False)
"""


def _held_amocrm(hold_method: str):  # type: ignore[no-untyped-def]
    """A WSGI amoCRM (the replay fake behind real HTTP) that applies a ``hold_method`` request,
    then holds its answer until released: (app, fake, calls, reached, release)."""
    import threading
    from urllib.parse import parse_qs

    from integrations.amocrm.fake import FakeAmoAdapter

    fake = FakeAmoAdapter("http://fake", now=time.time)
    reached, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        size = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(size) if size else None
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        calls.append(environ["REQUEST_METHOD"])
        status, body = fake._route(environ["REQUEST_METHOD"], environ["PATH_INFO"], query, raw)
        if environ["REQUEST_METHOD"] == hold_method and not release.is_set():
            reached.set()
            release.wait(30)  # applied, but the answer never leaves before the kill
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [] if body is None else [json.dumps(body).encode()]

    return app, fake, calls, reached, release


def _flush_killed_mid_request(pg_url: str, base: str, now: datetime, reached, release) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from tests.faultkit import ROOT

    config = str(ROOT / "config" / "account.example.yaml")
    child = subprocess.Popen([sys.executable, "-c", _FLUSH_CHILD, config, pg_url, base,
                              now.isoformat()], cwd=ROOT, start_new_session=True)
    try:
        assert reached.wait(30), "the child never sent its request"
        kill_tree(child)
    finally:
        release.set()
    assert child.returncode == -9


def test_a_flush_killed_while_its_patch_is_at_amocrm_loses_no_write(pg_engine, pg_url,
                                                                    example_account):
    """A real process PATCHes a deal's field; amoCRM applies it but the process is SIGKILLed
    before the answer. The next flush sends the value again (a PATCH is safe to repeat): the
    field holds it, and the write is recorded once."""
    from app.db import make_session_factory, session_scope
    from app.models import DesiredValue, WriteLog
    from integrations.amocrm.client import client_for
    from jobs.writeback import declare_value, flush

    app, fake, calls, reached, release = _held_amocrm("PATCH")
    now = datetime(2026, 4, 14, 11, 0, tzinfo=UTC)
    sessions = make_session_factory(pg_engine)
    field_id = 752101  # the example's FRT minutes field
    with session_scope(sessions) as s:
        declare_value(s, ACCOUNT_ID, 5201, field_id, "numeric", 42, now)
    with serve_app(app) as base:
        _flush_killed_mid_request(pg_url, base, now, reached, release)
        with session_scope(sessions) as s:
            assert s.scalars(select(DesiredValue.pending)).one() is True  # not recorded sent
            assert s.scalars(select(WriteLog)).all() == []
        client = client_for(example_account, {"AMOSCORE_AMOCRM_BASE_URL": base,
                                              "AMOCRM_LONG_LIVED_TOKEN": "test-token"})
        result = flush(sessions, example_account, client, now + timedelta(minutes=1),
                       dry_run=False)
    assert calls == ["PATCH", "PATCH"]
    sent = [(p["id"], p["custom_fields_values"]) for p in fake.patched]
    assert sent == [(5201, [{"field_id": field_id, "values": [{"value": 42}]}])] * 2
    assert [(w.deal_id, w.field_id) for w in result.writes] == [(5201, field_id)]
    with session_scope(sessions) as s:
        assert [(w.deal_id, w.value) for w in s.scalars(select(WriteLog))] == [(5201, {"v": 42})]
        assert s.scalars(select(DesiredValue.pending)).one() is False


def test_a_flush_killed_while_its_task_post_is_in_flight_creates_one_task(pg_engine, pg_url,
                                                                          example_account):
    """A real process POSTs a breach task; amoCRM creates it but has not answered when the
    process is SIGKILLed. The next flush finds the task by its marker instead of posting it
    again: one task in amoCRM, recorded with amoCRM's id."""
    from app.db import make_session_factory, session_scope
    from app.models import TaskLedger
    from integrations.amocrm.client import client_for
    from jobs.writeback import POSTING_SETTLE, declare_task, flush

    app, fake, calls, reached, release = _held_amocrm("POST")
    now = datetime(2026, 4, 14, 11, 0, tzinfo=UTC)
    sessions = make_session_factory(pg_engine)
    with session_scope(sessions) as s:
        declare_task(s, ACCOUNT_ID, deal_id=5101, rule="frt_breach", key="frt_breach:5101:1",
                     responsible_user_id=10000698, complete_till=now + timedelta(hours=4),
                     text="Клиент ждёт ответа", at=now)
    with serve_app(app) as base:
        _flush_killed_mid_request(pg_url, base, now, reached, release)
        with session_scope(sessions) as s:
            assert s.scalars(select(TaskLedger.status)).one() == "posting"
        client = client_for(example_account, {"AMOSCORE_AMOCRM_BASE_URL": base,
                                              "AMOCRM_LONG_LIVED_TOKEN": "test-token"})
        result = flush(sessions, example_account, client, now + POSTING_SETTLE, dry_run=False)
    assert [t["id"] for t in fake.posted_tasks] == [1]  # one task in amoCRM
    assert [(t.status, t.amo_task_id) for t in result.tasks] == [("created", 1)]
    assert calls == ["POST", "GET"]  # the killed POST, then the lookup: no second POST
