"""The KV sharing page under Streamlit's AppTest, run through app.py's st.navigation."""

from __future__ import annotations

import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from gqa_viz.app import kv_calculator as kvc
from gqa_viz.app import kv_sharing as kv
from gqa_viz.app.figure_cache import FIGURES
from gqa_viz.app.limits import (
    KV_CALCULATOR_MAX_BANDWIDTH_GB_S,
    KV_CALCULATOR_MAX_BATCH,
    KV_CALCULATOR_MAX_GPU_GB,
    KV_CALCULATOR_MAX_HEAD_DIM,
    KV_CALCULATOR_MAX_HEADS,
    KV_CALCULATOR_MAX_PARAMS_BILLION,
    KV_CALCULATOR_MAX_TOKENS,
    KV_SHARING_MAX_SCORE_CELLS,
    MAX_CONFIG_LAYERS,
)
from gqa_viz.app.settings import compute_key, from_query_params
from gqa_viz.figures.grid import CHAR_PX, TICK_FONT
from gqa_viz.figures.heads import NOMINAL_WIDTH
from gqa_viz.figures.shipping import array_of as _array
from gqa_viz.figures.shipping import trace_meta
from gqa_viz.models import PRESETS
from tests.apptest_pages import assert_ok, open_page

PAGE = "app_pages/kv_sharing.py"
TIMEOUT = 60


def _app(**query) -> AppTest:
    return open_page(PAGE, TIMEOUT, **query)


_ok = assert_ok


def _drift(at: AppTest) -> dict:
    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        if any(trace_meta(d).get("role") == "js" for d in spec["data"]):
            return spec
    raise AssertionError("no drift chart")


def _js(at: AppTest) -> dict[str, float]:
    trace = next(d for d in _drift(at)["data"] if trace_meta(d).get("role") == "js")
    return dict(zip(trace["x"], _array(trace["y"]).tolist(), strict=True))


def test_defaults_render():
    at = _app()
    assert [h.value for h in at.header] == [
        "Effect of sharing on attention",
        "KV-cache and decoding calculator",
    ]
    assert len(at.get("plotly_chart")) == 5
    js = _js(at)
    assert list(js) == ["8 (MHA)", "4", "2", "1 (MQA)"] and js["8 (MHA)"] == 0
    assert any(m.value.endswith(" GB") and m.delta.endswith(" GiB") for m in at.metric)


def test_reruns_send_the_shared_figures_and_a_change_draws_new_ones():
    at = _app(n="4", k="2")
    built = FIGURES.misses
    specs = [c.proto.spec for c in at.get("plotly_chart")[:4]]
    at.run()  # a rerun with nothing changed, or a calculator widget: no figure is built
    at.selectbox(key="kv_preset").set_value(next(iter(PRESETS))).run()
    _ok(at)
    assert FIGURES.misses == built
    assert [c.proto.spec for c in at.get("plotly_chart")[:4]] == specs
    at.selectbox(key="kv_method").set_value("first").run()  # another grouping: new figures
    _ok(at)
    assert FIGURES.misses == built + 4  # the page's four figures
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert titles[:2] == ["MHA: 4 K/V heads", "Grouped: K = 2 K/V heads"]
    assert _js(at)["2"] > 0


def _tick_room(spec: dict, width_px: float) -> list[tuple[float, float]]:
    """(px between neighbouring x tick labels, px each needs) of every labelled panel axis, the
    figure drawn ``width_px`` wide."""
    layout = spec["layout"]
    plot_px = width_px - layout["margin"]["l"] - layout["margin"]["r"]
    room = []
    for name, ax in layout.items():
        if not name.startswith("xaxis") or not ax.get("showticklabels") or len(ax["tickvals"]) < 2:
            continue
        cell_px = (ax["domain"][1] - ax["domain"][0]) * plot_px / len(ax["categoryarray"])
        at = [ax["categoryarray"].index(v) for v in ax["tickvals"]]
        apart = min(b - a for a, b in zip(at, at[1:], strict=False)) * cell_px
        upright = ax["tickangle"] == 0
        room.append((apart, max(map(len, ax["ticktext"])) * CHAR_PX if upright else TICK_FONT))
    return room


@pytest.mark.parametrize("n, k, width", [("8", "2", kv.HALF_PAGE_PX), ("16", "4", NOMINAL_WIDTH)])
def test_the_maps_tick_labels_have_room_where_the_page_puts_them(n, k, width):
    """Side by side (N <= 8) each map gets half the page, in tabs the whole: the tokens under
    every panel must not run into each other there."""
    at = _app(n=n, k=k)
    assert kv.side_by_side(from_query_params({"n": [n]})[0]) == (width == kv.HALF_PAGE_PX)
    room = [
        r
        for chart in at.get("plotly_chart")[:2]
        for r in _tick_room(json.loads(chart.proto.spec), width)
    ]
    assert room and all(apart >= need for apart, need in room), room


def test_every_preset_and_mla_warning():
    at = _app()
    for name in PRESETS:
        at.selectbox(key="kv_preset").set_value(name).run()
        _ok(at)
        warned = any("latent attention" in w.value for w in at.warning)
        assert warned == (PRESETS[name].attention == "mla"), name
        if PRESETS[name].sliding_window is not None:  # Mistral-7B v0.1, Gemma 2, ...
            assert any("capped" in i.value for i in at.info), name
        if PRESETS[name].attention == "mla":  # computed from the latent, no MHA/MQA variant
            labels = [m.label for m in at.metric]
            assert "KV cache (MLA latent)" in labels, name
            assert not any("as MHA" in label for label in labels), name
            assert any("MLA layers × (512 kv_lora_rank + 64" in c.value for c in at.code)
    at.selectbox(key="kv_preset").set_value("custom").run()
    _ok(at)


def test_controlled_eps_zero_has_no_drift_at_k():
    at = _app(n="8", k="2")
    at.radio(key="kv_setting").set_value("controlled").run()
    at.slider(key="kv_eps").set_value(0.0).run()
    _ok(at)
    js = _js(at)
    assert js["2"] == pytest.approx(0, abs=1e-6)  # K = N // groups_of
    assert js["4"] == pytest.approx(0, abs=1e-6)  # finer groups are copies too
    assert js["1 (MQA)"] > 1e-4  # merges different shared heads
    assert any("controlled" in m.value for m in at.markdown)


def test_url_sets_n_and_k():
    at = _app(n="4", k="1")
    assert list(_js(at)) == ["4 (MHA)", "2", "1 (MQA)"]
    assert any("K = 1" in m.label for m in at.metric)


def test_calculator_inputs_take_the_calculators_limits():
    at = _app()
    at.selectbox(key="kv_preset").set_value("custom").run()
    at.selectbox(key="kv_gpu").set_value("custom").run()
    _ok(at)
    limits = {
        "kv_ctx": KV_CALCULATOR_MAX_TOKENS, "kv_batch": KV_CALCULATOR_MAX_BATCH,
        "kv_gpu_custom": KV_CALCULATOR_MAX_GPU_GB, "kv_bw_custom": KV_CALCULATOR_MAX_BANDWIDTH_GB_S,
        "kv_c_layers": MAX_CONFIG_LAYERS, "kv_c_n": KV_CALCULATOR_MAX_HEADS,
        "kv_c_k": KV_CALCULATOR_MAX_HEADS, "kv_c_h": KV_CALCULATOR_MAX_HEAD_DIM,
        "kv_c_p": KV_CALCULATOR_MAX_PARAMS_BILLION,
    }  # fmt: skip
    assert {key: at.number_input(key=key).max for key in limits} == limits


def test_the_calculator_section_words_it_as_the_calculator_page():
    at = _app()
    at.selectbox(key="kv_preset").set_value("Mistral 7B v0.1").run()
    at.selectbox(key="kv_gpu").set_value("h200").run()
    _ok(at)
    m = {x.label: x.value for x in at.metric}
    # Every layer slides and a 4,096-token window of caches fits: no limit from memory.
    assert m["max context at batch 1"] == "unlimited (every layer slides)"
    assert m["max batch at 8,192 tokens"].endswith(" sequences")  # the calculator's default
    assert any("Upper bounds with 141 GB of GPU memory (H200)" in c.value for c in at.caption)


def test_custom_model_checks_its_limits():
    model = kvc.custom_model(32, 32, 8, 128, 8.0)
    assert (model.num_layers, model.num_key_value_heads, model.head_dim) == (32, 8, 128)
    assert model.hidden_size == 4096 and model.params == 8_000_000_000
    bad = [
        ((0, 32, 8, 128, 8.0), "layers must be a whole number from 1 to 1,024; got 0"),
        ((1025, 32, 8, 128, 8.0), "layers must be a whole number from 1 to 1,024; got 1025"),
        ((32, 513, 1, 128, 8.0), "query heads N must be a whole number from 1 to 512"),
        ((32, 32, 8, 128.5, 8.0), "head_dim H must be a whole number from 1 to 1,024; got 128.5"),
        ((32, 32, 8, 128, 0.0), "more than 0 and at most 100,000 billion; got 0.0"),
        ((32, 32, 8, 128, float("nan")), "more than 0 and at most 100,000 billion; got nan"),
        ((32, 32, 8, 128, 1e6), "more than 0 and at most 100,000 billion"),
        ((32, 32, 3, 128, 8.0), "K = 3 must divide N = 32"),
    ]
    for args, match in bad:
        with pytest.raises(ValueError, match=re.escape(match)):
            kvc.custom_model(*args)


def test_given_params_checks_its_limits():
    unknown = kvc.uploaded_model(
        b'{"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 8}'
    )
    assert kvc.given_params(unknown, None) is unknown
    assert kvc.given_params(unknown, 0.5).params == 500_000_000
    for billions in (0, -1.0, 100_001.0):
        with pytest.raises(ValueError, match="more than 0 and at most 100,000 billion"):
            kvc.given_params(unknown, billions)


def test_drift_enforces_the_pages_limit_itself(monkeypatch):
    def computed(*args):
        raise AssertionError("an input over the limit reached the computation")

    monkeypatch.setattr(kv, "_compute_curve", computed)
    s, problems = from_query_params({"mode": "random", "t": "2048", "n": "64", "batch": "8"})
    assert problems == []
    with pytest.raises(ValueError, match=f"the limit is {KV_SHARING_MAX_SCORE_CELLS:,}"):
        kv.drift(compute_key(s), "random", 0.0, "mean")


def test_the_calculator_section_shows_the_calculator_pages_numbers():
    """Same model, same defaults: the section's metrics are the KV calculator page's."""
    section = _app()
    calculator = AppTest.from_file("../app.py", default_timeout=120)
    calculator.run()
    calculator.switch_page("app_pages/kv_calculator.py").run()
    assert not calculator.exception
    shown = {m.label: m.value for m in section.metric}
    on_page = {m.label: m.value for m in calculator.metric}
    common = set(shown) & set(on_page)
    assert {"KV cache (K = 8)", "max context at batch 1", "max batch at 8,192 tokens"} <= common
    assert {k: shown[k] for k in common} == {k: on_page[k] for k in common}
