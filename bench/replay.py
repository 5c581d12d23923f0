"""Replay throughput: a generated stream of about N lines through `amoscore replay` (dry-run).

Prints lines (deliveries: webhooks and events) per second, the replay's CPU time and its peak
RSS, measured on the `amoscore replay` process alone, beside the rate of bare Flask posts to
an endpoint that only parses the form (the floor any replay through a Flask receiver pays).
Usage: python bench/replay.py [--deliveries N]   (default 100,000, the issue's size: the goal
is >= 2,000 lines/s, i.e. 100,000 in under a minute, with a peak RSS under 200 MB)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bare_flask_rate(bodies: list[bytes]) -> float:
    from flask import Flask, request

    app = Flask("bare")

    @app.post("/hook")
    def hook():  # type: ignore[no-untyped-def]
        request.form.to_dict()
        return ""

    client = app.test_client()
    start = time.perf_counter()
    for body in bodies:
        client.post("/hook", data=body, content_type="application/x-www-form-urlencoded")
    return len(bodies) / (time.perf_counter() - start)


def count_lines(stream: Path, sample: int) -> tuple[int, int, list[bytes]]:
    """(lines, webhook lines, the first ``sample`` webhook bodies), reading line by line."""
    lines = webhooks = 0
    bodies: list[bytes] = []
    with open(stream, encoding="utf-8") as fh:
        for raw in fh:
            lines += 1
            if '"webhook"' in raw:
                webhooks += 1
                if len(bodies) < sample:
                    bodies.append(json.loads(raw)["webhook"].encode())
    return lines, webhooks, bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stream, report = Path(tmp) / "stream.jsonl", Path(tmp) / "report.json"
        subprocess.run([sys.executable, str(ROOT / "demo" / "generate.py"), "--deliveries",
                        str(args.deliveries), "--out", str(stream)], check=True,
                       stdout=subprocess.DEVNULL)
        lines, webhooks, bodies = count_lines(stream, 2000)
        amoscore = Path(sys.executable).with_name("amoscore")
        start = time.perf_counter()
        proc = subprocess.Popen([str(amoscore), "replay", str(stream), "--config",
                                 str(ROOT / "demo" / "account.yaml"), "--report", str(report),
                                 "--quiet"])
        _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time and peak RSS
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            sys.exit(f"amoscore replay failed with exit code {proc.returncode}")
        episodes = len(json.loads(report.read_text(encoding="utf-8"))["frt"]["episodes"])
    bare = bare_flask_rate(bodies)
    rate = lines / elapsed
    cpu = usage.ru_utime + usage.ru_stime
    print(f"stream lines:           {lines} ({webhooks} webhooks, {lines - webhooks} events)")
    print(f"replay wall time:       {elapsed:.1f} s  (CPU {cpu:.1f} s)")
    print(f"replay lines/s:         {rate:.0f}  (goal >= 2000)")
    print(f"bare Flask posts/s:     {bare:.0f}  (ratio replay/bare {rate / bare:.3f})")
    print(f"peak RSS of the replay: {usage.ru_maxrss / 1024:.0f} MB  (goal < 200 MB)")
    print(f"episodes in report:     {episodes}")


if __name__ == "__main__":
    main()
