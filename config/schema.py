"""marshmallow 4 schemas of the account YAML: validate everything, build `config.account` objects.

Every message is written for the admin who edits the file ("expected an integer, got "abc""),
and every check that involves two keys reports at the key the admin has to change. The loader
adds file and line; this module only knows YAML paths.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from collections.abc import Mapping
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validates_schema

from config.account import (
    WEEKDAYS,
    AccountConfig,
    AccountInfo,
    AuthConfig,
    CalendarConfig,
    ComplaintsConfig,
    ComplaintsFields,
    ComplaintsPipeline,
    FrtConfig,
    FrtFields,
    Period,
    PipelinesConfig,
    ReferralsConfig,
    SurveyConfig,
    SurveysConfig,
    SurveyZoneConfig,
    SyncConfig,
    TalkRateConfig,
    TaskRule,
    UsersConfig,
    WritebackConfig,
    ZoneField,
)

MISSING_MESSAGE = "missing required key"
ZONES = ("green", "yellow", "red")
SURVEY_NAMES = ("nps", "csat", "ces")
BASE_DOMAINS = ("amocrm.ru", "amocrm.com", "kommo.com")
# Event names as metrics.md and the amoCRM events API spell them.
OPENING_EVENTS = ("incoming_chat_message", "incoming_call", "incoming_mail", "incoming_sms", "lead_added")
CLOSING_EVENTS = ("outgoing_chat_message", "outgoing_call", "outgoing_mail", "outgoing_sms")
EXTRA_REACTIONS = ("talk_read", "note")
_PERIOD_RE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9-]+$")
# Number forms YAML 1.1 reads in surprising ways (010 is 8, 1:30 is 90, 1_000 is 1000). The
# loader keeps them as strings; the number fields then say how to write the number instead.
_YAML11_NUMBER_RE = re.compile(r"^[-+]?(?:0[0-9_]+|0[bx][0-9a-fA-F_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?|[0-9]+_[0-9_]*(?:\.[0-9_]*)?)$")
PLAIN_NUMBER_HINT = ' (write a plain number: no leading zero, ":" or "_")'


def got(value: Any) -> str:
    """How a YAML value is named in a message: strings quoted, containers by kind."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return str(value)


def _one_of(choices: tuple[str, ...]) -> str:
    return "|".join(choices)


def quote_hint(value: bool) -> str:
    """YAML 1.1 reads yes/no/on/off (any case) as booleans: tell the admin to quote the word.

    The loader, which has the text as written, replaces the word in the hint with it (NO).
    """
    return f' (quote it: "{got(value)}")'


def _not_a_number(value: Any, what: str) -> str:
    hint = PLAIN_NUMBER_HINT if isinstance(value, str) and _YAML11_NUMBER_RE.match(value) else ""
    return f"expected {what}, got {got(value)}{hint}"


# ---------------------------------------------------------------------------------------------
# Scalar fields: strict YAML types (no "5" for 5, no true for 1), messages naming what came.


class _Field(fields.Field):
    default_error_messages = {"required": MISSING_MESSAGE, "null": "expected a value, got nothing (null)"}


class Int(_Field):
    def __init__(self, *, minimum: int | None = None, what: str = "an integer", **kw: Any) -> None:
        super().__init__(**kw)
        self.minimum = minimum
        self.what = what

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(_not_a_number(value, self.what))
        if self.minimum is not None and value < self.minimum:
            raise ValidationError(f"must be ≥ {self.minimum}, got {value}")
        return value


class Number(_Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(_not_a_number(value, "a number"))
        return value


class Str(_Field):
    def __init__(self, *, choices: tuple[str, ...] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.choices = choices

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> str:
        if isinstance(value, bool):
            raise ValidationError(f"expected a non-empty string, got {got(value)}{quote_hint(value)}")
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(f"expected a non-empty string, got {got(value)}")
        if self.choices is not None and value not in self.choices:
            raise ValidationError(f"must be one of {_one_of(self.choices)}, got {got(value)}")
        return value


class Bool(_Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(f"expected true or false, got {got(value)}")
        return value


class Timezone(Str):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> str:
        name = super()._deserialize(value, attr, data, **kw)
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"unknown timezone {got(name)} (expected an IANA name such as Europe/Moscow)") from None
        return name


class Country(Str):
    """The ISO 3166-1 alpha-2 code the `holidays` package lists (RU), never one of its aliases
    (RUS, UK): the calendar keys the moved working days by the canonical code."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> str:
        code = super()._deserialize(value, attr, data, **kw)
        if code in holidays.list_supported_countries(include_aliases=False):
            return code
        canonical = _canonical_country(code)
        if canonical is not None:
            raise ValidationError(f"{got(code)} is not the ISO code of the country (did you mean {canonical}?)")
        raise ValidationError(f"unknown holidays country {got(code)} (expected a code such as RU)")


def _canonical_country(code: str) -> str | None:
    """The canonical code of an alias or a differently cased code the package knows, else None."""
    for candidate in dict.fromkeys((code, code.upper())):
        if candidate in holidays.list_supported_countries(include_aliases=True):
            try:
                return str(holidays.country_holidays(candidate).country)
            except (NotImplementedError, KeyError, AttributeError):  # pragma: no cover - defensive
                return None
    return None


class EnvName(Str):
    """The NAME of an environment variable; the value is never echoed (it may be a pasted secret)."""

    MESSAGE = "must be the NAME of an environment variable (A-Z, 0-9, _), not the secret itself"

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> str:
        if not isinstance(value, str) or not _ENV_NAME_RE.match(value):
            raise ValidationError(self.MESSAGE)
        return value


class Subdomain(Str):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> str:
        name = super()._deserialize(value, attr, data, **kw)
        if not _SUBDOMAIN_RE.match(name):
            raise ValidationError(
                f'must be the subdomain alone (a-z, 0-9, -), e.g. "acme" for https://acme.amocrm.ru, got {got(name)}'
            )
        return name


class IsoDate(Str):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> str:
        if isinstance(value, str) and len(value) == 10:
            try:
                return date.fromisoformat(value).isoformat()
            except ValueError:
                pass
        raise ValidationError(f"expected a date YYYY-MM-DD, got {got(value)}")


class TupleOf(_Field):
    """A YAML list as a tuple, each item checked by `item`; errors keyed by index."""

    def __init__(self, item: fields.Field, *, non_empty: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.item = item
        self.non_empty = non_empty

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValidationError(f"expected a list, got {got(value)}")
        if self.non_empty and not value:
            raise ValidationError("must list at least one item, got an empty list")
        out: list[Any] = []
        errors: dict[int, Any] = {}
        for i, item in enumerate(value):
            try:
                out.append(self.item.deserialize(item))
            except ValidationError as exc:
                errors[i] = exc.messages
        if errors:
            raise ValidationError(errors)  # type: ignore[arg-type]
        return tuple(out)


class Pair(_Field):
    """[low, high] integers with low ≤ high (a range on a scale).

    A scale (`scale=True`) needs low < high (its length divides), and `minimum` bounds low.
    """

    def __init__(self, *, scale: bool = False, minimum: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.scale = scale
        self.minimum = minimum

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> tuple[int, int]:
        ok = (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        )
        if not ok:
            raise ValidationError(f"expected [low, high] as two integers, got {got(value)}")
        if self.scale and value[0] >= value[1]:
            raise ValidationError(f"low must be < high on a scale, got [{value[0]}, {value[1]}]")
        if value[0] > value[1]:
            raise ValidationError(f"low must be ≤ high, got [{value[0]}, {value[1]}]")
        if self.minimum is not None and value[0] < self.minimum:
            raise ValidationError(f"low must be ≥ {self.minimum}, got [{value[0]}, {value[1]}]")
        return (value[0], value[1])


def parse_period(text: Any) -> Period:
    """'09:00-13:00' → (540, 780); ValidationError with the admin's text otherwise."""
    match = _PERIOD_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValidationError(f'malformed period {got(text)}: expected "HH:MM-HH:MM"')
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        raise ValidationError(f"malformed period {got(text)}: no such time of day")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end <= start:
        # Overnight periods would belong to two dates; the admin splits them at midnight.
        raise ValidationError(f"period {got(text)} must end after it starts (split it at 24:00)")
    return (start, end)


def _fmt(period: Period) -> str:
    return f"{period[0] // 60:02d}:{period[0] % 60:02d}-{period[1] // 60:02d}:{period[1] % 60:02d}"


class Periods(_Field):
    """A day's working periods: a list of "HH:MM-HH:MM", none overlapping; [] or null = day off."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(allow_none=True, **kw)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> tuple[Period, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise ValidationError(f'expected a list of "HH:MM-HH:MM" periods, got {got(value)}')
        errors: dict[int, list[str]] = {}
        parsed: list[tuple[int, Period]] = []
        for i, item in enumerate(value):
            try:
                parsed.append((i, parse_period(item)))
            except ValidationError as exc:
                errors[i] = [str(m) for m in exc.messages]
        ordered = sorted(parsed, key=lambda ip: ip[1])
        for (_, prev), (i, cur) in zip(ordered, ordered[1:], strict=False):
            if cur[0] < prev[1]:
                errors.setdefault(i, []).append(f"period {_fmt(cur)} overlaps {_fmt(prev)}")
        if errors:
            raise ValidationError(errors)  # type: ignore[arg-type]
        return tuple(sorted(p for _, p in parsed))


class MappingOf(_Field):
    """A YAML mapping whose keys and values are checked by two fields; errors keyed by key."""

    def __init__(
        self,
        key: _Field,
        value: fields.Field,
        *,
        required_keys: tuple[str, ...] = (),
        distinct: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.key_field, self.value_field = key, value
        self.required_keys = required_keys
        self.distinct = distinct  # what the values are, when no two keys may share one

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValidationError(f"expected a mapping, got {got(value)}")
        out: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for k, v in value.items():
            try:
                key = str(self.key_field.deserialize(k))
                out[key] = self.value_field.deserialize(v)
            except ValidationError as exc:
                errors[str(k)] = exc.messages
        for k in self.required_keys:
            if k not in value:
                errors[k] = [MISSING_MESSAGE]
        if self.distinct:
            first: dict[Any, str] = {}
            for k, v in out.items():
                other = first.setdefault(v, k)
                if other != k:
                    errors.setdefault(k, []).append(f"{self.distinct} {v} is also {other}'s; each needs its own")
        if errors:
            raise ValidationError(errors)
        return out


class _KeyIn(Str):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> str:
        if not isinstance(value, str) or (self.choices and value not in self.choices):
            raise ValidationError(_unknown_key(str(value), self.choices or ()))
        return value


def _unknown_key(name: str, known: tuple[str, ...] | list[str]) -> str:
    hint = difflib.get_close_matches(name, list(known), n=1)
    return f'unknown key "{name}"' + (f' (did you mean "{hint[0]}"?)' if hint else "")


def _enum_ids() -> MappingOf:
    return MappingOf(
        _KeyIn(choices=ZONES), _enum_id(), required_keys=ZONES, distinct="enum id", required=True
    )


def _field_id(**kw: Any) -> Int:
    return Int(what="a field id (integer)", minimum=1, **kw)


def _enum_id() -> Int:
    return Int(what="an integer enum id", minimum=1)


# ---------------------------------------------------------------------------------------------
# Schemas. Unknown keys are excluded by marshmallow and reported by `_Strict` with a suggestion,
# so one file's every error comes back in one pass.


class _Strict(Schema):
    class Meta:
        unknown = EXCLUDE

    error_messages = {"type": "expected a mapping"}

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _no_unknown_keys(self, data: Any, original_data: Any, **kw: Any) -> None:
        if not isinstance(original_data, Mapping):
            return
        known = [f.data_key or name for name, f in self.fields.items()]
        unknown = {str(k): [_unknown_key(str(k), known)] for k in original_data if k not in known}
        if unknown:
            raise ValidationError(unknown)


def _nested(schema: type[Schema], **kw: Any) -> fields.Nested:
    kw.setdefault("error_messages", {"required": MISSING_MESSAGE, "null": "expected a mapping, got nothing (null)"})
    return fields.Nested(schema, **kw)


def _valid_or_default(data: Mapping[str, Any], original: Any, key: str, default: Any) -> Any:
    """A key's loaded value for a check across keys; its default when the file omits it; None
    when the file has it but it failed its own check (that error is enough, no guess from the
    default)."""
    if key in data:
        return data[key]
    if isinstance(original, Mapping) and key in original:
        return None
    return default


class AuthSchema(_Strict):
    long_lived_token_env = EnvName()
    encryption_key_env = EnvName()
    client_id = Str()
    client_secret_env = EnvName()
    redirect_uri = Str()

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> AuthConfig:
        return AuthConfig(**data)


class AccountInfoSchema(_Strict):
    subdomain = Subdomain(required=True)
    id = Int(required=True, minimum=1)
    base_domain = Str(required=True, choices=BASE_DOMAINS)
    timezone = Timezone(required=True)
    webhook_secret_env = EnvName(required=True)
    auth = _nested(AuthSchema)

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> AccountInfo:
        return AccountInfo(**data)


class WorkingHoursSchema(_Strict):
    mon = Periods()
    tue = Periods()
    wed = Periods()
    thu = Periods()
    fri = Periods()
    sat = Periods()
    sun = Periods()

    @validates_schema
    def _some_working_time(self, data: dict[str, Any], **kw: Any) -> None:
        # Runs only when every weekday parsed: an empty week would make business time stand still.
        if not any(data.get(day) for day in WEEKDAYS):
            raise ValidationError(
                'no working time in the whole week (every weekday is a day off); '
                'give at least one weekday a period such as "09:00-18:00"'
            )

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> dict[str, tuple[Period, ...]]:
        return {day: data.get(day, ()) for day in WEEKDAYS}


class CalendarSchema(_Strict):
    working_hours = _nested(WorkingHoursSchema, required=True)
    holidays = Country(allow_none=True)  # null: no public holidays, only days_off
    shorten_pre_holiday = Bool()
    days_off = TupleOf(IsoDate())
    working_days = MappingOf(IsoDate(), Periods())

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> CalendarConfig:
        return CalendarConfig(**data)


class UsersSchema(_Strict):
    ignored = TupleOf(Int(what="a user id (integer)"))
    supervisor = Int(what="a user id (integer)", minimum=1)

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> UsersConfig:
        return UsersConfig(**data)


class ComplaintsPipelineSchema(_Strict):
    id = Int(required=True, minimum=1)
    resolved_statuses = TupleOf(Int(what="a status id (integer)", minimum=1), non_empty=True)

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> ComplaintsPipeline:
        return ComplaintsPipeline(**data)


class PipelinesSchema(_Strict):
    sales = TupleOf(Int(what="a pipeline id (integer)", minimum=1), non_empty=True, required=True)
    complaints = _nested(ComplaintsPipelineSchema)

    @validates_schema(skip_on_field_errors=False)
    def _distinct(self, data: dict[str, Any], **kw: Any) -> None:
        complaints = data.get("complaints")
        # after a field error marshmallow hands over the partly valid dict, not the object
        if isinstance(complaints, ComplaintsPipeline) and complaints.id in data.get("sales", ()):
            raise ValidationError({"complaints": {"id": [f"pipeline {complaints.id} is also a sales pipeline"]}})

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> PipelinesConfig:
        return PipelinesConfig(**data)


class ZoneFieldSchema(_Strict):
    field_id = _field_id(required=True)
    enums = _enum_ids()

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> ZoneField:
        return ZoneField(**data)


class TaskRuleSchema(_Strict):
    """A task rule; `PLACEHOLDERS` are the keywords jobs/planner.py formats its text with."""

    PLACEHOLDERS: tuple[str, ...] = ()

    responsible = Str(required=True, choices=("responsible", "supervisor"))
    due_business_minutes = Int(required=True, minimum=0)
    text = Str(required=True)

    @validates_schema(skip_on_field_errors=False)
    def _known_placeholders(self, data: dict[str, Any], **kw: Any) -> None:
        if "text" not in data:
            return  # missing or not a string: the field reports it
        problems = template_problems(data["text"], self.PLACEHOLDERS)
        if problems:
            raise ValidationError({"text": problems})

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> TaskRule:
        return TaskRule(**data)


class FrtBreachTaskSchema(TaskRuleSchema):
    PLACEHOLDERS = ("waited_minutes",)


class ComplaintOverdueTaskSchema(TaskRuleSchema):
    PLACEHOLDERS = ("open_days",)


class LowScoreTaskSchema(TaskRuleSchema):
    PLACEHOLDERS = ("score", "survey")


def template_problems(text: str, allowed: tuple[str, ...]) -> list[str]:
    """What is wrong with the `{name}` placeholders of a task text `str.format` fills with `allowed`.

    Only plain names are allowed: no positional `{}`/`{0}`, attributes, indexes, conversions or
    format specs (each either fails at run time or reaches into Python objects).
    """
    names = ", ".join(f"{{{n}}}" for n in allowed) or "none"
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return [f'malformed placeholder: {exc} (write {{{{ and }}}} for a literal brace; allowed: {names})']
    problems: list[str] = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name not in allowed:
            problems.append(f"unknown placeholder {written} (allowed: {names})")
        elif conversion or spec:
            problems.append(f"placeholder {written} must be plain: write {{{name}}}")
    return problems


class FrtFieldsSchema(_Strict):
    first_minutes = _field_id()
    last_minutes = _field_id()
    zone = _nested(ZoneFieldSchema)

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> FrtFields:
        return FrtFields(**data)


class FrtSchema(_Strict):
    opens_on = TupleOf(Str(choices=OPENING_EVENTS), non_empty=True, required=True)
    closes_on = TupleOf(Str(choices=CLOSING_EVENTS), required=True)
    also_reacts = TupleOf(Str(choices=EXTRA_REACTIONS))
    target_minutes = Int(minimum=1)
    limit_minutes = Int(minimum=1)
    fields_ = _nested(FrtFieldsSchema, data_key="fields", attribute="fields")
    breach_task = _nested(FrtBreachTaskSchema)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _target_within_limit(self, data: dict[str, Any], original_data: Any, **kw: Any) -> None:
        target = _valid_or_default(data, original_data, "target_minutes", FrtConfig.target_minutes)
        limit = _valid_or_default(data, original_data, "limit_minutes", FrtConfig.limit_minutes)
        if isinstance(target, int) and isinstance(limit, int) and limit < target:
            raise ValidationError(f"must be ≥ target_minutes ({target}), got {limit}", "limit_minutes")

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _something_closes(self, data: dict[str, Any], original_data: Any, **kw: Any) -> None:
        # FRT cannot be switched off (opens_on must list something): with no reaction at all,
        # no wait would ever close and every one would end in a breach task.
        also = _valid_or_default(data, original_data, "also_reacts", FrtConfig.also_reacts)
        if data.get("closes_on") == () and also == ():
            raise ValidationError(
                "nothing would close a wait (nor does also_reacts list anything), so every "
                f"wait would become a breach task; list at least one of {_one_of(CLOSING_EVENTS)}",
                "closes_on")

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> FrtConfig:
        return FrtConfig(**data)


class ComplaintsFieldsSchema(_Strict):
    resolution_hours = _field_id()

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> ComplaintsFields:
        return ComplaintsFields(**data)


class ComplaintsSchema(_Strict):
    overdue_days = Int(minimum=1)
    no_complaint_days = Int(minimum=1)
    business_time = Bool()
    fields_ = _nested(ComplaintsFieldsSchema, data_key="fields", attribute="fields")
    overdue_task = _nested(ComplaintOverdueTaskSchema)

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> ComplaintsConfig:
        return ComplaintsConfig(**data)


class ReferralsSchema(_Strict):
    field_id = _field_id(required=True)
    enum_ids = TupleOf(_enum_id())
    values = TupleOf(Str())

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> ReferralsConfig:
        return ReferralsConfig(**data)


class SurveySchema(_Strict):
    field_id = _field_id(required=True)
    scale = Pair(scale=True, minimum=0, required=True)
    low = Pair(required=True)

    @validates_schema(skip_on_field_errors=False)
    def _low_on_scale(self, data: dict[str, Any], **kw: Any) -> None:
        scale, low = data.get("scale"), data.get("low")
        if scale and low and not (scale[0] <= low[0] and low[1] <= scale[1]):
            raise ValidationError(f"must lie within scale [{scale[0]}, {scale[1]}], got [{low[0]}, {low[1]}]", "low")

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> SurveyConfig:
        return SurveyConfig(**data)


class TalkRateSchema(_Strict):
    feeds = Str(error_messages={"required": MISSING_MESSAGE})
    scale = Pair(scale=True)
    map = Str(choices=("as_is", "linear"))

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> TalkRateConfig:
        return TalkRateConfig(**data)


class SurveyZoneSchema(_Strict):
    field_id = _field_id(required=True)
    enums = _enum_ids()
    green_from = Number()
    yellow_from = Number()

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _ordered(self, data: dict[str, Any], original_data: Any, **kw: Any) -> None:
        green = _valid_or_default(data, original_data, "green_from", SurveyZoneConfig.green_from)
        yellow = _valid_or_default(data, original_data, "yellow_from", SurveyZoneConfig.yellow_from)
        if green is not None and yellow is not None and yellow > green:
            raise ValidationError(f"must be ≤ green_from ({green}), got {yellow}", "yellow_from")

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> SurveyZoneConfig:
        return SurveyZoneConfig(**data)


class SurveysSchema(_Strict):
    nps = _nested(SurveySchema)
    csat = _nested(SurveySchema)
    ces = _nested(SurveySchema)
    talk_rate = _nested(TalkRateSchema)
    zone = _nested(SurveyZoneSchema)
    low_score_task = _nested(LowScoreTaskSchema)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _feeds_a_configured_survey(self, data: dict[str, Any], original_data: Any, **kw: Any) -> None:
        talk = original_data.get("talk_rate") if isinstance(original_data, Mapping) else None
        if not isinstance(talk, Mapping):
            return
        feeds = talk.get("feeds", TalkRateConfig.feeds)
        if not isinstance(feeds, str):
            return  # the field itself reports the wrong type
        if feeds not in SURVEY_NAMES:
            message = f"unknown survey {got(feeds)} (one of {_one_of(SURVEY_NAMES)})"
        elif feeds not in original_data:
            message = f'survey "{feeds}" is not configured under surveys'
        else:
            return
        raise ValidationError({"talk_rate": {"feeds": [message]}})

    @validates_schema(skip_on_field_errors=False)
    def _as_is_fits_the_survey(self, data: dict[str, Any], **kw: Any) -> None:
        talk = data.get("talk_rate")
        survey = data.get(talk.feeds) if isinstance(talk, TalkRateConfig) else None
        if not isinstance(talk, TalkRateConfig) or not isinstance(survey, SurveyConfig) or talk.map != "as_is":
            return
        (t_lo, t_hi), (lo, hi) = talk.scale, survey.scale
        if not (lo <= t_lo and t_hi <= hi):
            raise ValidationError({"talk_rate": {"scale": [
                f"[{t_lo}, {t_hi}] does not lie within the scale [{lo}, {hi}] of surveys.{talk.feeds}, "
                f"which map: as_is feeds with the rating unchanged (use map: linear, or a scale within [{lo}, {hi}])"
            ]}})

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> SurveysConfig:
        return SurveysConfig(**data)


class WritebackSchema(_Strict):
    dry_run = Bool()
    batch_size = Int(minimum=1)
    max_requests_per_second = Int(minimum=1)
    task_type_id = Int(minimum=1)

    @validates_schema(skip_on_field_errors=False)
    def _within_amocrm_limits(self, data: dict[str, Any], **kw: Any) -> None:
        errors: dict[str, list[str]] = {}
        if data.get("batch_size", 0) > 50:
            errors["batch_size"] = [f"must be ≤ 50 (amoCRM's batch limit), got {data['batch_size']}"]
        if data.get("max_requests_per_second", 0) > 7:
            errors["max_requests_per_second"] = [f"must be ≤ 7 (amoCRM's rate limit), got {data['max_requests_per_second']}"]
        if errors:
            raise ValidationError(errors)

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> WritebackConfig:
        return WritebackConfig(**data)


class SyncSchema(_Strict):
    events_pull_seconds = Int(minimum=1)
    events_overlap_minutes = Int(minimum=0)
    flush_seconds = Int(minimum=1)
    sweeper_seconds = Int(minimum=1)

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> SyncConfig:
        return SyncConfig(**data)


# The task rules and every key that names a custom field the metrics write or read, as YAML paths.
TASK_RULES: tuple[tuple[str, ...], ...] = (
    ("frt", "breach_task"),
    ("complaints", "overdue_task"),
    ("surveys", "low_score_task"),
)
FIELD_ID_KEYS: tuple[tuple[str, ...], ...] = (
    ("frt", "fields", "first_minutes"),
    ("frt", "fields", "last_minutes"),
    ("frt", "fields", "zone", "field_id"),
    ("complaints", "fields", "resolution_hours"),
    ("referrals", "field_id"),
    ("surveys", "nps", "field_id"),
    ("surveys", "csat", "field_id"),
    ("surveys", "ces", "field_id"),
    ("surveys", "zone", "field_id"),
)


def _at(data: Any, path: tuple[str, ...]) -> Any:
    """The raw YAML value at `path`, None when a part is missing or not a mapping."""
    for part in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def _put(errors: dict[str, Any], path: tuple[str, ...], message: str) -> None:
    """Add `message` at `path` in a nested marshmallow-style error dict."""
    for part in path[:-1]:
        errors = errors.setdefault(part, {})
    errors.setdefault(path[-1], []).append(message)


class AccountSchema(_Strict):
    account = _nested(AccountInfoSchema, required=True)
    calendar = _nested(CalendarSchema)
    users = _nested(UsersSchema)
    pipelines = _nested(PipelinesSchema, required=True)
    frt = _nested(FrtSchema, required=True)
    complaints = _nested(ComplaintsSchema)
    referrals = _nested(ReferralsSchema)
    surveys = _nested(SurveysSchema)
    writeback = _nested(WritebackSchema)
    sync = _nested(SyncSchema)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _supervisor_configured(self, data: dict[str, Any], original_data: Any, **kw: Any) -> None:
        """A rule giving tasks to "supervisor" needs users.supervisor (else tasks silently go to
        the deal's responsible)."""
        users = _at(original_data, ("users",))
        if users is not None and not isinstance(users, Mapping):
            return  # users itself reports its type
        supervisor = users.get("supervisor") if users is not None else None
        if supervisor is not None and (not isinstance(supervisor, int) or isinstance(supervisor, bool) or supervisor >= 1):
            return  # configured, or not an integer (users.supervisor reports that)
        errors: dict[str, Any] = {}
        for path in TASK_RULES:
            if _at(original_data, (*path, "responsible")) == "supervisor":
                _put(errors, (*path, "responsible"), '"supervisor" needs users.supervisor (the user id who gets these tasks)')
        if errors:
            raise ValidationError(errors)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _field_ids_distinct(self, data: dict[str, Any], original_data: Any, **kw: Any) -> None:
        """Each metric writes its own custom field: one field id under two keys would have one
        value overwrite the other (or one be read as the other)."""
        first: dict[int, tuple[str, ...]] = {}
        errors: dict[str, Any] = {}
        for path in FIELD_ID_KEYS:
            value = _at(original_data, path)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                continue  # absent, or the key's own check reports it
            other = first.setdefault(value, path)
            if other != path:
                _put(errors, path, f"field {value} is also {'.'.join(other)}; each metric needs its own field")
        if errors:
            raise ValidationError(errors)

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> AccountConfig:
        return AccountConfig(
            account=data["account"],
            calendar=data.get("calendar"),
            users=data.get("users", UsersConfig()),
            pipelines=data["pipelines"],
            frt=data["frt"],
            complaints=data.get("complaints", ComplaintsConfig()),
            referrals=data.get("referrals"),
            surveys=data.get("surveys", SurveysConfig()),
            writeback=data.get("writeback", WritebackConfig()),
            sync=data.get("sync", SyncConfig()),
        )
