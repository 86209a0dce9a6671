"""The process-wide result cache: bounded by bytes, shared, computing equal inputs once."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gqa_viz.app.cache import ResultCache, nbytes


def _mib(n: int) -> np.ndarray:
    return np.zeros(n * 2**18, np.float32)  # n MiB


def test_it_keeps_the_most_recently_used_results_within_its_byte_budget():
    cache = ResultCache(max_bytes=3 * 2**20)
    for key in "abc":
        cache.get(key, lambda: _mib(1))
    cache.get("a", lambda: pytest.fail("'a' is cached"))  # touch a: b is now the oldest
    cache.get("d", lambda: _mib(1))
    assert len(cache) == 3 and cache.size_bytes == 3 * 2**20
    calls = []
    cache.get("b", lambda: calls.append("b") or _mib(1))
    assert calls == ["b"]  # b was evicted
    # Over the budget: kept apart, so its own reruns do not compute it again, and nothing
    # else is dropped for it...
    assert cache.get("big", lambda: _mib(5)).nbytes == 5 * 2**20
    cache.get("big", lambda: pytest.fail("'big' is cached"))
    assert len(cache) == 4 and cache.size_bytes == 8 * 2**20 and "b" in cache
    # ...until the next result over the budget takes its place.
    cache.get("bigger", lambda: _mib(6))
    assert "big" not in cache and "bigger" in cache and cache.size_bytes == 9 * 2**20
    cache.clear()
    assert len(cache) == 0 and cache.size_bytes == 0


def test_equal_inputs_from_many_sessions_are_computed_once():
    cache = ResultCache(max_bytes=2**30, max_concurrent=2)
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return _mib(1)

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("k", slow))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 8
    assert all(r is results[0] for r in results)


def test_heavy_work_is_capped():
    cache = ResultCache(max_bytes=2**30, max_concurrent=1)
    running, peak = [0], [0]
    lock = threading.Lock()

    def work():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return 1

    threads = [threading.Thread(target=cache.get, args=(i, work)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1


def test_light_work_never_waits_behind_heavy_work():
    """A classroom's small requests go ahead while one large request holds the heavy slot."""
    cache = ResultCache(max_bytes=2**30, max_concurrent=1)
    release = threading.Event()
    big = threading.Thread(target=cache.get, args=("big", lambda: release.wait(10) and 1))
    big.start()
    time.sleep(0.05)  # the large request now holds the only heavy slot
    t0 = time.perf_counter()
    assert [cache.get(i, lambda i=i: i, heavy=False) for i in range(20)] == list(range(20))
    waited = time.perf_counter() - t0
    second = threading.Thread(target=cache.get, args=("big2", lambda: 2))
    second.start()
    second.join(0.2)
    assert second.is_alive()  # another heavy request queues for the slot
    release.set()
    big.join()
    second.join()
    assert waited < 1.0 and cache.get("big2", lambda: 0) == 2


def test_playground_marks_large_settings_heavy():
    from gqa_viz.app import playground
    from gqa_viz.app.limits import HEAVY_SCORE_CELLS
    from gqa_viz.app.settings import Settings

    assert not playground.is_heavy(Settings())  # the default sentence
    assert not playground.is_heavy(Settings(mode="random", t=256, n=32))
    big = Settings(mode="random", t=2048, n=32, k=8)
    assert playground.is_heavy(big) and 32 * 2048 * 2048 > HEAVY_SCORE_CELLS


def test_errors_are_not_cached():
    cache = ResultCache(max_bytes=2**20)
    with pytest.raises(ValueError, match="bad"):
        cache.get("x", lambda: (_ for _ in ()).throw(ValueError("bad")))
    assert cache.get("x", lambda: 5) == 5


def test_background_work_waits_for_requests():
    cache = ResultCache(max_bytes=2**30)
    order = []
    started = threading.Event()

    def request():
        started.set()
        time.sleep(0.2)
        order.append("request")
        return 1

    t = threading.Thread(target=cache.get, args=("r", request))
    t.start()
    started.wait()
    with cache.background():
        order.append("background")
    t.join()
    assert order == ["request", "background"]


def test_nbytes_counts_each_array_once():
    a = _mib(1)
    assert nbytes({"x": a, "y": [a, (a,)], "z": "text"}) == 2**20


def test_wait_idle_returns_once_no_computation_is_pending():
    cache = ResultCache(max_bytes=2**30)
    cache.wait_idle()  # nothing pending: at once
    started, release, waited = threading.Event(), threading.Event(), []

    def slow():
        started.set()
        release.wait(5)
        return _mib(1)

    worker = threading.Thread(target=cache.get, args=("slow", slow))
    worker.start()
    started.wait(5)
    waiter = threading.Thread(target=lambda: waited.append(cache.wait_idle() or time.monotonic()))
    waiter.start()
    time.sleep(0.2)
    assert not waited  # still computing
    released_at = time.monotonic()
    release.set()
    worker.join(5)
    waiter.join(5)
    assert waited and waited[0] >= released_at
