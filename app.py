"""gqa-viz: the Streamlit entry point. Run with ``streamlit run app.py``.

It sets the page up, enables JAX's persistent compilation cache, and routes to the pages
of ``PAGES``: a new page plugs in by adding one row. The pages live in ``app_pages/``, not
``pages/``: Streamlit treats a ``pages/`` folder beside the main script as a legacy multipage
app until a session has run ``st.navigation``, so a first visit straight to ``/playground``
on a fresh server would run the page without this file.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from app_pages import _number_inputs
from app_pages._controls import note_page
from gqa_viz.app import prewarm, runtime

ROOT = Path(__file__).resolve().parent
# JAX's persistent compilation cache; GQA_VIZ_JAX_CACHE_DIR moves it (a container's volume,
# or a benchmark's empty directory).
JAX_CACHE_DIR = Path(os.environ.get("GQA_VIZ_JAX_CACHE_DIR", ROOT / ".jax_cache"))

# (file relative to this script, title, icon, url_path); the first row is the default page.
PAGES = (
    ("app_pages/home.py", "Home", ":material/home:", None),
    ("app_pages/playground.py", "Playground", ":material/tune:", "playground"),
    ("app_pages/mask_lab.py", "Mask Lab", ":material/grid_on:", "mask-lab"),
    ("app_pages/kv_sharing.py", "KV sharing", ":material/memory:", "kv-sharing"),
    ("app_pages/kv_calculator.py", "KV calculator", ":material/calculate:", "kv-calculator"),
    ("app_pages/trained.py", "Trained heads", ":material/model_training:", "trained"),
    ("app_pages/walkthrough.py", "Walkthrough", ":material/school:", "walkthrough"),
    ("app_pages/decode.py", "Decode", ":material/play_circle:", "decode"),
    ("app_pages/real_models.py", "Real models", ":material/neurology:", "real-models"),
)


@st.cache_resource(show_spinner=False)
def _start_up() -> str:
    """Once per server process: the compilation cache, prewarming, the backend label.

    Prewarming (:mod:`gqa_viz.app.prewarm`) compiles the programs of the default view and
    of every head count the controls offer, then computes the default first visit of the
    pages that need more, in a background thread that gives way to requests (about 30 s on a
    2-core CPU the first time, a few seconds from the persistent cache after a restart).
    ``GQA_VIZ_PREWARM=0`` turns it off.
    """
    return runtime.start_up(JAX_CACHE_DIR, prewarm.prewarm)


_number_inputs.install()
st.set_page_config(
    page_title="gqa-viz: grouped-query attention", page_icon=":material/hub:", layout="wide"
)
backend = _start_up()

pages = [
    st.Page(path, title=title, icon=icon, url_path=url_path, default=i == 0)
    for i, (path, title, icon, url_path) in enumerate(PAGES)
]
page = st.navigation(pages)
note_page(page.url_path)
with st.sidebar:
    st.caption(backend, help="The JAX backend and device every computation of this app runs on.")
page.run()
