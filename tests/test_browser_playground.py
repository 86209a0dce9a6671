"""The Playground in a real browser: heatmaps render, and re-render after N and the causal mask.

Uses the ``streamlit_server`` and ``page`` fixtures of conftest.py (Debian chromium).
"""

from __future__ import annotations

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

pytestmark = pytest.mark.browser

LOAD_MS = 90_000  # first load compiles the layer (a few seconds on 2 cores; generous for CI)
RERUN_MS = 60_000

# Trace roles of the heads figure (gqa_viz.figures.heads): one "scores" heatmap per K/V group
# and row of panels, one grey "mask" heatmap beneath each when something is masked; meta.heads
# lists the query heads drawn in it. Counted: the query heads shown in each role.
COUNT_JS = """(role) => {
    const plot = document.querySelector('.js-plotly-plot');
    if (!plot || !plot.data) return -1;
    return plot.data
        .filter((d) => d.type === 'heatmap' && d.meta && d.meta[0].role === role)
        .reduce((heads, d) => heads + d.meta[0].heads.length, 0);
}"""
NAVIGATION_JS = """() => Array.from(
    document.querySelectorAll("[data-testid='stSidebarNav'] a")
).some((a) => a.innerText.includes('Playground'))"""
RERUN_DONE_JS = "() => !document.querySelector(\"[data-testid='stStatusWidget']\")"


def _wait_idle(page) -> None:
    page.wait_for_function(RERUN_DONE_JS, timeout=RERUN_MS)


def _count(page, role: str) -> int:
    return page.evaluate(COUNT_JS, role)


def _wait_count(page, role: str, expected: int) -> None:
    page.wait_for_function(
        f"() => ({COUNT_JS})({role!r}) === {expected}",
        timeout=RERUN_MS,
    )


def _open_playground(page, base_url: str, query: str = "") -> None:
    # Straight to /playground, as a shared link would: app.py's navigation must be in charge
    # even on a fresh server (the pages live in app_pages/, see app.py).
    page.goto(f"{base_url}/playground{query}", timeout=LOAD_MS)
    page.wait_for_function(NAVIGATION_JS, timeout=LOAD_MS)
    nav = page.locator("[data-testid='stSidebarNav'] a").all_inner_texts()
    # Each entry reads "<icon name>\n\n<title>".
    titles = [text.split("\n")[-1].strip() for text in nav]
    assert titles == [
        "Home",
        "Playground",
        "Mask Lab",
        "KV sharing",
        "KV calculator",
        "Trained heads",
        "Walkthrough",
        "Decode",
        "Real models",
    ], nav
    page.wait_for_selector(".js-plotly-plot", timeout=LOAD_MS)
    _wait_idle(page)


# Where a head's cell (query q, key k) is on the screen, from the figure's own axes.
CELL_JS = """([head, q, k]) => {
    const gd = document.querySelector('.js-plotly-plot');
    const tr = gd.data.find(
        (d) => d.meta && d.meta[0].role === 'scores' && d.meta[0].heads.includes(head));
    const i = tr.meta[0].heads.indexOf(head);
    const xa = gd._fullLayout[tr.xaxis.replace('x', 'xaxis')];
    const ya = gd._fullLayout[tr.yaxis.replace('y', 'yaxis')];
    const box = gd.querySelector('.main-svg').getBoundingClientRect();
    return [box.left + xa._offset + xa.d2p(tr.x[tr.meta[0].starts[i] + k]),
            box.top + ya._offset + ya.d2p(tr.y[q])];
}"""


def _hover(page, head: int, q: int, k: int) -> str:
    """The hover label over head ``head``'s cell (query q, key k)."""
    x, y = page.evaluate(CELL_JS, [head, q, k])
    page.mouse.move(x, y)
    label = page.locator(".hoverlayer .hovertext")
    label.first.wait_for(timeout=RERUN_MS)
    return label.first.text_content()


def _no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stAlertContentError']").count() == 0


def test_playground_heatmaps_follow_heads_and_causal_mask(streamlit_server, page, tmp_path):
    _open_playground(page, streamlit_server)
    _wait_count(page, "scores", 8)  # default N = 8
    assert _count(page, "mask") == 8  # causal by default: grey cells under every head
    assert page.locator("[data-testid='stPlotlyChart']").count() >= 1
    # Plotly drew one heatmap image per trace in the first chart: two groups, each its heads'
    # scores and the grey layer beneath them.
    first = page.locator(".js-plotly-plot").first
    assert first.locator(".hm image").count() == 4
    _no_exception(page)
    page.wait_for_function(NAVIGATION_JS, timeout=RERUN_MS)  # run through app.py
    # The hover names the head of the panel under the mouse, its K/V head, the tokens.
    label = _hover(page, 6, 1, 0)
    assert label.startswith("q head 6 (K/V head 1)key 'the' @0query 'cat' @1p = "), label
    assert _hover(page, 0, 3, 8) == "q head 0 (K/V head 0)key 'cat' @8query 'on' @3masked"
    page.screenshot(path=str(tmp_path / "playground_default.png"), full_page=True)

    # N = 4 through the selectbox in the sidebar.
    box = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").filter(
        has_text="num_query_heads"
    )
    box.locator("[role='combobox'], input").first.click()
    page.get_by_role("option", name="4", exact=True).click()
    _wait_count(page, "scores", 4)
    _wait_idle(page)
    assert "n=4" in page.url
    _no_exception(page)

    # Causal mask off: the grey layers go, the heatmaps stay.
    page.locator("[data-testid='stSidebar']").get_by_text("use_causal_mask").click()
    _wait_count(page, "mask", 0)
    _wait_idle(page)
    assert _count(page, "scores") == 4
    assert "causal=0" in page.url
    _no_exception(page)
    page.screenshot(path=str(tmp_path / "playground_n4_noncausal.png"), full_page=True)


def test_playground_url_state(streamlit_server, page, tmp_path):
    _open_playground(page, streamlit_server, "?n=4&k=1&causal=0")
    _wait_count(page, "scores", 4)
    assert _count(page, "mask") == 0
    assert page.get_by_text("K/V head 0 · query heads 0–3").count() >= 1
    _no_exception(page)
    page.screenshot(path=str(tmp_path / "playground_url.png"), full_page=True)


def test_the_largest_map_renders_and_zooms(streamlit_server, page, tmp_path):
    """T = S = 2048 with 32 query heads: drawn downsampled, and a region at full resolution."""
    _open_playground(page, streamlit_server, "?mode=random&t=2048&n=32&k=8")
    _wait_count(page, "scores", 32)  # the overview: every query head
    _no_exception(page)
    plots = page.locator(".js-plotly-plot")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2")
    assert plots.count() >= 2  # the overview and the zoom
    sizes = page.evaluate(
        """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
            .map((gd) => (gd.data || []).filter((d) => d.meta && d.meta[0].role === 'scores'))
            .filter((s) => s.length)
            .map((s) => [s.reduce((n, d) => n + d.meta[0].heads.length, 0), s[0].y.length,
                         s[0].meta[0].keys])"""
    )
    assert sizes[0][0] == 32 and sizes[0][1] < 100  # pooled overview
    assert sizes[1] == [4, 128, 128]  # one K/V group, 128 x 128 exact cells
    assert page.get_by_text("Zoom in: exact scores of a region").count() == 1
    # The page still answers: the view toolbar redraws the overview.
    page.get_by_text("logits", exact=True).first.click()
    page.wait_for_function(
        """() => document.querySelector('.js-plotly-plot').layout.coloraxis.cmin < 0""",
        timeout=RERUN_MS,
    )
    _wait_idle(page)
    _no_exception(page)
    page.screenshot(path=str(tmp_path / "playground_2048.png"), full_page=True)


ROWS_JS = """() => {
    const plot = document.querySelector('.js-plotly-plot');
    if (!plot || !plot.data || !plot.data.length) return -1;
    return plot.data[plot.data.length - 1].y.length;
}"""


def _listen(page) -> tuple[list[bytes], list[bytes]]:
    """The page's websocket frames from now on: (sent, received), binary ones only."""
    sent, received = [], []

    def on_socket(ws):
        ws.on("framesent", lambda f: isinstance(f, bytes) and sent.append(f))
        ws.on("framereceived", lambda f: isinstance(f, bytes) and received.append(f))

    page.on("websocket", on_socket)
    return sent, received


def _reruns(frames: list[bytes]) -> list[str]:
    """The fragment id of each rerun the browser asked for ("" for the whole page)."""
    msgs = [BackMsg.FromString(f) for f in frames]
    return [m.rerun_script.fragment_id for m in msgs if m.WhichOneof("type") == "rerun_script"]


def _labels(frames: list[bytes], kind: str) -> list[str]:
    """Labels of the ``kind`` elements (e.g. "selectbox") the server sent."""
    msgs = [ForwardMsg.FromString(f) for f in frames]
    elements = [m.delta.new_element for m in msgs if m.WhichOneof("type") == "delta"]
    return [getattr(e, kind).label for e in elements if e.WhichOneof("type") == kind]


def test_length_slider_reruns_its_fragment_and_keeps_the_sidebar(streamlit_server, page):
    """The query-length slider lives in the sidebar but is drawn by the page's fragment: a move
    reruns that fragment only (the sidebar's other widgets are not sent again) and redraws the
    maps and the URL; the slider stays one slider in its place, and the next full run (another
    N) keeps the new length."""
    sent, received = _listen(page)
    _open_playground(page, streamlit_server, "?mode=random&t=64")
    page.wait_for_function(f"() => ({ROWS_JS})() === 64", timeout=RERUN_MS)
    assert "num_query_heads (N)" in _labels(received, "selectbox")  # the full first run
    sidebar = page.locator("[data-testid='stSidebar']")
    slider = sidebar.locator("[data-testid='stSlider']").filter(has_text="Query length T")
    assert slider.count() == 1
    thumb = slider.locator("input[type=range]").first
    thumb.focus()
    sent.clear()
    received.clear()
    for rows in (63, 62):
        thumb.press("ArrowLeft")
        page.wait_for_function(f"() => ({ROWS_JS})() === {rows}", timeout=RERUN_MS)
        _wait_idle(page)
    reruns = _reruns(sent)
    assert reruns and all(reruns), reruns  # every rerun named a fragment
    assert "Query length T" in _labels(received, "slider")
    assert _labels(received, "selectbox") == []  # N, K, head_dim, ... untouched
    assert "t=62" in page.url
    assert slider.count() == 1  # redrawn in place, not appended
    # Still between the input kind and the batch size, in the Input expander.
    inputs = sidebar.locator("[data-testid='stExpander']").filter(has_text="Batch size B")
    text = inputs.inner_text()
    assert text.index("random vectors") < text.index("Query length T") < text.index("Batch size")
    _no_exception(page)

    box = sidebar.locator("[data-testid='stSelectbox']").filter(has_text="num_query_heads")
    option = page.get_by_role("option", name="4", exact=True)
    sent.clear()
    for _ in range(3):  # the first click after the slider had the focus can leave it closed
        box.locator("[role='combobox'], input").first.click()
        try:
            option.wait_for(timeout=5_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    option.click()
    _wait_count(page, "scores", 4)
    _wait_idle(page)
    # A sidebar widget reruns the whole page. (The heads panel may rerun after it, when the
    # page's new height changes its column's width: app_pages/_column_width.py.)
    assert _reruns(sent)[0] == ""
    assert page.evaluate(ROWS_JS) == 62
    assert "t=62" in page.url and "n=4" in page.url
    assert slider.count() == 1
    _no_exception(page)


def test_a_drag_clears_the_messages_of_the_link(streamlit_server, page):
    """A link's impossible setting is reported once; the first drag of the slider (a fragment
    rerun) takes the message away, as a full rerun would."""
    _open_playground(page, streamlit_server, "?mode=random&t=16&n=8&k=3")
    page.wait_for_function(f"() => ({ROWS_JS})() === 16", timeout=LOAD_MS)
    warning = page.locator("[data-testid='stAlertContentWarning']").filter(
        has_text="must be divisible by num_key_value_heads (3)"
    )
    assert warning.count() == 1
    slider = page.locator("[data-testid='stSidebar'] [data-testid='stSlider']").filter(
        has_text="Query length T"
    )
    thumb = slider.locator("input[type=range]").first
    thumb.focus()
    thumb.press("Home")
    page.wait_for_function(f"() => ({ROWS_JS})() === 1", timeout=RERUN_MS)
    _wait_idle(page)
    assert warning.count() == 0
    assert "t=1" in page.url
    _no_exception(page)


# Streamlit's front end puts plotly.js on window.Plotly: every Plotly.react call on the heads
# chart is recorded with the width its layout asks for (null: none, Plotly's automatic size).
REACTS_JS = """(() => {
  let plotly;
  window.__reacts = [];
  Object.defineProperty(window, "Plotly", {
    configurable: true,
    get() { return plotly; },
    set(value) {
      plotly = value;
      const react = value && value.react;
      if (typeof react !== "function" || react.__recorded) return;
      value.react = Object.assign(function (gd, spec, ...rest) {
        const layout = (spec && spec.layout) || rest[0] || {};
        if (gd && gd.closest && gd.closest(".st-key-heads_chart"))
          window.__reacts.push(layout.width === undefined ? null : layout.width);
        return react.call(this, gd, spec, ...rest);
      }, { __recorded: true });
    },
  });
})()"""
COLUMN_JS = """() => Math.floor(document.querySelector('.st-key-heads_chart')
    .parentElement.getBoundingClientRect().width)"""


def test_a_length_press_draws_the_heads_figure_at_its_column_width(streamlit_server, page):
    """The browser reports the heads chart's column width (app_pages/_column_width.py); from
    then on the figure comes at that width, so Streamlit draws it once per press: not first
    hidden at Plotly's automatic size (no width), then again at the column's width."""
    page.add_init_script(REACTS_JS)
    _open_playground(page, streamlit_server, "?mode=random&t=64")
    page.wait_for_function(f"() => ({ROWS_JS})() === 64", timeout=RERUN_MS)
    column = page.evaluate(COLUMN_JS)
    assert column > 300
    page.wait_for_function(f"() => window.__reacts.includes({column})", timeout=RERUN_MS)
    _wait_idle(page)
    thumb = (
        page.locator("[data-testid='stSidebar'] [data-testid='stSlider']")
        .filter(has_text="Query length T")
        .locator("input[type=range]")
        .first
    )
    thumb.focus()
    for rows in (63, 62, 61):
        page.evaluate("() => { window.__reacts = []; }")
        thumb.press("ArrowLeft")
        page.wait_for_function(f"() => ({ROWS_JS})() === {rows}", timeout=RERUN_MS)
        _wait_idle(page)
        page.wait_for_timeout(300)  # a later redraw would have come by now
        reacts = page.evaluate("() => window.__reacts")
        # Streamlit's own second call copies the figure unchanged (see
        # gqa_viz/figures/shipping.py): at most two calls, both at the column's width.
        assert reacts and len(reacts) <= 2 and set(reacts) == {column}, (rows, reacts)
    _no_exception(page)
