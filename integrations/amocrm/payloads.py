"""Request bodies amoCRM expects and typed views of what it answers (amocrm-api.md §5–§10)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

FIELD_TYPES = ("numeric", "text", "select", "date")


def custom_field_value(field_id: int, field_type: str, value: Any) -> dict[str, Any]:
    """One ``custom_fields_values`` element in the shape its field type needs."""
    if field_type == "select":
        return {"field_id": field_id, "values": [{"enum_id": int(value)}]}
    if field_type == "date":
        return {"field_id": field_id, "values": [{"value": int(value)}]}
    if field_type in ("numeric", "text"):
        return {"field_id": field_id, "values": [{"value": value}]}
    raise ValueError(f"unknown field type {field_type!r} (expected one of {FIELD_TYPES})")


def lead_patch(deal_id: int, fields: list[tuple[int, str, Any]]) -> dict[str, Any]:
    """A ``PATCH /api/v4/leads`` element; ``request_id`` is the deal id so errors map back."""
    return {
        "id": deal_id,
        "custom_fields_values": [custom_field_value(f, t, v) for f, t, v in fields],
        "request_id": str(deal_id),
    }


def task_marker(key: str) -> str:
    """The last line of a task's text that identifies it as ours (8 hex of its key)."""
    return "#amoscore:" + hashlib.sha256(key.encode()).hexdigest()[:8]


def task_request_id(row_id: int) -> str:
    """The ``request_id`` of a task row in a POST: not a bare number, so an error naming an
    element by its place in the batch ("0", amocrm-api.md's example) is never read as ours."""
    return f"task-{row_id}"


def task_post(
    *,
    request_id: str,
    deal_id: int,
    text: str,
    key: str,
    complete_till: int,
    task_type_id: int,
    responsible_user_id: int | None,
) -> dict[str, Any]:
    """A ``POST /api/v4/tasks`` element on a lead."""
    body: dict[str, Any] = {
        "text": f"{text}\n{task_marker(key)}",
        "complete_till": int(complete_till),
        "entity_id": deal_id,
        "entity_type": "leads",
        "task_type_id": task_type_id,
        "request_id": request_id,
    }
    if responsible_user_id is not None:
        body["responsible_user_id"] = responsible_user_id
    return body


# --- typed answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldValue:
    value: Any
    enum_id: int | None = None


@dataclass(frozen=True)
class Lead:
    id: int
    name: str | None
    pipeline_id: int | None
    status_id: int | None
    responsible_user_id: int | None
    price: int | None
    created_at: int | None
    updated_at: int | None
    closed_at: int | None
    # field id -> its values
    custom_fields: dict[int, tuple[FieldValue, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    id: int
    name: str
    pipeline_id: int
    type: int = 0


@dataclass(frozen=True)
class Pipeline:
    id: int
    name: str
    is_main: bool
    statuses: tuple[Status, ...]


@dataclass(frozen=True)
class User:
    id: int
    name: str
    is_admin: bool
    is_active: bool


@dataclass(frozen=True)
class CustomField:
    id: int
    name: str
    type: str
    enums: dict[int, str]  # enum id -> label


@dataclass(frozen=True)
class Task:
    id: int
    entity_id: int | None
    entity_type: str | None
    text: str
    is_completed: bool
    complete_till: int | None
    task_type_id: int | None
    responsible_user_id: int | None


@dataclass(frozen=True)
class Talk:
    talk_id: int
    rate: int
    entity_id: int | None
    entity_type: str | None
    contact_id: int | None
    is_in_work: bool
    is_read: bool
    created_at: int | None
    updated_at: int | None
    missed_at: int | None


def _int(v: Any) -> int | None:
    return None if v is None or v == "" else int(v)


# Unix seconds a datetime can hold (years 1..9999); beyond it fromtimestamp raises.
_LATEST_UNIX = 253_402_300_799


def event_created_at(event: dict[str, Any]) -> int | None:
    """An events-API object's created_at as Unix seconds (amoCRM sends an int; a digit string
    is taken too), or None when it is no usable Unix time (a bool, a date text, out of range)."""
    value = event.get("created_at")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    if isinstance(value, str) and not (value.strip().isascii() and value.strip().isdigit()):
        return None  # isdigit alone takes '²' and other digits int() refuses
    seconds = int(value)
    return seconds if 0 < seconds <= _LATEST_UNIX else None


def parse_lead(d: dict[str, Any]) -> Lead:
    fields: dict[int, tuple[FieldValue, ...]] = {}
    for cf in d.get("custom_fields_values") or ():
        vals = []
        for v in cf.get("values") or ():
            if isinstance(v, dict):
                vals.append(FieldValue(v.get("value"), _int(v.get("enum_id"))))
            else:  # some shapes carry a bare scalar
                vals.append(FieldValue(v))
        fields[int(cf["field_id"])] = tuple(vals)
    return Lead(
        id=int(d["id"]),
        name=d.get("name"),
        pipeline_id=_int(d.get("pipeline_id")),
        status_id=_int(d.get("status_id")),
        responsible_user_id=_int(d.get("responsible_user_id")),
        price=_int(d.get("price")),
        created_at=_int(d.get("created_at")),
        updated_at=_int(d.get("updated_at")),
        closed_at=_int(d.get("closed_at")),
        custom_fields=fields,
    )


def parse_pipeline(d: dict[str, Any]) -> Pipeline:
    statuses = tuple(
        Status(int(s["id"]), s.get("name", ""), int(s.get("pipeline_id", d["id"])), int(s.get("type", 0)))
        for s in (d.get("_embedded") or {}).get("statuses", ())
    )
    return Pipeline(int(d["id"]), d.get("name", ""), bool(d.get("is_main")), statuses)


def parse_user(d: dict[str, Any]) -> User:
    rights = d.get("rights") or {}
    return User(int(d["id"]), d.get("name", ""), bool(rights.get("is_admin")),
                bool(rights.get("is_active", True)))


def parse_custom_field(d: dict[str, Any]) -> CustomField:
    enums = {int(e["id"]): str(e.get("value", "")) for e in d.get("enums") or ()}
    return CustomField(int(d["id"]), d.get("name", ""), d.get("type", ""), enums)


def parse_task(d: dict[str, Any]) -> Task:
    return Task(
        id=int(d["id"]),
        entity_id=_int(d.get("entity_id")),
        entity_type=d.get("entity_type"),
        text=d.get("text") or "",
        is_completed=bool(d.get("is_completed")),
        complete_till=_int(d.get("complete_till")),
        task_type_id=_int(d.get("task_type_id")),
        responsible_user_id=_int(d.get("responsible_user_id")),
    )


def parse_talk(d: dict[str, Any]) -> Talk:
    return Talk(
        talk_id=int(d["talk_id"]),
        rate=int(d.get("rate") or 0),
        entity_id=_int(d.get("entity_id")),
        entity_type=d.get("entity_type"),
        contact_id=_int(d.get("contact_id")),
        is_in_work=bool(d.get("is_in_work")),
        is_read=bool(d.get("is_read")),
        created_at=_int(d.get("created_at")),
        updated_at=_int(d.get("updated_at")),
        missed_at=_int(d.get("missed_at")),
    )
