"""Replay throughput: a generated stream of N deliveries through `amoscore replay` (dry-run).

Prints deliveries/s and peak RSS, beside the rate of bare Flask test-client posts to an
endpoint that only parses the form (the floor any replay through the real receiver pays).
Usage: python bench/replay.py [--deliveries N]   (default 5,000; the issue's goal is 100,000
in under a minute, i.e. >= 2,000 deliveries/s, RSS < 200 MB)
"""

from __future__ import annotations

import argparse
import json
import resource
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "stream.jsonl"
        subprocess.run([sys.executable, str(ROOT / "demo" / "generate.py"), "--deliveries",
                        str(args.deliveries), "--out", str(stream)], check=True,
                       stdout=subprocess.DEVNULL)
        lines = stream.read_text(encoding="utf-8").splitlines()
        webhooks = [json.loads(ln)["webhook"].encode() for ln in lines if '"webhook"' in ln]

        from config.loader import load_account
        from jobs.replay import Replay, ReplayOptions

        account = load_account(ROOT / "demo" / "account.yaml")
        start = time.perf_counter()
        report = Replay(ReplayOptions(stream=stream, account=account)).run()
        elapsed = time.perf_counter() - start
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        bare = bare_flask_rate(webhooks[:2000])
    rate = len(lines) / elapsed
    print(f"stream lines:           {len(lines)} ({len(webhooks)} webhooks)")
    print(f"replay wall time:       {elapsed:.1f} s")
    print(f"replay lines/s:         {rate:.0f}  (goal >= 2000)")
    print(f"bare Flask posts/s:     {bare:.0f}  (ratio replay/bare {rate / bare:.3f})")
    print(f"peak RSS:               {rss_mb:.0f} MB  (goal < 200 MB)")
    print(f"episodes in report:     {len(report['frt']['episodes'])}")


if __name__ == "__main__":
    main()
