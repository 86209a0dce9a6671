"""The Walkthrough page under Streamlit's AppTest (no browser).

Each test opens ``app.py`` and switches to the page, as a browser does (``AppTest.from_file``
resolves its path against this file; ``switch_page`` against app.py).
Settings come in through the URL (``at.query_params``), as a shared link would bring them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from gqa_viz.app.playground import tokenize
from gqa_viz.app.settings import DEFAULT_SENTENCE, DEFAULT_SOURCE

PAGE = "app_pages/walkthrough.py"
APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 180

STEPS = (
    "Inputs",
    "Q, K, V projections",
    "Sharing: G query heads read one K/V head",
    "Logits",
    "Mask",
    "Softmax",
    "Weighted sum of values",
    "Output projection",
)
T_DEFAULT = len(tokenize(DEFAULT_SENTENCE))


def page(**params) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    for name, value in params.items():
        at.query_params[name] = str(value)
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def headings(at: AppTest) -> list[str]:
    return [h.value for h in at.subheader]


def markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def figures(at: AppTest) -> dict[str, dict]:
    """Plotly figures by their title text."""
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out[spec["layout"]["title"]["text"]] = spec
    return out


def snippets(at: AppTest) -> dict[str, str]:
    code = [c.value for c in at.code]
    return {
        "keras": next(c for c in code if c.startswith("# Keras")),
        "jax": next(c for c in code if c.startswith("# JAX")),
        "torch": next(c for c in code if c.startswith("# PyTorch")),
    }


def test_defaults_render_every_step():
    at = page()
    got = headings(at)
    assert len(got) == len(STEPS)
    for i, (heading, step) in enumerate(zip(got, STEPS), start=1):
        assert heading.startswith(f"{i}. {step}")
    assert "Dropout" not in " ".join(got)  # no dropout step unless training with dropout
    assert any(h.value == "The same call in code" for h in at.header)
    assert len(at.get("plotly_chart")) == 9  # Q and K/V share step 2
    assert not at.warning
    md = markdown(at)
    assert f"`query` : `[B, T, D] = [1, {T_DEFAULT}, 64]`" in md
    assert f"`logits` : `[B, N, T, S] = [1, 8, {T_DEFAULT}, {T_DEFAULT}]`" in md


def test_shapes_follow_url_settings():
    at = page(n=16, k=4, h=32, d=128)
    md = markdown(at)
    S = T_DEFAULT
    assert f"`K` : `[B, S, K, H] = [1, {S}, 4, 32]`" in md
    assert f"`V` : `[B, S, K, H] = [1, {S}, 4, 32]`" in md
    assert f"`Q` : `[B, T, N, H] = [1, {S}, 16, 32]`" in md
    assert f"`Q viewed` : `[B, T, K, G, H] = [1, {S}, 4, 4, 32]`" in md
    assert "`W_O` : `[N, H, D] = [16, 32, 128]`" in md
    assert "**G** = 4" in md
    assert len(at.selectbox(key="walkthrough_head").options) == 16


def test_cross_attention_and_random_batch_shapes():
    at = page(attn="cross", kpad=2)
    S = len(tokenize(DEFAULT_SOURCE)) + 2
    md = markdown(at)
    assert f"`value` : `[B, S, D] = [1, {S}, 64]`" in md
    assert f"`K` : `[B, S, K, H] = [1, {S}, 2, 16]`" in md
    at = page(mode="random", t=12, batch=3, item=2, causal=0)
    md = markdown(at)
    assert "`Q` : `[B, T, N, H] = [3, 12, 8, 16]`" in md
    assert "Batch item 2 of 3" in md
    assert "Nothing masks with these settings" in md


def test_head_selectbox_changes_the_figures():
    at = page()
    before = figures(at)
    assert "Q of query head 0  [T, H] = [11, 16]" in before
    assert "K and V of K/V head 0" in before
    at.selectbox(key="walkthrough_head").set_value(5).run()
    assert not at.exception
    after = figures(at)
    assert "Q of query head 5  [T, H] = [11, 16]" in after
    assert "K and V of K/V head 1" in after  # G = 4: head 5 reads kv head 5 // 4
    assert "query head 5 reads K/V head 1" in after
    assert before["mask  [T, S] = [11, 11]"] == after["mask  [T, S] = [11, 11]"]  # shared
    old = before["logits of query head 0  [T, S] = [11, 11]"]["data"][0]["z"]
    new = after["logits of query head 5  [T, S] = [11, 11]"]["data"][0]["z"]
    assert old != new
    assert "K/V head 1</b>, shared with query heads 4, 5, 6, 7" in markdown(at)


def test_head_choice_is_clamped_when_n_shrinks():
    at = page()
    at.selectbox(key="walkthrough_head").set_value(7).run()
    at.selectbox(key="w_n").set_value(4).run()  # the sidebar control for N
    assert not at.exception
    assert at.selectbox(key="walkthrough_head").value == 0
    assert len(at.selectbox(key="walkthrough_head").options) == 4


def test_training_with_dropout_shows_the_dropout_step():
    at = page(dropout=0.3, training=1)
    got = headings(at)
    assert "7. Dropout" in got
    assert got[-1] == "9. Output projection"
    assert any(t.startswith("probabilities after dropout") for t in figures(at))
    # Dropout set but not training: no step, and the page says why.
    at = page(dropout=0.3)
    assert "Dropout" not in " ".join(headings(at))
    assert any("acts only with training on" in c.value for c in at.caption)


def test_gate_adds_the_gate_panels():
    at = page(gate=1)
    assert "7. Weighted sum of values, then the gate" in headings(at)
    ctx = next(f for t, f in figures(at).items() if t.startswith("context of query head 0"))
    assert sum(d["type"] == "heatmap" for d in ctx["data"]) == 3
    assert "`gate` : `[B, T, N, H]" in markdown(at)


def test_rows_with_no_allowed_key_are_explained():
    at = page(pad=2)
    assert any("no allowed key" in i.value for i in at.info)
    warn = [w.value for w in at.warning if "Rows with no allowed key" in w.value]
    assert warn and "averages **all** S values" in warn[0] and "<pad>" in warn[0]
    # Without such rows the note is absent.
    at = page()
    assert not any("no allowed key" in i.value for i in at.info)


def test_code_blocks_carry_the_settings():
    at = page(n=16, k=4, window=5, pad=1)
    code = snippets(at)
    assert "num_query_heads=16," in code["keras"]
    assert "num_key_value_heads=4," in code["keras"]
    assert "sliding_window=5," in code["keras"]
    assert "query_mask=query_mask" in code["keras"]
    assert "K=4" in code["jax"] and "N=16" in code["jax"]
    assert "np.abs(i - j) < 5" in code["jax"]
    assert "enable_gqa=True" in code["torch"] and "K=4 heads" in code["torch"]
    assert "attn_mask=" in code["torch"]


def test_invalid_url_warns_and_still_renders():
    at = page(n=8, k=3)
    warnings = [w.value for w in at.warning]
    assert any("divisible" in w and "Using 2" in w for w in warnings), warnings
    assert len(headings(at)) == len(STEPS)
    assert "num_key_value_heads=2," in snippets(at)["keras"]
    at = page(n="lots", t=-4)
    assert at.warning and len(headings(at)) == len(STEPS)


@pytest.mark.skipif(not APP.exists(), reason="app.py not written yet")
def test_through_app_navigation():
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    at.query_params["n"] = "16"
    at.query_params["k"] = "4"
    at.run()
    at.switch_page("app_pages/walkthrough.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(headings(at)) == len(STEPS)
    assert f"`K` : `[B, S, K, H] = [1, {T_DEFAULT}, 4, 16]`" in markdown(at)


def test_a_head_the_box_never_offered_falls_back_to_head_0():
    """A modified client's value for "Query head to follow" (not one of 0..N-1, not even a
    number): the page follows head 0 instead of failing on the comparison."""
    at = page(n=4, k=2)
    at.selectbox(key="walkthrough_head").set_value(3).run()
    assert at.selectbox(key="walkthrough_head").value == 3
    box = at.selectbox(key="walkthrough_head")
    box.options.append("999")
    box.set_value("999").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="walkthrough_head").value == 0
