"""marshmallow 4 schemas of the account YAML: validate everything, build `config.account` objects.

Every message is written for the admin who edits the file ("expected an integer, got "abc""),
and every check that involves two keys reports at the key the admin has to change. The loader
adds file and line; this module only knows YAML paths.
"""

from __future__ import annotations

import difflib
import json
import re
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
            raise ValidationError(f"expected {self.what}, got {got(value)}")
        if self.minimum is not None and value < self.minimum:
            raise ValidationError(f"must be ≥ {self.minimum}, got {value}")
        return value


class Number(_Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"expected a number, got {got(value)}")
        return value


class Str(_Field):
    def __init__(self, *, choices: tuple[str, ...] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.choices = choices

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> str:
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
    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> str:
        code = super()._deserialize(value, attr, data, **kw)
        if code not in holidays.list_supported_countries():
            raise ValidationError(f"unknown holidays country {got(code)} (expected a code such as RU)")
        return code


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

    def __init__(self, item: fields.Field, **kw: Any) -> None:
        super().__init__(**kw)
        self.item = item

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValidationError(f"expected a list, got {got(value)}")
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
    """[low, high] integers with low ≤ high (a scale or a range on it)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> tuple[int, int]:
        ok = (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        )
        if not ok:
            raise ValidationError(f"expected [low, high] as two integers, got {got(value)}")
        if value[0] > value[1]:
            raise ValidationError(f"low must be ≤ high, got [{value[0]}, {value[1]}]")
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

    def __init__(self, key: _Field, value: fields.Field, *, required_keys: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(**kw)
        self.key_field, self.value_field = key, value
        self.required_keys = required_keys

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
    return MappingOf(_KeyIn(choices=ZONES), Int(what="an integer enum id"), required_keys=ZONES, required=True)


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


class AuthSchema(_Strict):
    long_lived_token_env = Str()
    encryption_key_env = Str()
    client_id = Str()
    client_secret_env = Str()
    redirect_uri = Str()

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> AuthConfig:
        return AuthConfig(**data)


class AccountInfoSchema(_Strict):
    subdomain = Str(required=True)
    id = Int(required=True, minimum=1)
    base_domain = Str(required=True, choices=BASE_DOMAINS)
    timezone = Timezone(required=True)
    webhook_secret_env = Str(required=True)
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

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> dict[str, tuple[Period, ...]]:
        return {day: data.get(day, ()) for day in WEEKDAYS}


class CalendarSchema(_Strict):
    working_hours = _nested(WorkingHoursSchema, required=True)
    holidays = Country()
    shorten_pre_holiday = Bool()
    days_off = TupleOf(IsoDate())
    working_days = MappingOf(IsoDate(), Periods())

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> CalendarConfig:
        return CalendarConfig(**data)


class UsersSchema(_Strict):
    ignored = TupleOf(Int(what="a user id (integer)"))
    supervisor = Int(what="a user id (integer)")

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> UsersConfig:
        return UsersConfig(**data)


class ComplaintsPipelineSchema(_Strict):
    id = Int(required=True, minimum=1)
    resolved_statuses = TupleOf(Int(what="a status id (integer)"))

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> ComplaintsPipeline:
        return ComplaintsPipeline(**data)


class PipelinesSchema(_Strict):
    sales = TupleOf(Int(what="a pipeline id (integer)"), required=True)
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
    field_id = Int(required=True, what="a field id (integer)")
    enums = _enum_ids()

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> ZoneField:
        return ZoneField(**data)


class TaskRuleSchema(_Strict):
    responsible = Str(required=True, choices=("responsible", "supervisor"))
    due_business_minutes = Int(required=True, minimum=0)
    text = Str(required=True)

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> TaskRule:
        return TaskRule(**data)


class FrtFieldsSchema(_Strict):
    first_minutes = Int(what="a field id (integer)")
    last_minutes = Int(what="a field id (integer)")
    zone = _nested(ZoneFieldSchema)

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> FrtFields:
        return FrtFields(**data)


class FrtSchema(_Strict):
    opens_on = TupleOf(Str(choices=OPENING_EVENTS), required=True)
    closes_on = TupleOf(Str(choices=CLOSING_EVENTS), required=True)
    also_reacts = TupleOf(Str(choices=EXTRA_REACTIONS))
    target_minutes = Int(minimum=1)
    limit_minutes = Int(minimum=1)
    fields_ = _nested(FrtFieldsSchema, data_key="fields", attribute="fields")
    breach_task = _nested(TaskRuleSchema)

    @validates_schema(skip_on_field_errors=False)
    def _target_within_limit(self, data: dict[str, Any], **kw: Any) -> None:
        target = data.get("target_minutes", FrtConfig.target_minutes)
        limit = data.get("limit_minutes", FrtConfig.limit_minutes)
        if isinstance(target, int) and isinstance(limit, int) and limit < target:
            raise ValidationError(f"must be ≥ target_minutes ({target}), got {limit}", "limit_minutes")

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> FrtConfig:
        return FrtConfig(**data)


class ComplaintsFieldsSchema(_Strict):
    resolution_hours = Int(what="a field id (integer)")

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> ComplaintsFields:
        return ComplaintsFields(**data)


class ComplaintsSchema(_Strict):
    overdue_days = Int(minimum=1)
    no_complaint_days = Int(minimum=1)
    business_time = Bool()
    fields_ = _nested(ComplaintsFieldsSchema, data_key="fields", attribute="fields")
    overdue_task = _nested(TaskRuleSchema)

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> ComplaintsConfig:
        return ComplaintsConfig(**data)


class ReferralsSchema(_Strict):
    field_id = Int(required=True, what="a field id (integer)")
    enum_ids = TupleOf(Int(what="an integer enum id"))
    values = TupleOf(Str())

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> ReferralsConfig:
        return ReferralsConfig(**data)


class SurveySchema(_Strict):
    field_id = Int(required=True, what="a field id (integer)")
    scale = Pair(required=True)
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
    scale = Pair()
    map = Str(choices=("as_is", "linear"))

    @post_load
    def make(self, data: dict[str, Any], **kw: Any) -> TalkRateConfig:
        return TalkRateConfig(**data)


class SurveyZoneSchema(_Strict):
    field_id = Int(required=True, what="a field id (integer)")
    enums = _enum_ids()
    green_from = Number()
    yellow_from = Number()

    @validates_schema(skip_on_field_errors=False)
    def _ordered(self, data: dict[str, Any], **kw: Any) -> None:
        green = data.get("green_from", SurveyZoneConfig.green_from)
        yellow = data.get("yellow_from", SurveyZoneConfig.yellow_from)
        if yellow > green:
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
    low_score_task = _nested(TaskRuleSchema)

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
