#!/usr/bin/env python3
"""Generate the demo: a month of a gate installer's amoCRM traffic and its ground truth.

`python demo/generate.py` rewrites demo/stream.jsonl and demo/truth.json byte-identically from a
fixed seed. The stream follows shared/docs/replay.md (JSON Lines, `at` never goes backwards);
webhook bodies are form-encoded exactly like amoCRM's (see shared/fixtures/webhooks), event
objects look like `GET /api/v4/events` items.

The truth is known *by construction*: every reaction is planned so that its business time
follows from the plan alone (a reply inside the same working period: business = wall; a
message after hours answered at the next working day's 09:00 + d: business = d; ...). Nothing
here runs amoscore. Stdlib only, so the demo can be regenerated anywhere.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
DEFAULT_SEED = 20260301
DEFAULT_MONTH = "2026-03"
BASE_SALES_DEALS = 230
BASE_COMPLAINTS_CREATED = 11
BASE_COMPLAINTS_MOVED_IN = 6

# Moscow has had no DST since 2014, so a fixed offset is exact and keeps this stdlib-only.
MSK = timezone(timedelta(hours=3))
TIMEZONE_NAME = "Europe/Moscow"

ACCOUNT_ID = 32427762
SUBDOMAIN = "acme"
FOREIGN_ACCOUNT_ID = 31257294
FOREIGN_SUBDOMAIN = "appgpt"

MANAGERS = (10000698, 10000699, 10000700, 10000702)
SUPERVISOR = 10000701
ROBOT = 0

SALES_PIPELINE = 9621010
COMPLAINTS_PIPELINE = 9621011
WON, LOST = 142, 143
ST_FIRST_CONTACT, ST_MEASURE, ST_CONTRACT, ST_INSTALL = 76789230, 76789231, 76789232, 76789233
ST_NEW_COMPLAINT, ST_TECH_VISIT = 76789300, 76789301

FIELD_DISCOUNT, FIELD_NPS, FIELD_MEASURE_DATE, FIELD_CSAT, FIELD_CES = (
    752009, 752011, 752013, 752015, 752017,
)
ENUM_FRIEND, ENUM_REGULAR = 908107, 908109
FRIEND_TEXT = "Скидка от друга 5%"
REGULAR_TEXT = "Скидка постоянного клиента 3%"
FIELD_NAMES = {
    FIELD_DISCOUNT: "Скидка",
    FIELD_NPS: "NPS",
    FIELD_MEASURE_DATE: "Дата замера",
    FIELD_CSAT: "CSAT",
    FIELD_CES: "CES (1 — очень трудно, 5 — очень легко)",
}

TARGET_SECONDS, LIMIT_SECONDS = 15 * 60, 60 * 60
OVERDUE_SECONDS = 5 * 24 * 3600

# Public holidays and transferred days off (RU production calendar), as `holidays` lists them.
RU_DAYS_OFF = {
    2025: ["01-01", "01-02", "01-03", "01-04", "01-05", "01-06", "01-07", "01-08", "02-23",
           "03-08", "05-01", "05-02", "05-08", "05-09", "06-12", "06-13", "11-03", "11-04",
           "12-31"],
    2026: ["01-01", "01-02", "01-03", "01-04", "01-05", "01-06", "01-07", "01-08", "01-09",
           "02-23", "03-08", "03-09", "05-01", "05-09", "05-11", "06-12", "11-04", "12-31"],
}
# Weekday → working periods (hours); Friday ends at 17:00, weekends are off.
WORKING_HOURS: dict[int, tuple[tuple[int, int], ...]] = {
    0: ((9, 13), (14, 18)), 1: ((9, 13), (14, 18)), 2: ((9, 13), (14, 18)),
    3: ((9, 13), (14, 18)), 4: ((9, 13), (14, 17)), 5: (), 6: (),
}

# How fast each manager tends to answer: weights of green / yellow / red reactions.
SPEED = {
    10000698: (0.86, 0.11, 0.03),
    10000699: (0.70, 0.22, 0.08),
    10000700: (0.52, 0.30, 0.18),
    10000702: (0.76, 0.17, 0.07),
}
# Business-second ranges per zone. They keep 100 s clear of the target and the limit: a reply
# becomes visible through the events API up to 90 s after it was sent, and a breach task is
# due the moment the wait reaches the limit, so a reply planned at 3 590 s could legitimately
# be seen too late. The margins keep the expected tasks unambiguous.
ZONE_RANGES = {"green": (40, 800), "yellow": (1000, 3490), "red": (3700, 13800)}

PRODUCTS = ("Ворота откатные", "Ворота распашные", "Ворота секционные", "Автоматика для ворот",
            "Шлагбаум", "Ремонт привода", "Рольставни", "Калитка с электрозамком",
            "Замена пульта", "Обслуживание ворот")
SURNAMES = ("Иванов", "Петрова", "Смирнов", "Кузнецова", "Попов", "Соколова", "Лебедев",
            "Козлова", "Новиков", "Морозова", "Волков", "Алексеева", "Зайцев", "Павлова",
            "Семёнов", "Голубева", "Виноградов", "Богданова", "Воробьёв", "Фёдорова",
            "Михайлов", "Беляева", "Тарасов", "Белова", "Комаров", "Орлова", "Киселёв")
FIRST_NAMES = ("Олег", "Анна", "Сергей", "Мария", "Дмитрий", "Елена", "Игорь", "Ольга",
               "Алексей", "Наталья", "Павел", "Татьяна")
FIRST_MESSAGES = ("Здравствуйте! Сколько стоит монтаж откатных ворот?",
                  "Добрый день, нужен замер на участке", "Привод не открывает ворота, что делать?",
                  "Интересуют секционные ворота в гараж 3х2.5", "Можно прайс на автоматику?",
                  "Здравствуйте, вы работаете в области?", "Хочу шлагбаум во двор, цена?")
FOLLOW_MESSAGES = ("А когда сможете приехать?", "Скиньте договор, пожалуйста",
                   "Пульт опять не работает", "Спасибо, а гарантия какая?",
                   "Можно перенести монтаж?", "Оплатил, проверьте")
COMPLAINT_MESSAGES = ("Ворота после монтажа скрипят", "Привод гудит и не закрывает до конца")
ROBOT_TEXT = "Здравствуйте! Менеджер ответит в рабочее время."
ORIGINS = ("telegram", "waba", "onlinechat", "instagram_business")

SECONDS_IN_DAY = 86400


# ---------------------------------------------------------------------------------------------
# The planning calendar: just enough to place replies where their business time is obvious.
# ---------------------------------------------------------------------------------------------
class PlanCalendar:
    def __init__(self, year: int, month: int) -> None:
        if year not in RU_DAYS_OFF:
            raise SystemExit(f"no RU holiday table for {year}; known years: {sorted(RU_DAYS_OFF)}")
        self.year, self.month = year, month
        self.days_off = {date.fromisoformat(f"{y}-{md}") for y, mds in RU_DAYS_OFF.items()
                         for md in mds}
        first = date(year, month, 1)
        nxt = date(year + month // 12, month % 12 + 1, 1)
        self.days = [first + timedelta(days=i) for i in range((nxt - first).days)]
        self.working = [d for d in self.days if self.is_working(d)]
        self.off = [d for d in self.days if not self.is_working(d)]
        self.last_working = self.working[-1]

    def is_working(self, day: date) -> bool:
        return bool(WORKING_HOURS[day.weekday()]) and day not in self.days_off

    def periods(self, day: date) -> list[tuple[int, int]]:
        if not self.is_working(day):
            return []
        return [(ts(day, a), ts(day, b)) for a, b in WORKING_HOURS[day.weekday()]]

    def day_end(self, day: date) -> int:
        return self.periods(day)[-1][1]

    def next_working(self, day: date) -> date:
        nxt = day + timedelta(days=1)
        while not self.is_working(nxt):
            nxt += timedelta(days=1)
        return nxt

    def business_seconds(self, start: int, end: int) -> int:
        """Only for the waits of episodes left open at `now` (and as a self-check)."""
        total = 0
        day = to_dt(start).date()
        while ts(day, 0) < end:
            for a, b in self.periods(day):
                total += max(0, min(b, end) - max(a, start))
            day += timedelta(days=1)
        return total


def ts(day: date, hour: int, minute: int = 0, second: int = 0) -> int:
    return int(datetime.combine(day, time(hour, minute, second), MSK).timestamp())


def to_dt(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, MSK)


def iso(unix: int) -> str:
    return to_dt(unix).isoformat()


def round_half_up(value: float, places: int = 0) -> float | int:
    quantum = Decimal(1).scaleb(-places)
    rounded = Decimal(str(value)).quantize(quantum, rounding=ROUND_HALF_UP)
    return int(rounded) if places == 0 else float(rounded)


# ---------------------------------------------------------------------------------------------
# Ids and the stream itself
# ---------------------------------------------------------------------------------------------
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


class Ids:
    """Deterministic amoCRM-looking ids drawn from the generator's own random source."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._deal, self._old_deal = 32966300, 32940100
        self._contact, self._talk, self._note = 93589700, 200, 4600500

    def deal(self) -> int:
        self._deal += self.rng.randint(3, 29)
        return self._deal

    def old_deal(self) -> int:
        """A deal created before the month (seen only when it moves into complaints)."""
        self._old_deal += self.rng.randint(5, 60)
        return self._old_deal

    def contact(self) -> int:
        self._contact += self.rng.randint(1, 17)
        return self._contact

    def talk(self) -> int:
        self._talk += 1
        return self._talk

    def note(self) -> int:
        self._note += self.rng.randint(1, 9)
        return self._note

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def ulid(self, unix: int) -> str:
        """An event id as amoCRM shows them: a lowercase ULID (48-bit ms time, 80 random bits)."""
        value = ((unix * 1000 + self.rng.randint(0, 999)) << 80) | self.rng.getrandbits(80)
        return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


@dataclass
class Line:
    at: int
    seq: int
    webhook: str | None = None
    event: dict | None = None
    tag: str = ""  # what the line is, for picking duplicates; never written out

    def to_json(self) -> str:
        payload: dict[str, object] = {"at": iso(self.at)}
        if self.webhook is not None:
            payload["webhook"] = self.webhook
        else:
            payload["event"] = self.event
        return json.dumps(payload, ensure_ascii=False, separators=(", ", ": "))


class Stream:
    def __init__(self, rng: random.Random, ids: Ids) -> None:
        self.rng, self.ids = rng, ids
        self.lines: list[Line] = []

    def _append(self, line: Line) -> Line:
        self.lines.append(line)
        return line

    def webhook(self, happened: int, pairs: list[tuple[str, str]], tag: str,
                account: tuple[int, str] = (ACCOUNT_ID, SUBDOMAIN), delay: int | None = None,
                with_links: bool = True) -> Line:
        """A delivery a few seconds after the change, body encoded as PHP's http_build_query."""
        acc_id, sub = account
        tail = [("account[subdomain]", sub), ("account[id]", str(acc_id))]
        if with_links:
            tail.append(("account[_links][self]", f"https://{sub}.amocrm.ru"))
        else:  # Digital Pipeline deliveries put the id first and carry no links
            tail = [("account[id]", str(acc_id)), ("account[subdomain]", sub)]
        body = urlencode(pairs + tail)
        at = happened + (self.rng.randint(1, 3) if delay is None else delay)
        return self._append(Line(at, len(self.lines), webhook=body, tag=tag))

    def duplicate(self, original: Line, at: int) -> Line:
        return self._append(Line(at, len(self.lines), webhook=original.webhook, tag="duplicate"))

    def event(self, kind: str, deal_id: int, created_by: int, created_at: int,
              value_after: list[dict]) -> Line:
        """Events get indexed a little after they happen: visible 5–90 s later."""
        event_id = self.ids.ulid(created_at)
        event = {
            "id": event_id, "type": kind, "entity_id": deal_id, "entity_type": "lead",
            "created_by": created_by, "created_at": created_at,
            "value_after": value_after, "value_before": [], "account_id": ACCOUNT_ID,
            "_links": {"self": {"href": f"https://{SUBDOMAIN}.amocrm.ru/api/v4/events/{event_id}"}},
        }
        at = created_at + self.rng.randint(5, 90)
        return self._append(Line(at, len(self.lines), event=event, tag=f"event:{kind}"))

    def message_event(self, kind: str, deal_id: int, by: int, at: int, message_id: str) -> Line:
        return self.event(kind, deal_id, by, at, [{"message": {"id": message_id}}])

    def note_event(self, kind: str, deal_id: int, by: int, at: int) -> Line:
        return self.event(kind, deal_id, by, at, [{"note": {"id": self.ids.note()}}])


# ---------------------------------------------------------------------------------------------
# Deals and their webhook bodies
# ---------------------------------------------------------------------------------------------
@dataclass
class Deal:
    id: int
    name: str
    price: int
    responsible: int
    pipeline: int
    status: int
    created_at: int
    created_by: int
    updated_at: int = 0
    fields: dict[int, tuple[str, object]] = field(default_factory=dict)  # id → (kind, value)
    contact_id: int = 0
    chat: Chat | None = None


@dataclass
class Chat:
    chat_id: str
    talk_id: int
    contact_id: int
    author_id: str
    author_name: str
    origin: str


def custom_field_pairs(prefix: str, fields: dict[int, tuple[str, object]]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for index, (field_id, (kind, value)) in enumerate(sorted(fields.items())):
        base = f"{prefix}[custom_fields][{index}]"
        pairs += [(f"{base}[id]", str(field_id)), (f"{base}[name]", FIELD_NAMES[field_id])]
        if kind == "select":
            text, enum = value  # type: ignore[misc]
            pairs.append((f"{base}[values][0][value]", text))
            if enum is not None:
                pairs.append((f"{base}[values][0][enum]", str(enum)))
        elif kind == "date":  # amoCRM sends date fields as a bare scalar, no [value]
            pairs.append((f"{base}[values][0]", str(value)))
        else:
            pairs.append((f"{base}[values][0][value]", str(value)))
    return pairs


def lead_pairs(action: str, deal: Deal, modified_by: int, extra: Iterable[tuple[str, str]] = (),
               with_fields: bool = True) -> list[tuple[str, str]]:
    """Key order as in the captured deliveries (shared/fixtures/webhooks/leads__*.txt)."""
    p = f"leads[{action}][0]"
    pairs = [
        (f"{p}[id]", str(deal.id)), (f"{p}[name]", deal.name), (f"{p}[status_id]", str(deal.status)),
        (f"{p}[price]", str(deal.price)), (f"{p}[responsible_user_id]", str(deal.responsible)),
        (f"{p}[last_modified]", str(deal.updated_at)), (f"{p}[modified_user_id]", str(modified_by)),
        (f"{p}[created_user_id]", str(deal.created_by)), (f"{p}[date_create]", str(deal.created_at)),
        (f"{p}[pipeline_id]", str(deal.pipeline)), (f"{p}[account_id]", str(ACCOUNT_ID)),
        (f"{p}[created_at]", str(deal.created_at)), (f"{p}[updated_at]", str(deal.updated_at)),
    ]
    pairs += [(f"{p}[{key}]", value) for key, value in extra]
    if with_fields:
        pairs += custom_field_pairs(p, deal.fields)
    return pairs


def message_pairs(message_id: str, chat: Chat, created_at: int, text: str,
                  deal_id: int | None) -> list[tuple[str, str]]:
    p = "message[add][0]"
    pairs = [(f"{p}[id]", message_id), (f"{p}[chat_id]", chat.chat_id),
             (f"{p}[talk_id]", str(chat.talk_id)), (f"{p}[contact_id]", str(chat.contact_id)),
             (f"{p}[text]", text), (f"{p}[created_at]", str(created_at))]
    if deal_id is not None:  # a chat not yet linked to a deal carries no element/entity keys
        pairs += [(f"{p}[element_type]", "2"), (f"{p}[entity_type]", "lead"),
                  (f"{p}[element_id]", str(deal_id)), (f"{p}[entity_id]", str(deal_id))]
    pairs += [(f"{p}[type]", "incoming"), (f"{p}[author][id]", chat.author_id),
              (f"{p}[author][type]", "external"), (f"{p}[author][name]", chat.author_name)]
    if chat.origin != "onlinechat":
        pairs.append((f"{p}[author][avatar_url]",
                      f"https://amojo.amocrm.ru/attachments/profiles/{chat.author_id}/file_128x128.jpg"))
    pairs.append((f"{p}[origin]", chat.origin))
    return pairs


def talk_pairs(action: str, chat: Chat, created_at: int, updated_at: int, deal_id: int | None,
               rate: int = 0, is_read: int = 0, in_work: int = 1) -> list[tuple[str, str]]:
    p = f"talk[{action}][0]"
    pairs = [(f"{p}[talk_id]", str(chat.talk_id)), (f"{p}[created_at]", str(created_at)),
             (f"{p}[updated_at]", str(updated_at)), (f"{p}[rate]", str(rate)),
             (f"{p}[contact_id]", str(chat.contact_id)), (f"{p}[chat_id]", chat.chat_id)]
    if deal_id is not None:  # PHP's http_build_query drops null entity ids
        pairs += [(f"{p}[entity_id]", str(deal_id)), (f"{p}[entity_type]", "lead")]
    pairs += [(f"{p}[is_in_work]", str(in_work)), (f"{p}[is_read]", str(is_read)),
              (f"{p}[origin]", chat.origin)]
    return pairs


def minimal_status_pairs(deal_id: int, status: int, pipeline: int, old_status: int,
                         old_pipeline: int) -> list[tuple[str, str]]:
    """A Digital Pipeline delivery: ids only, no name, price or times."""
    p = "leads[status][0]"
    return [(f"{p}[id]", str(deal_id)), (f"{p}[status_id]", str(status)),
            (f"{p}[pipeline_id]", str(pipeline)), (f"{p}[old_status_id]", str(old_status)),
            (f"{p}[old_pipeline_id]", str(old_pipeline))]


# ---------------------------------------------------------------------------------------------
# The plan: what happened, as the generator knows it
# ---------------------------------------------------------------------------------------------
@dataclass
class Episode:
    deal_id: int
    source: str
    opened_at: int
    closed_at: int | None
    reacted_by: int | None
    business_seconds: int | None
    case: str
    responsible: int


@dataclass
class Complaint:
    deal_id: int
    entered_at: int
    how: str  # created | moved_in
    resolutions: list[tuple[int, int]] = field(default_factory=list)  # (at, status)
    reopened_at: list[int] = field(default_factory=list)


@dataclass
class Answer:
    deal_id: int
    survey: str
    score: int
    at: int
    responsible: int
    via: str = "field"  # field | talk_rate


@dataclass
class Plan:
    episodes: list[Episode] = field(default_factory=list)
    complaints: list[Complaint] = field(default_factory=list)
    wins: dict[int, tuple[int, bool, int]] = field(default_factory=dict)  # deal → (at, referred, resp)
    answers: list[Answer] = field(default_factory=list)
    created: dict[int, list[int]] = field(default_factory=dict)  # pipeline → deal ids (leads[add])
    scenarios: dict[str, object] = field(default_factory=dict)
    non_frt_episodes: list[int] = field(default_factory=list)  # complaint chats, not measured


@dataclass
class Slot:
    open_at: int
    close_at: int
    business: int
    case: str


class Generator:
    def __init__(self, seed: int, month: str, sales_deals: int, complaints_created: int,
                 complaints_moved_in: int) -> None:
        year, mon = (int(part) for part in month.split("-"))
        self.rng = random.Random(seed)
        self.seed, self.month = seed, month
        self.cal = PlanCalendar(year, mon)
        self.ids = Ids(self.rng)
        self.stream = Stream(self.rng, self.ids)
        self.plan = Plan()
        self.sales_deals = sales_deals
        self.complaints_created = complaints_created
        self.complaints_moved_in = complaints_moved_in
        last = self.cal.last_working
        # Planned activity stops 20 minutes before the last working day ends; the late
        # unanswered chat and the closing line come after it, so `now` is fixed by the plan.
        self.cutoff = self.cal.day_end(last) - 20 * 60
        self.late_open_at = self.cal.day_end(last) - 10 * 60
        self.final_at = self.cal.day_end(last) + 40 * 60
        self.rewin_done = False
        self.deals_by_id: dict[int, Deal] = {}
        self.deals_with_chat: list[Deal] = []
        self.deals_without_chat: list[Deal] = []

    # --- placing moments ------------------------------------------------------------------
    def work_moment_after(self, start: int, min_gap: int, max_gap: int) -> int | None:
        """A moment inside a working period at least `min_gap` after `start`, or None."""
        moment = start + self.rng.randint(min_gap, max_gap)
        day = to_dt(moment).date()
        while day <= self.cal.days[-1]:
            for a, b in self.cal.periods(day):
                if moment < b - 600:
                    candidate = max(moment, a + self.rng.randint(60, 1800))
                    if candidate < b - 300:
                        return candidate if candidate < self.cutoff else None
            day += timedelta(days=1)
        return None

    def any_moment_after(self, start: int, min_gap: int, max_gap: int) -> int | None:
        """Clients and robots answer surveys any day, 08:00–22:00."""
        moment = start + self.rng.randint(min_gap, max_gap)
        hour = to_dt(moment).hour
        if hour < 8 or hour >= 22:
            moment = ts(to_dt(moment).date() + timedelta(days=hour >= 22), 8) + self.rng.randint(
                0, 7200)
        return moment if moment < self.cutoff else None

    def business_target(self, manager: int) -> int:
        zone = self.rng.choices(("green", "yellow", "red"), weights=SPEED[manager])[0]
        low, high = ZONE_RANGES[zone]
        return self.rng.randint(low, high)

    # --- reaction slots: open and close placed so that business time is known -------------
    def slot(self, case: str, day: date, business: int) -> Slot | None:
        cal, rng = self.cal, self.rng
        if case == "in_period":
            periods = cal.periods(day)
            a, b = rng.choice(periods)
            if business > b - a - 120:
                return None
            start = rng.randint(a, b - business - 60)
            return Slot(start, start + business, business, case)
        if case == "lunch_cross":  # 13:00 − x … 14:00 + y: the lunch hour does not count
            if business < 120 or not cal.is_working(day):
                return None
            (morning_start, lunch_start), (lunch_end, afternoon_end) = cal.periods(day)
            before = rng.randint(60, min(business - 60, 3 * 3600))
            after = business - before
            if after >= afternoon_end - lunch_end - 60:
                return None
            return Slot(lunch_start - before, lunch_end + after, business, case)
        nxt = cal.next_working(day)
        if nxt > cal.last_working or business >= 4 * 3600 - 60:
            return None
        next_start = cal.periods(nxt)[0][0]
        if case == "end_of_day_carry":  # before closing time, answered the next working morning
            last_a, last_b = cal.periods(day)[-1]
            before = rng.randint(60, min(business - 30, last_b - last_a - 60)) if business > 90 else 0
            if before == 0:
                return None
            return Slot(last_b - before, next_start + business - before, business, case)
        if case == "after_hours":  # after closing time, answered next working day at 09:00 + d
            start = cal.day_end(day) + rng.randint(300, 5 * 3600)
            return Slot(start, next_start + business, business, case)
        if case == "early_morning":  # before opening, answered the same day at 09:00 + d
            start = cal.periods(day)[0][0] - rng.randint(600, 2 * 3600)
            return Slot(start, cal.periods(day)[0][0] + business, business, case)
        if case == "day_off":  # weekend or public holiday, answered next working day 09:00 + d
            start = ts(day, 9) + rng.randint(0, 12 * 3600)
            return Slot(start, next_start + business, business, case)
        if case == "zero_evening":  # answered the same evening: a real zero
            start = cal.day_end(day) + rng.randint(600, 3 * 3600)
            return Slot(start, start + rng.randint(120, 1800), 0, case)
        if case == "zero_before_opening":  # answered next morning before 09:00: a real zero
            start = cal.day_end(day) + rng.randint(600, 4 * 3600)
            return Slot(start, next_start - rng.randint(300, 1500), 0, case)
        raise ValueError(case)

    CASES = (("in_period", 60), ("lunch_cross", 5), ("end_of_day_carry", 7), ("after_hours", 12),
             ("early_morning", 4), ("day_off", 10), ("zero_evening", 1),
             ("zero_before_opening", 1))

    def plan_slot(self, manager: int, not_before: int, first_day: date | None = None,
                  last_day: date | None = None) -> Slot | None:
        cases, weights = zip(*self.CASES, strict=True)
        for _ in range(40):
            case = self.rng.choices(cases, weights=weights)[0]
            pool = self.cal.off if case == "day_off" else self.cal.working
            lo = max(first_day or self.cal.days[0], to_dt(not_before).date())
            hi = last_day or self.cal.days[-1]
            days = [d for d in pool if lo <= d <= min(hi, lo + timedelta(days=6))]
            if not days:
                continue
            slot = self.slot(case, self.rng.choice(days), self.business_target(manager))
            if slot and slot.open_at > not_before and slot.close_at < self.cutoff:
                return slot
        return None

    # --- building blocks --------------------------------------------------------------------
    def new_deal(self, pipeline: int, status: int, created_at: int, responsible: int,
                 created_by: int, deal_id: int | None = None) -> Deal:
        name = f"{self.rng.choice(PRODUCTS)}, {self.rng.choice(SURNAMES)}"
        price = self.rng.randrange(15000, 360000, 500)
        deal = Deal(deal_id or self.ids.deal(), name, price, responsible, pipeline, status,
                    created_at, created_by, created_at)
        self.deals_by_id[deal.id] = deal
        return deal

    def new_chat(self, deal_id: int | None) -> Chat:
        return Chat(self.ids.uuid(), self.ids.talk(), self.ids.contact(), self.ids.uuid(),
                    self.rng.choice(FIRST_NAMES), self.rng.choice(ORIGINS))

    def emit_add(self, deal: Deal) -> Line:
        self.plan.created.setdefault(deal.pipeline, []).append(deal.id)
        return self.stream.webhook(deal.created_at, lead_pairs("add", deal, deal.created_by),
                                   "leads.add")

    def emit_update(self, deal: Deal, at: int, by: int, tag: str = "leads.update") -> Line:
        deal.updated_at = at
        return self.stream.webhook(at, lead_pairs("update", deal, by), tag)

    def emit_status(self, deal: Deal, at: int, by: int, status: int, with_fields: bool = True,
                    pipeline: int | None = None) -> Line:
        old_status, old_pipeline = deal.status, deal.pipeline
        deal.status, deal.updated_at = status, at
        extra = [("old_status_id", str(old_status))]
        if pipeline is not None and pipeline != old_pipeline:
            deal.pipeline = pipeline
            extra.append(("old_pipeline_id", str(old_pipeline)))
        tag = "leads.status.won" if status == WON and deal.pipeline == SALES_PIPELINE else "leads.status"
        return self.stream.webhook(at, lead_pairs("status", deal, by, extra, with_fields), tag)

    def emit_incoming_message(self, deal: Deal, at: int, text: str, dup_event: bool,
                              webhook: bool = True) -> str:
        assert deal.chat is not None
        message_id = self.ids.uuid()
        if webhook:
            self.stream.webhook(at, message_pairs(message_id, deal.chat, at, text, deal.id),
                                "message.add")
        if dup_event or not webhook:
            self.stream.message_event("incoming_chat_message", deal.id, ROBOT, at, message_id)
        return message_id

    def emit_robot_reply(self, deal: Deal, at: int) -> None:
        if self.rng.random() < 0.5:
            self.stream.message_event("robot_replied", deal.id, ROBOT, at, self.ids.uuid())
        else:  # a Salesbot message: an outgoing chat message by user 0, still no reaction
            self.stream.message_event("outgoing_chat_message", deal.id, ROBOT, at, self.ids.uuid())

    def emit_reply(self, deal: Deal, at: int, by: int, channel: str) -> None:
        """Replies reach amoscore only through the events API: no webhook for them."""
        if channel == "outgoing_chat_message":
            self.stream.message_event(channel, deal.id, by, at, self.ids.uuid())
        else:
            self.stream.note_event(channel, deal.id, by, at)

    def reactor(self, deal: Deal) -> int:
        if self.rng.random() < 0.85:
            return deal.responsible
        return self.rng.choice([m for m in MANAGERS if m != deal.responsible])

    def record_episode(self, deal: Deal, source: str, slot: Slot, by: int) -> None:
        # The plan's formula and a plain interval walk over the calendar must agree.
        assert slot.business == self.cal.business_seconds(slot.open_at, slot.close_at), slot
        self.plan.episodes.append(Episode(deal.id, source, slot.open_at, slot.close_at, by,
                                          slot.business, slot.case, deal.responsible))

    # --- sales deals --------------------------------------------------------------------------
    def plan_sales_deal(self) -> None:
        responsible = self.rng.choice(MANAGERS)
        first = self.plan_slot(responsible, ts(self.cal.days[0], 0) - 1,
                               first_day=self.rng.choice(self.cal.days))
        if first is None:
            return
        deal = self.new_deal(SALES_PIPELINE, ST_FIRST_CONTACT, first.open_at, responsible, ROBOT)
        via_chat = self.rng.random() < 0.7
        if via_chat:
            deal.chat = self.new_chat(deal.id)
        self.emit_add(deal)
        by = self.reactor(deal)
        if via_chat:
            self.chat_opening(deal, first, by)
        else:  # a site form: the manager calls or mails back
            channel = "outgoing_call" if self.rng.random() < 0.7 else "outgoing_mail"
            self.emit_reply(deal, first.close_at, by, channel)
        self.record_episode(deal, "lead_added", first, by)
        last_close = first.close_at
        for _ in range(self.rng.choices((0, 1, 2), weights=(45, 38, 17))[0]):
            nxt = self.plan_slot(responsible, last_close + self.rng.randint(3600, 3 * SECONDS_IN_DAY))
            if nxt is None:
                break
            self.follow_up(deal, nxt)
            last_close = nxt.close_at
        if self.rng.random() < 0.2:  # a proactive message while nothing is open: no episode
            moment = self.work_moment_after(last_close, 1800, 7200)
            if moment is not None:
                self.emit_reply(deal, moment, deal.responsible, "outgoing_chat_message")
                last_close = moment
        self.sales_progress(deal, last_close)

    def chat_opening(self, deal: Deal, slot: Slot, by: int) -> None:
        """The deal is created by the chat; the first message follows seconds later."""
        assert deal.chat is not None
        span = slot.close_at - slot.open_at
        message_at = slot.open_at + self.rng.randint(5, max(5, min(40, span // 3)))
        if self.rng.random() < 0.6:
            self.stream.webhook(slot.open_at, talk_pairs("add", deal.chat, slot.open_at,
                                                         slot.open_at, deal.id), "talk.add")
        self.emit_incoming_message(deal, message_at, self.rng.choice(FIRST_MESSAGES),
                                   dup_event=self.rng.random() < 0.3,
                                   webhook=self.rng.random() > 0.04)
        if self.rng.random() < 0.45 and slot.close_at - message_at > 30:
            self.emit_robot_reply(deal, message_at + self.rng.randint(2, 6))
        self.maybe_second_message(deal, message_at, slot.close_at)
        self.emit_reply(deal, slot.close_at, by,
                        "outgoing_chat_message" if self.rng.random() < 0.85 else "outgoing_call")
        self.maybe_mark_read(deal, slot.close_at)

    def maybe_second_message(self, deal: Deal, after: int, close_at: int) -> None:
        """Another client message while the episode is open: it must not restart the clock."""
        if self.rng.random() < 0.2 and close_at - after > 180:
            at = after + self.rng.randint(60, (close_at - after) // 2)
            self.emit_incoming_message(deal, at, "Ау, есть кто?", dup_event=False)

    def maybe_mark_read(self, deal: Deal, replied_at: int) -> None:
        if deal.chat and self.rng.random() < 0.5:
            at = replied_at + self.rng.randint(10, 200)
            self.stream.webhook(at, talk_pairs("update", deal.chat, deal.created_at, at, deal.id,
                                               is_read=1), "talk.update")

    def follow_up(self, deal: Deal, slot: Slot) -> None:
        by = self.reactor(deal)
        roll = self.rng.random()
        if deal.chat and roll < 0.8:
            source = "incoming_chat_message"
            message_at = slot.open_at
            self.emit_incoming_message(deal, message_at, self.rng.choice(FOLLOW_MESSAGES),
                                       dup_event=self.rng.random() < 0.3,
                                       webhook=self.rng.random() > 0.04)
            self.maybe_second_message(deal, message_at, slot.close_at)
            channel = "outgoing_chat_message" if self.rng.random() < 0.85 else "outgoing_call"
        elif roll < 0.93:
            source = "incoming_call"  # a missed call: the manager has to call back
            self.stream.note_event(source, deal.id, ROBOT, slot.open_at)
            channel = "outgoing_call"
        else:
            source = "incoming_mail"
            self.stream.note_event(source, deal.id, ROBOT, slot.open_at)
            channel = "outgoing_mail"
        self.emit_reply(deal, slot.close_at, by, channel)
        if channel == "outgoing_chat_message":
            self.maybe_mark_read(deal, slot.close_at)
        self.record_episode(deal, source, slot, by)

    def sales_progress(self, deal: Deal, after: int) -> None:
        """Stages after the talking: measurement, contract, then won, lost or still open."""
        moment = self.work_moment_after(after, 600, 2 * SECONDS_IN_DAY)
        if moment is None:
            return
        self.emit_status(deal, moment, deal.responsible, ST_MEASURE)
        if self.rng.random() < 0.7:
            update_at = self.work_moment_after(moment, 1800, SECONDS_IN_DAY)
            if update_at is None:
                return
            deal.price = self.rng.randrange(15000, 360000, 500)
            deal.fields[FIELD_MEASURE_DATE] = ("date", ts(to_dt(update_at).date(), 0))
            self.emit_update(deal, update_at, deal.responsible)
            moment = update_at
        outcome = self.rng.choices(("won", "lost", "open"), weights=(48, 15, 37))[0]
        if outcome == "open":
            return
        moment = self.work_moment_after(moment, 3 * 3600, 4 * SECONDS_IN_DAY)
        if moment is None:
            return
        if outcome == "lost":
            self.emit_status(deal, moment, deal.responsible, LOST)
            return
        self.emit_status(deal, moment, deal.responsible, ST_CONTRACT)
        self.win(deal, moment)

    def win(self, deal: Deal, after: int) -> None:
        kind = self.rng.choices(("friend_in_status", "friend_in_update", "friend_text",
                                 "regular", "none"), weights=(14, 12, 2, 8, 64))[0]
        if kind == "friend_in_update":  # the discount was set earlier; the status hook omits it
            update_at = self.work_moment_after(after, 600, 6 * 3600)
            if update_at is None:
                return
            deal.fields[FIELD_DISCOUNT] = ("select", (FRIEND_TEXT, ENUM_FRIEND))
            self.emit_update(deal, update_at, deal.responsible)
            after = update_at
        won_at = self.work_moment_after(after, 3600, 3 * SECONDS_IN_DAY)
        if won_at is None:
            return
        if kind == "friend_in_status":
            deal.fields[FIELD_DISCOUNT] = ("select", (FRIEND_TEXT, ENUM_FRIEND))
        elif kind == "friend_text":  # an old option matched by its text only
            deal.fields[FIELD_DISCOUNT] = ("select", (FRIEND_TEXT, None))
        elif kind == "regular":
            deal.fields[FIELD_DISCOUNT] = ("select", (REGULAR_TEXT, ENUM_REGULAR))
        self.emit_status(deal, won_at, deal.responsible, WON,
                         with_fields=kind != "friend_in_update")
        referred = kind.startswith("friend")
        self.plan.wins[deal.id] = (won_at, referred, deal.responsible)
        if kind == "friend_in_status" and not self.rewin_done:
            won_at = self.rewin(deal, won_at) or won_at
        self.surveys(deal, won_at)

    def rewin(self, deal: Deal, won_at: int) -> int | None:
        """Won, reopened for a forgotten part, won again: still one won deal, at the last win."""
        reopen_at = self.work_moment_after(won_at, 3600, SECONDS_IN_DAY)
        if reopen_at is None:
            return None
        again_at = self.work_moment_after(reopen_at, 3 * 3600, 2 * SECONDS_IN_DAY)
        if again_at is None:
            return None
        self.rewin_done = True
        self.emit_status(deal, reopen_at, deal.responsible, ST_INSTALL)
        self.emit_status(deal, again_at, deal.responsible, WON)
        self.plan.wins[deal.id] = (again_at, True, deal.responsible)
        self.plan.scenarios["won_twice"] = {"deal_id": deal.id, "first_win": iso(won_at),
                                            "reopened": iso(reopen_at), "won_again": iso(again_at)}
        return again_at

    def surveys(self, deal: Deal, won_at: int) -> None:
        """Scores arrive after the job is done, typed in by the Salesbot (user 0)."""
        planned: list[tuple[int, str, int, int]] = []
        for survey, field_id, chance, scores, weights in (
            ("nps", FIELD_NPS, 0.6, range(0, 11), (1, 1, 1, 1, 2, 2, 3, 6, 9, 12, 14)),
            ("csat", FIELD_CSAT, 0.45, range(1, 6), (1, 2, 3, 7, 10)),
            ("ces", FIELD_CES, 0.35, range(1, 6), (1, 2, 4, 7, 8)),
        ):
            if self.rng.random() >= chance:
                continue
            at = self.any_moment_after(won_at, 4 * 3600, 4 * SECONDS_IN_DAY)
            if at is None:
                continue
            score = self.rng.choices(list(scores), weights=weights)[0]
            planned.append((at, survey, field_id, score))
        for at, survey, field_id, score in sorted(planned):
            deal.fields[field_id] = ("numeric", score)
            tag = "leads.update.nps" if survey == "nps" else "leads.update.survey"
            self.emit_update(deal, max(at, deal.updated_at + 1), ROBOT, tag=tag)
            self.plan.answers.append(Answer(deal.id, survey, score, deal.updated_at,
                                            deal.responsible))

    # --- complaints ---------------------------------------------------------------------------
    def plan_complaint(self, how: str, entered_at: int, keep_open: bool = False,
                       reopen: bool = False, chat: bool = False) -> Complaint:
        responsible = self.rng.choice(MANAGERS)
        if how == "created":
            deal = self.new_deal(COMPLAINTS_PIPELINE, ST_NEW_COMPLAINT, entered_at, responsible,
                                 responsible)
            self.emit_add(deal)
        else:
            created = entered_at - self.rng.randint(20, 60) * SECONDS_IN_DAY
            deal = self.new_deal(SALES_PIPELINE, WON, created, responsible, ROBOT,
                                 deal_id=self.ids.old_deal())
            # A minimal Digital Pipeline delivery: its time is when it was received.
            self.stream.webhook(entered_at, minimal_status_pairs(
                deal.id, ST_NEW_COMPLAINT, COMPLAINTS_PIPELINE, WON, SALES_PIPELINE),
                "leads.status.minimal", delay=0, with_links=False)
            deal.pipeline, deal.status, deal.updated_at = COMPLAINTS_PIPELINE, ST_NEW_COMPLAINT, entered_at
        complaint = Complaint(deal.id, entered_at, how)
        self.plan.complaints.append(complaint)
        moment = self.work_moment_after(entered_at, 1800, SECONDS_IN_DAY)
        if chat:
            self.complaint_chat(deal, entered_at)
        if moment is None:
            return complaint
        self.emit_status(deal, moment, deal.responsible, ST_TECH_VISIT)
        if keep_open:
            return complaint
        resolve_at = self.resolution_moment(moment, entered_at)
        outcome = WON if self.rng.random() < 0.75 else LOST
        if reopen:
            outcome = LOST
        self.emit_status(deal, resolve_at, deal.responsible, outcome)
        complaint.resolutions.append((resolve_at, outcome))
        if reopen:
            reopen_at = self.work_moment_after(resolve_at, 3600, SECONDS_IN_DAY)
            final_at = reopen_at and self.work_moment_after(reopen_at, 3 * 3600, 3 * SECONDS_IN_DAY)
            assert reopen_at and final_at, "the reopened complaint is planned early in the month"
            self.emit_status(deal, reopen_at, deal.responsible, ST_TECH_VISIT)
            complaint.reopened_at.append(reopen_at)
            self.emit_status(deal, final_at, deal.responsible, WON)
            complaint.resolutions.append((final_at, WON))
        return complaint

    def resolution_moment(self, after: int, entered_at: int) -> int:
        for _ in range(50):
            span = self.rng.choice((3 * 3600, SECONDS_IN_DAY, 3 * SECONDS_IN_DAY, 8 * SECONDS_IN_DAY))
            moment = self.work_moment_after(after, 1800, span)
            if moment is not None:
                return moment
        raise RuntimeError(f"no room to resolve the complaint entered at {iso(entered_at)}")

    def complaint_chat(self, deal: Deal, entered_at: int) -> None:
        """Chats on complaint deals are answered, but FRT is measured on sales deals only."""
        deal.chat = self.new_chat(deal.id)
        at = self.work_moment_after(entered_at, 60, 600)
        if at is None:
            return
        self.emit_incoming_message(deal, at, self.rng.choice(COMPLAINT_MESSAGES), dup_event=False)
        self.emit_reply(deal, at + self.rng.randint(120, 900), deal.responsible,
                        "outgoing_chat_message")
        self.plan.non_frt_episodes.append(deal.id)

    def plan_complaints(self) -> None:
        early = [d for d in self.cal.working if d.day <= 22]
        kinds = (["created"] * self.complaints_created + ["moved_in"] * self.complaints_moved_in)
        self.rng.shuffle(kinds)
        for index, how in enumerate(kinds):
            day = self.rng.choice(early)
            if index == 0:
                # The reopened one needs up to 12 days (resolution, reopening, final close)
                # before the cutoff: in a short month, the latest day that leaves them.
                room = self.cal.last_working - timedelta(days=12)
                day = day if day <= room else max([d for d in early if d <= room] or early[:1])
            entered = self.work_moment_after(ts(day, 9), 0, 6 * 3600) or ts(day, 10)
            self.plan_complaint(how, entered, reopen=index == 0, chat=index in (1, 2))
        reopened = self.plan.complaints[0]
        self.plan.scenarios["reopened_complaint"] = {
            "deal_id": reopened.deal_id, "entered_at": iso(reopened.entered_at),
            "resolutions": [{"at": iso(at), "status": status} for at, status in reopened.resolutions],
            "reopened_at": [iso(at) for at in reopened.reopened_at],
        }
        working = self.cal.working
        overdue_entry = ts(working[-8], 11, 15)
        fresh_entry = ts(working[-2], 15, 30)
        overdue = self.plan_complaint("moved_in", overdue_entry, keep_open=True)
        fresh = self.plan_complaint("created", fresh_entry, keep_open=True)
        self.plan.scenarios["open_complaints"] = {"overdue": overdue.deal_id,
                                                  "not_yet_overdue": fresh.deal_id}

    # --- the special scenarios the brief asks for -------------------------------------------
    def plan_unanswered_chat(self) -> None:
        """Created by a chat, greeted by the robot only, asked again, never answered."""
        day = self.cal.working[-4]
        responsible = 10000700
        opened = ts(day, 11, 20)
        deal = self.new_deal(SALES_PIPELINE, ST_FIRST_CONTACT, opened, responsible, ROBOT)
        deal.chat = self.new_chat(deal.id)
        self.emit_add(deal)
        self.stream.webhook(opened, talk_pairs("add", deal.chat, opened, opened, deal.id), "talk.add")
        self.emit_incoming_message(deal, opened + 12, "Здравствуйте, нужны откатные ворота 4 м",
                                   dup_event=True)
        self.stream.message_event("robot_replied", deal.id, ROBOT, opened + 15, self.ids.uuid())
        self.stream.message_event("outgoing_chat_message", deal.id, ROBOT, opened + 16,
                                  self.ids.uuid())
        self.emit_incoming_message(deal, ts(day, 14, 5), "Алло? Вы тут?", dup_event=False)
        self.plan.episodes.append(Episode(deal.id, "lead_added", opened, None, None, None,
                                          "never_answered", responsible))
        self.plan.scenarios["never_answered_chat"] = {"deal_id": deal.id, "opened_at": iso(opened),
                                                      "responsible_user_id": responsible}

    def plan_late_open_chat(self) -> None:
        """A chat ten minutes before closing on the last day, still unanswered at `now`."""
        responsible = 10000699
        opened = self.late_open_at
        deal = self.new_deal(SALES_PIPELINE, ST_FIRST_CONTACT, opened, responsible, ROBOT)
        deal.chat = self.new_chat(deal.id)
        self.emit_add(deal)
        self.emit_incoming_message(deal, opened + 20, "Добрый вечер, успеете сегодня ответить?",
                                   dup_event=False)
        self.plan.episodes.append(Episode(deal.id, "lead_added", opened, None, None, None,
                                          "open_at_now", responsible))
        self.plan.scenarios["open_at_now_chat"] = {"deal_id": deal.id, "opened_at": iso(opened),
                                                   "responsible_user_id": responsible}

    def plan_unlinked_chat(self) -> None:
        """A message in a new chat with no deal; the talk gets linked to a deal, then answered."""
        day = self.cal.working[min(11, len(self.cal.working) - 1)]
        created = ts(self.cal.working[1], 10, 5)
        responsible = 10000698
        deal = self.new_deal(SALES_PIPELINE, ST_FIRST_CONTACT, created, responsible, ROBOT)
        self.emit_add(deal)
        first = Slot(created, created + 420, 420, "in_period")
        self.emit_reply(deal, first.close_at, responsible, "outgoing_call")
        self.record_episode(deal, "lead_added", first, responsible)
        chat = self.new_chat(None)
        chat.origin = "onlinechat"
        deal.chat = chat
        message_at = ts(day, 10, 30)
        message_id = self.ids.uuid()
        self.stream.webhook(message_at, talk_pairs("add", chat, message_at, message_at, None),
                            "talk.add.unlinked")
        self.stream.webhook(message_at, message_pairs(message_id, chat, message_at,
                                                      "Добрый день, это по заказу ворот", None),
                            "message.add.unlinked")
        linked_at = message_at + 200
        self.stream.webhook(linked_at, talk_pairs("update", chat, message_at, linked_at, deal.id),
                            "talk.update.link")
        reply = Slot(message_at, message_at + 660, 660, "in_period")
        self.emit_reply(deal, reply.close_at, responsible, "outgoing_chat_message")
        self.record_episode(deal, "incoming_chat_message", reply, responsible)
        self.plan.scenarios["unlinked_chat"] = {
            "deal_id": deal.id, "message_id": message_id, "talk_id": chat.talk_id,
            "message_at": iso(message_at), "linked_at": iso(linked_at),
            "answered_at": iso(reply.close_at), "business_seconds": 660}

    def plan_holiday_chats(self) -> None:
        """Messages on the weekend and public holiday, answered next working morning."""
        # Only days off before the month's last working day: one after it (31 December) would
        # be answered next month, after `now`.
        off = [d for d in self.cal.off if d < self.cal.last_working]
        holidays = [d for d in off if d in self.cal.days_off] or off[:1]
        chosen = []
        for day, hour, business in ((holidays[-1], 11, 420), (holidays[0], 19, 1260)):
            nxt = self.cal.next_working(day)
            responsible = self.rng.choice(MANAGERS)
            slot = Slot(ts(day, hour, 7), self.cal.periods(nxt)[0][0] + business, business, "day_off")
            deal = self.new_deal(SALES_PIPELINE, ST_FIRST_CONTACT, slot.open_at, responsible, ROBOT)
            deal.chat = self.new_chat(deal.id)
            self.emit_add(deal)
            self.chat_opening(deal, slot, responsible)
            self.record_episode(deal, "lead_added", slot, responsible)
            chosen.append({"deal_id": deal.id, "opened_at": iso(slot.open_at),
                           "closed_at": iso(slot.close_at), "business_seconds": business})
        self.plan.scenarios["holiday_chats"] = chosen

    def plan_talk_rates(self) -> None:
        """amoCRM's own chat rating (1–10) on two won chat deals that have no NPS field."""
        won_twice = self.plan.scenarios.get("won_twice", {}).get("deal_id")  # type: ignore[union-attr]
        won_chats = [d for d in self.deals_with_chat if d.id in self.plan.wins and d.id != won_twice
                     and not any(a.deal_id == d.id and a.survey == "nps" for a in self.plan.answers)]
        rated: list[dict] = []
        rates = [10, 3]
        for deal in won_chats:
            at = self.any_moment_after(self.plan.wins[deal.id][0], 3600, SECONDS_IN_DAY)
            if at is None or deal.chat is None or not rates:
                continue
            rate = rates.pop(0)
            self.stream.webhook(at, talk_pairs("update", deal.chat, deal.created_at, at, deal.id,
                                               rate=rate, is_read=1, in_work=0), "talk.update.rate")
            self.plan.answers.append(Answer(deal.id, "nps", rate, at, deal.responsible, "talk_rate"))
            rated.append({"deal_id": deal.id, "rate": rate, "at": iso(at)})
        self.plan.scenarios["talk_rates"] = rated

    def plan_nps_change(self) -> None:
        """A client corrects an NPS answer: the new score replaces the old one."""
        for answer in self.plan.answers:
            if answer.survey == "nps" and answer.via == "field" and answer.score <= 6:
                later = self.any_moment_after(answer.at, 6 * 3600, SECONDS_IN_DAY)
                if later is None:
                    continue
                deal = self.deals_by_id[answer.deal_id]
                deal.fields[FIELD_NPS] = ("numeric", 8)
                self.emit_update(deal, max(later, deal.updated_at + 1), ROBOT, "leads.update.nps")
                self.plan.answers.append(Answer(deal.id, "nps", 8, deal.updated_at, deal.responsible))
                self.plan.scenarios["nps_changed"] = {"deal_id": deal.id, "first": answer.score,
                                                      "first_at": iso(answer.at), "then": 8,
                                                      "then_at": iso(deal.updated_at)}
                return

    def plan_foreign_delivery(self) -> None:
        day = self.cal.working[len(self.cal.working) // 2]
        deal = self.new_deal(SALES_PIPELINE, 76789000, ts(day, 12, 3), 10000698, 10000698,
                             deal_id=28455849)
        pairs = lead_pairs("add", deal, deal.created_by)
        pairs = [(k, str(FOREIGN_ACCOUNT_ID) if k.endswith("[account_id]") else v) for k, v in pairs]
        line = self.stream.webhook(deal.created_at, pairs, "foreign",
                                   account=(FOREIGN_ACCOUNT_ID, FOREIGN_SUBDOMAIN))
        self.plan.scenarios["foreign_delivery"] = {"at": iso(line.at), "account_id": FOREIGN_ACCOUNT_ID}

    def plan_final_line(self) -> None:
        """The last line fixes `now`: a CSAT answer typed in by the Salesbot after hours."""
        won = [d for d in self.deals_with_chat + self.deals_without_chat
               if d.id in self.plan.wins and FIELD_CSAT not in d.fields]
        deal = won[-1]
        deal.fields[FIELD_CSAT] = ("numeric", 5)
        deal.updated_at = self.final_at - 2
        self.stream.webhook(deal.updated_at, lead_pairs("update", deal, ROBOT),
                            "leads.update.final", delay=2)
        self.plan.answers.append(Answer(deal.id, "csat", 5, deal.updated_at, deal.responsible))

    def add_duplicates(self) -> None:
        """amoCRM retries a delivery it thinks failed: the exact body again, 5 minutes later."""
        wanted = ("message.add", "leads.add", "leads.status.won", "leads.update.nps", "talk.update")
        won_twice = self.plan.scenarios.get("won_twice", {}).get("deal_id")  # type: ignore[union-attr]
        duplicates = []
        for tag in wanted:
            candidates = [line for line in self.stream.lines if line.tag == tag
                          and line.at + 300 < self.cutoff
                          and (won_twice is None or f"%5D={won_twice}&" not in (line.webhook or ""))]
            original = self.rng.choice(candidates)
            copy = self.stream.duplicate(original, original.at + 300)
            duplicates.append({"kind": tag, "first_at": iso(original.at), "again_at": iso(copy.at)})
        self.plan.scenarios["duplicates"] = duplicates

    # --- the whole month ----------------------------------------------------------------------
    def run(self) -> tuple[list[Line], dict]:
        self.plan_unlinked_chat()
        self.plan_holiday_chats()
        for _ in range(self.sales_deals):
            self.plan_sales_deal()
        self.plan_complaints()
        self.plan_unanswered_chat()
        for deal in self.deals_by_id.values():
            if deal.pipeline == SALES_PIPELINE and deal.created_at >= ts(self.cal.days[0], 0):
                (self.deals_with_chat if deal.chat else self.deals_without_chat).append(deal)
        self.plan_talk_rates()
        self.plan_nps_change()
        self.plan_foreign_delivery()
        self.add_duplicates()
        self.plan_late_open_chat()
        self.plan_final_line()
        lines = sorted(self.stream.lines, key=lambda line: (line.at, line.seq))
        assert lines[-1].tag == "leads.update.final" and lines[-2].at < lines[-1].at
        return lines, build_truth(self, lines)


# ---------------------------------------------------------------------------------------------
# Ground truth from the plan
# ---------------------------------------------------------------------------------------------
def zone(business: int | None) -> str:
    if business is None:
        return "open"
    return "green" if business <= TARGET_SECONDS else "yellow" if business <= LIMIT_SECONDS else "red"


def stats(values: list[int]) -> dict[str, int | None]:
    if not values:
        return {"median": None, "p90": None, "mean": None}
    p90 = values[0] if len(values) == 1 else statistics.quantiles(values, n=10, method="inclusive")[-1]
    return {"median": round_half_up(statistics.median(values)), "p90": round_half_up(p90),
            "mean": round_half_up(statistics.fmean(values))}


def share(part: int, whole: int) -> float | None:
    return None if whole == 0 else round_half_up(part / whole, 4)


def frt_truth(gen: Generator, now: int) -> dict:
    episodes = sorted(gen.plan.episodes, key=lambda e: (e.opened_at, e.deal_id))
    listed, unanswered = [], []
    managers: dict[str, dict] = {}
    for ep in episodes:
        wall = None if ep.closed_at is None else ep.closed_at - ep.opened_at
        listed.append({"deal_id": ep.deal_id, "source": ep.source, "opened_at": iso(ep.opened_at),
                       "closed_at": None if ep.closed_at is None else iso(ep.closed_at),
                       "reacted_by": ep.reacted_by, "business_seconds": ep.business_seconds,
                       "wall_seconds": wall, "zone": zone(ep.business_seconds), "case": ep.case})
        owner = str(ep.reacted_by if ep.reacted_by is not None else ep.responsible)
        row = managers.setdefault(owner, {"answered_business_seconds": [], "unanswered": 0,
                                          "breaches": 0, "within_target": 0,
                                          "open_past_target": 0})
        if ep.business_seconds is None:
            waited = gen.cal.business_seconds(ep.opened_at, now)
            row["unanswered"] += 1
            row["breaches"] += waited > LIMIT_SECONDS
            row["open_past_target"] += waited > TARGET_SECONDS
            unanswered.append({"deal_id": ep.deal_id, "source": ep.source,
                               "opened_at": iso(ep.opened_at),
                               "responsible_user_id": ep.responsible,
                               "waited_business_seconds_at_now": waited,
                               "past_target": waited > TARGET_SECONDS,
                               "past_limit": waited > LIMIT_SECONDS})
        else:
            row["answered_business_seconds"].append(ep.business_seconds)
            row["breaches"] += ep.business_seconds > LIMIT_SECONDS
            row["within_target"] += ep.business_seconds <= TARGET_SECONDS
    summary = {}
    for manager in sorted(managers):
        row = managers[manager]
        values = row["answered_business_seconds"]
        figures = stats(values)
        summary[manager] = {
            "episodes": len(values) + row["unanswered"], "answered": len(values),
            "unanswered": row["unanswered"], "breaches": row["breaches"],
            "median_business_seconds": figures["median"], "p90_business_seconds": figures["p90"],
            "mean_business_seconds": figures["mean"],
            "within_target_share": share(row["within_target"], len(values) + row["open_past_target"]),
            "answered_business_seconds": sorted(values),
        }
    return {"episodes": listed, "managers": summary, "unanswered": unanswered,
            "total_episodes": len(listed),
            "breach_tasks": sum(row["breaches"] for row in summary.values()),
            "not_measured_complaint_chats": sorted(gen.plan.non_frt_episodes)}


def open_intervals(c: Complaint, now: int) -> list[tuple[int, int]]:
    """When the complaint was open: from entry or a reopening to the next resolution (or now)."""
    starts = [c.entered_at, *c.reopened_at]
    ends = [at for at, _ in c.resolutions] + [now] * (len(starts) - len(c.resolutions))
    return list(zip(starts, ends, strict=True))


def complaints_truth(gen: Generator, now: int) -> dict:
    resolutions, open_deals, overdue_tasks = [], [], 0
    for c in sorted(gen.plan.complaints, key=lambda c: (c.entered_at, c.deal_id)):
        overdue_at = c.entered_at + OVERDUE_SECONDS
        if overdue_at <= now and any(end > overdue_at for _, end in open_intervals(c, now)):
            overdue_tasks += 1
        if c.resolutions:
            last_at, status = c.resolutions[-1]
            resolutions.append({"deal_id": c.deal_id, "entered_via": c.how,
                                "entered_at": iso(c.entered_at), "resolved_at": iso(last_at),
                                "status": status, "seconds": last_at - c.entered_at,
                                "reopened": bool(c.reopened_at)})
        else:
            open_deals.append({"deal_id": c.deal_id, "entered_via": c.how,
                               "entered_at": iso(c.entered_at), "overdue": overdue_at <= now})
    seconds = [r["seconds"] for r in resolutions]
    figures = stats(seconds)
    return {"volume": len(gen.plan.complaints), "resolved": len(resolutions),
            "open": len(open_deals), "overdue": sum(o["overdue"] for o in open_deals),
            "mean_resolution_seconds": figures["mean"],
            "median_resolution_seconds": figures["median"],
            "p90_resolution_seconds": figures["p90"],
            "entered_via": {"created": sum(c.how == "created" for c in gen.plan.complaints),
                            "moved_in": sum(c.how == "moved_in" for c in gen.plan.complaints)},
            "overdue_tasks": overdue_tasks, "resolutions": resolutions, "open_deals": open_deals}


def referrals_truth(gen: Generator) -> dict:
    wins = gen.plan.wins
    won, referred = len(wins), sum(referred for _, referred, _ in wins.values())
    year, month = gen.cal.year, gen.cal.month
    by_manager: dict[str, dict[str, int]] = {}
    for _, is_referred, manager in wins.values():
        row = by_manager.setdefault(str(manager), {"won": 0, "referred": 0})
        row["won"] += 1
        row["referred"] += is_referred
    return {"won": won, "referred": referred, "share": share(referred, won),
            "by_quarter": [{"quarter": f"{year}Q{(month - 1) // 3 + 1}", "won": won,
                            "referred": referred, "share": share(referred, won)}],
            "by_manager": dict(sorted(by_manager.items())),
            "won_deals": sorted(wins), "referred_deals": sorted(d for d, v in wins.items() if v[1])}


def surveys_truth(gen: Generator) -> dict:
    latest: dict[tuple[int, str], Answer] = {}
    for answer in sorted(gen.plan.answers, key=lambda a: a.at):
        latest[(answer.deal_id, answer.survey)] = answer  # a changed score replaces the old one
    final = list(latest.values())
    nps = [a for a in final if a.survey == "nps"]
    csat = [a for a in final if a.survey == "csat"]
    ces = [a for a in final if a.survey == "ces"]

    def nps_score(answers: list[Answer]) -> float | None:
        if not answers:
            return None
        promoters = sum(a.score >= 9 for a in answers)
        detractors = sum(a.score <= 6 for a in answers)
        return round_half_up((promoters - detractors) * 100 / len(answers), 1)

    by_manager = {}
    for manager in sorted({a.responsible for a in nps}):
        mine = [a for a in nps if a.responsible == manager]
        by_manager[str(manager)] = {"answers": len(mine), "score": nps_score(mine)}
    low_rules = {"nps": lambda s: s <= 6, "csat": lambda s: s <= 3, "ces": lambda s: s <= 2}
    every_low = sum(low_rules[a.survey](a.score) for a in gen.plan.answers)
    return {
        "nps": {"answers": len(nps), "promoters": sum(a.score >= 9 for a in nps),
                "passives": sum(7 <= a.score <= 8 for a in nps),
                "detractors": sum(a.score <= 6 for a in nps), "score": nps_score(nps),
                "by_manager": by_manager,
                "from_talk_rate": sum(a.via == "talk_rate" for a in nps)},
        "csat": {"answers": len(csat), "satisfied": sum(a.score >= 4 for a in csat),
                 "low": sum(a.score <= 3 for a in csat),
                 "percent": None if not csat else round_half_up(
                     sum(a.score >= 4 for a in csat) * 100 / len(csat), 1)},
        "ces": {"answers": len(ces), "low": sum(a.score <= 2 for a in ces),
                "mean": None if not ces else round_half_up(statistics.fmean(a.score for a in ces), 2)},
        "low_score_tasks": every_low,
        "answers": [{"deal_id": a.deal_id, "survey": a.survey, "score": a.score, "at": iso(a.at),
                     "responsible_user_id": a.responsible, "via": a.via}
                    for a in sorted(gen.plan.answers, key=lambda a: (a.at, a.deal_id, a.survey))],
    }


def build_truth(gen: Generator, lines: list[Line]) -> dict:
    now = lines[-1].at
    webhooks = [line for line in lines if line.webhook is not None]
    duplicates = sum(line.tag == "duplicate" for line in lines)
    rejected = sum(line.tag == "foreign" for line in lines)
    year, month = gen.cal.year, gen.cal.month
    return {
        "generator": {"seed": gen.seed, "month": gen.month, "sales_deals_planned": gen.sales_deals},
        "account": ACCOUNT_ID,
        "period": {"from": gen.cal.days[0].isoformat(), "to": gen.cal.days[-1].isoformat(),
                   "timezone": TIMEZONE_NAME},
        "now": iso(now),
        "lines": {"total": len(lines), "webhooks": len(webhooks), "events": len(lines) - len(webhooks)},
        "deliveries": {"received": len(webhooks), "duplicates": duplicates, "rejected": rejected,
                       "unsupported": 0, "processed": len(webhooks) - duplicates - rejected},
        "bad_lines": [],
        "deals_added": {str(p): len(ids) for p, ids in sorted(gen.plan.created.items())},
        "frt": frt_truth(gen, now),
        "complaints": complaints_truth(gen, now),
        "referrals": referrals_truth(gen),
        "surveys": surveys_truth(gen),
        "scenarios": gen.plan.scenarios,
        "quarter": f"{year}Q{(month - 1) // 3 + 1}",
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def generate(seed: int, month: str, sales_deals: int) -> tuple[str, str]:
    scale = sales_deals / BASE_SALES_DEALS
    gen = Generator(seed, month, sales_deals,
                    max(BASE_COMPLAINTS_CREATED, round(BASE_COMPLAINTS_CREATED * scale)),
                    max(BASE_COMPLAINTS_MOVED_IN, round(BASE_COMPLAINTS_MOVED_IN * scale)))
    lines, truth = gen.run()
    stream_text = "".join(line.to_json() + "\n" for line in lines)
    truth_text = json.dumps(truth, ensure_ascii=False, indent=1) + "\n"
    return stream_text, truth_text


def deals_for(deliveries: int, seed: int, month: str) -> int:
    """Scale the number of sales deals from a pilot run so the stream has about N lines."""
    pilot_stream, _ = generate(seed, month, BASE_SALES_DEALS)
    per_line = BASE_SALES_DEALS / pilot_stream.count("\n")
    return max(BASE_SALES_DEALS // 4, round(deliveries * per_line))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate a month of a gate installer's amoCRM traffic (demo/stream.jsonl) "
                    "and the ground truth the generator knows by construction (demo/truth.json).")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"default {DEFAULT_SEED}")
    parser.add_argument("--month", default=DEFAULT_MONTH, help=f"YYYY-MM, default {DEFAULT_MONTH}")
    parser.add_argument("--out", type=Path, default=HERE / "stream.jsonl",
                        help="stream path (default demo/stream.jsonl)")
    parser.add_argument("--truth", type=Path, default=None,
                        help="truth path (default demo/truth.json, or beside --out for a "
                             "bigger stream)")
    parser.add_argument("--deliveries", type=int, default=None,
                        help="generate about N lines (more deals in the same month) for benchmarks")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sales_deals = BASE_SALES_DEALS
    if args.deliveries is not None:
        sales_deals = deals_for(args.deliveries, args.seed, args.month)
    truth_path = args.truth
    if truth_path is None:
        default_out = args.out.resolve() == (HERE / "stream.jsonl").resolve()
        truth_path = HERE / "truth.json" if default_out else args.out.with_suffix(".truth.json")
    stream_text, truth_text = generate(args.seed, args.month, sales_deals)
    args.out.write_text(stream_text, encoding="utf-8")
    truth_path.write_text(truth_text, encoding="utf-8")
    print(f"{args.out}: {stream_text.count(chr(10))} lines; truth in {truth_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
