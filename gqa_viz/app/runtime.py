"""Process-wide JAX set-up for the app: the persistent compilation cache and a backend label.

No Streamlit here; ``app.py`` calls these once per server process.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jax

from gqa_viz import buckets
from gqa_viz.app.limits import MAX_COMPILATION_CACHE_BYTES, MAX_PROGRAMS_IN_MEMORY


def enable_compilation_cache(path: str | os.PathLike) -> Path:
    """Store every compiled XLA program under ``path`` (created if missing) and reuse it.

    Both thresholds are set to "always", so even the small, fast-compiling programs of the
    app are cached and a restarted server skips their compilation. Returns the absolute
    directory. Calling it again with the same path changes nothing.
    """
    cache_dir = Path(path).expanduser().resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    # Least recently used programs are evicted beyond this, so the directory stays bounded.
    jax.config.update("jax_compilation_cache_max_size", MAX_COMPILATION_CACHE_BYTES)
    return cache_dir


def start_up(cache_dir: str | os.PathLike, prewarm: Callable[[threading.Event], object]) -> str:
    """Once per server process: the compilation cache, the cap on compiled programs kept in
    memory, prewarming in the background; returns :func:`backend_label`."""
    enable_compilation_cache(cache_dir)
    buckets.limit_programs_in_memory(MAX_PROGRAMS_IN_MEMORY)
    start_prewarm(prewarm)
    return backend_label()


PREWARM_ENV = "GQA_VIZ_PREWARM"  # "0" turns start-up prewarming off (the tests do)


def start_prewarm(work: Callable[[threading.Event], object], name: str = "prewarm"):
    """Run prewarming, ``work(stop_event)``, in a daemon thread; returns (thread, stop_event).

    When it ends, one line on stderr says how long it took (``gqa-viz: prewarm done ...``).
    Returns (None, None) when the environment variable ``GQA_VIZ_PREWARM`` is "0".
    """
    if os.environ.get(PREWARM_ENV, "1") == "0":
        return None, None
    stop = threading.Event()

    def timed(stop_event: threading.Event) -> None:
        t0 = time.perf_counter()
        result = work(stop_event)
        took = time.perf_counter() - t0
        print(f"gqa-viz: {name} done ({result}) in {took:.1f} s", file=sys.stderr, flush=True)

    thread = threading.Thread(target=timed, args=(stop,), name=name, daemon=True)
    thread.start()
    return thread, stop


def backend_label() -> str:
    """What JAX runs on, in one line, e.g. ``"JAX 0.10.2 · cpu (1 device)"`` or
    ``"JAX 0.10.2 · gpu: NVIDIA H100 80GB HBM3 (1 device)"``."""
    backend = jax.default_backend()
    devices = jax.devices()
    kind = devices[0].device_kind
    what = backend if kind.lower() == backend.lower() else f"{backend}: {kind}"
    count = len(devices)
    return f"JAX {jax.__version__} · {what} ({count} device{'' if count == 1 else 's'})"
