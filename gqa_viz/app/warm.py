"""Fill JAX's persistent compilation cache ahead of time: ``python -m gqa_viz.app.warm [DIR]``.

Compiles what the app prewarms at start-up (:func:`gqa_viz.app.prewarm.prewarm`) into DIR, or
into ``$GQA_VIZ_JAX_CACHE_DIR``, or into ``.jax_cache/`` beside ``app.py`` (the app's own
default), so a server started later on that directory loads the programs instead of
compiling them. The Dockerfile runs it at build time. No Streamlit here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from gqa_viz.app import prewarm, runtime

CACHE_DIR_ENV = "GQA_VIZ_JAX_CACHE_DIR"
# The same default as app.py, so `make warm` fills the directory `make run` reads.
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / ".jax_cache"


def cache_entries(cache_dir: Path) -> int:
    """How many compiled programs the directory holds (JAX names them ``*-cache``)."""
    return sum(1 for _ in cache_dir.glob("*-cache"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gqa_viz.app.warm", description=__doc__)
    parser.add_argument(
        "cache_dir",
        nargs="?",
        default=os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR,
        help=f"cache directory (default: ${CACHE_DIR_ENV}, else {DEFAULT_CACHE_DIR})",
    )
    args = parser.parse_args(argv)
    cache_dir = runtime.enable_compilation_cache(args.cache_dir)
    before = cache_entries(cache_dir)
    t0 = time.perf_counter()
    done = prewarm.prewarm()
    took = time.perf_counter() - t0
    after = cache_entries(cache_dir)
    print(
        f"gqa-viz: prewarmed {done} in {took:.1f} s; {cache_dir} holds {after} "
        f"XLA executables ({after - before} new)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
