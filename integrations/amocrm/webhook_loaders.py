"""Hand-written loaders for the webhook schemas: ``schema.load`` of a form item, compiled once
into plain converters for string values, falling back to the schema for anything else."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, fields

from integrations.amocrm.webhook_schemas import (
    INT64_MAX,
    NOTE_SCHEMA,
    SCHEMAS,
    AmoBool,
    AmoInt,
    UnixTime,
)

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


LOADERS = {root: HandLoader(schema) for root, schema in SCHEMAS.items()}
NOTE_LOADER = HandLoader(NOTE_SCHEMA)
