"""amoCRM account webhooks: form body → nested structure → typed events.

amoCRM POSTs ``application/x-www-form-urlencoded`` bodies built by PHP's ``http_build_query``:
``leads[status][0][status_id]=142``. Every value arrives as a string, one delivery can carry
several entities and several actions, companies arrive under ``contacts`` with
``type=company``, and Digital Pipeline status deliveries carry ids only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, unquote_plus

from marshmallow import EXCLUDE, Schema, ValidationError, fields

_KEY_PARTS = re.compile(r"[^\[\]]+")

# Handled (root, action) pairs; anything in IGNORED is understood and deliberately skipped.
HANDLED_EVENTS = frozenset({
    "leads.add", "leads.update", "leads.status", "leads.responsible", "leads.restore",
    "leads.delete", "leads.note",
    "message.add",
    "talk.add", "talk.update",
    "task.add", "task.update", "task.delete",
})
IGNORED_ROOTS = frozenset({"contacts", "companies", "customers", "unsorted", "catalogs"})
IGNORED_EVENTS = frozenset({"task.responsible", "leads.link", "leads.unlink"})
# Note types (webhooks send amoCRM's numeric note_type) that record what a client or amoCRM
# itself did, not a user's reaction, though they carry the responsible's id as their author:
# deal/contact/company created (1, 2, 12), status changed (3), incoming call (10), system (25),
# incoming SMS (102). Telephony logs even a missed incoming call as a call_in note.
NOT_A_REACTION_NOTE_TYPES = frozenset({1, 2, 3, 10, 12, 25, 102})


class WebhookParseError(ValueError):
    """The body is not a webhook we can read; the message says why."""


def parse_form(body: bytes | str) -> dict[str, Any]:
    """PHP-style bracket keys → nested dicts (list indexes stay string keys "0", "1", …).

    Splits and decodes pairs exactly as ``parse_qsl(text, keep_blank_values=True)`` does; the
    keys repeat from one delivery to the next, so their decoding is cached."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    out: dict[str, Any] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        raw_key, _, value = pair.partition("=")
        parts = _key_parts(raw_key) if len(raw_key) <= _CACHED_KEY_LEN else _split_key(raw_key)
        if not parts:
            continue
        if "%" in value or "+" in value:
            value = unquote(value.replace("+", " "))
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def _split_key(raw_key: str) -> tuple[str, ...]:
    return tuple(_KEY_PARTS.findall(unquote(raw_key.replace("+", " "))))


_CACHED_KEY_LEN = 200  # a bounded cache of short keys: a hostile body cannot make it grow large
_key_parts = lru_cache(maxsize=4096)(_split_key)


def account_of(body: bytes) -> tuple[int | None, str | None]:
    """The (account id, subdomain) a delivery claims, read without parsing the rest."""
    account_id: int | None = None
    subdomain: str | None = None
    # The receiver calls this for every webhook: decode only the account pairs, not the body.
    for pair in body.decode("utf-8", errors="replace").split("&"):
        if not pair.startswith("account"):
            continue
        raw_key, _, raw_value = pair.partition("=")
        key = unquote_plus(raw_key)
        if key == "account[id]":
            account_id = account_int(unquote_plus(raw_value))
        elif key == "account[subdomain]":
            subdomain = unquote_plus(raw_value).strip() or None
    return account_id, subdomain


INT64_MAX = 2**63 - 1  # every amoCRM id lands in a BIGINT column


def account_int(value: object) -> int | None:
    """An id sent as a string, or None. ``str.isdigit`` alone accepts "²" and 5,000-digit
    strings, on which ``int()`` raises: a 500 in the receiver, a failed batch in the worker."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > INT64_MAX:
        return None
    return int(text)


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


def _values_list(raw: Any) -> list[Any]:
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
    for cf in _values_list(raw):
        if not isinstance(cf, dict) or not str(cf.get("id", "")).strip().isdigit():
            continue
        values = []
        for v in _values_list(cf.get("values")):
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


_SCHEMAS: dict[str, Schema] = {
    "leads": LeadSchema(),
    "message": MessageSchema(),
    "talk": TalkSchema(),
    "task": TaskSchema(),
}
_NOTE_SCHEMA = NoteSchema()


# --- hand loaders ---------------------------------------------------------------------------
# marshmallow costs more than the rest of a delivery's parse. Every value of a parsed form is a
# string, so each schema is compiled once into plain converters for string values; whatever they
# do not take as it comes (a non-string value, a bad number, a missing required key) goes to the
# schema itself, so its result and its error messages stay the only word on the odd cases.
# tests/test_webhook_loaders.py checks both agree.


class _Slow(Exception):
    """This item needs the schema's own load."""


def _fast_int(required: bool) -> Callable[[str], int | None]:
    def convert(value: str) -> int | None:
        if not value.strip():
            if required:
                raise _Slow
            return None
        try:
            number = int(value)
        except ValueError:
            raise _Slow from None
        if abs(number) > INT64_MAX:
            raise _Slow
        return number
    return convert


def _fast_time(required: bool) -> Callable[[str], datetime | None]:
    def convert(value: str) -> datetime | None:
        text = value.strip()
        if text in ("", "0"):
            if required:
                raise _Slow
            return None
        try:
            return datetime.fromtimestamp(int(text), UTC)
        except (ValueError, OverflowError, OSError):
            raise _Slow from None
    return convert


def _fast_bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "y", "yes")


def _fast_str(value: str) -> str:
    return value


_MISSING = object()


class HandLoader:
    """``schema.load(item)`` by hand when every value the schema reads is a plain string."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        # (key, converter or None to keep the value as it is, required, default), in order.
        self.plan: list[tuple[str, Callable[[str], Any] | None, bool, Any]] = []
        if any(schema._hooks.values()):
            raise TypeError(f"{type(schema).__name__}: no hand loader for schema hooks")
        for name, f in schema.load_fields.items():
            if (f.data_key or f.attribute or f.validators or f.pre_load or f.post_load
                    or callable(f.load_default)):
                raise TypeError(f"{type(schema).__name__}.{name}: no hand loader for its options")
            kind = type(f)
            convert: Callable[[str], Any] | None
            if kind is AmoInt:
                convert = _fast_int(f.required)
            elif kind is UnixTime:
                convert = _fast_time(f.required)
            elif kind is AmoBool:
                convert = _fast_bool
            elif kind is fields.String:
                convert = _fast_str
            elif kind is fields.Raw:
                convert = None
            else:
                raise TypeError(f"{type(schema).__name__}.{name}: no hand loader for "
                                f"{kind.__name__}")
            self.plan.append((name, convert, f.required, f.load_default))

    def load(self, item: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            for name, convert, required, default in self.plan:
                value = item.get(name, _MISSING)
                if value is _MISSING:
                    if required:
                        raise _Slow
                    out[name] = default
                elif convert is None:
                    out[name] = value
                elif isinstance(value, str):
                    out[name] = convert(value)
                else:
                    raise _Slow
        except _Slow:
            return self.schema.load(item)
        return out


_LOADERS = {root: HandLoader(schema) for root, schema in _SCHEMAS.items()}
_NOTE_LOADER = HandLoader(_NOTE_SCHEMA)


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookEvent:
    """One entity of one action in a delivery, e.g. kind "leads.status" and its typed fields."""

    kind: str
    data: dict[str, Any]


@dataclass
class ParsedDelivery:
    account_id: int | None
    subdomain: str | None
    events: list[WebhookEvent] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # kinds understood and skipped
    unknown: list[str] = field(default_factory=list)  # kinds we do not know


def parse_delivery(body: bytes | str) -> ParsedDelivery:
    """Parse a whole delivery; raises WebhookParseError when nothing in it is readable."""
    try:
        tree = parse_form(body)
    except UnicodeDecodeError as exc:
        raise WebhookParseError("body is not UTF-8") from exc
    account = tree.pop("account", {})
    if not isinstance(account, dict):
        account = {}
    parsed = ParsedDelivery(
        account_id=account_int(account.get("id", "")),
        subdomain=(str(account.get("subdomain", "")).strip() or None),
    )
    if not tree:
        raise WebhookParseError("no entities in body")
    errors: list[str] = []
    for root, actions in tree.items():
        if not isinstance(actions, dict):
            parsed.unknown.append(root)
            continue
        for action, items in actions.items():
            kind = f"{root}.{action}"
            if root in IGNORED_ROOTS or kind in IGNORED_EVENTS:
                parsed.ignored.append(kind)
                continue
            if kind not in HANDLED_EVENTS:
                parsed.unknown.append(kind)
                continue
            for index, item in enumerate(_values_list(items)):
                where = f"{root}[{action}][{index}]"
                try:
                    parsed.events.append(WebhookEvent(kind, _load(root, action, item)))
                except ValidationError as exc:
                    errors.extend(_messages(where, exc.messages))
    if errors and not parsed.events:
        raise WebhookParseError("; ".join(errors))
    return parsed


def _load(root: str, action: str, item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValidationError("not an object")
    if root == "leads" and action == "note":
        note = item.get("note", item)
        return _NOTE_LOADER.load(note if isinstance(note, dict) else {})
    data = _LOADERS[root].load(item)
    if root == "leads":
        # A status delivery may carry no custom fields: absent is not "cleared".
        data["custom_fields_present"] = item.get("custom_fields") is not None
        data["custom_fields"] = normalise_custom_fields(data.get("custom_fields"))
    return data


def _messages(where: str, messages: Any) -> list[str]:
    if isinstance(messages, dict):
        out = []
        for key, value in messages.items():
            out.extend(_messages(f"{where}[{key}]", value))
        return out
    if isinstance(messages, list):
        return [f"{where}: {m}" for m in messages if isinstance(m, str)] or [f"{where}: invalid"]
    return [f"{where}: {messages}"]


def event_instant(data: dict[str, Any], received_at: datetime) -> datetime:
    """When a lead change happened: updated_at, else last_modified, else the receipt time."""
    return data.get("updated_at") or data.get("last_modified") or received_at
