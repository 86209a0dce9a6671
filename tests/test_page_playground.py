"""The Playground page under Streamlit's AppTest, run through app.py's st.navigation.

One AppTest per test. The figure is read back from the chart's proto: its spec is the figure
JSON, with arrays as base64 (``{"dtype", "bdata", "shape"}``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from gqa_viz.app.limits import MAX_LEN
from gqa_viz.figures.heads import head_maps
from gqa_viz.figures.shipping import array_of, trace_meta

PAGE = "app_pages/playground.py"
TIMEOUT = 60


def _app(check: bool = True, **query) -> AppTest:
    """The Playground, opened with these URL parameters (app.py first, as a browser would)."""
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    for name, value in query.items():
        at.query_params[name] = value
    at.switch_page(PAGE)
    at.run()
    if check:
        _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _config(at: AppTest, i: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[i].proto.config)


def _heads(at: AppTest) -> dict:
    fig = _charts(at)[0]
    assert "K/V head 0 · query head" in json.dumps(
        fig["layout"], ensure_ascii=False
    )  # heads figure
    return fig


_array = array_of


def _role(fig: dict, role: str) -> list[dict]:
    return [d for d in fig["data"] if trace_meta(d).get("role") == role]


def _masked(fig: dict) -> int:
    """Masked cells of head 0."""
    return int(np.isnan(head_maps(fig)[0].z).sum())


def _text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_defaults_render_one_heads_chart():
    at = _app()
    fig = _heads(at)
    scores = _role(fig, "scores")
    assert [d["name"] for d in scores] == ["kv0", "kv1"]  # one heatmap per K/V group
    assert list(head_maps(fig)) == list(range(8))
    assert list(head_maps(fig, "mask")) == list(range(8))  # causal by default
    assert head_maps(fig)[0].y[1] == "'cat' @1"
    assert at.title[0].value == "Playground"
    # Summary beside the figure: kind, G, shapes, parameters and cache against MHA, units.
    text = _text(at)
    for expected in ("GQA", "G = 4", "`[1, 8, 11, 11]`", "20,736", "33,216", "256 B", "1 KiB"):
        assert expected in text, expected
    assert "2.75 KiB" in text and "11 KiB" in text and "4× smaller" in text
    # The PNG download of the toolbar is named after the view, at scale 2.
    assert _config(at)["toImageButtonOptions"] == {
        "format": "png",
        "filename": "gqa_N8_K2_T11_S11_probs",
        "scale": 2,
    }
    # Scores and mask as CSV and .npy; the K/V heads expander; no warnings, no notes.
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["probabilities (.csv)", "probabilities (.npy)", "mask (.csv)", "mask (.npy)"]
    assert all(b.proto.HasField("deferred_file_id") for b in at.get("download_button"))
    assert len(_charts(at)) == 1  # the K/V heads are drawn on request
    at.toggle(key="show_kv").set_value(True).run()
    _ok(at)
    text = _text(at)
    assert "'pooled'" in text and "changes only the sharing" in text
    kv = _charts(at)[1]
    assert [trace_meta(d)["role"] for d in kv["data"]] == ["keys", "values"] * 2
    assert not at.warning and not at.info
    assert dict(at.query_params) == {}  # defaults are left out of the URL


def test_every_control_once():
    at = _app()

    def change(kind: str, key: str, value):
        widget = getattr(at, kind)(key=f"w_{key}")
        if kind == "text_input":
            widget.input(value)
        else:
            widget.set_value(value)
        at.run()
        _ok(at)
        assert at.query_params[key] == (
            ("1" if value else "0") if isinstance(value, bool) else str(value)
        ), key
        return _heads(at)

    fig = change("selectbox", "n", 4)
    assert len(head_maps(fig)) == 4
    fig = change("selectbox", "k", 1)
    assert "query heads 0–3" in json.dumps(fig["layout"]["annotations"], ensure_ascii=False)
    change("selectbox", "h", 32)
    assert "`[1, 11, 4, 32]`" in _text(at)
    change("selectbox", "d", 128)
    assert "`[1, 11, 128]`" in _text(at)
    before = head_maps(_heads(at))[0].z
    fig = change("radio", "weights", "independent")
    assert not np.array_equal(before, head_maps(fig)[0].z, equal_nan=True)
    at.toggle(key="show_kv").set_value(True).run()
    assert "Now: **independent**" in _text(at)
    at.toggle(key="show_kv").set_value(False).run()
    fig = change("toggle", "causal", False)
    assert _role(fig, "mask") == [] and _masked(fig) == 0
    fig = change("number_input", "window", 2)
    assert _masked(fig) == 11 * 11 - (11 + 2 * 10)  # the band |i - j| < 2
    fig = change("number_input", "pad", 2)
    assert head_maps(fig)[0].y[-2:] == ["'&lt;pad&gt;' @11", "'&lt;pad&gt;' @12"]
    assert any("no key to attend to" in i.value for i in at.info)
    fig = change("text_input", "text", "to be or not")
    assert [y.split("' @")[0].strip("'") for y in head_maps(fig)[0].y][:4] == [
        "to",
        "be",
        "or",
        "not",
    ]
    fig = change("radio", "attn", "cross")
    assert not any("use_causal_mask is on" in i.value for i in at.info)  # turned off above
    change("text_input", "source", "etre ou ne pas")
    fig = change("number_input", "kpad", 1)
    keys = head_maps(fig)[0].keys
    assert keys[0] == "'etre' @0" and keys[-1] == "'&lt;pad&gt;' @4"
    fig = change("radio", "mode", "random")
    fig = change("slider", "t", 20)
    fig = change("slider", "s", 30)
    assert head_maps(fig)[0].z.shape == (20, 30)
    change("number_input", "batch", 3)
    change("number_input", "item", 2)
    assert "batch item 2" in _text(at)
    before = head_maps(_heads(at))[0].z
    fig = change("number_input", "seed", 7)
    assert not np.array_equal(before, head_maps(fig)[0].z, equal_nan=True)
    change("slider", "dropout", 0.25)
    assert any("inactive" in c.value for c in at.caption)
    change("toggle", "training", True)
    assert len(_charts(at)) == 2  # heads, dropout
    dropout = _charts(at)[1]
    assert "rate 0.25" in dropout["layout"]["title"]["text"]
    assert at.selectbox(key="dropout_head").value == 0
    at.selectbox(key="dropout_head").set_value(3).run()
    _ok(at)
    assert "q head 3 (K/V head 0)" in _charts(at)[1]["layout"]["title"]["text"]
    assert "scores before dropout" in _text(at)
    change("toggle", "bias", False)
    change("toggle", "gate", True)
    fig = change("radio", "view", "logits")
    assert "logit" in fig["layout"]["coloraxis"]["colorbar"]["title"]["text"]
    assert fig["layout"]["coloraxis"]["cmin"] == -fig["layout"]["coloraxis"]["cmax"]
    assert _config(at)["toImageButtonOptions"]["filename"] == "gqa_N4_K1_T20_S30_logits"
    assert [b.label for b in at.get("download_button")][0] == "logits (.csv)"
    assert "percentile" in fig["layout"]["coloraxis"]["colorbar"]["title"]["text"]  # default
    fig = change("radio", "scale", "max")  # the full range: up to the largest |logit|
    z = np.concatenate([_array(t["z"]).ravel() for t in _role(fig, "scores")])
    assert fig["layout"]["coloraxis"]["cmax"] == pytest.approx(
        float(np.nanmax(np.abs(z))), rel=1e-3
    )
    assert "percentile" not in fig["layout"]["coloraxis"]["colorbar"]["title"]["text"]


def test_url_state_round_trip():
    at = _app(n="16", k="4", causal="0", pad="1")
    assert at.selectbox(key="w_n").value == 16
    assert at.selectbox(key="w_k").value == 4
    assert at.toggle(key="w_causal").value is False
    assert at.number_input(key="w_pad").value == 1
    fig = _heads(at)
    assert len(head_maps(fig)) == 16
    assert "K/V head 3 · query heads 12–15" in json.dumps(fig["layout"], ensure_ascii=False)
    # Without the causal mask only the padding is masked: its row and its column.
    z = head_maps(fig)[0].z
    assert z.shape == (12, 12)
    assert np.isnan(z[-1]).all() and np.isnan(z[:, -1]).all() and not np.isnan(z[:-1, :-1]).any()
    assert dict(at.query_params) == {"n": "16", "k": "4", "causal": "0", "pad": "1"}
    at.selectbox(key="w_h").set_value(32).run()
    _ok(at)
    assert dict(at.query_params) == {"n": "16", "k": "4", "h": "32", "causal": "0", "pad": "1"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            {
                "n": "7",
                "k": "2",
                "h": "abc",
                "dropout": "nan",
                "t": "99999",
                "mode": "bogus",
            },
            [
                "num_query_heads (7)",
                "valid choices are 1, 7",
                "h='abc' ignored",
                "dropout='nan' ignored",
                f"between 1 and {MAX_LEN}; got 99999",
                "mode must be one of",
            ],
        ),
        ({"n": "-3", "wat": "1"}, ["num_query_heads (n) must be between 1 and 64", "wat"]),
    ],
)
def test_invalid_url_inputs_warn_and_keep_running(query, expected):
    at = _app(**query)
    warnings = "\n".join(w.value for w in at.warning)
    for fragment in expected:
        assert fragment in warnings, (fragment, warnings)
    fig = _heads(at)
    n = at.selectbox(key="w_n").value
    assert len(head_maps(fig)) == n == (7 if query["n"] == "7" else 1)
    assert at.query_params.get("mode") is None and at.query_params.get("h") is None
    # The warnings are shown once; the next rerun has none.
    at.toggle(key="w_causal").set_value(False).run()
    _ok(at)
    assert not at.warning


def test_library_error_is_shown_not_raised(monkeypatch):
    import gqa_viz.app.playground

    def broken(settings):
        raise ValueError("the layer said no")

    monkeypatch.setattr(gqa_viz.app.playground, "run", broken)
    at = _app(check=False, seed="987654")  # a seed no other test uses: not in st.cache_data
    assert not at.exception
    assert len(at.error) == 1 and "the layer said no" in at.error[0].value
    assert at.selectbox(key="w_n").value == 8  # the controls still work
    assert not at.get("plotly_chart")


def test_cross_attention_with_the_causal_mask_says_what_it_does():
    """Keras applies use_causal_mask to cross-attention too (key s <= query t): a note says
    so, and goes when the mask is turned off."""
    at = _app(attn="cross")
    note = [i.value for i in at.info if "use_causal_mask is on with cross-attention" in i.value]
    assert len(note) == 1 and "turn it off under Masks" in note[0]
    assert _masked(_heads(at)) > 0
    at.toggle(key="w_causal").set_value(False).run()
    _ok(at)
    assert not any("use_causal_mask is on" in i.value for i in at.info)


def test_a_trained_layer_and_back_keeps_the_visitors_own_settings():
    """A trained layer fixes the shape while it is shown; back to random weights, the heads,
    dimensions and masks the visitor had set come back."""
    at = _app(n="16", k="4", h="32", causal="0", window="3")
    at.radio(key="w_weights").set_value("trained").run()
    _ok(at)
    s = at.session_state["settings"]
    assert s.weights == "trained" and (s.n, s.h) != (16, 32)  # the trained model's shape
    at.radio(key="w_weights").set_value("independent").run()
    _ok(at)
    s = at.session_state["settings"]
    assert (s.weights, s.n, s.k, s.h, s.causal, s.window) == ("independent", 16, 4, 32, False, 3)
    assert at.query_params["n"] == "16" and at.query_params["h"] == "32"
