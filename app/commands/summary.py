"""A report as a person reads it: short tables on the terminal, not a JSON dump."""

from __future__ import annotations

from typing import Any


def fmt_seconds(value: int | None) -> str:
    if value is None:
        return "—"
    minutes, sec = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _bad_lines(bad: list[dict[str, Any]], shown: int = 3) -> str:
    """'2 (line 11: not JSON: …; line 12: unknown kind …)': the first few, the rest in the report."""
    if not bad:
        return "0"
    listed = "; ".join(f"line {b['line']}: {b['reason']}" for b in bad[:shown])
    more = f"; {len(bad) - shown} more in the report" if len(bad) > shown else ""
    return f"{len(bad)} ({listed}{more})"


def _num(value: float | None, unit: str = "") -> str:
    """A figure as the report rounded it; a figure over no answers is a dash, not 'None'."""
    return "—" if value is None else f"{value}{unit}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def frt_table(frt: dict[str, Any]) -> str:
    managers = frt.get("managers", {})
    order = sorted(managers, key=lambda u: (managers[u]["median_business_seconds"] is None,
                                            managers[u]["median_business_seconds"] or 0, u))
    rows = [[u, str(m["episodes"]), str(m["answered"]), str(m["unanswered"]),
             fmt_seconds(m["median_business_seconds"]), fmt_seconds(m["p90_business_seconds"]),
             pct(m["within_target_share"]), str(m["breaches"])] for u, m in
            ((u, managers[u]) for u in order)]
    return table(["manager", "episodes", "answered", "open", "median", "p90", "in target",
                  "breaches"], rows) if rows else "no episodes in the period"


def _trend(quarter: dict[str, Any]) -> str:
    """', +2.5 pp on the previous quarter, healthy' (metrics.md: growing or not falling)."""
    if quarter.get("change") is None:
        return ""
    verdict = "healthy" if quarter.get("healthy") else "falling"
    return f", {quarter['change'] * 100:+.1f} pp on the previous quarter, {verdict}"


def summary(report: dict[str, Any]) -> str:
    parts = []
    period = report.get("period", {})
    d = report.get("deliveries", {})
    parts.append(f"amoscore — account {report.get('account')}, {period.get('from')} … "
                 f"{period.get('to')} ({period.get('timezone')}), as of {report.get('now')}")
    if d:
        parts.append(f"deliveries: {d.get('received')} received, {d.get('duplicates')} duplicates, "
                     f"{d.get('processed')} processed, {d.get('rejected')} rejected, "
                     f"{d.get('unsupported')} unsupported; bad lines: "
                     f"{_bad_lines(report.get('bad_lines', []))}")
    later = report.get("lines_after_now")
    if later:
        parts.append(f"{later['count']} lines after --now not replayed (from line "
                     f"{later['first_line']})")
    if "frt" in report:
        parts.append("\nFirst reaction time (business time), fastest to slowest\n"
                     + frt_table(report["frt"]))
        a = report["frt"].get("assignment")
        if a and a.get("answered"):
            parts.append(
                f"Where the wait went ({a['answered']} answered): open → assigned median "
                f"{fmt_seconds(a['median_to_assignment_business_seconds'])} (p90 "
                f"{fmt_seconds(a['p90_to_assignment_business_seconds'])}), assigned → reply "
                f"median {fmt_seconds(a['median_assignment_to_reply_business_seconds'])} (p90 "
                f"{fmt_seconds(a['p90_assignment_to_reply_business_seconds'])})")
    c = report.get("complaints")
    if c:
        moved = c.get("moved_out_unresolved")
        parts.append(f"\nComplaints: {c['volume']} new, {c['resolved']} resolved, {c['open']} open "
                     f"({c['overdue']} overdue)"
                     + (f", {moved} moved out unresolved" if moved else "")
                     + f"; resolution mean {fmt_seconds(c['mean_resolution_seconds'])}, "
                     f"median {fmt_seconds(c['median_resolution_seconds'])}, "
                     f"p90 {fmt_seconds(c['p90_resolution_seconds'])}")
    r = report.get("referrals")
    if r:
        quarters = ", ".join(f"{q['quarter']} {q['referred']}/{q['won']} ({pct(q['share'])}"
                             + _trend(q) + ")" for q in r.get("by_quarter", []))
        parts.append(f"Referrals: {r['referred']} of {r['won']} won deals ({pct(r['share'])}); "
                     f"by quarter: {quarters or '—'}")
    s = report.get("surveys")
    if s:
        nps, csat, ces = s.get("nps", {}), s.get("csat", {}), s.get("ces", {})
        parts.append(f"NPS {_num(nps.get('score'))} ({nps.get('answers')} answers: "
                     f"{nps.get('promoters')} promoters, {nps.get('detractors')} detractors); "
                     f"CSAT {_num(csat.get('percent'), '%')} ({csat.get('answers')} answers, "
                     f"{csat.get('low')} low); CES mean {_num(ces.get('mean'))} (1 very hard … "
                     f"5 very easy; {ces.get('answers')} answers, {ces.get('low')} low)")
    if "writes" in report:
        rules: dict[str, int] = {}
        for t in report.get("tasks", []):
            rules[t["rule"]] = rules.get(t["rule"], 0) + 1
        api = report.get("api_requests", {})
        parts.append(f"Write-back: {len(report['writes'])} field writes, {len(report['tasks'])} tasks "
                     f"({', '.join(f'{k} {v}' for k, v in sorted(rules.items())) or 'none'}); "
                     f"API requests GET {api.get('GET')}, PATCH {api.get('PATCH')}, POST {api.get('POST')}")
    return "\n".join(parts)
