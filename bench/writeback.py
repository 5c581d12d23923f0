"""Write-back bench: 10,000 deals with changed values against a local fake amoCRM HTTP server.

The server counts requests per second and answers 429 when more than 7 arrive within any
1-second window (amoCRM's limit). Prints PATCH calls (goal 200), wall time against the floor
200 / 6 s, the busiest 1-second window and the number of 429s (goal 0). SQLite database.
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ is first on sys.path: put the repository root there instead.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import json  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

from app.db import make_engine, make_session_factory, session_scope  # noqa: E402
from app.models import Base  # noqa: E402
from integrations.amocrm.auth import StaticTokenAuth  # noqa: E402
from integrations.amocrm.client import AmoClient  # noqa: E402
from integrations.amocrm.ratelimit import AccountLimiter, MemoryFlags  # noqa: E402
from jobs.writeback import declare_value, flush  # noqa: E402
from tests.test_client_support import ACCOUNT_ID, make_account  # noqa: E402

DEALS = 10_000
SERVER_LIMIT = 7


class FakeAmo:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: list[float] = []
        self.patches = 0
        self.throttled = 0


def handler_for(state: FakeAmo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

        def do_PATCH(self) -> None:  # noqa: N802 - http.server naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            now = time.monotonic()
            with state.lock:
                recent = [t for t in state.times if t > now - 1.0]
                if len(recent) >= SERVER_LIMIT:
                    state.throttled += 1
                    status, out = 429, {"status": 429, "retry_after": 1}
                else:
                    state.times.append(now)
                    state.patches += 1
                    status, out = 200, {"_embedded": {"leads": [
                        {"id": e["id"], "request_id": e["request_id"]} for e in body]}}
            raw = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/hal+json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handler


def max_per_window(times: list[float]) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def main() -> None:
    state = FakeAmo()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.sqlite3", throwaway=True)
        Base.metadata.create_all(engine)
        factory = make_session_factory(engine)
        at = datetime.now(UTC)
        with session_scope(factory) as s:
            for deal in range(1, DEALS + 1):
                declare_value(s, ACCOUNT_ID, deal, 752101, "numeric", deal % 120, at)
        account = make_account()
        per_second = account.writeback.max_requests_per_second
        limiter = AccountLimiter(ACCOUNT_ID, per_second, flags=MemoryFlags())
        client = AmoClient(base, StaticTokenAuth("bench"), limiter=limiter)
        start = time.perf_counter()
        result = flush(factory, account, client, datetime.now(UTC), dry_run=False)
        wall = time.perf_counter() - start
        engine.dispose()
    server.shutdown()
    goal = math.ceil(DEALS / account.writeback.batch_size)
    floor = (goal - 1) / per_second  # the first request needs no wait
    print(f"deals={DEALS} patch_calls={state.patches} (goal {goal}) client_requests={result.patch_requests}")
    print(f"wall={wall:.1f}s floor={floor:.1f}s ({goal} requests at {per_second}/s) overhead={wall - floor:+.1f}s")
    print(f"max_requests_in_any_1s_window={max_per_window(state.times)} (server limit {SERVER_LIMIT})")
    print(f"429s={state.throttled} (goal 0) failed_writes={result.failed}")


if __name__ == "__main__":
    main()
