"""Liveness for load balancers: the process answers; the database is checked when asked."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

health_bp = Blueprint("health", __name__)


@health_bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    runtime = current_app.extensions["amoscore.runtime"]
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        db = "ok"
    except SQLAlchemyError:
        db = "down"
    return jsonify(status="ok", database=db)
