"""POST /webhooks/amocrm/<secret>: check, store, commit, enqueue, answer — nothing else.

amoCRM disables a hook after 100 failed answers in 2 hours, so anything we cannot use is still
stored (as rejected/unsupported, with the reason) and answered without a 5xx; only a body we
could neither store nor spool gets a 503, so that amoCRM sends it again.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Blueprint, abort, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from app.pg_insert import StoreError
from app.web.body_deadline import BodyDeadlines
from config.account import AccountConfig
from integrations.amocrm.webhooks import account_of
from jobs import spool
from jobs.intake import load_spool, mark_stored, receive_delivery, schedule_drain
from jobs.queues import EnqueueFailed
from jobs.runtime import Runtime

log = logging.getLogger("amoscore.webhook")
webhooks_bp = Blueprint("webhooks", __name__)

SPOOL_CHECK_SECONDS = 5.0
# A body that stalls this long, or is not all in after BODY_SECONDS, is given up (400 or 408,
# nothing stored; amoCRM sends it again): under gthread workers a client that stalls or
# trickles would otherwise hold a thread for as long as it likes.
BODY_READ_SECONDS = 1.0
BODY_SECONDS = 1.5
_BODY_DEADLINES = BodyDeadlines(BODY_SECONDS, per_read=BODY_READ_SECONDS)
WEBHOOK_PREFIX = "/webhooks/amocrm/"  # then the account's secret


class SpoolLoader:
    """Loads this process's spool back into the database once a store succeeds again.

    The sweeper loads the spool too, but only where the worker shares the web's disk; on
    hosts that do not (a web dyno's own ephemeral disk) the files would wait for ever and go
    with the host. Looked at no more than every few seconds, and loaded off the request's
    thread, so the answer to amoCRM is not held up."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._next_check = 0.0
        self._running = threading.Lock()

    def poke(self) -> threading.Thread | None:
        """After a successful store: start loading if anything is spooled (the thread, or None)."""
        now = time.monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + SPOOL_CHECK_SECONDS
        try:
            if not spool.has_pending(self.runtime.settings.spool_dir):
                return None
        except OSError as exc:  # an unreadable spool folder must not fail a stored webhook
            log.warning("webhook.spool_unreadable error=%s", exc.__class__.__name__)
            return None
        if not self._running.acquire(blocking=False):
            return None
        thread = threading.Thread(target=self._load, name="amoscore-spool", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the next poke tries again
            self._running.release()
            return None
        return thread

    def _load(self) -> None:
        try:
            loaded = load_spool(self.runtime, bounded=True)
            if loaded:
                log.warning("webhook.spool_loaded deliveries=%d", loaded)
        except Exception:  # noqa: BLE001 - the files stay; the next poke tries again
            log.exception("webhook.spool_load_failed")
        finally:
            self._running.release()


class UnknownSecrets:
    """Says in the log that hooks are posted to a URL no account's secret matches: amoCRM gets
    404 and the delivery is lost, so an operator must see it (a changed secret whose old URL
    amoCRM still uses, most often). At most one line a minute, with the count, and never the
    path: it would carry whatever secret was tried."""

    EVERY_SECONDS = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._next = 0.0

    def seen(self) -> None:
        with self._lock:
            self._count += 1
            now = time.monotonic()
            if now < self._next:
                return
            count, self._count, self._next = self._count, 0, now + self.EVERY_SECONDS
        log.warning("webhook.unknown_secret posts=%d: a POST to %s*** matched no account's "
                    "secret and got 404 (lost unless amoCRM sends it again); after changing a "
                    "secret, keep the old one in <its variable>_PREVIOUS until amoCRM's hook "
                    "URL is updated", count, WEBHOOK_PREFIX)


_UNKNOWN_SECRETS = UnknownSecrets()


@webhooks_bp.post(WEBHOOK_PREFIX + "<secret>")
def receive(secret: str) -> tuple[str, int]:
    account = current_app.extensions["amoscore.router"].route(secret)
    if account is None:
        _UNKNOWN_SECRETS.seen()
        abort(404)
    runtime = current_app.extensions["amoscore.runtime"]
    with _BODY_DEADLINES.reading(request.environ.get("gunicorn.socket")):
        body = request.get_data(cache=False)
    if request.content_length is not None and len(body) < request.content_length:
        # Cut by its deadline (or the client went away): a part of a body is not stored, and
        # a non-2xx answer makes amoCRM send the whole of it again.
        log.warning("webhook.body_incomplete account=%s", account.account_id)
        return "", 408
    now = runtime.clock()
    status, reason, code = _classify(body, account)
    # With a real queue the row is stored as "queued" in the one transaction the request needs;
    # only a failed enqueue costs a second one (back to "stored", for the sweeper).
    queued = status == "stored" and not runtime.queue.runs_inline
    try:
        delivery_id = receive_delivery(
            runtime.engine, account_id=account.account_id, body=body, received_at=now,
            status="queued" if queued else status, reason=reason)
    except (SQLAlchemyError, StoreError) as exc:
        log.error("webhook.db_down account=%s error=%s", account.account_id, exc.__class__.__name__)
        try:
            spool.write(runtime.settings.spool_dir, account_id=account.account_id,
                        body=body.decode("utf-8", errors="replace"), received_at=now,
                        status=status, reason=reason)
        except OSError:
            log.exception("webhook.spool_failed account=%s", account.account_id)
            return "", 503
        return "", code
    current_app.extensions["amoscore.spool_loader"].poke()
    if status == "rejected":
        log.warning("webhook.rejected account=%s reason=%s", account.account_id, reason)
    if delivery_id is not None and status == "stored":
        try:
            schedule_drain(runtime.queue, account.account_id)
        except EnqueueFailed as exc:
            log.warning("webhook.enqueue_failed account=%s delivery=%s error=%s",
                        account.account_id, delivery_id, exc.__class__.__name__)
            try:
                with runtime.sessions() as session:
                    mark_stored(session, delivery_id)
                    session.commit()
            except SQLAlchemyError:
                # Still "queued": the sweeper re-queues it after JOB_TIMEOUT. Nothing is lost.
                log.warning("webhook.unqueue_failed delivery=%s", delivery_id)
    return "", code


def _classify(body: bytes, account: AccountConfig) -> tuple[str, str | None, int]:
    """(status, reason, HTTP code) from the account the body claims."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "unsupported", "body is not UTF-8", 200
    if b"\x00" in body:  # stored with U+FFFD in its place; the text is no longer the body
        return "unsupported", "body contains NUL bytes", 200
    claimed_id, subdomain = account_of(body)
    if claimed_id is not None:
        if claimed_id != account.account_id:
            return "rejected", f"account[id] {claimed_id} is not this hook's account", 403
        return "stored", None, 200
    # Older accounts send only account[subdomain].
    if subdomain is not None:
        if subdomain != account.account.subdomain:
            return "rejected", f"account[subdomain] {subdomain!r} is not this hook's account", 403
        return "stored", None, 200
    return "unsupported", "no account[id] or account[subdomain] in body", 200
