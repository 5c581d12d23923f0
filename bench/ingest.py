"""Receiver bench: the real receiver vs a bare Flask endpoint that only parses the form.

Both run under gunicorn with the same settings (gthread workers as in the Procfile, with
THREADS_PER_WORKER threads each, and as many processes as gunicorn's docs advise for a
saturated bench: 2 x cores + 1; loopback),
driven by the same load generator (2 processes x 4 threads, http.client, a distinct
fixture-shaped body per request so the dedupe never short-cuts the insert). The saturated
requests/s of both are measured in alternating rounds (the machine's speed drifts; a ratio of
two runs minutes apart measured the drift as much as the receiver); prints each round, the
medians and their ratio (goal >= 0.5), and p50/p99 latency of the real receiver at a fixed
200 requests/s (goal p99 < 100 ms; latency counted from each request's scheduled send time).
A temp Postgres database (created and dropped), a private redis-server; about 60 s in all.
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ is first on sys.path; the repo root must be importable.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":
    sys.path[0] = ROOT

import http.client  # noqa: E402
import multiprocessing as mp  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

SECRET = "bench-secret"
SATURATE_SECONDS = 4.0
ROUNDS = 5
WORKERS = 2 * (os.cpu_count() or 1) + 1
FIXED_RPS = 200
FIXED_SECONDS = 8.0
PROCS, THREADS = 2, 4
THREADS_PER_WORKER = 4  # the Procfile's default WEB_THREADS


def bare_app() -> Any:
    """The floor: a Flask endpoint that reads and parses the form and answers 200."""
    from flask import Flask, request

    app = Flask("bare")

    @app.post("/webhooks/amocrm/<secret>")
    def receive(secret: str) -> tuple[str, int]:
        request.form.to_dict()
        return "", 200

    return app


def _body(tag: str, n: int) -> bytes:
    from tests.faultkit import message_body

    return message_body(f"{tag}-{n}", 40_000_000 + n % 100_000, 1_748_268_669 + n)


def _connect(port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=10)


def _post(conn: http.client.HTTPConnection, port: int, body: bytes) -> tuple[int, http.client.HTTPConnection]:
    """One POST, reconnecting when the server closed the connection."""
    for _ in range(2):
        try:
            conn.request("POST", f"/webhooks/amocrm/{SECRET}", body=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            resp = conn.getresponse()
            resp.read()
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = _connect(port)
            return resp.status, conn
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = _connect(port)
    raise RuntimeError("request failed twice")


def _saturate_proc(port: int, seconds: float, tag: str, out: Any) -> None:
    counts = [0] * THREADS
    errors = [0] * THREADS
    stop_at = time.perf_counter() + seconds

    def run(i: int) -> None:
        conn = _connect(port)
        n = 0
        while time.perf_counter() < stop_at:
            status, conn = _post(conn, port, _body(f"{tag}-{i}", n))
            n += 1
            if status == 200:
                counts[i] += 1
            else:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((sum(counts), sum(errors)))


def saturate(port: int, tag: str) -> tuple[float, int]:
    """Closed-loop load from PROCS x THREADS clients; (requests/s, non-200 answers)."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_saturate_proc, args=(port, SATURATE_SECONDS, f"{tag}{p}", out))
             for p in range(PROCS)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(r[0] for r in results) / SATURATE_SECONDS, sum(r[1] for r in results)


def fixed_rate(port: int, tag: str) -> tuple[list[float], int]:
    """Open-loop load at FIXED_RPS; latencies (s) from each request's scheduled time."""
    total = int(FIXED_RPS * FIXED_SECONDS)
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    workers = 8

    def run(i: int) -> None:
        conn = _connect(port)
        for n in range(i, total, workers):
            due = start + n / FIXED_RPS
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            status, conn = _post(conn, port, _body(tag, n))
            took = time.perf_counter() - due
            with lock:
                latencies.append(took)
                if status != 200:
                    errors[0] += 1
        conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(latencies), errors[0]


def gunicorn(app_spec: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    from tests.faultkit import wait_port

    proc = subprocess.Popen(
        [os.path.join(ROOT, ".venv", "bin", "gunicorn"), "-w", str(WORKERS), "-k", "gthread",
         "--threads", str(THREADS_PER_WORKER),
         "-b", f"127.0.0.1:{port}", "--chdir", ROOT, "--pythonpath", f"{ROOT},{ROOT}/bench",
         "--log-level", "warning", app_spec],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, timeout=20)
    return proc


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> None:
    from sqlalchemy import text

    from app.db import create_schema, make_engine
    from tests.faultkit import (
        RedisServer,
        create_database,
        drop_database,
        free_port,
        kill_tree,
        worker_env,
    )

    url = create_database("amoscore_bench")
    redis_server = RedisServer().start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        engine = make_engine(url)
        create_schema(engine)
        with tempfile.TemporaryDirectory() as var:
            env = worker_env(url, redis_server.url, SECRET, AMOSCORE_VAR_DIR=var,
                             AMOSCORE_AMOCRM_BASE_URL="http://127.0.0.1:9")
            real_port, bare_port = free_port(), free_port()
            procs.append(gunicorn("app.web:create_app()", env, real_port))
            procs.append(gunicorn("ingest:bare_app()", env, bare_port))
            for port in (real_port, bare_port):  # warm both (imports, pools)
                for n in range(20):
                    _post(_connect(port), port, _body(f"warm{port}", n))

            bare_runs: list[float] = []
            real_runs: list[float] = []
            bare_err = real_err = 0
            for r in range(ROUNDS):
                rps, err = saturate(bare_port, f"bare{r}")
                bare_runs.append(rps)
                bare_err += err
                rps, err = saturate(real_port, f"real{r}")
                real_runs.append(rps)
                real_err += err
                print(f"round {r + 1}: bare {bare_runs[-1]:,.0f} req/s, real {real_runs[-1]:,.0f}"
                      f" req/s, ratio {real_runs[-1] / bare_runs[-1]:.2f}", flush=True)
            bare_rps, real_rps = statistics.median(bare_runs), statistics.median(real_runs)
            latencies, fixed_err = fixed_rate(real_port, "fixed")
            with engine.connect() as conn:
                stored = conn.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar_one()

        print(f"bare Flask (parse only), gunicorn {WORKERS} gthread workers x {THREADS_PER_WORKER}: median {bare_rps:,.0f}"
              f" req/s ({bare_err} non-200)")
        print(f"real receiver (store + enqueue), same settings:   median {real_rps:,.0f} req/s"
              f" ({real_err} non-200)")
        print(f"ratio of the medians real / bare: {real_rps / bare_rps:.2f}  (goal >= 0.5)")
        print(f"real receiver at a fixed {FIXED_RPS} req/s for {FIXED_SECONDS:.0f} s: "
              f"p50 {pct(latencies, 0.5) * 1000:.1f} ms, p99 {pct(latencies, 0.99) * 1000:.1f} ms, "
              f"max {latencies[-1] * 1000:.1f} ms ({fixed_err} non-200)  (goal p99 < 100 ms)")
        print(f"rows stored by the real receiver: {stored:,}")
        engine.dispose()
    finally:
        for p in procs:
            kill_tree(p)
        redis_server.kill()
        drop_database(url)


if __name__ == "__main__":
    main()
