"""Liveness for load balancers, and what an operator needs to see at a glance: whether the
database answers, and the deliveries waiting to be processed (a growing or ageing backlog is a
worker down or falling behind)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from app.models import PENDING_SQL, WebhookDelivery

health_bp = Blueprint("health", __name__)

# Through the partial index of pending deliveries (its predicate written out, see PENDING_SQL).
_BACKLOG = select(func.count(), func.min(WebhookDelivery.received_at)).where(text(PENDING_SQL))


@health_bp.get("/healthz")
def healthz() -> Response:
    runtime = current_app.extensions["amoscore.runtime"]
    backlog = None
    try:
        with runtime.engine.connect() as conn:
            pending, oldest = conn.execute(_BACKLOG).one()
        db = "ok"
        age = None if oldest is None else max(0, round(
            (runtime.clock() - oldest).total_seconds()))
        backlog = {"pending": pending, "oldest_seconds": age}
    except SQLAlchemyError:
        db = "down"
    # 200 either way: the receiver still takes webhooks with the database down (it spools).
    return jsonify(status="ok", database=db, backlog=backlog)
