"""gqa_viz.figures.masks: panels, two-colour cells, row markers, side panels. No Streamlit."""

from __future__ import annotations

import numpy as np
import pytest

from gqa_viz.app.limits import MAX_BLOCK_TILES, MAX_DRAWN_CELLS
from gqa_viz.app.mask_lab import KerasPart
from gqa_viz.figures import masks as F
from gqa_viz.figures.theme import (
    ATTEND_COLOR,
    FULLY_MASKED_ROW_COLOR,
    MASK_OFF_COLOR,
    ONLY_BOTTOM_RIGHT_COLOR,
    SINGLE_KEY_ROW_COLOR,
    component_color,
)

TOKENS = ["the", "cat", "sat", "on", "the", "mat"]


def _causal(t, s=None):
    return np.tril(np.ones((t, s or t), bool))


def _role(fig, role):
    return [tr for tr in fig.data if tr.meta and tr.meta["role"] == role]


def _cells(fig, panel, code):
    found = [
        tr for tr in _role(fig, "cells") if tr.meta["panel"] == panel and tr.meta["code"] == code
    ]
    if not found:
        return np.zeros(0)
    (tr,) = found
    return ~np.isnan(np.asarray(tr.z, dtype=float))


def _annotation(fig, name):
    found = [a for a in fig.layout.annotations if a.name == name]
    assert len(found) == 1, (name, [a.name for a in fig.layout.annotations])
    return found[0]


def test_components_figure_panels_operators_and_colours():
    causal = _causal(6)
    prefix = np.zeros((6, 6), bool)
    prefix[:, :2] = True
    doc = np.kron(np.eye(2, dtype=bool), np.ones((3, 3), bool))
    final = causal & (prefix | doc)
    fig = F.components_figure(
        [("prefix_lm", "prefix_lm(2)", prefix), ("document", "document(split every 3)", doc)],
        final,
        TOKENS,
        TOKENS,
        combine="or",
        settings_mask=causal,
        fully_masked_rows=[],
        single_key_rows=[0],
        max_cells=MAX_DRAWN_CELLS,
    )
    # Panels: settings, two components, final; badge colours per component.
    titles = [_annotation(fig, f"panel {i}").text for i in range(4)]
    assert titles == [
        "<b>sidebar settings</b>",
        "<b>prefix_lm(2)</b>",
        "<b>document(split every 3)</b>",
        "<b>final mask</b>",
    ]
    assert _annotation(fig, "panel 1").bgcolor == component_color("prefix_lm")
    assert [_annotation(fig, f"op {i}").text for i in range(3)] == [
        "<b>&</b>",
        "<b>|</b>",
        "<b>=</b>",
    ]
    # Each cell is exactly one of attend / masked, with the theme's two colours.
    for i, m in enumerate((causal, prefix, doc, final)):
        np.testing.assert_array_equal(_cells(fig, i, 1), m)
        np.testing.assert_array_equal(_cells(fig, i, 0), ~m)
    attend = [tr for tr in _role(fig, "cells") if tr.meta["code"] == 1][0]
    assert attend.colorscale[0][1] == ATTEND_COLOR
    masked = [tr for tr in _role(fig, "cells") if tr.meta["code"] == 0][0]
    assert masked.colorscale[0][1] == MASK_OFF_COLOR and "masked" in masked.hovertemplate
    # Query rows top to bottom, tokens as ticks.
    ax = fig.layout.yaxis
    assert list(ax.range) == [len(TOKENS) - 0.5, -0.5] and list(ax.ticktext) == TOKENS
    assert list(fig.layout.xaxis.ticktext) == TOKENS
    # The single-key row is marked beside the final mask; no fully masked rows.
    (single,) = [t for t in _role(fig, "rows") if t.meta["what"] == "single"]
    assert list(single.y) == ["'the' @0"] and single.marker.color == SINGLE_KEY_ROW_COLOR
    (fully,) = [t for t in _role(fig, "rows") if t.meta["what"] == "fully"]
    assert len(fully.y) == 0
    legend = _annotation(fig, "legend").text
    assert "attend" in legend and "masked" in legend and "no key left" in legend
    assert "Final = sidebar & (component | component …)" in fig.layout.title.subtitle.text
    # The ORed components are framed together, the settings panel and final mask are not.
    (frame,) = [s for s in fig.layout.shapes if s.name == "or bracket"]
    assert frame.x0 < fig.layout.xaxis2.domain[0] and frame.x1 > fig.layout.xaxis3.domain[1]
    assert frame.x0 > fig.layout.xaxis.domain[1] and frame.x1 < fig.layout.xaxis4.domain[0]
    assert _annotation(fig, "or label").text == "any one of these (OR)"


def test_components_figure_only_final_and_fully_masked_rows():
    final = _causal(4, 6)
    final[3] = False
    fig = F.components_figure(
        [], final, list("abcd"), list("uvwxyz"), fully_masked_rows=[3], max_cells=MAX_DRAWN_CELLS
    )
    assert len({tr.meta["panel"] for tr in _role(fig, "cells")}) == 1
    (fully,) = [t for t in _role(fig, "rows") if t.meta["what"] == "fully"]
    assert list(fully.y) == ["'d' @3"] and fully.marker.color == FULLY_MASKED_ROW_COLOR
    # The marker column spans every row, even when only the last one is marked.
    marker_axis = fig.layout.yaxis2  # panel 0 is yaxis; the marker column comes next
    assert tuple(marker_axis.range) == (3.5, -0.5)
    assert f"{int(final.sum())} of 24" in fig.layout.title.subtitle.text


def test_large_masks_are_drawn_as_block_fractions():
    m = _causal(512)
    fig = F.components_figure(
        [("prefix_lm", "p", m)],
        m,
        list(map(str, range(512))),
        list(map(str, range(512))),
        max_cells=MAX_DRAWN_CELLS,
    )
    traces = _role(fig, "cells")
    assert len(traces) == 2 and all(tr.meta["code"] is None for tr in traces)
    z = np.asarray(traces[0].z, float)
    assert z.shape[0] < 512 and 0 <= z.min() and z.max() <= 1
    assert "block" in fig.layout.title.subtitle.text
    assert sum(z.size for z in (np.asarray(t.z) for t in traces)) <= MAX_DRAWN_CELLS


def test_alignment_figure_difference():
    tl, br = _causal(3, 5), np.tril(np.ones((3, 5), bool), k=2)
    fig = F.alignment_figure(tl, br, list("abc"), list("vwxyz"), max_cells=MAX_DRAWN_CELLS)
    assert len({tr.meta["panel"] for tr in _role(fig, "cells")}) == 3
    only_br = _cells(fig, 2, 2)
    np.testing.assert_array_equal(only_br, br & ~tl)
    tr = [t for t in _role(fig, "cells") if t.meta["panel"] == 2 and t.meta["code"] == 2][0]
    assert tr.colorscale[0][1] == ONLY_BOTTOM_RIGHT_COLOR
    assert "j ≤ i + 2" in _annotation(fig, "panel 1").text
    assert len(_cells(fig, 2, 1)) == 0  # nothing only top-left allows when T < S


def test_window_figure_side_panel_counts():
    sem = {"Keras": _causal(5), "JAX": np.ones((5, 5), bool)}
    counts = {k: v.sum(axis=1) for k, v in sem.items()}
    fig = F.window_figure(sem, counts, 2, list("abcde"), list("abcde"), max_cells=MAX_DRAWN_CELLS)
    side = _role(fig, "side")
    assert [t.meta["series"] for t in side] == ["Keras", "JAX"]
    assert list(side[0].x) == [1, 2, 3, 4, 5] and list(side[1].x) == [5] * 5
    assert "w = 2" in fig.layout.title.text


def test_readings_figure_bars_and_markers():
    a = _causal(4)
    fig = F.readings_figure(
        a,
        ~a,
        np.arange(4.0),
        list("abcd"),
        list("abcd"),
        convention="keep_bool",
        other="ignore_bool",
        max_cells=MAX_DRAWN_CELLS,
    )
    (bars,) = _role(fig, "side")
    assert list(bars.x) == [0, 1, 2, 3] and bars.orientation == "h"
    (fully,) = [t for t in _role(fig, "rows") if t.meta["what"] == "fully"]
    assert list(fully.y) == ["'d' @3"]  # the inverted reading leaves the last row keyless
    assert "keep_bool" in _annotation(fig, "panel 0").text


def test_block_figure_outlines_tiles_on_the_mask():
    m = np.zeros((8, 8), bool)
    m[:4, :4] = True  # one full tile
    m[5, 6] = True  # one partial tile
    fig = F.block_figure(m, 4, 4, max_tiles=MAX_BLOCK_TILES, max_cells=MAX_DRAWN_CELLS)
    np.testing.assert_array_equal(_cells(fig, 0, 1), m)  # the mask's own cells
    tiles = {s.name: [] for s in fig.layout.shapes}
    for s in fig.layout.shapes:
        tiles[s.name].append((s.x0, s.x1, s.y0, s.y1))
    assert tiles["tile 2"] == [(-0.5, 3.5, -0.5, 3.5)]
    assert tiles["tile 1"] == [(3.5, 7.5, 3.5, 7.5)]
    assert len(tiles["tile 0"]) == 2
    assert "2 empty tiles skipped, 1 partial, 1 full" in fig.layout.title.subtitle.text
    assert "partial tile" in _annotation(fig, "legend").text


def test_block_figure_with_many_tiles_draws_one_cell_per_tile():
    m = np.tril(np.ones((130, 130), bool))
    # 65 x 65 tiles > MAX_BLOCK_TILES
    fig = F.block_figure(m, 2, 2, max_tiles=MAX_BLOCK_TILES, max_cells=MAX_DRAWN_CELLS)
    assert not fig.layout.shapes
    codes = {tr.meta["code"] for tr in _role(fig, "cells")}
    assert codes == {0, 1, 2}  # empty above, partial on the diagonal, full below
    np.testing.assert_array_equal(_cells(fig, 0, 2), np.tril(np.ones((65, 65), bool), -1))


def test_keras_merge_figure():
    T = 4
    parts = [
        KerasPart(
            "query_mask",
            "[B, T]",
            "[B, T, 1]",
            "",
            np.array([[1], [1], [1], [0]], bool).repeat(T, 1),
        ),
        KerasPart("use_causal_mask", "True", "[1, T, S] = [1, 4, 4]", "", _causal(T)),
    ]
    final = parts[0].allowed & parts[1].allowed
    fig = F.keras_merge_figure(parts, final, list("abcd"), list("abcd"), max_cells=MAX_DRAWN_CELLS)
    assert _annotation(fig, "panel 1").text == "<b>use_causal_mask → [1, T, S]</b>"
    assert [_annotation(fig, f"op {i}").text for i in range(2)] == ["<b>&</b>", "<b>=</b>"]
    (fully,) = [t for t in _role(fig, "rows") if t.meta["what"] == "fully"]
    assert list(fully.y) == ["'d' @3"]


def test_shape_and_label_errors():
    with pytest.raises(ValueError, match=r"\[T, S\] = \[3, 3\]"):
        F.grid_figure(
            [F.Panel("a", _causal(3)), F.Panel("b", _causal(3, 4))],
            list("abc"),
            list("abc"),
            title="x",
            max_cells=MAX_DRAWN_CELLS,
        )
    with pytest.raises(ValueError, match="q_labels"):
        F.components_figure([], _causal(3), list("ab"), list("abc"), max_cells=MAX_DRAWN_CELLS)
    with pytest.raises(ValueError, match="operators"):
        F.grid_figure(
            [F.Panel("a", _causal(3))],
            list("abc"),
            list("abc"),
            title="x",
            operators=["&"],
            max_cells=MAX_DRAWN_CELLS,
        )
