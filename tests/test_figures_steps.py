"""gqa_viz.figures.steps: the Walkthrough's step figures, built without Streamlit.

Axis letters: T query length, S key/value length, N query heads, K kv heads, G = N // K,
H head_dim, D model dim.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import pytest

from gqa_viz.app import playground
from gqa_viz.app.settings import Settings
from gqa_viz.figures import steps as F
from gqa_viz.figures import theme


@pytest.fixture(scope="module")
def result():
    # Padding (fully masked rows), a window, a gate and dropout in training: every step shows.
    s = Settings(h=8, d=16, pad=2, window=3, gate=True, dropout=0.4, training=True)
    return playground.run(s)


def heatmaps(fig: go.Figure) -> list[go.Heatmap]:
    return [t for t in fig.data if t.type == "heatmap"]


def title(fig: go.Figure) -> str:
    return fig.layout.title.text


def test_no_streamlit_import():
    code = (
        "import sys, gqa_viz.figures.steps, gqa_viz.app.codegen; print('streamlit' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dims_and_shape_text(result):
    d = F.dims(result)
    T = len(result.q_labels)
    assert d == {"B": 1, "T": T, "S": T, "N": 8, "K": 2, "G": 4, "H": 8, "D": 16}
    assert F.shape_text("BSKH", d) == f"[B, S, K, H] = [1, {T}, 2, 8]"


def test_inputs_figure_self_and_cross(result):
    T = len(result.q_labels)
    x = np.random.default_rng(0).standard_normal((T, 16))
    fig = F.inputs_figure(x, result.q_labels)
    (hm,) = heatmaps(fig)
    assert np.shape(hm.z) == (T, 16)
    assert f"[T, D] = [{T}, 16]" in title(fig)
    assert hm.zmin == -hm.zmax  # signed values: diverging scale centred on 0
    y = np.random.default_rng(1).standard_normal((5, 16))
    fig = F.inputs_figure(x, result.q_labels, y, [str(j) for j in range(5)])
    shapes = [np.shape(h.z) for h in heatmaps(fig)]
    assert shapes == [(T, 16), (5, 16)]
    texts = [a.text for a in fig.layout.annotations]
    assert any("[S, D] = [5, 16]" in t for t in texts)


def test_repeated_tokens_stay_separate_rows(result):
    # "the" appears several times: numeric axes keep one row per position, tokens as ticks.
    labels = result.q_labels
    assert labels.count("the") > 1
    fig = F.query_head_figure(result.item("query")[:, 0, :], labels, 0, 0)
    assert list(fig.layout.yaxis.tickvals) == list(range(len(labels)))
    assert list(fig.layout.yaxis.ticktext) == labels
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]  # row 0 at the top


def test_long_axes_thin_their_ticks():
    labels = [str(i) for i in range(300)]
    fig = F.logits_figure(np.zeros((300, 300)), labels, labels, 0)
    assert len(fig.layout.xaxis.tickvals) <= F.TICK_LABELS
    assert len(fig.layout.yaxis.tickvals) <= F.TICK_LABELS


def test_query_and_kv_figures(result):
    T, H = len(result.q_labels), 8
    fig = F.query_head_figure(result.item("query")[:, 5, :], result.q_labels, 5, 1)
    assert np.shape(heatmaps(fig)[0].z) == (T, H)
    assert "query head 5" in title(fig)
    assert fig.layout.title.font.color == theme.group_color(1)
    k, v = result.item("key")[:, 1, :], result.item("value")[:, 1, :]
    fig = F.kv_figure(k, v, result.k_labels, 1, [4, 5, 6, 7])
    hms = heatmaps(fig)
    assert [np.shape(h.z) for h in hms] == [(T, H), (T, H)]
    np.testing.assert_allclose(hms[0].z, k, rtol=1e-6)
    np.testing.assert_allclose(hms[1].z, v, rtol=1e-6)
    assert "K/V head 1" in title(fig) and "4–7" in fig.layout.title.subtitle.text
    assert [a.text.split()[0] for a in fig.layout.annotations] == ["K", "V"]


@pytest.mark.parametrize(("N", "K", "head"), [(8, 2, 5), (4, 1, 0), (4, 4, 3), (64, 8, 17)])
def test_sharing_figure_links_each_query_head_to_n_div_g(N, K, head):
    G = N // K
    fig = F.sharing_figure(N, K, head)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len(lines) == N
    kv_x = [kv * G + (G - 1) / 2 for kv in range(K)]
    for n, line in enumerate(lines):
        assert list(line.x) == [n, kv_x[n // G]]
        assert line.line.color == theme.group_color(n // G)
    queries = next(t for t in fig.data if t.name == "query heads")
    assert len(queries.x) == N
    assert queries.marker.size[head] == max(queries.marker.size)
    kvs = next(t for t in fig.data if t.name == "K/V heads")
    assert len(kvs.x) == K
    assert f"reads K/V head {head // G}" in title(fig)


def test_logits_figure_signed_and_unmasked(result):
    logits = result.item("logits")[2]
    fig = F.logits_figure(logits, result.q_labels, result.k_labels, 2)
    (hm,) = heatmaps(fig)
    assert np.shape(hm.z) == logits.shape
    assert not np.isnan(hm.z).any()  # before the mask: every cell has a value
    assert hm.zmin == -hm.zmax and hm.colorscale == go.Heatmap(colorscale="RdBu_r").colorscale
    assert "[T, S]" in title(fig)


def test_mask_figure_two_colours(result):
    mask = result.mask
    fig = F.mask_figure(mask, result.q_labels, result.k_labels)
    (hm,) = heatmaps(fig)
    np.testing.assert_array_equal(hm.z, mask.astype(int))
    colors = {c for _, c in hm.colorscale}
    assert colors == {theme.MASKED_COLOR, theme.STEPS_ATTEND_COLOR}
    assert list(hm.colorbar.ticktext) == ["masked", "attend"]
    empty = int((~mask.any(axis=1)).sum())
    assert empty == 2  # the two padded queries
    assert f"{empty} row(s) attend to nothing" in fig.layout.title.subtitle.text


def test_probs_figure_masked_cells_distinct_from_zero(result):
    mask, probs = result.mask, result.item("probs")[0]
    fig = F.probs_figure(probs, mask, result.q_labels, result.k_labels, 0)
    p_map, masked = heatmaps(fig)
    assert masked.name == F.MASKED_NAME
    assert np.shape(p_map.z) == np.shape(masked.z) == mask.shape
    # Each cell is drawn by exactly one layer: probabilities where allowed, grey where masked.
    np.testing.assert_array_equal(np.isnan(p_map.z), ~mask)
    np.testing.assert_array_equal(np.isnan(masked.z), mask)
    np.testing.assert_allclose(p_map.z[mask], probs[mask], rtol=1e-6)
    # The grey is not a colour the probability scale gives to 0.
    assert {c for _, c in masked.colorscale} == {theme.MASKED_COLOR}
    assert theme.MASKED_COLOR not in {c for _, c in p_map.colorscale}
    assert p_map.zmin == 0 and masked.showscale is False


def test_dropout_figure_marks_dropped_cells(result):
    mask = result.mask
    probs, dropped = result.item("probs")[1], result.item("dropped_probs")[1]
    fig = F.dropout_figure(dropped, probs, mask, result.q_labels, result.k_labels, 1, 0.4)
    p_map, masked = heatmaps(fig)
    np.testing.assert_array_equal(np.isnan(p_map.z), ~mask)
    marks = next(t for t in fig.data if t.name == F.DROPPED_NAME)
    want = np.argwhere(mask & (probs > 0) & (dropped == 0))
    assert len(want) > 0
    assert sorted(zip(marks.y, marks.x)) == sorted(map(tuple, want))
    assert "0.4" in fig.layout.title.subtitle.text


def test_context_figure_with_and_without_gate(result):
    T, H = len(result.q_labels), 8
    ctx = result.item("context")[:, 3, :]
    fig = F.context_figure(ctx, result.q_labels, 3, 0)
    assert [np.shape(h.z) for h in heatmaps(fig)] == [(T, H)]
    gate = result.item("gate")[:, 3, :]
    ungated = result.item("dropped_probs")[3] @ result.item("value")[:, 0, :]
    np.testing.assert_allclose(ungated * gate, ctx, atol=1e-5)
    fig = F.context_figure(ctx, result.q_labels, 3, 0, gate, ungated)
    hms = heatmaps(fig)
    assert [np.shape(h.z) for h in hms] == [(T, H)] * 3
    assert (hms[1].zmin, hms[1].zmax) == (0.0, 1.0)  # the gate is a sigmoid
    assert hms[0].zmin == hms[2].zmin and hms[0].zmax == hms[2].zmax  # same scale before/after


def test_output_figure(result):
    out = result.item("output")
    fig = F.output_figure(out, result.q_labels)
    assert np.shape(heatmaps(fig)[0].z) == out.shape
    assert f"[T, D] = [{out.shape[0]}, 16]" in title(fig)


def test_figures_serialize(result):
    s = replace(result.settings, attn="cross", kpad=1)
    r = playground.run(s)
    figs = [
        F.inputs_figure(np.ones((3, 4)), ["a", "b", "c"], np.ones((2, 4)), ["x", "y"]),
        F.sharing_figure(8, 2, 0),
        F.mask_figure(r.mask, r.q_labels, r.k_labels),
        F.probs_figure(r.item("probs")[0], r.mask, r.q_labels, r.k_labels, 0),
    ]
    for fig in figs:
        assert json.loads(fig.to_json())["data"]
