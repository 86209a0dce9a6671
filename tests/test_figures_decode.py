"""gqa_viz.figures.decode: the Decode page's figures draw the numbers they are given. No Streamlit.

Axis letters: C new tokens of a step, S_max cache slots, N query heads, K kv heads, G = N // K.
"""

from __future__ import annotations

import numpy as np
import pytest

from gqa_viz.app import decode as dec
from gqa_viz.app.limits import MAX_DRAWN_CELLS
from gqa_viz.figures import decode as F
from gqa_viz.figures.heads import head_maps
from gqa_viz.figures.shipping import array_of as _array
from gqa_viz.figures.theme import VARIANT_COLORS, group_color


def _role(fig, role: str) -> list:
    return [t for t in fig.data if t.meta and t.meta.get("role") == role]


@pytest.fixture(scope="module")
def sink_run():
    """copy-k2 with a sink cache of 2 + 6 slots, the prompt in chunks of 4."""
    s, _ = dec.from_query_params({"policy": "sink", "window": "6", "sinks": "2", "chunk": "4"})
    p, messages = dec.plan(s)
    assert messages == []
    return p, dec.run(p)


def test_rows_figure_groups_each_query_head_under_its_kv_head(sink_run):
    p, run = sink_run
    v = dec.step_view(run, p.step, 1)
    N, C, length = v.probs.shape
    fig = F.rows_figure(v.probs, v.mask, v.q_tokens, v.k_tokens, 2, offset=v.offset,
                        title="rows", max_cells=MAX_DRAWN_CELLS)  # fmt: skip
    scores, maps = _role(fig, "scores"), head_maps(fig)
    assert list(maps) == list(range(N))
    assert [t.meta["kv_head"] for t in scores] == [0, 1]
    assert [t.meta["heads"] for t in scores] == [list(range(N // 2)), list(range(N // 2, N))]
    # The one row is the step's query, labelled by its absolute position (offset + 0).
    assert maps[0].y == [f"'{v.q_tokens[0]}' @{v.offset}"]
    assert len(maps[0].x) == length == v.offset + 1
    # Probabilities where the step attended; nothing drawn at a dropped or later key.
    z = maps[3].z
    attended = v.mask[0]
    np.testing.assert_allclose(z[0, attended], np.round(v.probs[3, 0, attended], 4), atol=1e-4)
    assert np.isnan(z[0, ~attended]).all()


def test_mask_figure_draws_each_code_where_it_is_and_frames_the_step(sink_run):
    p, run = sink_run
    codes = dec.mask_history(run)
    tokens = run.names(run.tokens)
    fig = F.mask_figure(codes, tokens, (8, 11), title="mask")
    drawn = np.full(codes.shape, -1)
    for t in _role(fig, "cells"):
        z = np.asarray(t.z, np.float64)
        assert (drawn[~np.isnan(z)] == -1).all()  # one trace per cell
        drawn[~np.isnan(z)] = t.meta["code"]
        assert F.CODE_NAMES[t.meta["code"]] in t.hovertemplate
    np.testing.assert_array_equal(drawn, codes)
    # Every code appears in a sink run of 2 + 6 slots with chunks of 4.
    assert {t.meta["code"] for t in _role(fig, "cells")} == {0, 1, 2, 3}
    (frame,) = [s for s in fig.layout.shapes if s.name == "current step"]
    assert (frame.y0, frame.y1) == (7.5, 11.5)
    assert list(fig.layout.yaxis.ticktext[:2]) == [f"@0 {tokens[0]}", f"@1 {tokens[1]}"]


def test_mask_figure_refuses_rows_it_does_not_have():
    with pytest.raises(ValueError, match="current rows"):
        F.mask_figure(np.zeros((3, 3), int), list("abc"), (2, 3), title="x")
    with pytest.raises(ValueError, match="tokens has 2 names"):
        F.mask_figure(np.zeros((3, 3), int), list("ab"), (0, 0), title="x")


def test_cache_figure_numbers_every_slot_with_its_position(sink_run):
    p, run = sink_run
    h = dec.cache_history(run, 1, 2)
    tokens = run.names(run.tokens)
    fig = F.cache_figure(h.positions, h.attention, h.evicted, tokens, 5, sinks=h.sinks,
                         title="cache")  # fmt: skip
    slots = _role(fig, "slots")
    assert [t.meta["kv_head"] for t in slots] == [0, 1]
    held = h.positions >= 0
    for j, t in enumerate(slots):
        text = np.asarray(t.text)
        np.testing.assert_array_equal(text[held], h.positions[held].astype(str))
        assert (text[~held] == "").all()
        z = np.asarray(t.z, np.float64)
        np.testing.assert_allclose(z[held], np.round(h.attention[j][held], 3), atol=1e-6)
        assert t.colorscale[-1][1] == group_color(j)
    # A ▼ per overwritten position, per K/V head, at its slot and step.
    gone = np.argwhere(h.evicted >= 0)
    assert gone.size
    for t in _role(fig, "dropped"):
        assert [c[0] for c in t.customdata] == [int(h.evicted[s, i]) for s, i in gone]
    frames = [s for s in fig.layout.shapes if s.name and s.name.startswith("current")]
    assert [(s.x0, s.x1) for s in frames] == [(4.5, 5.5)] * 2
    assert list(fig.layout.yaxis.ticktext[:3]) == ["0 (sink)", "1 (sink)", "2"]


def test_cache_figure_refuses_shapes_that_disagree():
    with pytest.raises(ValueError, match="attention"):
        F.cache_figure(np.zeros((4, 3)), np.zeros((2, 4, 2)), np.zeros((4, 3)), list("abcd"), 1,
                       title="x")  # fmt: skip
    with pytest.raises(ValueError, match="current step 4"):
        F.cache_figure(np.zeros((4, 3)), np.zeros((2, 4, 3)), np.zeros((4, 3)), list("abcd"), 4,
                       title="x")  # fmt: skip


def test_bytes_figure_plots_the_table(sink_run):
    _, run = sink_run
    table = dec.bytes_table(run, 3350.0)
    fig = F.bytes_figure(table, 3, title="bytes")
    traces = _role(fig, "bytes")
    assert len(traces) == 9
    for t in traces:
        v = t.meta["variant"]
        expected = {
            "KV cache read per step": [r[v]["cache"] for r in table],
            "weights + KV cache per step": [r[v]["total"] for r in table],
            "running total": [r["cumulative"][v] for r in table],
        }[t.meta["panel"]]
        np.testing.assert_allclose(_array(t.y), np.asarray(expected, np.float64))
        assert list(_array(t.x)) == [r["step"] for r in table]
        assert t.line.color == VARIANT_COLORS[v]
    # MHA reads the most cache at every step after the first, MQA the least.
    cache = {t.meta["variant"]: _array(t.y) for t in traces if "cache read" in t.meta["panel"]}
    assert (cache["mha"][1:] > cache["configured"][1:]).all()
    assert (cache["configured"][1:] > cache["mqa"][1:]).all()
    assert [s.x0 for s in fig.layout.shapes] == [3, 3, 3]
    with pytest.raises(ValueError, match="at least one step"):
        F.bytes_figure([], 1, title="x")
