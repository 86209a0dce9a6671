"""What a server prepares at start-up, in the background, so that a page's first visit is as
fast as a later one. No Streamlit; ``app.py`` starts :func:`prewarm` once per process
(:func:`gqa_viz.app.runtime.start_up`) and ``python -m gqa_viz.app.warm`` runs it ahead of time.

1. The attention programs a visitor is likeliest to need
   (:func:`gqa_viz.app.playground.prewarm_programs`): compiled, or loaded from the persistent
   compilation cache, one at a time, each in the results cache's background slot, so a
   visitor's request never waits behind more than one.
2. The first visit of every page whose default view computes something those programs do not
   cover, as the page would: the Playground (its default sentence), Mask Lab (the default
   mask's parts and the layer under it), KV sharing (the layer for every K of the default N),
   Trained heads (the tiny models' forward passes, a conversion and its held-out accuracy),
   Decode (the default run's prefill and decode steps) and the Walkthrough. Their results
   land in the shared results cache, and each page's default figures, drawn through the same
   back-end functions the page calls, in the shared figure cache
   (:mod:`gqa_viz.app.figure_cache`) or their back end's, so the first visitor neither
   computes nor draws. Each waits until no visitor's computation is pending, and takes the
   heavy slot itself where its size asks. A page is the unit: a stop asked for meanwhile ends
   prewarming after it (a few seconds at most), and a page that fails is reported on stderr
   and skipped.

The other pages need nothing more: Home runs the programs of step 1, the KV calculator's
arithmetic is NumPy, and Real models loads a checkpoint only when a visitor
picks one.
"""

from __future__ import annotations

import sys
import threading

from gqa_viz import buckets
from gqa_viz.app import decode, kv_sharing, mask_lab, playground, trained_heads, walkthrough
from gqa_viz.app.cache import RESULTS

# (page, what its default first visit computes), in the order they are prewarmed.
FIRST_VISITS = (
    ("playground", playground.first_visit),
    ("mask-lab", mask_lab.first_visit),
    ("kv-sharing", kv_sharing.first_visit),
    ("trained", trained_heads.first_visit),
    ("decode", decode.first_visit),
    ("walkthrough", walkthrough.first_visit),
)


def prewarm(stop: threading.Event | None = None) -> str:
    """Steps 1 and 2 of the module docstring, stopping early once ``stop`` is set; returns
    what was done, e.g. ``"116 programs, 6 pages"``."""
    programs = buckets.prewarm(playground.prewarm_programs(), stop, RESULTS.background)
    pages = 0
    for name, visit in FIRST_VISITS:
        RESULTS.wait_idle(stop)
        if stop is not None and stop.is_set():
            break
        try:
            visit()
        except Exception as error:  # one page's failure must not keep the others cold
            print(f"gqa-viz: prewarming {name} failed: {error!r}", file=sys.stderr, flush=True)
            continue
        pages += 1
    return f"{programs} programs, {pages} pages"
