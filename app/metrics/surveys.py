"""Survey scores on deals: NPS, CSAT, CES answers, the period's figures and the client zone.

Rules (metrics.md §4) and the choices made where the spec leaves room:

- Answers come from value changes of the configured fields and from amoCRM's chat rating (the
  talk ``rate``, 1–10; 0 = not rated = no answer) fed into the survey ``talk_rate.feeds``.
  ``as_is`` keeps the rating's number (it must then fit the survey's scale, else it is
  ignored); ``linear`` maps the talk scale onto the survey's scale, ``lo + (r − tlo) × (hi −
  lo) / (thi − tlo)`` — for NPS that is ``(r − 1) × 10 / 9``.
- Field values are read from amoCRM's shape (``[{"value": "9"}]``; a dict or a bare value is
  accepted too). Only whole numbers inside the survey's scale are answers ("9", "9.0", 9);
  text, fractions, out-of-scale numbers and a cleared field are ignored — clearing does not
  erase the previous answer.
- Per deal and survey the events (both sources together) are taken in time order (ties: field
  before talk rate, then by value, so input order never matters). A value different from the
  current answer's is a new answer and replaces it; the same value again is no new answer and
  the answer keeps the instant it was first set. Values are compared on the survey's scale.
- ``responsible`` of an answer is the deal's responsible at the answer's instant.
- NPS classes are Bain's: promoters ≥ 9, detractors ≤ 6, passives in between (so a linearly
  mapped 6.67 is a passive). Score = %promoters − %detractors in percent points.
- Statistics over no answers are None; a survey that is not configured gives None stats.
- Client zone: each survey's latest answer on a 10-point scale, ``value × 10 / scale_max``
  (NPS as is, 1–5 × 2), averaged; green ≥ ``green_from``, yellow ≥ ``yellow_from``, red
  below (9 and 7 when no zone is configured); None when the deal has no answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from app.metrics import stats
from config.account import SurveysConfig

# Float noise from the linear map must not drop an exact 9.0 average under green_from.
_EPS = 1e-9
PROMOTER_FROM, DETRACTOR_TO = 9, 6
SATISFIED_FROM = 4

ResponsibleAt = Callable[[datetime], "int | None"]


@dataclass(frozen=True)
class Answer:
    """One survey answer: ``value`` on the survey's scale, ``raw`` on ``raw_scale`` as given."""

    deal_id: int
    survey: str  # "nps" | "csat" | "ces"
    value: float
    raw: float
    raw_scale: tuple[int, int]
    at: datetime
    responsible: int | None
    source: str  # "field" | "talk_rate"


class ManagerNps(NamedTuple):
    answers: int
    score: float | None


@dataclass(frozen=True)
class NpsStats:
    answers: int
    promoters: int
    passives: int
    detractors: int
    score: float | None
    by_manager: dict[int, ManagerNps]


@dataclass(frozen=True)
class CsatStats:
    answers: int
    satisfied: int
    low: int
    percent: float | None


@dataclass(frozen=True)
class CesStats:
    answers: int
    low: int
    mean: float | None


@dataclass(frozen=True)
class SurveyStats:
    nps: NpsStats | None
    csat: CsatStats | None
    ces: CesStats | None


def _whole_number(raw: object) -> int | None:
    """A whole number from amoCRM's value (it sends numbers as strings), else None."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int):
        return raw
    try:
        number = float(str(raw).strip().replace(",", "."))
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _field_number(values: object) -> int | None:
    if isinstance(values, Sequence) and not isinstance(values, str):
        if not values:
            return None
        values = values[0]
    if isinstance(values, dict):
        values = values.get("value")
    return _whole_number(values)


@dataclass(frozen=True)
class _Event:
    at: datetime
    source: str
    value: float
    raw: float
    raw_scale: tuple[int, int]


def _talk_value(rate: object, cfg: SurveysConfig) -> tuple[str, float, int] | None:
    """(survey fed, value on its scale, raw rating) for a chat rating, None if no answer."""
    talk = cfg.talk_rate
    survey = cfg.by_name().get(talk.feeds) if talk else None
    number = _whole_number(rate)
    if talk is None or survey is None or number is None or number == 0:
        return None
    t_lo, t_hi = talk.scale
    if not t_lo <= number <= t_hi:
        return None
    lo, hi = survey.scale
    if talk.map == "linear":
        value: float = lo + (number - t_lo) * (hi - lo) / (t_hi - t_lo)
    else:
        value = number
    if not lo - _EPS <= value <= hi + _EPS:
        return None
    return talk.feeds, value, number


def answer_history(
    deal_id: int,
    field_history: Iterable[tuple[datetime, int, object]],
    talk_rates: Iterable[tuple[datetime, object]],
    cfg: SurveysConfig,
    responsible_at: ResponsibleAt,
) -> list[Answer]:
    """Every answer the deal gave to each survey, oldest first per survey (surveys by name),
    from its field changes and chat ratings. A new answer starts where the score changes.

    The same score set again is the same answer, even after a delivery that left the field out
    or emptied it: lead bodies often carry only some fields, and a score that comes
    back unchanged was not given again."""
    surveys = cfg.by_name()
    survey_of_field = {s.field_id: name for name, s in surveys.items()}
    events: dict[str, list[_Event]] = {}
    for at, field_id, values in field_history:
        name = survey_of_field.get(field_id)
        number = _field_number(values) if name else None
        if name is None or number is None:
            continue
        lo, hi = surveys[name].scale
        if lo <= number <= hi:
            events.setdefault(name, []).append(
                _Event(at, "field", number, number, surveys[name].scale))
    for at, rate in talk_rates:
        mapped = _talk_value(rate, cfg)
        if mapped is not None and cfg.talk_rate is not None:
            name, value, raw = mapped
            events.setdefault(name, []).append(
                _Event(at, "talk_rate", value, raw, cfg.talk_rate.scale))

    answers = []
    for name in sorted(events):
        current: _Event | None = None
        for event in sorted(events[name], key=lambda e: (e.at, e.source != "field", e.value)):
            if current is None or event.value != current.value:
                current = event
                answers.append(Answer(deal_id, name, event.value, event.raw, event.raw_scale,
                                      event.at, responsible_at(event.at), event.source))
    return answers


def latest_answers(history: Sequence[Answer]) -> list[Answer]:
    """The latest answer to each survey (a changed score replaces the old answer), by survey."""
    latest: dict[str, Answer] = {}
    for answer in history:  # oldest first per survey
        latest[answer.survey] = answer
    return [latest[name] for name in sorted(latest)]


def _latest_per_deal_and_survey(answers: Iterable[Answer]) -> list[Answer]:
    latest: dict[tuple[int, str], Answer] = {}
    for a in answers:
        key = (a.deal_id, a.survey)
        if key not in latest or a.at > latest[key].at:
            latest[key] = a
    return list(latest.values())


def _in_range(value: float, bounds: tuple[int, int]) -> bool:
    return bounds[0] - _EPS <= value <= bounds[1] + _EPS


def is_low(answer: Answer, cfg: SurveysConfig) -> bool:
    """Is the answer inside its survey's ``low`` range (inclusive)?"""
    survey = cfg.by_name().get(answer.survey)
    return survey is not None and _in_range(answer.value, survey.low)


def _nps_score(values: list[float]) -> float | None:
    if not values:
        return None
    promoters = sum(v >= PROMOTER_FROM for v in values)
    detractors = sum(v <= DETRACTOR_TO for v in values)
    # One division, last: k / n * 100 leaves float noise (23 / 80 * 100 = 28.749999999999996)
    # that turns replay.md's exact halves into round-downs.
    return (promoters - detractors) * 100 / len(values)


def _nps(answers: list[Answer]) -> NpsStats:
    values = [a.value for a in answers]
    promoters = sum(v >= PROMOTER_FROM for v in values)
    detractors = sum(v <= DETRACTOR_TO for v in values)
    per_manager: dict[int, list[float]] = {}
    for a in answers:
        if a.responsible is not None:
            per_manager.setdefault(a.responsible, []).append(a.value)
    return NpsStats(
        answers=len(values),
        promoters=promoters,
        passives=len(values) - promoters - detractors,
        detractors=detractors,
        score=_nps_score(values),
        by_manager={u: ManagerNps(len(vs), _nps_score(vs)) for u, vs in sorted(per_manager.items())},
    )


def survey_stats(
    latest_answers: Iterable[Answer],
    period_start: datetime,
    period_end: datetime,
    cfg: SurveysConfig,
) -> SurveyStats:
    """NPS, CSAT and CES over the latest answers whose score was set in ``[start, end)``."""
    by_survey: dict[str, list[Answer]] = {}
    for a in _latest_per_deal_and_survey(latest_answers):
        if period_start <= a.at < period_end:
            by_survey.setdefault(a.survey, []).append(a)

    nps = _nps(by_survey.get("nps", [])) if cfg.nps else None
    csat = None
    if cfg.csat:
        values = [a.value for a in by_survey.get("csat", [])]
        satisfied = sum(v >= SATISFIED_FROM for v in values)
        csat = CsatStats(
            answers=len(values),
            satisfied=satisfied,
            low=sum(_in_range(v, cfg.csat.low) for v in values),
            percent=satisfied * 100 / len(values) if values else None,
        )
    ces = None
    if cfg.ces:
        values = [a.value for a in by_survey.get("ces", [])]
        ces = CesStats(answers=len(values), low=sum(_in_range(v, cfg.ces.low) for v in values),
                       mean=stats.mean(values))
    return SurveyStats(nps=nps, csat=csat, ces=ces)


def _rounded(value: float | None, places: int) -> float | None:
    return None if value is None else float(stats.round_half_up(value, places))


def report_dict(st: SurveyStats) -> dict[str, Any]:
    """The report's "surveys" section: NPS and CSAT % to 1 place, the CES mean to 2 (half up).

    An unconfigured survey shows as no answers with null statistics, so the shape never varies.
    """
    nps = st.nps or NpsStats(0, 0, 0, 0, None, {})
    csat = st.csat or CsatStats(0, 0, 0, None)
    ces = st.ces or CesStats(0, 0, None)
    return {
        "nps": {
            "answers": nps.answers, "promoters": nps.promoters, "passives": nps.passives,
            "detractors": nps.detractors, "score": _rounded(nps.score, 1),
            "by_manager": {str(user): {"answers": m.answers, "score": _rounded(m.score, 1)}
                           for user, m in sorted(nps.by_manager.items())},
        },
        "csat": {"answers": csat.answers, "satisfied": csat.satisfied, "low": csat.low,
                 "percent": _rounded(csat.percent, 1)},
        "ces": {"answers": ces.answers, "low": ces.low, "mean": _rounded(ces.mean, 2)},
    }


def client_zone(latest_answers_of_deal: Iterable[Answer], cfg: SurveysConfig) -> str | None:
    """green / yellow / red from the average of the deal's latest answers on 10 points."""
    surveys = cfg.by_name()
    points = [
        a.value * 10 / surveys[a.survey].scale[1]
        for a in _latest_per_deal_and_survey(latest_answers_of_deal)
        if a.survey in surveys
    ]
    average = stats.mean(points)
    if average is None:
        return None
    green_from = cfg.zone.green_from if cfg.zone else 9
    yellow_from = cfg.zone.yellow_from if cfg.zone else 7
    if average >= green_from - _EPS:
        return "green"
    if average >= yellow_from - _EPS:
        return "yellow"
    return "red"
