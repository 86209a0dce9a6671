"""Every page in a real browser: it renders its figures with no exception, reached by link."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

LOAD_MS = 90_000
RERUN_DONE_JS = "() => !document.querySelector(\"[data-testid='stStatusWidget']\")"


@pytest.mark.parametrize(
    ("path", "heading", "min_plots"),
    [
        ("/", "Grouped-query attention", 1),
        ("/mask-lab", "Mask Lab", 3),
        ("/walkthrough", "Walkthrough", 8),
        ("/kv-sharing", "KV sharing", 2),
    ],
)
def test_page_renders_in_chromium(streamlit_server, page, tmp_path, path, heading, min_plots):
    page.goto(streamlit_server + path, timeout=LOAD_MS)
    page.wait_for_selector(".js-plotly-plot", timeout=LOAD_MS)
    page.wait_for_function(RERUN_DONE_JS, timeout=LOAD_MS)
    assert page.locator("h1").first.inner_text().startswith(heading)
    # Plotly draws each figure into one .js-plotly-plot; lazily rendered ones may lag a moment.
    page.wait_for_function(
        f"() => document.querySelectorAll('.js-plotly-plot').length >= {min_plots}",
        timeout=LOAD_MS,
    )
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(tmp_path / f"{path.strip('/') or 'home'}.png"), full_page=True)
