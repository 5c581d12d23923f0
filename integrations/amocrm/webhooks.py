"""amoCRM account webhooks: form body → nested structure → typed events.

amoCRM POSTs ``application/x-www-form-urlencoded`` bodies built by PHP's ``http_build_query``:
``leads[status][0][status_id]=142``. Every value arrives as a string, one delivery can carry
several entities and several actions, companies arrive under ``contacts`` with
``type=company``, and Digital Pipeline status deliveries carry ids only.

Here: the event tables, the form parse, ``account_of`` and ``parse_delivery``. Each item's typed
fields and schemas are in webhook_schemas.py, their fast hand loaders in webhook_loaders.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, unquote_plus

from marshmallow import ValidationError

from integrations.amocrm.webhook_loaders import LOADERS, NOTE_LOADER
from integrations.amocrm.webhook_schemas import INT64_MAX, normalise_custom_fields, values_list

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


def account_int(value: object) -> int | None:
    """An id sent as a string, or None. ``str.isdigit`` alone accepts "²" and 5,000-digit
    strings, on which ``int()`` raises: a 500 in the receiver, a failed batch in the worker."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > INT64_MAX:
        return None
    return int(text)


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
            for index, item in enumerate(values_list(items)):
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
        return NOTE_LOADER.load(note if isinstance(note, dict) else {})
    data = LOADERS[root].load(item)
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
