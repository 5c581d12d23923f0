"""Russia's moved working Saturdays (the `holidays` package knows the days off, not these).

Each date is a Saturday made a working day by a decree of the Government of the Russian
Federation moving days off; it works the hours of the weekday whose day off it was swapped
with (the decree moves the day off from this Saturday to that weekday).

Sources, the decrees "О переносе выходных дней" (as cited by consultant.ru):
- 2023: Постановление Правительства РФ от 29.08.2022 (consultant.ru LAW_425407) — no working Saturday
  (only Sunday holidays moved: 01.01 → 24.02, 08.01 → 08.05).
- 2024: Постановление от 10.08.2023 № 1306 (consultant.ru LAW_455140):
  27.04 → 29.04 (Mon), 02.11 → 30.04 (Tue), 28.12 → 30.12 (Mon).
- 2025: Постановление от 04.10.2024 № 1335 (consultant.ru LAW_481586): 01.11 → 03.11 (Mon).
- 2026: Постановление, signed 24.09.2025 (consultant.ru LAW_515170) — no working Saturday
  (03.01 → 09.01 and 04.01 → 31.12 move holidays that fall on a weekend).
- 2027: the decree cited by consultant.ru LAW_544706: 20.02 → 22.02 (Mon).
The pairs agree with the "substituted from" days off of `holidays` 0.109 (countries/russia.py).
Update this table when a new year's decree is published (usually in the autumn before).
"""

from __future__ import annotations

# working Saturday (ISO date) -> weekday whose hours it works ("mon" … "fri")
RU_MOVED_WORKING_DAYS: dict[str, str] = {
    "2024-04-27": "mon",  # day off moved to Mon 2024-04-29
    "2024-11-02": "tue",  # day off moved to Tue 2024-04-30
    "2024-12-28": "mon",  # day off moved to Mon 2024-12-30
    "2025-11-01": "mon",  # day off moved to Mon 2025-11-03
    "2027-02-20": "mon",  # day off moved to Mon 2027-02-22
}

# country code (as in calendar.holidays) -> its moved working days
MOVED_WORKING_DAYS: dict[str, dict[str, str]] = {"RU": RU_MOVED_WORKING_DAYS}

# Moved working Saturdays that are also shortened by an hour (shorten_pre_holiday): the last
# working day before a holiday, though a Sunday and a moved day off lie in between, so the
# next-day rule cannot find them. 2025: the norm of 1,972 hours (247 days x 8 - 4) needs
# 07.03, 30.04, 11.06 and this 01.11; 2024-11-02 likewise (before 04.11). Not listed, being
# unconfirmed here: 2024-04-27 and 2024-12-28 (check the 2024 production calendar).
RU_SHORTENED_SATURDAYS: frozenset[str] = frozenset({"2024-11-02", "2025-11-01"})

# country code -> extra shortened days
SHORTENED_DAYS: dict[str, frozenset[str]] = {"RU": RU_SHORTENED_SATURDAYS}
