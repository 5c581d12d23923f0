"""One rate limit, pause and stop switch per amoCRM account, shared by every process.

amoCRM allows about 7 requests a second (per IP and integration) and answers 429, then 403
(an IP block), when that is passed. So the limit is kept in Redis as a moving window, for the
account and for the whole host, and a 429 pauses every worker of the account, not just the one
that got it. Without Redis (the embedded default) the same happens inside the process.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from integrations.amocrm.errors import AccountBlocked

GLOBAL_PER_SECOND = 7  # amoCRM's documented ceiling; the host never passes it for all accounts
_MIN_WAIT = 0.005
# amoCRM counts requests as they arrive; network jitter can squeeze two sends closer together,
# so our window is a little longer than its second.
WINDOW_SECONDS = 1.05


class MemoryFlags:
    """Pause-until and stop flags of accounts inside this process (embedded default)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._pause: dict[int, float] = {}
        self._stop: dict[int, str] = {}
        self._mutex = threading.Lock()

    def mutex(self) -> threading.Lock:
        return self._mutex

    def now(self) -> float:
        return time.time()

    def get_pause(self, account_id: int) -> float:
        with self._lock:
            return self._pause.get(account_id, 0.0)

    def set_pause(self, account_id: int, until: float, now: float) -> None:
        with self._lock:
            self._pause[account_id] = max(until, self._pause.get(account_id, 0.0))

    def get_stop(self, account_id: int) -> str | None:
        with self._lock:
            return self._stop.get(account_id)

    def set_stop(self, account_id: int, reason: str | None) -> None:
        with self._lock:
            if reason is None:
                self._stop.pop(account_id, None)
            else:
                self._stop[account_id] = reason

    def window_wait(self, key: str, limit: int, now: float) -> float:
        """Seconds until ``key`` has room (0.0 = now); call under ``mutex()``."""
        log = self._windows.get(key)
        if log is None or len(log) < limit:
            return 0.0
        return max(0.0, log[-limit] + WINDOW_SECONDS - now)

    def window_hit(self, key: str, limit: int, now: float) -> None:
        log = self._windows.setdefault(key, deque(maxlen=max(limit, 1)))
        if log.maxlen is not None and log.maxlen < limit:
            log = self._windows[key] = deque(log, maxlen=limit)
        log.append(now)


class RedisFlags:
    """The same flags as Redis keys, seen by every process of every host using that Redis."""

    def __init__(self, conn: Any, prefix: str = "amoscore") -> None:
        self._conn = conn
        self._prefix = prefix

    def mutex(self) -> Any:
        """A short lock over every process on this Redis (the windows are host-wide)."""
        return self._conn.lock(f"{self._prefix}:amocrm:limiter-mutex", timeout=5, sleep=0.001,
                               blocking_timeout=10)

    def now(self) -> float:
        """The Redis server's clock: the windows and pauses are shared by hosts whose own
        clocks may disagree (one running ten minutes ahead made the others sleep ten minutes,
        or, running behind, sent past the limit)."""
        seconds, micros = self._conn.time()
        return float(seconds) + micros / 1e6

    def _key(self, account_id: int, name: str) -> str:
        return f"{self._prefix}:amocrm:{account_id}:{name}"

    def get_pause(self, account_id: int) -> float:
        raw = self._conn.get(self._key(account_id, "pause_until"))
        return float(raw) if raw else 0.0

    def set_pause(self, account_id: int, until: float, now: float) -> None:
        key = self._key(account_id, "pause_until")
        ttl_ms = max(1, int((until - now) * 1000) + 1000)
        # Keep the later of two pauses when workers report 429s at once.
        self._conn.eval(
            "local c = tonumber(redis.call('GET', KEYS[1]) or '0') "
            "if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end "
            "return 1",
            1, key, repr(until), ttl_ms,
        )

    def get_stop(self, account_id: int) -> str | None:
        raw = self._conn.get(self._key(account_id, "stopped"))
        return raw.decode() if isinstance(raw, bytes) else raw

    def set_stop(self, account_id: int, reason: str | None) -> None:
        key = self._key(account_id, "stopped")
        if reason is None:
            self._conn.delete(key)
        else:
            self._conn.set(key, reason)

    def window_wait(self, key: str, limit: int, now: float) -> float:
        """Seconds until ``key`` has room: the limit-th latest request must be a window old."""
        raw = self._conn.lindex(f"{self._prefix}:amocrm:window:{key}", limit - 1)
        return 0.0 if raw is None else max(0.0, float(raw) + WINDOW_SECONDS - now)

    def window_hit(self, key: str, limit: int, now: float) -> None:
        name = f"{self._prefix}:amocrm:window:{key}"
        pipe = self._conn.pipeline()
        pipe.lpush(name, repr(now))
        pipe.ltrim(name, 0, max(limit, 1) - 1)
        pipe.expire(name, 60)
        pipe.execute()


_PROCESS_FLAGS = MemoryFlags()


class AccountLimiter:
    """Moving-window limit of one account plus the host-wide cap, with pause and stop."""

    def __init__(
        self,
        account_id: int,
        per_second: int = 6,
        *,
        global_per_second: int = GLOBAL_PER_SECOND,
        flags: MemoryFlags | RedisFlags | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.account_id = account_id
        self._limits = ((f"account:{account_id}", per_second), ("host", global_per_second))
        self._flags = flags or _PROCESS_FLAGS
        self._clock = clock or self._flags.now  # pauses: the flags' clock unless a test's
        self._sleep = sleep

    def acquire(self) -> float:
        """Block until the account is not paused and both windows have room; take one slot.

        Returns the instant the slot was taken. Each window is the log of its latest ``limit``
        requests; a request goes when the oldest of them is WINDOW_SECONDS old. Check and
        record of both windows run under one mutex (a Redis lock across processes), so no
        account slot is spent while the host cap makes it wait."""
        while True:
            self._wait_while_paused()
            with self._flags.mutex():
                now = self._flags.now()  # real time, whatever clock we were given
                # Never more than a window: a longer wait can only come of a clock that jumped.
                wait = min(WINDOW_SECONDS, max(self._flags.window_wait(key, limit, now)
                                               for key, limit in self._limits))
                if wait <= 0:
                    for key, limit in self._limits:
                        self._flags.window_hit(key, limit, now)
                    return now
            self._sleep(max(_MIN_WAIT, wait))

    def _wait_while_paused(self) -> None:
        while True:
            self.check_stopped()
            until = self._flags.get_pause(self.account_id)
            now = self._clock()
            if until <= now:
                return
            self._sleep(until - now)

    def check_stopped(self) -> None:
        reason = self._flags.get_stop(self.account_id)
        if reason:
            raise AccountBlocked(
                f"amoCRM traffic of account {self.account_id} is stopped: {reason}. "
                "An admin must check the account and the integration in amoCRM, then clear the "
                f"stop with `amoscore amocrm resume --account {self.account_id}`.",
                reason=reason,
            )

    def pause_for(self, seconds: float) -> float:
        """Pause every worker of the account for ``seconds``; returns the pause-until instant."""
        now = self._clock()
        until = now + max(0.0, seconds)
        self._flags.set_pause(self.account_id, until, now)
        return until

    def paused_until(self) -> float:
        return self._flags.get_pause(self.account_id)

    def pause_left(self) -> float:
        """Seconds of the pause still to run, on the clock the pause was set by."""
        return max(0.0, self.paused_until() - self._clock())

    def stop(self, reason: str) -> None:
        """Stop the account's traffic in every process until cleared."""
        self._flags.set_stop(self.account_id, reason)

    def stopped_reason(self) -> str | None:
        return self._flags.get_stop(self.account_id)

    def clear_stop(self) -> None:
        self._flags.set_stop(self.account_id, None)


def redis_limiter(
    redis_url: str,
    account_id: int,
    per_second: int = 6,
    *,
    global_per_second: int = GLOBAL_PER_SECOND,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> AccountLimiter:
    """A limiter whose window, pause and stop live in the Redis at ``redis_url``."""
    import redis

    return AccountLimiter(
        account_id,
        per_second,
        global_per_second=global_per_second,
        flags=RedisFlags(redis.Redis.from_url(redis_url)),
        clock=clock,
        sleep=sleep,
    )


def memory_limiter(account_id: int, per_second: int = 6, **kw: Any) -> AccountLimiter:
    """A limiter shared inside this process only (embedded default)."""
    return AccountLimiter(account_id, per_second, **kw)
