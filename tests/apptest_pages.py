"""Opening one page of the app in Streamlit's AppTest, the way a shared link does.

A page's url_path differs from its file name, so the app runs once to register the pages
(``st.navigation`` in app.py) before switching to the page; query parameters are set first,
as a link carries them.
"""

from __future__ import annotations

import ast
from pathlib import Path

from streamlit.testing.v1 import AppTest


def page_files() -> dict[str, str]:
    """url_path -> page file, from app.py's PAGES (read, not imported: importing runs the app)."""
    tree = ast.parse((Path(__file__).parent.parent / "app.py").read_text())
    node = next(
        n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "PAGES"
    )
    return {url_path: path for path, _, _, url_path in ast.literal_eval(node)}


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
