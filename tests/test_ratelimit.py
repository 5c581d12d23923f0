"""The shared moving-window limit holds across processes (real Redis)."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from integrations.amocrm.errors import AccountBlocked
from integrations.amocrm.ratelimit import redis_limiter

pytestmark = pytest.mark.integration


# Our own instant of each slot comes after the slot: the return from acquire() and the
# time.time() call, with the scheduler free to preempt the process in between (4 processes on
# a loaded 2-core machine). A delay on an earlier slot makes the later ones look closer to it, so
# windows of our instants are checked 50 ms shorter than amoCRM's second; with the limiter's own
# window at 1.05 s, only a delay over 100 ms could fail an honest limiter, while slots let
# through together (microseconds apart) are caught.
SCHEDULING_SLACK = 0.05


def _max_in_any_second(times: list[float], second: float = 1.0) -> int:
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + second) for t in times)


def _worker(redis_url: str, account_id: int, per_second: int, host_cap: int, n: int, out) -> None:  # type: ignore[no-untyped-def]
    limiter = redis_limiter(redis_url, account_id, per_second, global_per_second=host_cap)
    for _ in range(n):
        said = limiter.acquire()  # the instant the limiter says it took the slot
        seen = time.time()  # ours: a limiter misreporting its instants cannot move this one
        out.put((account_id, said, seen))


def test_four_processes_never_pass_the_account_or_host_limit(redis_conn, redis_url) -> None:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    account_limit, host_cap = 4, 6
    procs = [ctx.Process(target=_worker, args=(redis_url, 100 + i % 2, account_limit, host_cap, 4, out))
             for i in range(4)]
    for p in procs:
        p.start()
    got = [out.get(timeout=30) for _ in range(16)]
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    said = [t for _, t, _ in got]
    assert _max_in_any_second(said) <= host_cap
    for account in (100, 101):
        assert _max_in_any_second([t for a, t, _ in got if a == account]) <= account_limit
    # The same on the instants the workers saw acquire() return, whatever it said.
    short = 1.0 - SCHEDULING_SLACK
    seen = [t for _, _, t in got]
    assert _max_in_any_second(seen, short) <= host_cap, sorted(seen)
    for account in (100, 101):
        mine = [t for a, _, t in got if a == account]
        assert _max_in_any_second(mine, short) <= account_limit, sorted(mine)
    # they did run concurrently at the allowed pace, not one after another
    assert max(seen) - min(seen) < 6


def test_pause_is_seen_by_another_limiter_and_waited_out(redis_conn, redis_url) -> None:
    now = [1000.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    a = redis_limiter(redis_url, 7, 100, global_per_second=100, clock=lambda: now[0], sleep=sleep)
    b = redis_limiter(redis_url, 7, 100, global_per_second=100, clock=lambda: now[0], sleep=sleep)
    a.pause_for(300)
    assert b.paused_until() == pytest.approx(1300)
    b.acquire()
    assert slept == [pytest.approx(300)]


def test_stop_is_shared_and_blocks_acquire(redis_conn, redis_url) -> None:
    a = redis_limiter(redis_url, 8, 100, global_per_second=100)
    b = redis_limiter(redis_url, 8, 100, global_per_second=100)
    a.stop("HTTP 403 on GET /api/v4/leads")
    with pytest.raises(AccountBlocked, match="403"):
        b.acquire()
    b.clear_stop()
    b.acquire()


def test_a_host_whose_clock_runs_ahead_does_not_hold_up_the_others(redis_conn, redis_url,
                                                                   monkeypatch) -> None:
    """The window's instants are the Redis server's: a host ten minutes ahead filled it with
    future instants, and the other hosts then slept ten minutes (past RQ's job timeout)."""
    import time

    from integrations.amocrm import ratelimit

    real = time.time
    ahead = redis_limiter(redis_url, 9, 7, global_per_second=7)
    monkeypatch.setattr(ratelimit.time, "time", lambda: real() + 600)
    for _ in range(7):
        ahead.acquire()
    monkeypatch.setattr(ratelimit.time, "time", real)

    asked: list[float] = []

    def sleep(seconds: float) -> None:
        asked.append(seconds)
        assert seconds <= ratelimit.WINDOW_SECONDS, f"asked to sleep {seconds:.0f} s"
        time.sleep(seconds)

    behind = redis_limiter(redis_url, 9, 7, global_per_second=7, sleep=sleep)
    behind.acquire()
    assert sum(asked) <= ratelimit.WINDOW_SECONDS + 0.1
