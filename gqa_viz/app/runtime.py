"""Process-wide JAX set-up for the app: the persistent compilation cache and a backend label.

No Streamlit here; ``app.py`` calls these once per server process.
"""

from __future__ import annotations

import atexit
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


def start_prewarm(
    work: Callable[[threading.Event], object], name: str = "prewarm", stop_timeout_s: float = 20.0
):
    """Run prewarming, ``work(stop_event)``, in a background thread; returns (thread, stop_event).

    ``work`` must return soon after ``stop_event`` is set (between compiled programs). One line
    on stderr says when it starts (``gqa-viz: prewarm started``) and one when it ends
    (``... prewarm done (...) in 12.3 s``, or ``... prewarm stopped ...`` when stopped early).
    Returns (None, None) when the environment variable ``GQA_VIZ_PREWARM`` is "0".

    Interpreter exit stops it: an ``atexit`` hook sets the event and waits up to
    ``stop_timeout_s`` for the thread. ``streamlit run`` ends that way on SIGTERM or Ctrl-C
    (its signal handler stops the server, ``bootstrap.run`` returns, the CLI exits), and so
    does a process that ran the app in-process (AppTest). Without the hook, a compile still
    running when the interpreter finalises aborts the process (SIGABRT): Python ends a daemon
    thread that asks for the GIL back once finalisation has begun, and ending it inside
    jaxlib's C++ frames dies with "terminate called ..." or "Check failed: PyGILState_Check()".
    ``atexit`` runs hooks last-registered first and this one is registered after ``jax`` was
    imported, so it also runs before JAX's own hook, which clears the backends.

    The thread is a daemon: Python joins non-daemon threads *before* it runs ``atexit``
    hooks, so a non-daemon thread would hold exit until all of prewarming had finished
    (tens of seconds on a fresh cache) instead of stopping after the current program, and
    a thread stuck waiting for its turn would hang exit for good. As a daemon, the hook
    bounds the wait.
    """
    if os.environ.get(PREWARM_ENV, "1") == "0":
        return None, None
    stop = threading.Event()

    def timed(stop_event: threading.Event) -> None:
        print(f"gqa-viz: {name} started", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        result = work(stop_event)
        took = time.perf_counter() - t0
        how = "stopped" if stop_event.is_set() else "done"
        print(f"gqa-viz: {name} {how} ({result}) in {took:.1f} s", file=sys.stderr, flush=True)

    thread = threading.Thread(target=timed, args=(stop,), name=name, daemon=True)
    thread.start()
    atexit.register(stop_prewarm, thread, stop, stop_timeout_s)
    return thread, stop


def stop_prewarm(thread: threading.Thread, stop: threading.Event, timeout_s: float) -> bool:
    """Ask ``thread`` to stop and wait up to ``timeout_s`` seconds; True once it has ended."""
    stop.set()
    thread.join(timeout_s)
    if thread.is_alive():
        print(
            f"gqa-viz: {thread.name} still running after {timeout_s:.0f} s; exiting anyway",
            file=sys.stderr,
            flush=True,
        )
        return False
    return True


def backend_label() -> str:
    """What JAX runs on, in one line, e.g. ``"JAX 0.10.2 · cpu (1 device)"`` or
    ``"JAX 0.10.2 · gpu: NVIDIA H100 80GB HBM3 (1 device)"``."""
    backend = jax.default_backend()
    devices = jax.devices()
    kind = devices[0].device_kind
    what = backend if kind.lower() == backend.lower() else f"{backend}: {kind}"
    count = len(devices)
    return f"JAX {jax.__version__} · {what} ({count} device{'' if count == 1 else 's'})"
