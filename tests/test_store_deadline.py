"""StoreDeadline: the receiver waits for the database only so long, and not at all while an
earlier store is still stuck."""

from __future__ import annotations

import threading
import time

import pytest

from app.web.deadline import StoreDeadline, StoreTimeout


def test_an_answer_in_time_is_returned_and_errors_pass_through():
    deadline = StoreDeadline(seconds=1.0)
    assert deadline.call(lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(ZeroDivisionError):
        deadline.call(lambda: 1 / 0)
    assert deadline.stuck == 0


def test_an_overrun_raises_then_later_calls_fail_fast_until_it_returns():
    deadline = StoreDeadline(seconds=0.1)
    release = threading.Event()
    ran = []
    started = time.monotonic()
    with pytest.raises(StoreTimeout, match="did not answer within 0.1 s"):
        deadline.call(lambda: release.wait(5) and ran.append("stuck call finished"))
    assert 0.1 <= time.monotonic() - started < 1.0
    assert deadline.stuck == 1

    started = time.monotonic()
    with pytest.raises(StoreTimeout, match="still waiting"):
        deadline.call(ran.append, "must not run")
    assert time.monotonic() - started < 0.05  # no wait, and nothing queued behind the stuck one

    release.set()
    for _ in range(100):
        if not deadline.stuck:
            break
        time.sleep(0.01)
    assert deadline.stuck == 0
    assert deadline.call(lambda: "again") == "again"
    assert ran == ["stuck call finished"]
