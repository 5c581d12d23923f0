"""The demo generator: deterministic, well-formed, and its truth agrees with its stream.

Pure and fast: the generator is stdlib-only and runs in well under a second. The truth is
checked against the stream itself and against an independent business calendar (the
`holidays` package), never against amoscore.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from datetime import date, datetime, time, timedelta
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import holidays
import pytest

DEMO = Path(__file__).resolve().parent.parent / "demo"
MOSCOW = ZoneInfo("Europe/Moscow")
RU_DAYS_OFF = holidays.country_holidays("RU", years=[2026])
ACCOUNT_ID = "32427762"
SALES, COMPLAINTS = "9621010", "9621011"
REPLY_TYPES = {"outgoing_chat_message", "outgoing_call", "outgoing_mail"}
KNOWN_ROOTS = {"leads", "message", "talk"}


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_generate", DEMO / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return load_generator()


@pytest.fixture(scope="module")
def fresh(generator: ModuleType) -> tuple[str, str]:
    return generator.generate(generator.DEFAULT_SEED, generator.DEFAULT_MONTH,
                              generator.BASE_SALES_DEALS)


@pytest.fixture(scope="module")
def lines() -> list[dict]:
    text = (DEMO / "stream.jsonl").read_text(encoding="utf-8")
    return [json.loads(raw) for raw in text.splitlines()]


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((DEMO / "truth.json").read_text(encoding="utf-8"))


def nested(body: str) -> dict:
    """PHP-style keys to nested dicts, as in shared/docs/amocrm-api.md §1.6."""
    out: dict = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


@pytest.fixture(scope="module")
def webhooks(lines: list[dict]) -> list[tuple[int, dict]]:
    return [(i, nested(line["webhook"])) for i, line in enumerate(lines) if "webhook" in line]


@pytest.fixture(scope="module")
def events(lines: list[dict]) -> list[dict]:
    return [line["event"] for line in lines if "event" in line]


def unix(iso_text: str) -> int:
    return int(datetime.fromisoformat(iso_text).timestamp())


def ours(body: dict) -> bool:
    return body["account"]["id"] == ACCOUNT_ID


def business_seconds(start: int, end: int) -> int:
    """An independent calendar: the demo account's hours and the `holidays` package's RU days."""
    hours = {0: ((9, 13), (14, 18)), 1: ((9, 13), (14, 18)), 2: ((9, 13), (14, 18)),
             3: ((9, 13), (14, 18)), 4: ((9, 13), (14, 17))}
    total, day = 0, datetime.fromtimestamp(start, MOSCOW).date()
    while datetime.combine(day, time(0), MOSCOW).timestamp() < end:
        if day not in RU_DAYS_OFF:
            for a, b in hours.get(day.weekday(), ()):
                lo = datetime.combine(day, time(a), MOSCOW).timestamp()
                hi = datetime.combine(day, time(b), MOSCOW).timestamp()
                total += max(0, int(min(hi, end) - max(lo, start)))
        day += timedelta(days=1)
    return total


# --- determinism ----------------------------------------------------------------------------
def test_two_runs_give_the_same_bytes(generator: ModuleType, fresh: tuple[str, str]) -> None:
    again = generator.generate(generator.DEFAULT_SEED, generator.DEFAULT_MONTH,
                               generator.BASE_SALES_DEALS)
    assert again == fresh


def test_committed_stream_and_truth_equal_a_fresh_generation(fresh: tuple[str, str]) -> None:
    stream_text, truth_text = fresh
    assert (DEMO / "stream.jsonl").read_text(encoding="utf-8") == stream_text
    assert (DEMO / "truth.json").read_text(encoding="utf-8") == truth_text


def test_another_seed_gives_another_month(generator: ModuleType, fresh: tuple[str, str]) -> None:
    other, _ = generator.generate(7, generator.DEFAULT_MONTH, generator.BASE_SALES_DEALS)
    assert other != fresh[0]


def test_every_month_of_the_known_years_generates(generator: ModuleType) -> None:
    """--month takes any month the generator has a holiday table for. December 2026 (its last
    day a day off) and February (too short for the reopened complaint) used to stop on an
    assertion of the generator's own."""
    for year in sorted(generator.RU_DAYS_OFF):
        for month in range(1, 13):
            # 80 sales deals, not 230: what failed was the calendar, not the volume.
            stream, truth = generator.generate(3, f"{year}-{month:02d}", 80)
            last = json.loads(stream.splitlines()[-1])
            assert json.loads(truth)["now"] == last["at"]
            assert last["at"].startswith(f"{year}-{month:02d}-"), last["at"]


def test_deliveries_option_writes_a_bigger_stream_with_its_truth(
        generator: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "big.jsonl"
    assert generator.main(["--deliveries", "2600", "--out", str(out)]) == 0
    count = len(out.read_text(encoding="utf-8").splitlines())
    assert 2200 <= count <= 3000
    assert json.loads((tmp_path / "big.truth.json").read_text())["lines"]["total"] == count


# --- the stream's shape ---------------------------------------------------------------------
def test_stream_size_is_a_month_of_a_small_installer(lines: list[dict]) -> None:
    assert 1500 <= len(lines) <= 4000


def test_every_line_is_json_with_one_known_kind(lines: list[dict]) -> None:
    for line in lines:
        assert set(line) in ({"at", "webhook"}, {"at", "event"})
        if "webhook" in line:
            assert next(iter(nested(line["webhook"]))) in KNOWN_ROOTS | {"account"}


def test_at_never_goes_backwards_and_carries_the_moscow_offset(lines: list[dict]) -> None:
    stamps = [line["at"] for line in lines]
    assert all(stamp.endswith("+03:00") for stamp in stamps)
    moments = [unix(stamp) for stamp in stamps]
    assert moments == sorted(moments)


def test_every_webhook_body_round_trips_through_parse_qsl(lines: list[dict]) -> None:
    for line in lines:
        if "webhook" in line:
            body = line["webhook"]
            pairs = parse_qsl(body, keep_blank_values=True, strict_parsing=True)
            assert urlencode(pairs) == body
            assert all(re.fullmatch(r"[a-z_]+(\[[A-Za-z0-9_]+\])+", key) for key, _ in pairs)
            assert "%5B" in body and "[" not in body


def test_webhooks_carry_the_account_and_unix_seconds(webhooks: list[tuple[int, dict]]) -> None:
    for _, body in webhooks:
        assert {"id", "subdomain"} <= set(body["account"])
        leads = body.get("leads", {})
        for action in leads.values():
            item = action["0"]
            for key in ("created_at", "updated_at", "last_modified"):
                if key in item:
                    assert re.fullmatch(r"1\d{9}", item[key])


def test_events_look_like_the_events_api_and_are_indexed_after_they_happen(
        lines: list[dict]) -> None:
    for line in lines:
        if "event" not in line:
            continue
        event = line["event"]
        assert re.fullmatch(r"01[0-9a-hjkmnp-tv-z]{24}", event["id"])
        assert event["entity_type"] == "lead" and event["account_id"] == int(ACCOUNT_ID)
        assert 5 <= unix(line["at"]) - event["created_at"] <= 90
        (value,) = event["value_after"]
        assert set(value) <= {"message", "note"}


# --- the stream's required situations --------------------------------------------------------
def test_replies_are_never_webhooks(webhooks: list[tuple[int, dict]]) -> None:
    types = {body["message"]["add"]["0"]["type"] for _, body in webhooks if "message" in body}
    assert types == {"incoming"}


def test_one_message_arrives_as_webhook_and_as_event(webhooks: list[tuple[int, dict]],
                                                     events: list[dict]) -> None:
    hooked = {body["message"]["add"]["0"]["id"] for _, body in webhooks if "message" in body}
    as_events = {e["value_after"][0]["message"]["id"] for e in events
                 if e["type"] == "incoming_chat_message"}
    assert hooked & as_events


def test_duplicates_foreign_account_and_unlinked_chat_are_present(
        lines: list[dict], webhooks: list[tuple[int, dict]], truth: dict) -> None:
    bodies = Counter(line["webhook"] for line in lines if "webhook" in line)
    assert sum(n - 1 for n in bodies.values()) == truth["deliveries"]["duplicates"] == 5
    assert sum(not ours(body) for _, body in webhooks) == truth["deliveries"]["rejected"] == 1
    unlinked = [body for _, body in webhooks
                if "message" in body and "entity_id" not in body["message"]["add"]["0"]]
    scenario = truth["scenarios"]["unlinked_chat"]
    assert [b["message"]["add"]["0"]["id"] for b in unlinked] == [scenario["message_id"]]
    links = [body["talk"]["update"]["0"] for _, body in webhooks if "talk" in body
             and "update" in body["talk"] and body["talk"]["update"]["0"]["talk_id"]
             == str(scenario["talk_id"]) and "entity_id" in body["talk"]["update"]["0"]]
    assert links and links[0]["entity_id"] == str(scenario["deal_id"])


def test_complaint_moved_in_by_a_minimal_status_delivery(webhooks: list[tuple[int, dict]]) -> None:
    moves = [body["leads"]["status"]["0"] for _, body in webhooks
             if "status" in body.get("leads", {}) and "name" not in body["leads"]["status"]["0"]]
    assert moves
    for move in moves:
        assert move["pipeline_id"] == COMPLAINTS and move["old_pipeline_id"] == SALES
        assert "updated_at" not in move


# --- the truth agrees with the stream ---------------------------------------------------------
def test_truth_counts_the_deals_added_per_pipeline(webhooks: list[tuple[int, dict]],
                                                   truth: dict) -> None:
    added: dict[str, set[str]] = {}
    for _, body in webhooks:
        if ours(body) and "add" in body.get("leads", {}):
            item = body["leads"]["add"]["0"]
            added.setdefault(item["pipeline_id"], set()).add(item["id"])
    assert {p: len(ids) for p, ids in added.items()} == truth["deals_added"]


def test_truth_deliveries_add_up(lines: list[dict], truth: dict) -> None:
    received = sum("webhook" in line for line in lines)
    d = truth["deliveries"]
    assert d["received"] == received
    assert d["processed"] == received - d["duplicates"] - d["rejected"] - d["unsupported"]
    assert truth["now"] == lines[-1]["at"]


def test_planned_business_seconds_agree_with_an_independent_calendar(truth: dict) -> None:
    for episode in truth["frt"]["episodes"]:
        if episode["closed_at"] is None:
            continue
        opened, closed = unix(episode["opened_at"]), unix(episode["closed_at"])
        assert episode["business_seconds"] == business_seconds(opened, closed), episode
        assert episode["wall_seconds"] == closed - opened


def test_unanswered_waits_agree_with_an_independent_calendar(truth: dict) -> None:
    now = unix(truth["now"])
    waits = {u["deal_id"]: u["waited_business_seconds_at_now"] for u in truth["frt"]["unanswered"]}
    assert waits == {u["deal_id"]: business_seconds(unix(u["opened_at"]), now)
                     for u in truth["frt"]["unanswered"]}
    assert truth["scenarios"]["never_answered_chat"]["deal_id"] in waits


def test_every_answered_episode_is_closed_by_a_human_reply_event(events: list[dict],
                                                                 truth: dict) -> None:
    replies = {(e["entity_id"], e["created_at"], e["created_by"]) for e in events
               if e["type"] in REPLY_TYPES}
    for episode in truth["frt"]["episodes"]:
        if episode["closed_at"] is not None:
            assert episode["reacted_by"] != 0
            key = (episode["deal_id"], unix(episode["closed_at"]), episode["reacted_by"])
            assert key in replies, episode


def test_robot_replies_exist_and_close_nothing(events: list[dict], truth: dict) -> None:
    robots = [e for e in events if e["created_by"] == 0 and e["type"] in REPLY_TYPES | {
        "robot_replied"}]
    assert any(e["type"] == "robot_replied" for e in robots)
    assert any(e["type"] == "outgoing_chat_message" for e in robots)
    closes = {(e["deal_id"], unix(e["closed_at"])) for e in truth["frt"]["episodes"]
              if e["closed_at"]}
    assert not any((e["entity_id"], e["created_at"]) in closes for e in robots)


def test_lead_added_episodes_open_at_the_deals_creation(webhooks: list[tuple[int, dict]],
                                                        truth: dict) -> None:
    created = {int(b["leads"]["add"]["0"]["id"]): int(b["leads"]["add"]["0"]["created_at"])
               for _, b in webhooks if ours(b) and "add" in b.get("leads", {})}
    sources = Counter()
    for episode in truth["frt"]["episodes"]:
        sources[episode["source"]] += 1
        if episode["source"] == "lead_added":
            assert created[episode["deal_id"]] == unix(episode["opened_at"])
    assert sources["lead_added"] == truth["deals_added"][SALES]


def test_manager_figures_follow_from_the_listed_episodes(truth: dict) -> None:
    managers = truth["frt"]["managers"]
    assert set(managers) == {"10000698", "10000699", "10000700", "10000702"}
    answered = Counter(str(e["reacted_by"]) for e in truth["frt"]["episodes"] if e["closed_at"])
    for manager, row in managers.items():
        assert row["answered"] == answered[manager] == len(row["answered_business_seconds"])
        assert row["episodes"] == row["answered"] + row["unanswered"]
    assert sum(row["unanswered"] for row in managers.values()) == len(truth["frt"]["unanswered"])


def test_referral_wins_are_sales_status_deliveries_to_won(webhooks: list[tuple[int, dict]],
                                                          truth: dict) -> None:
    won: set[int] = set()
    discount: dict[int, str | None] = {}
    referred: set[int] = set()
    for _, body in webhooks:
        for action in ("update", "status"):
            item = body.get("leads", {}).get(action, {}).get("0")
            if not item or not ours(body) or item["pipeline_id"] != SALES:
                continue
            deal = int(item["id"])
            for cf in item.get("custom_fields", {}).values():
                if cf["id"] == "752009":
                    value = cf["values"]["0"]
                    discount[deal] = value.get("enum") or value["value"]
            if action == "status" and item["status_id"] == "142":
                won.add(deal)
                is_friend = discount.get(deal) in ("908107", "Скидка от друга 5%")
                referred.discard(deal)
                if is_friend:
                    referred.add(deal)
    assert sorted(won) == truth["referrals"]["won_deals"]
    assert sorted(referred) == truth["referrals"]["referred_deals"]
    assert truth["referrals"]["referred"] == len(referred)


def test_survey_answers_are_the_latest_field_values(webhooks: list[tuple[int, dict]],
                                                    truth: dict) -> None:
    fields = {"752011": "nps", "752015": "csat", "752017": "ces"}
    latest: dict[tuple[int, str], int] = {}
    for _, body in webhooks:
        item = body.get("leads", {}).get("update", {}).get("0")
        if item:
            for cf in item.get("custom_fields", {}).values():
                if cf["id"] in fields:
                    latest[(int(item["id"]), fields[cf["id"]])] = int(cf["values"]["0"]["value"])
        talk = body.get("talk", {}).get("update", {}).get("0")
        if talk and talk["rate"] != "0":
            latest[(int(talk["entity_id"]), "nps")] = int(talk["rate"])
    surveys = truth["surveys"]
    nps = [score for (_, survey), score in latest.items() if survey == "nps"]
    assert surveys["nps"]["answers"] == len(nps)
    assert surveys["nps"]["promoters"] == sum(s >= 9 for s in nps)
    assert surveys["nps"]["detractors"] == sum(s <= 6 for s in nps)
    csat = [score for (_, survey), score in latest.items() if survey == "csat"]
    assert (surveys["csat"]["answers"], surveys["csat"]["satisfied"]) == (
        len(csat), sum(s >= 4 for s in csat))
    ces = [score for (_, survey), score in latest.items() if survey == "ces"]
    assert (surveys["ces"]["answers"], surveys["ces"]["low"]) == (len(ces), sum(s <= 2 for s in ces))


def test_complaint_volume_and_open_ones_follow_from_the_stream(
        webhooks: list[tuple[int, dict]], lines: list[dict], truth: dict) -> None:
    entered: set[int] = set()
    status: dict[int, str] = {}
    for _, body in webhooks:
        for action in ("add", "status"):
            item = body.get("leads", {}).get(action, {}).get("0")
            if not item or not ours(body) or item["pipeline_id"] != COMPLAINTS:
                continue
            deal = int(item["id"])
            if action == "add" or item.get("old_pipeline_id") == SALES:
                entered.add(deal)
            status[deal] = item["status_id"]
    complaints = truth["complaints"]
    assert complaints["volume"] == len(entered)
    still_open = {d for d in entered if status[d] not in ("142", "143")}
    assert {o["deal_id"] for o in complaints["open_deals"]} == still_open
    assert complaints["open"] == len(still_open) and complaints["overdue"] == 1
    now = unix(lines[-1]["at"])
    for row in complaints["open_deals"]:
        assert row["overdue"] == (unix(row["entered_at"]) + 5 * 86400 <= now)


def test_the_period_is_march_2026_with_its_holiday(truth: dict) -> None:
    assert truth["period"] == {"from": "2026-03-01", "to": "2026-03-31",
                               "timezone": "Europe/Moscow"}
    assert date(2026, 3, 9) in RU_DAYS_OFF
    holiday_opens = [c["opened_at"][:10] for c in truth["scenarios"]["holiday_chats"]]
    assert "2026-03-09" in holiday_opens
