"""The Real models page's figures (gqa_viz.figures.real_models), on small made-up numbers.

What a reader of each figure relies on: the overview puts every head in its layer's row and
its kv group's columns, with one value per square and nothing in the gaps; the groups carry
their colours; the top-5 bars are in order with the prompt's own next token outlined; the
conversion curve runs from K to 1 with the KV bytes on their own axis; the token chips show
every token, spaces visible, as text.

Axis letters: L layers, N query heads, K kv heads, G = N // K.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pytest

from gqa_viz.figures.real_models import (
    conversion_figure,
    overview_figure,
    token_chips_html,
    top_tokens_figure,
)
from gqa_viz.figures.theme import CHIP_CHOSEN, LOSS_COLORS, group_color


def _overview(L=3, N=6, K=2, **kw):
    values = np.arange(L * N, dtype=float).reshape(L, N) / (L * N)  # [L, N]
    kw = {"name": "attention entropy", "fmt": ".2f", "colorscale": "Viridis", "title": "t", **kw}
    return values, overview_figure(values, K, **kw)


def test_overview_is_one_heatmap_with_heads_in_group_columns():
    values, fig = _overview()
    (trace,) = fig.data
    z = np.asarray(trace.z, float)  # [L, N + K - 1]
    assert z.shape == (3, 7)
    assert np.isnan(z[:, 3]).all()  # the gap between kv group 0 (q0-q2) and 1 (q3-q5)
    np.testing.assert_array_equal(np.delete(z, 3, axis=1), values)
    # Hover: query head and kv head per square, none in the gap.
    custom = np.asarray(trace.customdata, float)  # [L, C, 2]
    assert custom[0, :, 0].tolist()[:3] == [0, 1, 2] and custom[0, 4:, 0].tolist() == [3, 4, 5]
    assert custom[2, 5, 1] == 1 and np.isnan(custom[1, 3]).all()
    assert "K/V head %{customdata[1]}" in trace.hovertemplate
    assert trace.hoverongaps is False
    # x holds the cells' edges: head columns 1 wide, the gap narrower.
    widths = np.diff(np.asarray(trace.x, float))
    assert widths.tolist()[:3] == [1, 1, 1] and 0 < widths[3] < 1


def test_overview_groups_carry_their_colours_and_the_layer_is_framed():
    _, fig = _overview(L=4, N=8, K=4, layer=2)
    bands = [s for s in fig.layout.shapes if s.yref == "paper"]
    assert [b.fillcolor for b in bands] == [group_color(j) for j in range(4)]
    # Each band spans exactly its group's two head columns.
    edges = np.asarray(fig.data[0].x, float)
    assert (bands[1].x0, bands[1].x1) == (edges[3], edges[5])
    (frame,) = [s for s in fig.layout.shapes if s.yref == "y"]
    assert (frame.y0, frame.y1) == (1.5, 2.5)
    labels = [a.text for a in fig.layout.annotations]
    assert labels == ["K/V 0", "K/V 1", "K/V 2", "K/V 3"]
    assert fig.layout.yaxis.autorange == "reversed"  # layer 0 on top


def test_overview_of_a_multi_head_model_and_of_many_layers():
    values, fig = _overview(L=30, N=12, K=12)  # GPT-2-like: every head its own group
    z = np.asarray(fig.data[0].z, float)
    assert z.shape == (30, 23) and np.isnan(z[:, 1::2]).all()
    assert fig.layout.height >= 30 * 15


@pytest.mark.parametrize(("N", "K"), [(6, 4), (6, 0)])
def test_overview_refuses_heads_that_cannot_be_grouped(N, K):
    with pytest.raises(ValueError, match="must divide"):
        overview_figure(np.ones((2, N)), K, name="x", fmt=".1f", colorscale="Blues", title="t")


def test_top_tokens_in_order_with_the_actual_next_token_outlined():
    fig = top_tokens_figure([" the", " a", "cat", " dog", "[id 7]"], [0.4, 0.2, 0.1, 0.05, 0.01],
                            title="t", actual=" a")  # fmt: skip
    (bar,) = fig.data
    assert list(bar.x) == [0.4, 0.2, 0.1, 0.05, 0.01]
    assert list(bar.y) == ["1. '·the'", "2. '·a'", "3. 'cat'", "4. '·dog'", "5. [id 7]"]
    lines = list(bar.marker.line.color)
    assert lines[1] == CHIP_CHOSEN and lines.count(CHIP_CHOSEN) == 1
    assert list(bar.text)[0] == "40.0%"
    # Near-uniform probabilities (a random model) still read as numbers, not "0.0%".
    fig = top_tokens_figure(["x"], [2e-5], title="t")
    assert fig.data[0].text[0] == "2e-05"


def test_top_tokens_that_look_like_tags_are_shown_as_text():
    # Plotly reads tags in labels: Llama 2's "<s>" would strike the rest through and vanish.
    fig = top_tokens_figure(["<s>", "</s>"], [0.5, 0.1], title="t")
    assert list(fig.data[0].y) == ["1. '&lt;s&gt;'", "2. '&lt;/s&gt;'"]


@dataclass
class Row:
    k: int
    prompt_loss: float
    passage_loss: float
    kv_bytes: int
    drift: float


def test_conversion_curve_runs_from_k_to_one_with_bytes_on_their_own_axis():
    rows = [Row(1, 6.0, 5.5, 1000, 0.3), Row(4, 3.0, 2.5, 4000, 0.0), Row(2, 4.0, 3.5, 2000, 0.1)]
    fig = conversion_figure(rows, num_query_heads=4, current=2, dtype="bf16",
                            passage_tokens=256, prompt_tokens=32)  # fmt: skip
    roles = {t.meta["role"]: t for t in fig.data if t.meta["role"] != "current"}
    assert list(roles["kv_bytes"].x) == ["4 (MHA)", "2", "1 (MQA)"]
    assert list(roles["kv_bytes"].y) == [4000, 2000, 1000] and roles["kv_bytes"].yaxis == "y2"
    assert list(roles["prompt"].y) == [3.0, 4.0, 6.0]
    assert list(roles["passage"].y) == [2.5, 3.5, 5.5]
    assert roles["passage"].line.color == LOSS_COLORS["passage"]
    assert "256 tokens" in roles["passage"].name and "32 tokens" in roles["prompt"].name
    rings = [t for t in fig.data if t.meta["role"] == "current"]
    assert [list(r.x) for r in rings] == [["2"], ["2"]]
    assert fig.layout.yaxis2.overlaying == "y" and fig.layout.yaxis2.side == "right"


def test_token_chips_show_every_token_as_text_with_spaces_visible():
    tokens = ["<s>", "Hello", " world", "  <b>", "↵"]
    chips = token_chips_html(tokens, chosen=2, ids=[1, 9, 10, 11, 12])
    bodies = re.findall(r'title="position (\d+) · id (\d+)"[^>]*>((?:(?!</span><span t).)*)</span>',
                        chips)  # fmt: skip
    assert [int(p) for p, _, _ in bodies] == [0, 1, 2, 3, 4]
    assert "&lt;s&gt;" in bodies[0][2] and "<b>" not in chips and "&lt;b&gt;" in chips
    assert bodies[2][2].count("·") == 1 and bodies[3][2].count("·") == 2
    assert chips.count(CHIP_CHOSEN) == 1 and f"2px solid {CHIP_CHOSEN}" in chips
