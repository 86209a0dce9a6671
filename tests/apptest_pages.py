"""Opening one page of the app in Streamlit's AppTest, the way a shared link does.

A page's url_path differs from its file name, so the app runs once to register the pages
(``st.navigation`` in app.py) before switching to the page; query parameters are set first,
as a link carries them.
"""

from __future__ import annotations

import base64

import numpy as np
from streamlit.testing.v1 import AppTest


def open_page(page: str, timeout: float, **query) -> AppTest:
    """The app at ``page`` (e.g. "app_pages/decode.py") with ``query`` in its URL, run."""
    at = AppTest.from_file("../app.py", default_timeout=timeout)
    for name, value in query.items():
        at.query_params[name] = value
    at.run()
    at.switch_page(page)
    at.run()
    assert_ok(at)
    return at


def assert_ok(at: AppTest) -> None:
    """No exception and no error message on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def spec_array(a) -> np.ndarray:
    """An array of a figure's JSON spec: a list, or a typed array ({"bdata", "dtype", "shape"})."""
    if isinstance(a, dict):
        shape = [int(s) for s in str(a["shape"]).split(",")] if "shape" in a else [-1]
        return np.frombuffer(base64.b64decode(a["bdata"]), dtype=a["dtype"]).reshape(shape)
    return np.asarray(a, dtype=float)


def head_panels(spec: dict, role: str = "scores") -> dict[int, dict]:
    """Each query head's panel in the JSON spec of a heads figure (``gqa_viz.figures.heads``,
    one trace per K/V group and row): {"z": [T, S] array, "x": keys, "y": queries}, by head."""
    panels = {}
    for trace in spec["data"]:
        meta = trace.get("meta") or {}
        if meta.get("role") != role:
            continue
        z, width = spec_array(trace["z"]).astype(float), meta["keys"]
        for head, start in zip(meta["heads"], meta["starts"], strict=True):
            cols = slice(start, start + width)
            panels[head] = {"z": z[:, cols], "x": trace["x"][cols], "y": trace["y"]}
    return dict(sorted(panels.items()))
