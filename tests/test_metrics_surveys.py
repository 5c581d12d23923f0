"""Survey answers from field changes and chat ratings; NPS/CSAT/CES figures; the client zone."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from app.metrics.surveys import (
    Answer,
    CesStats,
    CsatStats,
    ManagerNps,
    NpsStats,
    SurveyStats,
    answer_history,
    client_zone,
    is_low,
    latest_answers,
    report_dict,
    survey_stats,
)
from config.account import SurveyConfig, SurveysConfig, SurveyZoneConfig, TalkRateConfig

MSK = ZoneInfo("Europe/Moscow")
NPS_F, CSAT_F, CES_F, OTHER_F = 752011, 752015, 752017, 999999
CFG = SurveysConfig(
    nps=SurveyConfig(field_id=NPS_F, scale=(0, 10), low=(0, 6)),
    csat=SurveyConfig(field_id=CSAT_F, scale=(1, 5), low=(1, 3)),
    ces=SurveyConfig(field_id=CES_F, scale=(1, 5), low=(1, 2)),
    talk_rate=TalkRateConfig(feeds="nps", scale=(1, 10), map="as_is"),
    zone=SurveyZoneConfig(field_id=752121, enums={}, green_from=9, yellow_from=7),
)
LINEAR = replace(CFG, talk_rate=TalkRateConfig(feeds="nps", scale=(1, 10), map="linear"))
CSAT_LINEAR = replace(CFG, talk_rate=TalkRateConfig(feeds="csat", scale=(1, 10), map="linear"))
ALICE, BOB = 101, 102
DEAL = 55
TALK = (1, 10)


def t(when: str) -> datetime:
    """'03-02 10:00' -> that instant of 2026 in Moscow."""
    return datetime.strptime(f"2026-{when}", "%Y-%m-%d %H:%M").replace(tzinfo=MSK)


def fv(value: object) -> list[dict[str, object]]:
    """A custom field value as amoCRM sends it."""
    return [{"value": value}]


@dataclass(frozen=True)
class Case:
    name: str
    fields: tuple[tuple[str, int, object], ...] = ()
    rates: tuple[tuple[str, object], ...] = ()
    # (survey, value, raw, raw_scale, at, responsible, source)
    expected: tuple[tuple[str, float, float, tuple[int, int], str, int, str], ...] = ()
    cfg: SurveysConfig = CFG
    responsible: tuple[tuple[str, int], ...] = field(default=(("01-01 00:00", ALICE),))


CASES = [
    Case("NPS 0 is an answer", fields=(("03-02 10:00", NPS_F, fv("0")),),
         expected=(("nps", 0, 0, (0, 10), "03-02 10:00", ALICE, "field"),)),
    Case("a changed value replaces the answer",
         fields=(("03-02 10:00", NPS_F, fv("9")), ("03-05 10:00", NPS_F, fv("3"))),
         expected=(("nps", 3, 3, (0, 10), "03-05 10:00", ALICE, "field"),)),
    Case("the same value again is no new answer: it keeps its first instant",
         fields=(("03-02 10:00", NPS_F, fv("8")), ("03-05 10:00", NPS_F, fv("8"))),
         expected=(("nps", 8, 8, (0, 10), "03-02 10:00", ALICE, "field"),)),
    Case("back to an earlier value is a change",
         fields=(("03-02 10:00", NPS_F, fv("8")), ("03-03 10:00", NPS_F, fv("5")),
                 ("03-04 10:00", NPS_F, fv("8"))),
         expected=(("nps", 8, 8, (0, 10), "03-04 10:00", ALICE, "field"),)),
    Case("non-numeric text is ignored; the previous answer stays",
         fields=(("03-02 10:00", NPS_F, fv("7")), ("03-03 10:00", NPS_F, fv("отлично"))),
         expected=(("nps", 7, 7, (0, 10), "03-02 10:00", ALICE, "field"),)),
    Case("out-of-scale values are ignored",
         fields=(("03-02 10:00", NPS_F, fv("11")), ("03-02 10:00", CSAT_F, fv("0")),
                 ("03-02 11:00", CES_F, fv("6"))),
         expected=()),
    Case("a cleared field erases nothing",
         fields=(("03-02 10:00", CSAT_F, fv("4")), ("03-03 10:00", CSAT_F, []),
                 ("03-04 10:00", CSAT_F, fv(None))),
         expected=(("csat", 4, 4, (1, 5), "03-02 10:00", ALICE, "field"),)),
    Case("the same value after a body that left the field out is the same answer",
         fields=(("03-02 10:00", NPS_F, fv("9")), ("03-20 10:00", NPS_F, []),
                 ("04-02 10:00", NPS_F, fv("9"))),
         expected=(("nps", 9, 9, (0, 10), "03-02 10:00", ALICE, "field"),)),
    Case("emptied after its answer, the answer stands",
         fields=(("03-02 10:00", NPS_F, fv("9")), ("03-20 10:00", NPS_F, [])),
         expected=(("nps", 9, 9, (0, 10), "03-02 10:00", ALICE, "field"),)),
    Case("fractions are no answer; '9.0' and a bare int are",
         fields=(("03-02 10:00", NPS_F, fv("7.5")), ("03-02 11:00", CSAT_F, fv("4.0")),
                 ("03-02 12:00", CES_F, 3)),
         expected=(("ces", 3, 3, (1, 5), "03-02 12:00", ALICE, "field"),
                   ("csat", 4, 4, (1, 5), "03-02 11:00", ALICE, "field"))),
    Case("a field that is no survey is ignored", fields=(("03-02 10:00", OTHER_F, fv("9")),)),
    Case("CSAT and CES answers side by side",
         fields=(("03-02 10:00", CSAT_F, fv("2")), ("03-02 10:00", CES_F, fv("1"))),
         expected=(("ces", 1, 1, (1, 5), "03-02 10:00", ALICE, "field"),
                   ("csat", 2, 2, (1, 5), "03-02 10:00", ALICE, "field"))),
    Case("chat rating 1-10 as_is keeps its number",
         rates=(("03-02 10:00", 7),),
         expected=(("nps", 7, 7, TALK, "03-02 10:00", ALICE, "talk_rate"),)),
    Case("chat rating 0 means not rated", rates=(("03-02 10:00", 0),)),
    Case("chat rating outside 1-10 is ignored", rates=(("03-02 10:00", 11),)),
    Case("chat rating 10 linear is 10", rates=(("03-02 10:00", "10"),), cfg=LINEAR,
         expected=(("nps", 10.0, 10, TALK, "03-02 10:00", ALICE, "talk_rate"),)),
    Case("chat rating 1 linear is 0", rates=(("03-02 10:00", 1),), cfg=LINEAR,
         expected=(("nps", 0.0, 1, TALK, "03-02 10:00", ALICE, "talk_rate"),)),
    Case("chat rating 7 linear is 60/9", rates=(("03-02 10:00", 7),), cfg=LINEAR,
         expected=(("nps", 60 / 9, 7, TALK, "03-02 10:00", ALICE, "talk_rate"),)),
    Case("chat rating feeding CSAT linearly: 10 -> 5", rates=(("03-02 10:00", 10),),
         cfg=CSAT_LINEAR,
         expected=(("csat", 5.0, 10, TALK, "03-02 10:00", ALICE, "talk_rate"),)),
    Case("chat rating as_is feeding a 1-5 survey: 7 does not fit and is ignored",
         rates=(("03-02 10:00", 7),),
         cfg=replace(CFG, talk_rate=TalkRateConfig(feeds="csat", map="as_is"))),
    Case("a later NPS field replaces a chat rating",
         fields=(("03-03 10:00", NPS_F, fv("10")),), rates=(("03-02 10:00", 4),),
         expected=(("nps", 10, 10, (0, 10), "03-03 10:00", ALICE, "field"),)),
    Case("input out of order gives the same latest answer",
         fields=(("03-05 10:00", NPS_F, fv("3")), ("03-02 10:00", NPS_F, fv("9"))),
         expected=(("nps", 3, 3, (0, 10), "03-05 10:00", ALICE, "field"),)),
    Case("responsible is who held the deal when the answer came",
         fields=(("03-02 10:00", NPS_F, fv("9")), ("03-10 10:00", NPS_F, fv("4"))),
         expected=(("nps", 4, 4, (0, 10), "03-10 10:00", BOB, "field"),),
         responsible=(("01-01 00:00", ALICE), ("03-05 00:00", BOB))),
    Case("an answer before a reassignment stays with the former responsible",
         fields=(("03-02 10:00", NPS_F, fv("9")),),
         expected=(("nps", 9, 9, (0, 10), "03-02 10:00", ALICE, "field"),),
         responsible=(("01-01 00:00", ALICE), ("03-05 00:00", BOB))),
]


def responsible_from(changes: tuple[tuple[str, int], ...]):  # type: ignore[no-untyped-def]
    schedule = sorted((t(w), u) for w, u in changes)
    return lambda at: max((s for s in schedule if s[0] <= at), default=(None, None))[1]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_latest_answers_from_history(case: Case) -> None:
    got = latest_answers(answer_history(
        DEAL,
        [(t(w), f, v) for w, f, v in case.fields],
        [(t(w), r) for w, r in case.rates],
        case.cfg,
        responsible_from(case.responsible),
    ))
    expected = [Answer(DEAL, s, value, raw, scale, t(at), who, source)
                for s, value, raw, scale, at, who, source in case.expected]
    assert sorted(got, key=lambda a: a.survey) == expected
    assert all(isinstance(a.value, int | float) for a in got)


def test_answer_history_keeps_every_answer_a_changed_score_started() -> None:
    fields = [(t("03-02 10:00"), NPS_F, fv("3")), (t("03-02 10:05"), NPS_F, fv("3")),
              (t("03-03 10:00"), NPS_F, []), (t("03-04 10:00"), NPS_F, fv("2")),
              (t("03-05 10:00"), NPS_F, fv("9")), (t("03-05 11:00"), CSAT_F, fv("2"))]
    got = [(a.survey, a.value, a.at) for a in
           answer_history(DEAL, fields, [], CFG, responsible_from((("01-01 00:00", ALICE),)))]
    assert got == [("csat", 2, t("03-05 11:00")), ("nps", 3, t("03-02 10:00")),
                   ("nps", 2, t("03-04 10:00")), ("nps", 9, t("03-05 10:00"))]


def test_there_are_at_least_fifteen_cases() -> None:
    assert len(CASES) >= 15


# --- the period's figures --------------------------------------------------------------------

MARCH = (t("03-01 00:00"), t("04-01 00:00"))


def ans(deal: int, survey: str, value: float, at: str, who: int | None = ALICE) -> Answer:
    return Answer(deal, survey, value, value, (0, 10) if survey == "nps" else (1, 5), t(at), who,
                  "field")


def test_survey_stats() -> None:
    answers = [
        ans(1, "nps", 10, "03-02 10:00", ALICE),
        ans(2, "nps", 9, "03-03 10:00", ALICE),
        ans(3, "nps", 6, "03-04 10:00", ALICE),
        ans(4, "nps", 9, "03-05 10:00", BOB),
        ans(5, "nps", 8, "03-06 10:00", BOB),
        ans(6, "nps", 0, "03-07 10:00", BOB),
        ans(7, "nps", 7, "03-08 10:00", None),  # counted overall, not per manager
        ans(8, "nps", 1, "02-27 10:00", ALICE),  # set before the period
        ans(9, "nps", 1, "04-01 00:00", ALICE),  # set after the period
        ans(10, "nps", 2, "03-01 10:00", BOB),  # replaced by the same deal's later answer:
        ans(10, "nps", 10, "04-02 10:00", BOB),  # ... which lies after the period
        ans(1, "csat", 5, "03-02 10:00"), ans(2, "csat", 4, "03-02 10:00"),
        ans(3, "csat", 3, "03-02 10:00"), ans(4, "csat", 1, "03-02 10:00"),
        ans(5, "csat", 2, "03-02 10:00"),
        ans(1, "ces", 5, "03-02 10:00"), ans(2, "ces", 2, "03-02 10:00"),
        ans(3, "ces", 1, "03-02 10:00"), ans(4, "ces", 4, "03-02 10:00"),
    ]
    s = survey_stats(answers, *MARCH, CFG)
    assert s.nps is not None and s.csat is not None and s.ces is not None
    nps = s.nps
    assert (nps.answers, nps.promoters, nps.passives, nps.detractors) == (7, 3, 2, 2)
    assert nps.score == pytest.approx((3 - 2) / 7 * 100)
    assert nps.by_manager == {ALICE: ManagerNps(3, pytest.approx((2 - 1) / 3 * 100)),
                              BOB: ManagerNps(3, 0.0)}
    assert (s.csat.answers, s.csat.satisfied, s.csat.low, s.csat.percent) == (5, 2, 3, 40.0)
    assert (s.ces.answers, s.ces.low, s.ces.mean) == (4, 2, 3.0)


def test_survey_stats_over_nothing_are_null() -> None:
    s = survey_stats([], *MARCH, CFG)
    assert s.nps is not None and s.csat is not None and s.ces is not None
    assert (s.nps.answers, s.nps.score, s.nps.by_manager) == (0, None, {})
    assert (s.csat.answers, s.csat.percent) == (0, None)
    assert (s.ces.answers, s.ces.mean) == (0, None)


def test_survey_stats_of_an_unconfigured_survey_are_none() -> None:
    s = survey_stats([ans(1, "csat", 5, "03-02 10:00")], *MARCH, replace(CFG, csat=None, ces=None))
    assert (s.csat, s.ces) == (None, None)


def test_linear_rating_of_seven_is_a_passive_not_a_detractor() -> None:
    rated = Answer(1, "nps", 60 / 9, 7, TALK, t("03-02 10:00"), ALICE, "talk_rate")
    nps = survey_stats([rated], *MARCH, LINEAR).nps
    assert nps is not None
    assert (nps.promoters, nps.passives, nps.detractors, nps.score) == (0, 1, 0, 0.0)


# --- low scores and the client zone ----------------------------------------------------------


@pytest.mark.parametrize(
    ("survey", "value", "low"),
    [("nps", 0, True), ("nps", 6, True), ("nps", 7, False), ("nps", 60 / 9, False),
     ("csat", 3, True), ("csat", 4, False), ("csat", 1, True),
     ("ces", 2, True), ("ces", 3, False), ("ces", 1, True)],
)
def test_is_low(survey: str, value: float, low: bool) -> None:
    assert is_low(ans(1, survey, value, "03-02 10:00"), CFG) is low


@pytest.mark.parametrize(
    ("answers", "zone"),
    [
        ([("nps", 9)], "green"),
        ([("nps", 8)], "yellow"),
        ([("nps", 7)], "yellow"),
        ([("nps", 6)], "red"),
        ([("csat", 4)], "yellow"),  # 8 points
        ([("csat", 3)], "red"),  # 6 points
        ([("nps", 8), ("csat", 5)], "green"),  # (8 + 10) / 2 = 9
        ([("nps", 9), ("csat", 4), ("ces", 5)], "green"),  # 27 / 3 = 9
        ([("nps", 6), ("ces", 4)], "yellow"),  # (6 + 8) / 2 = 7
        ([("nps", 5), ("csat", 4)], "red"),  # 6.5
        ([("nps", 10), ("csat", 4), ("ces", 4)], "yellow"),  # 26 / 3 = 8.67
        ([("nps", 80 / 9), ("ces", 5)], "green"),  # linear rating 9 = 8.89; avg 9.44
        ([], None),
    ],
)
def test_client_zone(answers: list[tuple[str, float]], zone: str | None) -> None:
    deal_answers = [ans(1, s, v, "03-02 10:00") for s, v in answers]
    assert client_zone(deal_answers, CFG) == zone


def test_client_zone_uses_each_surveys_latest_answer() -> None:
    older, newer = ans(1, "nps", 10, "03-02 10:00"), ans(1, "nps", 6, "03-09 10:00")
    assert client_zone([newer, older], CFG) == "red"


def test_client_zone_thresholds_come_from_the_config() -> None:
    strict = replace(CFG, zone=SurveyZoneConfig(field_id=1, enums={}, green_from=9.5,
                                                 yellow_from=8))
    assert client_zone([ans(1, "nps", 9, "03-02 10:00")], strict) == "yellow"
    assert client_zone([ans(1, "nps", 7, "03-02 10:00")], strict) == "red"


def test_report_dict_rounds_half_up_and_keys_managers_by_string() -> None:
    st = SurveyStats(
        nps=NpsStats(7, 3, 2, 2, (3 - 2) / 7 * 100, {ALICE: ManagerNps(4, 12.25)}),
        csat=CsatStats(3, 2, 1, 2 / 3 * 100),
        ces=CesStats(8, 1, 3.125),
    )
    assert report_dict(st) == {
        "nps": {"answers": 7, "promoters": 3, "passives": 2, "detractors": 2, "score": 14.3,
                "by_manager": {"101": {"answers": 4, "score": 12.3}}},
        "csat": {"answers": 3, "satisfied": 2, "low": 1, "percent": 66.7},
        "ces": {"answers": 8, "low": 1, "mean": 3.13},
    }


def test_exact_halves_of_nps_and_csat_round_up() -> None:
    """23 of 80 is 28.75 %: rounded half up to one place, 28.8 (not 28.7 from float noise);
    an NPS of -61.25 rounds towards +inf, to -61.2."""
    up = [ans(d, "nps", 9, "03-02 10:00") for d in range(23)] + [
        ans(100 + d, "nps", 7, "03-02 10:00") for d in range(57)]
    up += [ans(d, "csat", 5, "03-02 10:00") for d in range(23)] + [
        ans(100 + d, "csat", 3, "03-02 10:00") for d in range(57)]
    figures = report_dict(survey_stats(up, *MARCH, CFG))
    assert figures["nps"]["score"] == 28.8
    assert figures["nps"]["by_manager"][str(ALICE)]["score"] == 28.8
    assert figures["csat"]["percent"] == 28.8
    down = [ans(d, "nps", 9, "03-02 10:00") for d in range(7)] + [
        ans(100 + d, "nps", 0, "03-02 10:00") for d in range(56)] + [
        ans(200 + d, "nps", 8, "03-02 10:00") for d in range(17)]
    assert report_dict(survey_stats(down, *MARCH, CFG))["nps"]["score"] == -61.2


def test_report_dict_of_unconfigured_surveys_keeps_the_shape() -> None:
    d = report_dict(SurveyStats(nps=None, csat=None, ces=None))
    assert d["nps"] == {"answers": 0, "promoters": 0, "passives": 0, "detractors": 0,
                        "score": None, "by_manager": {}}
    assert d["csat"]["percent"] is None and d["ces"]["mean"] is None
