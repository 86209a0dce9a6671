"""The Playground with inputs too big to draw cell by cell: downsampling, zoom, limits."""

from __future__ import annotations

import json
import math

from streamlit.testing.v1 import AppTest

from gqa_viz.app.limits import MAX_DRAWN_CELLS, MAX_SCORE_CELLS
from gqa_viz.figures.heads import head_maps
from gqa_viz.figures.shipping import trace_meta

PAGE = "app_pages/playground.py"


def _app(**query) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=120)
    for name, value in query.items():
        at.query_params[name] = value
    at.switch_page(PAGE)
    return at.run()


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _chart(at: AppTest, key: str) -> dict:
    for chart in at.get("plotly_chart"):
        if chart.proto.id.endswith(key) or key in chart.proto.id:
            return json.loads(chart.proto.spec)
    raise AssertionError(f"no chart {key}")


def _scores(fig: dict) -> list[dict]:
    return [d for d in fig["data"] if trace_meta(d).get("role") == "scores"]


def test_a_long_input_is_max_pooled_and_a_region_zooms_to_exact_cells():
    at = _app(mode="random", t="600", n="8", k="2")
    _ok(at)
    overview = _chart(at, "heads_chart")
    assert "largest value of a 4×4 block" in overview["layout"]["title"]["subtitle"]["text"]
    assert head_maps(overview)[0].z.shape == (150, 150)
    # The zoom: one K/V group (G = 4 heads), 128 x 128 exact cells by default.
    assert at.selectbox(key="zoom_group").value == 0
    assert at.slider(key="zoom_q").value == (0, 127)
    zoom = _chart(at, "zoom_chart")
    assert list(head_maps(zoom)) == [0, 1, 2, 3] and len(_scores(zoom)) == 1
    assert head_maps(zoom)[0].z.shape == (128, 128)
    assert zoom["layout"]["coloraxis"]["cmax"] == overview["layout"]["coloraxis"]["cmax"]
    # Move the region and the group: the zoom follows, the overview is not redrawn.
    at.selectbox(key="zoom_group").set_value(1)
    at.slider(key="zoom_q").set_value((500, 599))
    at.slider(key="zoom_k").set_value((450, 520)).run()
    _ok(at)
    zoom = _chart(at, "zoom_chart")
    panels = head_maps(zoom)
    assert list(panels) == [4, 5, 6, 7] and [d["name"] for d in _scores(zoom)] == ["kv1"]
    assert panels[4].z.shape == (100, 71)
    assert panels[4].y[0] == "@500" and panels[4].keys[-1] == "@520"
    # Too big a region: a message with the limit, nothing else lost.
    at.slider(key="zoom_q").set_value((0, 599))
    at.slider(key="zoom_k").set_value((0, 599)).run()
    _ok(at)
    assert any(f"{MAX_DRAWN_CELLS:,}" in w.value for w in at.warning)
    assert at.query_params["t"] == "600" and at.selectbox(key="w_n").value == 8


def test_the_view_toolbar_redraws_without_losing_settings():
    at = _app(mode="random", t="300", n="8", k="4", causal="0")
    _ok(at)
    at.radio(key="w_pool").set_value("mean").run()
    _ok(at)
    fig = _chart(at, "heads_chart")
    assert "the mean of a 2×2 block" in fig["layout"]["title"]["subtitle"]["text"]
    assert at.query_params["pool"] == "mean"
    at.radio(key="w_view").set_value("logits").run()
    _ok(at)
    assert "logit" in _chart(at, "heads_chart")["layout"]["coloraxis"]["colorbar"]["title"]["text"]
    assert at.query_params["view"] == "logits" and at.query_params["causal"] == "0"
    assert [b.label for b in at.get("download_button")][0] == "logits (.csv)"


def test_too_many_scores_get_a_message_naming_the_limit():
    at = _app(mode="random", t="2048", n="64", k="8")
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert f"{MAX_SCORE_CELLS:,}" in message and "1 x 64 x 2048 x 2048" in message
    assert at.selectbox(key="w_n").value == 64 and at.slider(key="w_t").value == 2048
    at.selectbox(key="w_n").set_value(8).run()  # fixing one control is enough
    _ok(at)
    assert _scores(_chart(at, "heads_chart"))


def test_the_largest_input_runs_and_stays_small_on_the_wire():
    """T = S = 2048 with 32 query heads: the issue's size, end to end through the page."""
    at = _app(mode="random", t="2048", n="32", k="8")
    _ok(at)
    spec = at.get("plotly_chart")[0].proto.spec
    assert len(spec.encode()) < 5_000_000
    fig = json.loads(spec)
    assert len(head_maps(fig)) == 32
    assert "block" in fig["layout"]["title"]["subtitle"]["text"]
    assert at.get("download_button")[0].proto.disabled  # CSV of 134 M rows: refused


def test_the_first_zoom_region_fits_the_drawing_limit_for_big_groups():
    """16 heads in one group: 128 x 128 cells each would be over MAX_DRAWN_CELLS, so the first
    region is the largest square corner that fits, drawn without a warning."""
    at = _app(mode="random", t="128", n="16", k="1")
    _ok(at)
    assert not [w.value for w in at.warning if "at most" in w.value]
    side = math.isqrt(MAX_DRAWN_CELLS // 16)
    assert at.slider(key="zoom_q").value == at.slider(key="zoom_k").value == (0, side - 1)
    assert head_maps(_chart(at, "zoom_chart"))[0].z.shape == (side, side)


def test_a_zoom_group_the_box_never_offered_falls_back_to_the_first():
    at = _app(mode="random", t="600", n="8", k="2")
    box = at.selectbox(key="zoom_group")
    box.options.append("999")  # what a modified client could send
    box.set_value("999").run()
    _ok(at)
    assert at.selectbox(key="zoom_group").value == 0
