"""Narrow windows in a real browser: blocks side by side on a wide page stack on a narrow one
(app_pages/_layout.py), and nothing a student reads is cut off.

760 px is a laptop's half screen or an old projector; Streamlit's own columns stay side by side
down to 640 px, which squeezed summaries into slivers and clipped figure subtitles.
"""

from __future__ import annotations

import pytest

from gqa_viz.app import kv_sharing as kv

pytestmark = pytest.mark.browser

LOAD_MS = 90_000
RERUN_DONE_JS = "() => !document.querySelector(\"[data-testid='stStatusWidget']\")"
WIDE, NARROW, WIDEST = 1400, 760, 1920

# The bounding boxes of the keyed blocks of a wrapping row: [left, top, right, bottom].
BOXES_JS = """(key) => [...document.querySelectorAll(`[class*="st-key-${key}-"]`)]
  .map(e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })"""


def _open(browser, url: str, width: int):
    context = browser.new_context(viewport={"width": width, "height": 1000})
    page = context.new_page()
    page.goto(url, timeout=LOAD_MS)
    page.wait_for_selector(".js-plotly-plot", timeout=LOAD_MS)
    page.wait_for_function(RERUN_DONE_JS, timeout=LOAD_MS)
    return context, page


def _side_by_side(boxes) -> bool:
    (l0, t0, r0, b0), (l1, t1, r1, b1) = boxes
    return r0 <= l1 and abs(t0 - t1) < 2


def _stacked(boxes) -> bool:
    (l0, t0, r0, b0), (l1, t1, r1, b1) = boxes
    return b0 <= t1 and abs(l0 - l1) < 2 and abs(r0 - r1) < 2  # one under the other, as wide


def _overflowing(page, selector: str) -> list[str]:
    """Text of the elements matching ``selector`` whose content is wider than their box."""
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel)]
             .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.slice(0, 40))""",
        selector,
    )


@pytest.mark.parametrize("width", [WIDE, NARROW])
def test_playground_summary_beside_the_heads_or_below_them(streamlit_server, browser, width):
    context, page = _open(browser, streamlit_server + "/playground", width)
    try:
        boxes = page.evaluate(BOXES_JS, "heads_row")
        assert len(boxes) == 2
        assert _side_by_side(boxes) if width == WIDE else _stacked(boxes), boxes
        summary = page.locator(".st-key-heads_row-1")
        assert "GQA: grouped-query attention" in summary.inner_text()
        # Its tables are whole: no column cut off at the block's edge.
        _, _, right, _ = boxes[1]
        for table in summary.locator("table").all():
            assert table.bounding_box()["x"] + table.bounding_box()["width"] <= right + 1
        assert page.locator("[data-testid='stException']").count() == 0
    finally:
        context.close()


@pytest.mark.parametrize("width", [WIDE, NARROW])
def test_kv_sharing_maps_side_by_side_or_stacked_with_whole_subtitles(
    streamlit_server, browser, width
):
    context, page = _open(browser, streamlit_server + "/kv-sharing", width)
    try:
        page.wait_for_function(
            "() => document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=LOAD_MS
        )
        boxes = page.evaluate(BOXES_JS, "kv_maps_row")
        assert _side_by_side(boxes) if width == WIDE else _stacked(boxes), boxes
        # Every subtitle line of both maps ends inside its figure (none cut at the edge).
        clipped = page.evaluate(
            """() => [...document.querySelectorAll('.st-key-kv_maps_row .js-plotly-plot')]
                 .flatMap(p => { const w = p.querySelector('.main-svg').getBoundingClientRect();
                   return [...p.querySelectorAll('.gtitle-subtitle tspan, .gtitle-subtitle')]
                     .filter(t => t.getBoundingClientRect().right > w.right + 1)
                     .map(t => t.textContent); })"""
        )
        assert clipped == []
        # Each map keeps the proportions it was planned for: never stretched past its most
        # width (a 760 px window's stacked map would otherwise be the page's 730 px wide).
        widths = page.evaluate(
            """() => [...document.querySelectorAll('.st-key-kv_maps_row .js-plotly-plot')]
                 .map(p => p.getBoundingClientRect().width)"""
        )
        assert len(widths) == 2
        assert all(kv.HALF_PAGE_LEAST_PX - 1 <= w <= kv.HALF_PAGE_MOST_PX + 1 for w in widths)
    finally:
        context.close()


@pytest.mark.parametrize("width", [WIDE, NARROW])
def test_kv_calculator_numbers_are_whole(streamlit_server, browser, width):
    """The calculator's metrics (the cache, what fits) show their whole value, never '131,07…'."""
    context, page = _open(browser, streamlit_server + "/kv-calculator", width)
    try:
        values = page.locator("[data-testid='stMetricValue']")
        assert values.count() >= 8
        assert _overflowing(page, "[data-testid='stMetricValue'] div") == []
        assert _overflowing(page, "[data-testid='stMetricValue']") == []
        boxes = page.evaluate(BOXES_JS, "kvc_fit_row")
        assert _side_by_side(boxes) if width == WIDE else _stacked(boxes), boxes
    finally:
        context.close()


def test_trained_bars_go_below_the_heads_in_a_narrow_window(streamlit_server, browser):
    context, page = _open(browser, streamlit_server + "/trained", NARROW)
    try:
        page.wait_for_function(
            "() => document.querySelectorAll('.js-plotly-plot').length >= 6", timeout=LOAD_MS
        )
        rows = page.evaluate(
            "() => [...new Set([...document.querySelectorAll('[class*=\"st-key-tr_row_\"]')]"
            ".map(e => [...e.classList].find(c => c.startsWith('st-key-tr_row_'))"
            ".replace(/-[01]$/, '').slice(7)))]"
        )
        assert len(rows) >= 2  # one per layer
        for key in rows:
            assert _stacked(page.evaluate(BOXES_JS, key)), key
        # The model's K choices and the prompt button are whole: no label cut short, no button
        # past the edge of its block.
        assert _overflowing(page, "button p") == []
        outside = page.evaluate(
            """() => [...document.querySelectorAll('[data-testid="stMain"] button')].filter(b => {
                 const block = b.closest('[data-testid="stVerticalBlock"]');
                 const r = b.getBoundingClientRect();
                 return block && r.width > 0 && r.right > block.getBoundingClientRect().right + 1;
               }).map(b => b.innerText)"""
        )
        assert outside == []
        assert page.locator("[data-testid='stException']").count() == 0
    finally:
        context.close()


@pytest.mark.parametrize("path", ["/decode", "/playground?mode=random&n=8&k=2&t=64"])
def test_heads_figures_on_a_wide_screen_keep_their_labels_inside(streamlit_server, browser, path):
    """On a 1,920 px screen (a classroom projector) a heads figure is drawn much wider than it
    was planned: every group label, head badge and frame stays inside the figure (Decode's
    'K/V head 0 · query heads 0-3' lost its first letters at the left edge)."""
    context, page = _open(browser, streamlit_server + path, WIDEST)
    try:
        page.wait_for_selector(".js-plotly-plot .annotation", timeout=LOAD_MS)
        outside = page.evaluate(
            """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(p => {
                 const fig = p.querySelector('.main-svg').getBoundingClientRect();
                 const parts = [...p.querySelectorAll('.annotation, .shapelayer path')];
                 const out = (r) => r.left < fig.left - 0.5 || r.right > fig.right + 0.5;
                 return parts.filter(e => { const r = e.getBoundingClientRect();
                     return r.width > 0 && out(r); })
                   .map(e => e.textContent || e.getAttribute('d').slice(0, 30)); })"""
        )
        assert outside == []
        labels = page.locator(".js-plotly-plot .annotation", has_text="K/V head 0")
        assert labels.count() >= 1
    finally:
        context.close()
