"""Replay a recorded stream through the real receiver and jobs on a simulated clock.

The clock stops at each line's `at`, at every due check (a wait reaching target or limit, a
complaint becoming overdue), at the periodic events pull and write-back flush while something
is pending for them (aligned to multiples of their `sync` intervals), and at `now`. At each
stop: the lines of that instant, then the events pull (when due), then the due checks, then
the flush (when due). amoCRM is a fake at the HTTP level (dry-run), or the real API (`--send`).
"""

from __future__ import annotations

import io
import json
import math
import secrets
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import requests
from sqlalchemy import make_url, select

from app.db import create_schema, make_engine, make_session_factory, table_with_rows
from app.models import TaskLedger, WriteLog
from config.account import AccountConfig
from config.settings import Settings, from_env
from integrations.amocrm.payloads import event_created_at
from integrations.amocrm.webhooks import WebhookParseError, parse_delivery
from jobs.queues import InProcessQueue
from jobs.report import ReportContext, build_report, iso
from jobs.runtime import Runtime, set_runtime


class SimClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def timestamp(self) -> float:
        return self.now.timestamp()


class NothingToReplay(ValueError):
    """The stream has no usable line and no --now was given: there is no instant to report at."""

    def __init__(self, stream: Path, bad: list[dict[str, Any]]) -> None:
        shown = "; ".join(f"line {b['line']}: {b['reason']}" for b in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        super().__init__(
            f"{stream} has no usable line" + (f" ({shown}{more})" if bad else " (it is empty)")
            + "; give --now to write the report of an empty stream")
        self.bad = bad


class DatabaseNotEmpty(ValueError):
    """--database names a database that already holds data: the replay's simulated traffic,
    writes and tasks would mix with it (and, were it production's, land among the real ones)."""

    def __init__(self, url: str, table: str) -> None:
        super().__init__(f"--database {url} is not empty (its table {table} has rows): a replay "
                         "fills the database with its own simulated traffic, writes and tasks; "
                         "give a new, empty database, or leave --database out for a temporary "
                         "SQLite file")


class EmptyPeriod(ValueError):
    """--from or --to, with the other bound defaulted from the stream, gives no day at all."""

    def __init__(self, period_from: date, period_to: date) -> None:
        super().__init__(f"the period would run from {period_from} to {period_to} (one bound "
                         "given, the other taken from the stream): give both --from and --to")


@dataclass
class Line:
    no: int
    at: datetime  # when it is handled: its own `at`, or the clock when that went backwards
    webhook: str | None = None
    event: dict[str, Any] | None = None
    delivered_at: datetime = field(init=False)  # its own `at`: when amoCRM delivered it

    def __post_init__(self) -> None:
        self.delivered_at = self.at


def _parse_at(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def iter_stream(path: Path, bad: list[dict[str, Any]],
                progress: Callable[[int], None] | None = None) -> Iterator[Line]:
    """The usable lines in file order, read as they are needed (a long stream is never held
    in memory); bad ones go to ``bad`` with their number and reason, never dropped.
    ``progress`` is told how many bytes each line took."""
    last: datetime | None = None
    with open(path, "rb") as fh:
        for no, raw_bytes in enumerate(fh, start=1):
            if progress is not None:
                progress(len(raw_bytes))
            raw = raw_bytes.decode("utf-8", errors="replace")
            if not raw.strip():
                bad.append({"line": no, "reason": "empty line"})
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                bad.append({"line": no, "reason": f"not JSON: {exc.msg}"})
                continue
            if not isinstance(obj, dict):
                bad.append({"line": no, "reason": "not a JSON object"})
                continue
            at = _parse_at(obj.get("at"))
            if at is None:
                bad.append({"line": no, "reason": "no valid 'at' (ISO 8601 with offset)"})
                continue
            if "webhook" in obj:
                if not isinstance(obj["webhook"], str):
                    bad.append({"line": no, "reason": "bad body: 'webhook' is not a string"})
                    continue
                line = Line(no, at, webhook=obj["webhook"])
            elif "event" in obj:
                ev = obj["event"]
                if not (isinstance(ev, dict) and ev.get("id") and ev.get("type")):
                    bad.append({"line": no, "reason": "bad event: needs id, type, created_at"})
                    continue
                if event_created_at(ev) is None:
                    bad.append({"line": no, "reason": "bad event: created_at is no Unix time"
                                f" ({ev.get('created_at')!r})"})
                    continue
                line = Line(no, at, event=ev)
            else:
                bad.append({"line": no, "reason": "unknown kind (expected 'webhook' or 'event')"})
                continue
            if last is not None and at < last:
                # Still handled (Replay moves it to the current clock), and reported.
                bad.append({"line": no, "reason": f"'at' goes backwards ({obj['at']})"})
            else:
                last = at
            yield line


def _next_multiple(after: datetime, every: int) -> datetime:
    """The first instant strictly after `after` that is a multiple of `every` seconds (epoch)."""
    ts = math.floor(after.timestamp() / every) * every + every
    return datetime.fromtimestamp(ts, UTC)


def _on_grid(at: datetime, every: int) -> bool:
    return at.timestamp() % every == 0


def _lead_json(d: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """The API shape of a lead as its webhooks showed it (what GET /leads/{id} returns): the
    newest body by ``updated_at`` wins, whatever the delivery order; an older one delivered
    late only fills in what no newer one said. A body's fields merge by field id (a body often
    carries only the fields its change touched)."""
    lead = dict(previous or {"id": d["id"], "custom_fields_values": None})
    at = int(d["updated_at"].timestamp()) if d.get("updated_at") is not None else None
    newer = at is None or lead.get("updated_at") is None or at >= lead["updated_at"]
    for key in ("name", "pipeline_id", "status_id", "responsible_user_id", "price"):
        if d.get(key) is not None and (newer or lead.get(key) is None):
            lead[key] = d[key]
    if newer and at is not None:
        lead["updated_at"] = at
    if d.get("custom_fields_present"):
        fields = {f["field_id"]: f for f in lead["custom_fields_values"] or ()}
        for fid, values in d["custom_fields"].items():
            if newer or fid not in fields:
                fields[fid] = {"field_id": fid, "values": [
                    {k: v for k, v in val.items() if v is not None} for val in values]}
        lead["custom_fields_values"] = list(fields.values()) or None
    return lead


# A WSGI application (the receiver) and what builds it from a Flask-style config dict: the
# face that runs a replay hands the factory in (app.web.create_app), as nothing below the
# faces may import one (architecture.md's layers).
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ReceiverFactory = Callable[[dict[str, Any]], WsgiApp]


@dataclass
class ReplayOptions:
    stream: Path
    account: AccountConfig
    receiver: ReceiverFactory  # app.web.create_app: the real receiver the lines are posted to
    period_from: date | None = None
    period_to: date | None = None
    now: datetime | None = None
    database_url: str | None = None
    send: bool = False
    env: dict[str, str] = field(default_factory=dict)  # the environment --send reads its token from
    progress: Callable[[int], None] | None = None


class Replay:
    def __init__(self, opts: ReplayOptions) -> None:
        self.opts = opts
        self.account = opts.account
        self.tz = ZoneInfo(self.account.account.timezone)
        self.bad: list[dict[str, Any]] = []
        self.after_now: list[int] = []
        self.last_line_at: datetime | None = None
        self.received = 0
        self.requests = {"GET": 0, "PATCH": 0, "POST": 0}
        self.dry_patch = 0
        self.dry_post = 0
        # The jobs the lines enqueue, run at each stop of the clock in the order they came.
        self.queue = InProcessQueue(deferred=True)

    # --- set-up -----------------------------------------------------------------------------

    def _runtime(self, workdir: Path, clock: SimClock) -> Runtime:
        url = self.opts.database_url or f"sqlite:///{workdir / 'replay.sqlite3'}"
        engine = make_engine(url, throwaway=True)
        if self.opts.database_url and (table := table_with_rows(engine)) is not None:
            shown = make_url(url).render_as_string(hide_password=True)
            engine.dispose()
            raise DatabaseNotEmpty(shown, table)
        create_schema(engine)
        settings = Settings(database_url=url, redis_url="", config_path=str(self.opts.stream),
                            var_dir=workdir, spool_dir=workdir / "spool")
        rt = Runtime(settings=settings, accounts={self.account.account_id: self.account},
                     engine=engine, sessions=make_session_factory(engine), queue=self.queue,
                     clock=clock, dry_run_override=not self.opts.send)
        rt.client_factory = lambda _account: self.client
        return rt

    def _client(self, clock: SimClock) -> Any:
        from integrations.amocrm.auth import StaticTokenAuth
        from integrations.amocrm.client import AmoClient, client_for
        from integrations.amocrm.fake import mount_fake
        from integrations.amocrm.ratelimit import memory_limiter

        session = requests.Session()
        session.hooks["response"].append(self._count)
        if self.opts.send:
            self.fake = None
            env = self.opts.env
            name = self.account.account.auth.long_lived_token_env
            if not (name and env.get(name)):
                from integrations.amocrm.errors import ReauthorizationRequired

                # Not "connect with OAuth": an OAuth account's tokens are in the service's
                # database, and a replay runs on a database of its own.
                raise ReauthorizationRequired(
                    "replay --send sends with the account's long-lived token: set "
                    + (name if name else "account.auth.long_lived_token_env in the YAML")
                    + " (a replay does not read the OAuth tokens the service keeps)")
            # With REDIS_URL the workers' shared limiter: a replay sending to a live account
            # must not push the workers past amoCRM's limit.
            return client_for(self.account, env, session=session,
                              redis_url=from_env(env).redis_url or None)
        base = self.account.account.base_url
        # Proxies and .netrc from the environment mean nothing to the fake, and reading them
        # for every request cost more than the fake's answer.
        session.trust_env = False
        self.fake = mount_fake(session, base, clock.timestamp)
        # The fake answers at once: no rate limit needed, and the simulated clock never moves
        # while a request is made.
        limiter = memory_limiter(self.account.account_id, 10**6, global_per_second=10**6)
        return AmoClient(base, StaticTokenAuth("replay-dry-run", "replay"), session=session,
                         limiter=limiter, sleep=lambda _s: None)

    def _count(self, resp: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        method = (resp.request.method or "GET").upper()
        self.requests[method] = self.requests.get(method, 0) + 1
        return resp

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        lines = self._usable_lines()
        first = next(lines, None)
        if first is None and self.opts.now is None:
            raise NothingToReplay(self.opts.stream, sorted(self.bad, key=lambda b: b["line"]))
        start = first.at if first is not None else self.opts.now
        assert start is not None
        with tempfile.TemporaryDirectory(prefix="amoscore-replay-") as tmp:
            clock = SimClock(start)
            self.client = self._client(clock)
            rt = self._runtime(Path(tmp), clock)
            set_runtime(rt)
            try:
                end, last_at = self._drive(rt, clock, first, lines)
                if self.fake is not None:
                    self.fake.forget_stream()  # the peak of memory is the report's
                last_at = max(last_at, self.last_line_at or last_at)
                period_from = (self.opts.period_from
                               or start.astimezone(self.tz).date().replace(day=1))
                period_to = self.opts.period_to or last_at.astimezone(self.tz).date()
                if period_from > period_to:
                    raise EmptyPeriod(period_from, period_to)
                ctx = ReportContext(self.account, period_from, period_to, end)
                with rt.sessions() as session:
                    report = build_report(session, ctx, received=self.received)
                    report.update(self._writes_and_tasks(session))
            finally:
                set_runtime(None)
                rt.engine.dispose()
        report["bad_lines"] = sorted(self.bad, key=lambda b: b["line"])
        if self.after_now:
            report["lines_after_now"] = {"count": len(self.after_now),
                                         "first_line": self.after_now[0]}
        report["api_requests"] = {
            "GET": self.requests.get("GET", 0),
            "PATCH": self.requests.get("PATCH", 0) + self.dry_patch,
            "POST": self.requests.get("POST", 0) + self.dry_post,
        }
        failed = self.queue.failed
        if failed:
            report["job_failures"] = [f"{name}: {exc}" for name, exc in failed]
        return _ordered(report)

    def _usable_lines(self) -> Iterator[Line]:
        """The stream's lines up to ``--now``, a line that goes backwards handled at the clock
        (the last handled line's ``at``; its receipt keeps its own); later ones are counted,
        not handled."""
        clock: datetime | None = None
        for line in iter_stream(self.opts.stream, self.bad, self.opts.progress):
            if clock is not None and line.at < clock:
                line.at = clock
            # --to defaults to the last line's date, a line after --now included.
            self.last_line_at = max(line.at, self.last_line_at or line.at)
            if self.opts.now is not None and line.at > self.opts.now:
                # Not bad (replay.md keeps bad_lines for broken lines), just not yet happened:
                # counted in the extra key lines_after_now.
                self.after_now.append(line.no)
                continue
            clock = line.at
            yield line

    def _drive(self, rt: Runtime, clock: SimClock, first: Line | None,
               lines: Iterator[Line]) -> tuple[datetime, datetime]:
        """Run the clock to the end; returns (now, the last line's at). ``now`` is --now or,
        without it, the last line's at, known only once the stream is read to its end."""
        from jobs.planner import next_due
        from jobs.sync import flush_writeback, plan_step

        secret = secrets.token_urlsafe(16)
        env = {self.account.account.webhook_secret_env: secret}
        web = self.opts.receiver({"RUNTIME": rt, "ENV": env})
        sync = self.account.sync
        unpulled = 0
        nxt = first
        end = self.opts.now
        last_at = clock.now
        leads: dict[int, dict[str, Any]] = {}
        due: datetime | None = None
        changed = False
        plans_seen = -1
        sync_every = min(sync.events_pull_seconds, sync.flush_seconds)
        while True:
            if rt.extra.get("plans", 0) != plans_seen:  # due checks change only when planning ran
                plans_seen = rt.extra.get("plans", 0)
                with rt.sessions() as session:
                    due = next_due(session, self.account.account_id)
            candidates = [end] if end is not None else []
            if nxt is not None:
                candidates.append(nxt.at)
            if due is not None and due > clock.now:
                candidates.append(due)
            if unpulled:
                candidates.append(_next_multiple(clock.now, sync.events_pull_seconds))
            if changed:
                candidates.append(_next_multiple(clock.now, sync_every))
            if rt.extra.get("writeback_pending"):
                candidates.append(_next_multiple(clock.now, sync.flush_seconds))
            clock.now = max(clock.now, min(candidates))
            while nxt is not None and nxt.at <= clock.now:
                if nxt.webhook is not None:
                    self._post(web, secret, nxt, leads, clock)
                    changed = True
                elif self.fake is not None and nxt.event is not None:
                    self.fake.add_event(nxt.event, clock.now.timestamp())
                    unpulled += 1
                last_at = nxt.at
                nxt = next(lines, None)
            if nxt is None and end is None:
                end = clock.now  # the last line's at: the clock never passes a pending line
            at_end = nxt is None and end is not None and clock.now >= end
            due_now = due is not None and due <= clock.now
            sync_now = _on_grid(clock.now, sync_every) or at_end
            # With --send the events live in the account, not in the stream: pull at every
            # stop on the pull grid and before every due check (no stop is made only for it).
            pull = (bool(unpulled) or self.fake is None) and (
                due_now or _on_grid(clock.now, sync.events_pull_seconds) or at_end)
            check = due_now or (changed and sync_now)
            if pull or check:
                # The lines' deliveries are drained in one batch before anything reads them.
                self.queue.run_pending()
                plan_step(rt, self.account, clock.now, pull=pull, check=check)
                unpulled = 0 if pull else unpulled
                changed = changed and not check
            # A check that fell due between the flush points runs as production's sync job
            # does (pull, checks, flush in one run): its task is created at that moment, and
            # its deadline counts from there (metrics.md §1, §5).
            if rt.extra.get("writeback_pending") and (
                    _on_grid(clock.now, sync.flush_seconds) or at_end or due_now):
                rt.extra["writeback_pending"] = False
                result = flush_writeback(rt, self.account, clock.now)
                if rt.dry_run(self.account):
                    self.dry_patch += result.patch_requests
                    self.dry_post += result.post_requests
            if at_end:
                break
        self.queue.run_pending()  # nothing stays queued for the report
        assert end is not None
        return end, last_at

    def _post(self, web: WsgiApp, secret: str, line: Line, leads: dict[int, dict[str, Any]],
              clock: SimClock) -> None:
        self.received += 1
        # surrogatepass: a lone surrogate in the JSON string becomes bytes that are no UTF-8, which
        # the receiver stores as unsupported, as it would such a body from the wire.
        body = (line.webhook.encode("utf-8", "surrogatepass") if line.webhook is not None
                else b"")
        # A line whose `at` went backwards is handled at the clock, but the receiver dates it by
        # its own `at`, when amoCRM delivered it: a body with no instant of its own (a minimal
        # status hook, a deletion) keeps it, whatever the order of the file's lines.
        handled, clock.now = clock.now, line.delivered_at
        try:
            status = _wsgi_post(web, f"/webhooks/amocrm/{secret}", body)
        finally:
            clock.now = handled
        if status[:3] not in ("200", "403"):  # 403: a foreign account, counted as rejected
            self.bad.append({"line": line.no, "reason": f"the receiver answered {status}"})
        if self.fake is None:
            return
        try:
            parsed = parse_delivery(body)
        except WebhookParseError:
            return
        for ev in parsed.events:
            if ev.kind.startswith("leads.") and ev.kind not in ("leads.note", "leads.delete"):
                lead = _lead_json(ev.data, leads.get(ev.data["id"]))
                leads[ev.data["id"]] = lead
                self.fake.set_lead(ev.data["id"], lead)

    def _writes_and_tasks(self, session: Any) -> dict[str, Any]:
        acc = self.account.account_id
        writes = [
            {"at": iso(w.at, self.tz), "deal_id": w.deal_id, "field_id": w.field_id,
             "value": w.value.get("v") if isinstance(w.value, dict) else w.value}
            # Core rows, not ORM objects: a month of writes is tens of thousands of them.
            for w in session.execute(select(WriteLog.at, WriteLog.deal_id, WriteLog.field_id,
                                            WriteLog.value)
                                     .where(WriteLog.account_id == acc, WriteLog.status != "failed")
                                     .order_by(WriteLog.id))
        ]
        tasks = [
            {"at": iso(t.sent_at, self.tz), "deal_id": t.deal_id, "rule": t.rule,
             "responsible_user_id": t.responsible_user_id,
             "complete_till": iso(t.complete_till, self.tz), "text": t.text}
            for t in session.execute(select(TaskLedger).where(
                TaskLedger.account_id == acc, TaskLedger.status.in_(("created", "recorded")))
                .order_by(TaskLedger.sent_at, TaskLedger.id)).scalars()
        ]
        return {"writes": writes, "tasks": tasks}


def _wsgi_post(app: WsgiApp, path: str, body: bytes) -> str:
    """POST a form body through the app's full WSGI stack, as a server would hand it over;
    returns the status line. (Werkzeug's test client does the same with far more set-up per
    request: on a long stream that set-up cost more than the receiver itself.)"""
    environ = {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "replay", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)), "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
        "wsgi.multiprocess": False, "wsgi.run_once": False,
    }
    status: list[str] = []
    chunks = app(environ, lambda s, _headers, _exc=None: status.append(s))
    try:
        for _ in chunks:
            pass
    finally:
        getattr(chunks, "close", lambda: None)()
    return status[0] if status else ""


_ORDER = ("account", "period", "now", "deliveries", "bad_lines", "frt", "complaints", "referrals",
          "surveys", "writes", "tasks", "api_requests")


def _ordered(report: dict[str, Any]) -> dict[str, Any]:
    """replay.md's key order first, then the extras, so reports diff well."""
    out = {k: report[k] for k in _ORDER if k in report}
    out.update({k: v for k, v in report.items() if k not in out})
    return out


def dump_report(report: dict[str, Any], path: Path) -> None:
    # json.dump streams to the file: json.dumps with an indent first lists every small piece
    # of the text (on a month's report that list was the replay's peak memory, ~100 MB).
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, ensure_ascii=False, indent=2)
        fh.write("\n")

