"""amoCRM webhook items' typed fields and schemas: what each entity's form values load as.

Every value of a parsed form is a string; these marshmallow fields and schemas turn one
entity's strings into typed values (ids, instants, flags, custom fields). They are the word on
every odd case; integrations/amocrm/webhook_loaders.py compiles them into faster plain loaders.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields

INT64_MAX = 2**63 - 1  # every amoCRM id lands in a BIGINT column


# --- typed fields ---------------------------------------------------------------------------


class AmoInt(fields.Integer):
    """An integer sent as a string; amoCRM sends "" for an empty value."""

    def _deserialize(  # type: ignore[override]  # "" loads as None, not an int
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> int | None:
        if value is None or (isinstance(value, str) and value.strip() == ""):
            if self.required:  # an empty id would reach the database as NULL and fail the batch
                raise ValidationError("empty")
            return None
        number = super()._deserialize(value, attr, data, **kwargs)
        # Out of BIGINT range would fail the whole drain batch in the database.
        if number is not None and abs(number) > INT64_MAX:
            raise ValidationError("integer out of range")
        return number


class AmoBool(fields.Field):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        return str(value).strip().lower() in ("1", "true", "y", "yes")


class UnixTime(fields.Field):
    """Unix seconds (as a string) → aware UTC datetime."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime | None:
        if value is None or str(value).strip() in ("", "0"):
            if self.required:  # a message without its instant would fail the batch (NOT NULL)
                raise ValidationError("empty")
            return None
        try:
            return datetime.fromtimestamp(int(str(value).strip()), UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise ValidationError("not a unix time") from exc


def values_list(raw: Any) -> list[Any]:
    """amoCRM indexed sub-arrays arrive as {"0": …, "1": …}; a lone object is one value."""
    if isinstance(raw, dict):
        if raw and all(k.isdigit() for k in raw):
            return [raw[k] for k in sorted(raw, key=int)]
        return [raw]
    if isinstance(raw, list):
        return raw
    return [] if raw is None else [raw]


def normalise_custom_fields(raw: Any) -> dict[int, list[dict[str, Any]]]:
    """custom_fields → {field_id: [{"value": str|None, "enum_id": int|None}, …]}.

    Values come as a bare scalar (dates), as ``{value, enum}`` (selects) or as an object.
    """
    out: dict[int, list[dict[str, Any]]] = {}
    for cf in values_list(raw):
        if not isinstance(cf, dict) or not str(cf.get("id", "")).strip().isdigit():
            continue
        values = []
        for v in values_list(cf.get("values")):
            if isinstance(v, dict):
                enum = str(v.get("enum", v.get("enum_id", ""))).strip()
                value = v.get("value")
                values.append({"value": value if isinstance(value, str) else None,
                               "enum_id": int(enum) if enum.isdigit() else None})
            else:
                values.append({"value": str(v), "enum_id": None})
        out[int(cf["id"])] = values
    return out


# --- schemas --------------------------------------------------------------------------------


class _Base(Schema):
    class Meta:
        unknown = EXCLUDE


class LeadSchema(_Base):
    id = AmoInt(required=True)
    name = fields.String(load_default=None)
    status_id = AmoInt(load_default=None)
    old_status_id = AmoInt(load_default=None)
    pipeline_id = AmoInt(load_default=None)
    old_pipeline_id = AmoInt(load_default=None)
    responsible_user_id = AmoInt(load_default=None)
    old_responsible_user_id = AmoInt(load_default=None)
    modified_user_id = AmoInt(load_default=None)
    price = AmoInt(load_default=None)
    created_at = UnixTime(load_default=None)
    updated_at = UnixTime(load_default=None)
    date_create = UnixTime(load_default=None)
    last_modified = UnixTime(load_default=None)
    custom_fields = fields.Raw(load_default=None)


class NoteSchema(_Base):
    id = AmoInt(required=True)
    text = fields.String(load_default=None)
    note_type = AmoInt(load_default=None)
    element_type = AmoInt(load_default=None)
    element_id = AmoInt(load_default=None)
    created_by = AmoInt(load_default=None)
    created_at = UnixTime(load_default=None)
    updated_at = UnixTime(load_default=None)


class MessageSchema(_Base):
    id = fields.String(required=True)
    chat_id = fields.String(load_default=None)
    talk_id = AmoInt(load_default=None)
    contact_id = AmoInt(load_default=None)
    text = fields.String(load_default=None)
    created_at = UnixTime(required=True)
    entity_type = fields.String(load_default=None)
    entity_id = AmoInt(load_default=None)
    element_id = AmoInt(load_default=None)
    type = fields.String(load_default="incoming")
    origin = fields.String(load_default=None)


class TalkSchema(_Base):
    talk_id = AmoInt(required=True)
    contact_id = AmoInt(load_default=None)
    chat_id = fields.String(load_default=None)
    entity_id = AmoInt(load_default=None)
    entity_type = fields.String(load_default=None)
    rate = AmoInt(load_default=0)
    is_read = AmoBool(load_default=False)
    is_in_work = AmoBool(load_default=True)
    created_at = UnixTime(load_default=None)
    updated_at = UnixTime(load_default=None)


class TaskSchema(_Base):
    id = AmoInt(required=True)
    element_id = AmoInt(load_default=None)
    element_type = AmoInt(load_default=None)
    task_type = AmoInt(load_default=None)
    text = fields.String(load_default=None)
    status = AmoInt(load_default=0)
    action_close = AmoInt(load_default=None)
    responsible_user_id = AmoInt(load_default=None)
    complete_before = UnixTime(load_default=None)
    created_at = UnixTime(load_default=None)
    updated_at = UnixTime(load_default=None)


SCHEMAS: dict[str, Schema] = {
    "leads": LeadSchema(),
    "message": MessageSchema(),
    "talk": TalkSchema(),
    "task": TaskSchema(),
}
NOTE_SCHEMA = NoteSchema()
