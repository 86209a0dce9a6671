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
        ("/kv-calculator", "KV-cache calculator", 2),
        ("/trained", "Trained heads", 6),
        ("/decode", "Decode", 4),
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


# The first heads figure on the page, once there: [query heads drawn, query rows]; else false.
HEADS_AND_ROWS_JS = (
    "() => { const p = document.querySelector('.js-plotly-plot');"
    " const s = p && p.data && p.data.filter(t => t.meta && t.meta[0].role === 'scores');"
    " return s && s.length"
    " && [s.reduce((n, t) => n + t.meta[0].heads.length, 0), s[0].y.length]; }"
)


@pytest.mark.parametrize("via", ["Mask Lab", "Walkthrough", "Home"])
def test_settings_survive_a_visit_to_another_page(streamlit_server, page, via):
    """A student's settings are all still there after clicking to another page and back."""
    link = "/playground?n=16&k=4&h=32&mode=random&t=48&causal=0"
    page.goto(streamlit_server + link, timeout=LOAD_MS)
    page.wait_for_selector(".js-plotly-plot", timeout=LOAD_MS)
    page.wait_for_function(RERUN_DONE_JS, timeout=LOAD_MS)
    before = page.evaluate("() => location.search")
    assert before == "?" + link.split("?")[1]
    nav = page.locator("[data-testid='stSidebarNav'] a")
    nav.filter(has_text=via).click()
    page.wait_for_function(
        f"() => document.querySelector('h1') && document.querySelector('h1').innerText"
        f".startsWith({'Grouped' if via == 'Home' else via!r})",
        timeout=LOAD_MS,
    )
    page.wait_for_function(RERUN_DONE_JS, timeout=LOAD_MS)
    nav.filter(has_text="Playground").click()
    page.wait_for_function("() => location.pathname.endsWith('/playground')", timeout=LOAD_MS)
    # The Playground's heads figure, not a figure of the page left (Home's diagram) that the
    # browser may still show a moment after the path changed.
    page.wait_for_function(HEADS_AND_ROWS_JS, timeout=LOAD_MS)
    page.wait_for_function(RERUN_DONE_JS, timeout=LOAD_MS)
    assert page.evaluate("() => location.search") == before
    # The figure is the one of those settings: 16 heads of 48 queries. Read once a figure is
    # there: the chart's column width, reported once the page has settled, reruns its fragment
    # and the chart may be redrawn in between.
    rows = page.wait_for_function(HEADS_AND_ROWS_JS, timeout=LOAD_MS).json_value()
    assert rows == [16, 48]
    assert page.locator("[data-testid='stException']").count() == 0
