"""A process-wide cache of computed results, bounded by bytes, and a cap on heavy work.

Shared by every session of the server: equal inputs are computed once, even when two
sessions ask at the same moment (the second waits for the first). Heavy computations (the
caller says which) take one of ``max_concurrent`` slots, so a few large requests cannot take
every core from a classroom; light ones skip the queue, so they never wait behind a large
one. No Streamlit here; the pages call :meth:`ResultCache.get`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from gqa_viz.app.limits import MAX_RESULT_BYTES


def nbytes(obj: Any, _seen: set[int] | None = None) -> int:
    """The bytes of the NumPy/JAX arrays reachable from ``obj`` (each array counted once)."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if hasattr(obj, "nbytes") and hasattr(obj, "shape"):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(nbytes(v, seen) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(nbytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return nbytes(vars(obj), seen)
    return 0


class ResultCache:
    """Least-recently-used results, at most ``max_bytes`` of arrays in all.

    A result larger than the whole budget is kept apart, in a slot of its own that the next
    such result takes over, so its own reruns do not compute it again and nobody else's
    results are dropped for it. Memory stays within ``max_bytes`` plus the largest single
    result (which the request limits bound). ``compute`` runs outside the cache's lock and
    inside the heavy-work semaphore.
    """

    def __init__(self, max_bytes: int, max_concurrent: int = 1):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._oversize: tuple[Hashable, Any, int] | None = None  # the last result over budget
        self._pending: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self._heavy = threading.BoundedSemaphore(max_concurrent)
        self.hits = self.misses = 0

    @property
    def size_bytes(self) -> int:
        with self._lock:
            apart = self._oversize[2] if self._oversize else 0
            return apart + sum(size for _, size in self._items.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items) + (self._oversize is not None)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items or (self._oversize is not None and self._oversize[0] == key)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._oversize = None

    def get(self, key: Hashable, compute: Callable[[], Any], *, heavy: bool = True) -> Any:
        """The cached value for ``key``, computing it with ``compute()`` if missing.

        A ``heavy`` computation waits for a heavy-work slot; a light one runs at once. If
        ``compute`` raises, the error goes to its caller, nothing is cached, and a caller
        that was waiting for that key computes it itself.
        """
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return self._items[key][0]
                if self._oversize is not None and self._oversize[0] == key:
                    self.hits += 1
                    return self._oversize[1]
                waiting = self._pending.get(key)
                if waiting is None:
                    self._pending[key] = threading.Event()
                    self.misses += 1
                    break
            waiting.wait()  # another thread computes it; then look again
        try:
            with self._heavy if heavy else contextlib.nullcontext():
                value = compute()
            self._store(key, value)
            return value
        finally:
            with self._lock:
                self._pending.pop(key).set()

    def heavy_slot(self):
        """The heavy-work slot as a context manager, for heavy work whose result is not kept.

        Not reentrant: never take it inside a heavy :meth:`get`.
        """
        return self._heavy

    def wait_idle(self, stop: threading.Event | None = None, poll_s: float = 0.02) -> None:
        """Return once no computation is pending, or ``stop`` is set (nothing is held: work
        started after this may still meet a request, so use it for work that takes its own
        slots)."""
        while stop is None or not stop.is_set():
            with self._lock:
                if not self._pending:
                    return
            time.sleep(poll_s)

    @contextlib.contextmanager
    def background(self, poll_s: float = 0.02):
        """Hold the heavy-work slot for background work (prewarming) once no caller waits.

        Foreground computations come first: this waits while any is pending, so a person's
        request waits at most for one background item.
        """
        while True:
            with self._lock:
                idle = not self._pending
            if idle and self._heavy.acquire(timeout=poll_s):
                with self._lock:
                    idle = not self._pending
                if idle:
                    break
                self._heavy.release()
            time.sleep(poll_s)
        try:
            yield
        finally:
            self._heavy.release()

    def _store(self, key: Hashable, value: Any) -> None:
        size = nbytes(value)
        with self._lock:
            if size > self.max_bytes:
                self._oversize = (key, value, size)
                return
            self._items[key] = (value, size)
            self._items.move_to_end(key)
            total = sum(s for _, s in self._items.values())
            while total > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                total -= dropped


# Shared by every session of a server, and by every page (each keys its results with its own
# name; the Playground's are its Settings): equal requests are computed once, within
# limits.MAX_RESULT_BYTES in all. Here rather than in a page's module so that any back-end
# (gqa_viz.app.real_sources too, which the Playground's settings read) can use it without an
# import cycle.
RESULTS = ResultCache(max_bytes=MAX_RESULT_BYTES, max_concurrent=1)
