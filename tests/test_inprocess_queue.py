"""The in-process queue and the lazy runtime under the web's threads (gthread workers run
webhooks, and so the embedded default's inline jobs, on several threads at once). Pure."""

from __future__ import annotations

import threading
import time

from jobs import runtime as runtime_mod
from jobs.queues import InProcessQueue


def test_inline_jobs_of_two_threads_never_overlap() -> None:
    queue = InProcessQueue()
    running: list[int] = []
    overlaps: list[tuple[int, ...]] = []

    def job(n: int) -> None:
        running.append(n)
        if len(running) > 1:
            overlaps.append(tuple(running))
        time.sleep(0.05)
        running.remove(n)

    threads = [threading.Thread(target=queue.enqueue, args=(job, n)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert queue.ran == 4 and overlaps == []


def test_a_job_may_enqueue_another_inline() -> None:
    queue = InProcessQueue()
    done: list[str] = []
    worker = threading.Thread(target=queue.enqueue, args=(
        lambda: (queue.enqueue(done.append, "inner"), done.append("outer")),))
    worker.start()
    worker.join(5)
    assert done == ["inner", "outer"]


def test_the_runtime_is_built_once_when_threads_ask_at_once(monkeypatch) -> None:
    built: list[object] = []

    def slow_build(**_kw):  # type: ignore[no-untyped-def]
        time.sleep(0.1)
        built.append(object())
        return built[-1]

    monkeypatch.setattr(runtime_mod, "build_runtime", slow_build)
    monkeypatch.setattr(runtime_mod, "_current", None)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(runtime_mod.get_runtime()))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(built) == 1 and got == built * 4
