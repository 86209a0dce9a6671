"""gqa_viz.figures.heads: layout, shared colour scale, masked cells, hover text. No Streamlit."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from gqa_viz.app.limits import MAX_DRAWN_CELLS
from gqa_viz.figures.heads import (
    DROPOUT_CAPTION,
    NOMINAL_WIDTH,
    SCORES_CSV_HEADER,
    dropout_figure,
    grid_layout,
    group_label,
    head_maps,
    heads_figure,
    kv_heads_figure,
    mask_csv,
    npy_bytes,
    scores_csv,
)
from gqa_viz.figures.theme import (
    LOGIT_COLORSCALE,
    MASKED_COLOR,
    PROB_COLORSCALE,
    group_color,
)

TOKENS = ["the", "cat", "sat", "on", "the", "mat"]


def _probs(n: int, t: int, s: int, mask: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, t, s)).astype(np.float32)
    e = np.where(mask, np.exp(logits), 0.0)
    total = e.sum(-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0).astype(np.float32)


def _causal(t: int, s: int | None = None) -> np.ndarray:
    s = t if s is None else s
    return np.tril(np.ones((t, s), bool))


def _expanded(colorscale):
    """A named colour scale as plotly stores it."""
    return go.layout.Coloraxis(colorscale=colorscale).colorscale


def _scores(fig):
    return [tr for tr in fig.data if tr.meta and tr.meta["role"] == "scores"]


def _masks(fig):
    return [tr for tr in fig.data if tr.meta and tr.meta["role"] == "mask"]


def _axis(fig, ref: str):
    """A trace's axis ("x2") as the layout names it ("xaxis2")."""
    return fig.layout[
        ref.replace("x", "xaxis") if ref.startswith("x") else ref.replace("y", "yaxis")
    ]


def _annotation(fig, name):
    found = [a for a in fig.layout.annotations if a.name == name]
    assert len(found) == 1, (name, [a.name for a in fig.layout.annotations])
    return found[0]


@pytest.fixture(scope="module")
def default_fig():
    mask = _causal(6)
    values = _probs(8, 6, 6, mask)
    return heads_figure(values, mask, TOKENS, TOKENS, 2, max_cells=MAX_DRAWN_CELLS), values, mask


def test_one_heatmap_per_group_and_row_with_every_head_in_it(default_fig):
    fig, values, mask = default_fig
    scores = _scores(fig)
    assert [tr.type for tr in scores] == ["heatmap"] * 2  # not one per head: one per K/V group
    assert [tr.name for tr in scores] == ["kv0", "kv1"]
    assert [tr.meta["kv_head"] for tr in scores] == [0, 1]
    assert [tr.meta["heads"] for tr in scores] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # Two group rows of four: each group has its row's axes, group 0 above group 1.
    y0, y1 = (_axis(fig, tr.yaxis).domain for tr in scores)
    assert y0[0] > y1[1]
    assert _axis(fig, scores[0].xaxis).domain == _axis(fig, scores[1].xaxis).domain
    # Every head's panel holds its own map, in order left to right, with key columns between;
    # one path outlines them all.
    maps = head_maps(fig)
    assert list(maps) == list(range(8))
    for n, panel in maps.items():
        np.testing.assert_allclose(panel.z[mask], np.round(values[n][mask], 4), atol=1e-6)
        assert panel.xaxis == scores[n // 4].xaxis and panel.y == list(scores[0].y)
    row = list(_axis(fig, scores[0].xaxis).categoryarray)
    starts = [row.index(maps[n].x[0]) for n in range(4)]
    assert starts[0] == 0 and all(b - a > 6 for a, b in zip(starts, starts[1:]))
    gap = np.asarray(scores[0].z, float)[:, 6 : starts[1]]
    assert gap.size and np.isnan(gap).all()  # nothing drawn between two panels
    outlines = [sh for sh in fig.layout.shapes if sh.name == "panel outlines"]
    assert len(outlines) == 1 and outlines[0].path.count("Z") == 8


def test_group_labels_frames_and_titles_use_group_colours(default_fig):
    fig, _, _ = default_fig
    for j, heads in ((0, "0–3"), (1, "4–7")):
        label = _annotation(fig, f"group {j}")
        assert f"K/V head {j}" in label.text and f"query heads {heads}" in label.text
        assert label.bgcolor == group_color(j)
        frame = [s for s in fig.layout.shapes if s.name == f"kv{j}"]
        assert len(frame) == 1 and frame[0].line.color == group_color(j)
    for n in range(8):
        assert _annotation(fig, f"q{n}").text == f"q{n}"
        assert _annotation(fig, f"q{n}").bgcolor == group_color(n // 4)
    assert group_label(1, 4) == "K/V head 1 · query heads 4–7"
    assert group_label(3, 1) == "K/V head 3 · query head 3"
    assert group_label(1, 4, short=True) == "K/V 1 · q4–q7"
    assert group_label(10, 1, short=True) == "K/V 10"  # the head's badge is right below


def test_narrow_frames_get_labels_that_fit():
    """Sixteen one-head groups of three keys: each frame is narrow, and its label fits in it
    (about 7 px a character at the label's size), at 80 % of the planned width."""
    mask = _causal(3)
    fig = heads_figure(_probs(16, 3, 3, mask), mask, ["a", "b", "c"], ["a", "b", "c"], 16,
                       max_cells=MAX_DRAWN_CELLS)  # fmt: skip
    plot_px = NOMINAL_WIDTH - fig.layout.margin.l - fig.layout.margin.r
    for j in range(16):
        frame = next(s for s in fig.layout.shapes if s.name == f"kv{j}")
        label = _annotation(fig, f"group {j}").text.removeprefix("<b>").removesuffix("</b>")
        assert 7.0 * len(label) + 12 <= 0.8 * (frame.x1 - frame.x0) * plot_px, (j, label)


def test_one_shared_colour_scale(default_fig):
    fig, values, mask = default_fig
    assert {tr.coloraxis for tr in _scores(fig)} == {"coloraxis"}
    assert all(tr.showscale is False for tr in _masks(fig))
    ca = fig.layout.coloraxis
    assert ca.cmin == 0.0
    assert ca.cmax == pytest.approx(float(values[:, mask].max()))
    assert "probability" in ca.colorbar.title.text
    assert ca.colorscale == _expanded(PROB_COLORSCALE)
    # One colour bar: one colour axis, and no trace draws its own scale.
    layout = fig.to_plotly_json()["layout"]
    assert [key for key in layout if key.startswith("coloraxis")] == ["coloraxis"]
    assert not any(tr.showscale for tr in fig.data)


def test_masked_cells_are_nan_and_grey(default_fig):
    fig, values, mask = default_fig
    greys = head_maps(fig, "mask")
    for n, score in head_maps(fig).items():
        z, g = score.z, greys[n].z
        assert np.isnan(z[~mask]).all() and not np.isnan(z[mask]).any()
        assert not np.isnan(g[~mask]).any() and np.isnan(g[mask]).all()
    for score, grey in zip(_scores(fig), _masks(fig), strict=True):
        assert (grey.xaxis, grey.yaxis, grey.x) == (score.xaxis, score.yaxis, score.x)  # beneath
        assert grey.colorscale[0][1] == MASKED_COLOR and grey.colorscale[-1][1] == MASKED_COLOR
        assert score.hoverongaps is False and grey.hoverongaps is False
        assert "masked" in grey.hovertemplate
    assert fig.data.index(_masks(fig)[0]) < fig.data.index(_scores(fig)[0])
    n = 2
    np.testing.assert_allclose(head_maps(fig)[n].z[mask], np.round(values[n][mask], 4), atol=1e-6)
    assert any("grey = masked" in (a.text or "") for a in fig.layout.annotations)


def test_nothing_masked_means_no_mask_layer():
    values = _probs(4, 6, 6, np.ones((6, 6), bool))
    fig = heads_figure(values, None, TOKENS, TOKENS, 4, max_cells=MAX_DRAWN_CELLS)
    assert _masks(fig) == [] and len(_scores(fig)) == 4
    assert not any(np.isnan(np.asarray(tr.z, float)).any() for tr in fig.data)
    assert not any("grey = masked" in (a.text or "") for a in fig.layout.annotations)


def test_hover_names_head_kv_head_tokens_and_value(default_fig):
    fig, _, _ = default_fig
    group1 = _scores(fig)[1]
    template = "%{x}<br>query %{y}<br>"
    assert group1.hovertemplate.startswith(template)
    assert "p = %{z:.3f}" in group1.hovertemplate
    # The key's category names the head: the hover label's first two lines. No number per
    # cell: no customdata, no per-cell text.
    panel4, panel5 = head_maps(fig)[4], head_maps(fig)[5]
    assert group1.customdata is None and group1.text is None
    assert panel5.x[0] == "q head 5 (K/V head 1)<br>key 'the' @0"
    assert panel4.x[0] == "q head 4 (K/V head 1)<br>key 'the' @0"
    assert panel5.keys[0] == "'the' @0" and panel5.y[1] == "'cat' @1"
    # The tick labels stay the bare tokens.
    axis = _axis(fig, group1.xaxis)
    assert list(axis.ticktext)[:2] == ["the", "cat"] and axis.tickvals[0] == panel4.x[0]
    assert _masks(fig)[1].hovertemplate == "%{x}<br>query %{y}<br>masked<extra></extra>"
    assert "<extra></extra>" in group1.hovertemplate


def test_tick_labels_are_tokens_for_short_inputs(default_fig):
    fig, _, _ = default_fig
    assert list(fig.layout.xaxis.ticktext) == TOKENS * 4  # under each of the row's panels
    assert list(fig.layout.yaxis.ticktext) == TOKENS  # left of the row
    # Query 0 on top, every category exactly in range (a fixed range: nothing drawn over the
    # panels may pad it).
    assert list(fig.layout.yaxis.range) == [len(TOKENS) - 0.5, -0.5]
    assert fig.layout.yaxis.autorange is False
    x_cats = fig.layout.xaxis.categoryarray
    assert list(fig.layout.xaxis.range) == [-0.5, len(x_cats) - 0.5]
    maps = head_maps(fig)
    assert list(fig.layout.xaxis.tickvals) == [x for n in range(4) for x in maps[n].x]
    assert "Ticks are positions" not in fig.layout.title.subtitle.text


def test_long_inputs_get_position_ticks_and_tokens_are_escaped():
    T = 60
    labels = [f"w{i}" for i in range(T)]
    mask = _causal(T)
    fig = heads_figure(_probs(2, T, T, mask), mask, labels, labels, 1, max_cells=MAX_DRAWN_CELLS)
    ticks = list(fig.layout.xaxis.ticktext)
    assert ticks[0] == "0" and all(t.isdigit() for t in ticks) and len(ticks) < T
    # Tokens labelled by number: the subtitle says why and where they are, on a line of its own.
    note = "Ticks are positions (no room for every token): hover a cell for its tokens."
    assert fig.layout.title.subtitle.text.endswith("<br>" + note)
    positions = heads_figure(_probs(2, T, T, mask), mask, [str(i) for i in range(T)],
                             [str(i) for i in range(T)], 1, max_cells=MAX_DRAWN_CELLS)  # fmt: skip
    assert note not in positions.layout.title.subtitle.text  # the labels are positions already
    assert fig.layout.margin.t == positions.layout.margin.t + 16
    fig = heads_figure(
        _probs(1, 2, 2, np.ones((2, 2), bool)),
        None,
        ["<pad>", "a"],
        ["<pad>", "a"],
        1,
        max_cells=MAX_DRAWN_CELLS,
    )
    assert head_maps(fig)[0].keys[0] == "'&lt;pad&gt;' @0"
    assert list(fig.layout.xaxis.ticktext)[0] == "&lt;pad&gt;"


def test_logits_scale_is_symmetric_around_zero():
    mask = _causal(6)
    logits = np.random.default_rng(1).normal(0.5, 2.0, (4, 6, 6)).astype(np.float32)
    logits[0, 0, 5] = 100.0  # masked: must not set the range
    fig = heads_figure(logits, mask, TOKENS, TOKENS, 2, kind="logits", max_cells=MAX_DRAWN_CELLS)
    ca = fig.layout.coloraxis
    top = float(np.abs(logits[:, mask]).max())
    assert ca.cmin == pytest.approx(-top) and ca.cmax == pytest.approx(top)
    assert "logit" in ca.colorbar.title.text
    assert ca.colorscale == _expanded(LOGIT_COLORSCALE)
    # Masked cells of a logits map still say what the logit was, and that it is unused.
    assert "not used" in _masks(fig)[0].hovertemplate
    assert "logit = %{z:.2f}" in _scores(fig)[0].hovertemplate


@pytest.mark.parametrize(
    ("n", "k", "rows", "cols"),
    [
        (8, 2, 2, 4),  # one row per group
        (4, 2, 2, 2),
        (8, 1, 2, 4),  # a long group wraps
        (48, 1, 6, 8),
        (8, 8, 2, 4),  # small groups share rows
        (8, 4, 2, 4),
        (32, 4, 4, 8),
        (64, 64, 8, 8),
        (1, 1, 1, 1),
    ],
)
def test_grid_layout(n, k, rows, cols):
    grid = grid_layout(n, k)
    assert (grid.rows, grid.total_cols) == (rows, cols)
    assert len(set(grid.cells)) == n
    g = n // k
    for j in range(k):  # a group's heads are contiguous, in reading order
        cells = [grid.cells[h] for h in range(j * g, (j + 1) * g)]
        assert cells == sorted(cells)


def test_many_heads_stay_usable():
    mask = _causal(11)
    labels = [f"t{i}" for i in range(11)]
    fig = heads_figure(
        _probs(64, 11, 11, mask), mask, labels, labels, 64, max_cells=MAX_DRAWN_CELLS
    )
    assert len(_scores(fig)) == 64
    assert 600 < fig.layout.height < 2200
    assert len([s for s in fig.layout.shapes if s.name and s.name.startswith("kv")]) == 64


@pytest.mark.parametrize("width", [300, 460, 820])
def test_a_narrow_column_keeps_every_panel_inside_the_figure(width):
    """Planned for a narrow column, panels shrink to their least width; where even that is too
    wide the figure widens instead of pushing panels off its edge. The subtitle wraps."""
    mask = _causal(12)
    fig = heads_figure(
        _probs(32, 12, 12, mask), mask, TOKENS * 2, TOKENS * 2, 32,
        max_cells=MAX_DRAWN_CELLS, planned_width=width,
    )  # fmt: skip
    for tr in _scores(fig):
        x, y = _axis(fig, tr.xaxis).domain, _axis(fig, tr.yaxis).domain
        assert 0 <= x[0] < x[1] <= 1 and 0 <= y[0] < y[1] <= 1, (width, tr.name, x, y)
    # Panels side by side, never on top of each other: each head's keys in columns of its own.
    cols = {}
    for panel in head_maps(fig).values():
        row = list(_axis(fig, panel.xaxis).categoryarray)
        at = row.index(panel.x[0])
        cols.setdefault(panel.xaxis, []).append((at, at + len(panel.x) - 1))
    for spans in cols.values():
        spans.sort()
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))
    subtitle = fig.layout.title.subtitle.text
    # 32 panels of 12 keys: no room for the tokens under them, and a line says so (two in a
    # narrow figure, whose subtitle lines all fit a column of ~300 px: 11 px text, ~6 px a
    # character).
    split = ":<br>" if width < 640 else ": "
    note = f"Ticks are positions (no room for every token){split}hover a cell for its tokens."
    assert subtitle.endswith("<br>" + note)
    assert subtitle.count("<br>") + 1 == (5 if width < 640 else 3), subtitle
    if width < 640:
        assert max(len(line) for line in subtitle.split("<br>")) <= 50, subtitle


def test_huge_maps_are_max_pooled_by_default():
    T = 400
    mask = _causal(T)
    labels = [str(i) for i in range(T)]
    values = np.full((8, T, T), 1.0 / T, np.float32)
    fig = heads_figure(values, mask, labels, labels, 2, max_cells=MAX_DRAWN_CELLS)
    cells = sum(np.asarray(tr.z).size for tr in _scores(fig))
    assert cells <= MAX_DRAWN_CELLS
    assert "largest value of a 3×3 block" in fig.layout.title.subtitle.text
    assert "(max of the block)" in _scores(fig)[0].hovertemplate
    mean = heads_figure(values, mask, labels, labels, 2, pool="mean", max_cells=MAX_DRAWN_CELLS)
    assert "the mean of a 3×3 block" in mean.layout.title.subtitle.text


def test_dropped_kind():
    mask = _causal(6)
    fig = heads_figure(
        _probs(2, 6, 6, mask), mask, TOKENS, TOKENS, 1, kind="dropped", max_cells=MAX_DRAWN_CELLS
    )
    assert "dropout" in fig.layout.coloraxis.colorbar.title.text
    assert "w = " in _scores(fig)[0].hovertemplate


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros((4, 6, 6)), _causal(6), TOKENS, TOKENS, 3), "divide"),
        ((np.zeros((4, 6, 6)), _causal(5), TOKENS, TOKENS, 2), "mask"),
        ((np.zeros((4, 6, 6)), _causal(6), TOKENS[:5], TOKENS, 2), "q_labels"),
        ((np.zeros((4, 6, 6)), _causal(6), TOKENS, TOKENS + ["x"], 2), "k_labels"),
        ((np.zeros((6, 6)), _causal(6), TOKENS, TOKENS, 1), "dimensions"),
        ((np.zeros((4, 6, 6)), _causal(6), TOKENS, TOKENS, 0), "positive"),
    ],
)
def test_heads_figure_rejects_mismatched_shapes(args, match):
    with pytest.raises(ValueError, match=match):
        heads_figure(*args, max_cells=MAX_DRAWN_CELLS)


def test_heads_figure_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        heads_figure(
            np.zeros((1, 6, 6)), None, TOKENS, TOKENS, 1, kind="weights", max_cells=MAX_DRAWN_CELLS
        )


def test_kv_heads_figure():
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((6, 2, 4)).astype(np.float32)
    values = rng.standard_normal((6, 2, 4)).astype(np.float32)
    fig = kv_heads_figure(keys, values, TOKENS, 8, max_cells=MAX_DRAWN_CELLS)
    assert [tr.meta["role"] for tr in fig.data] == ["keys", "values"] * 2
    assert [tr.meta["kv_head"] for tr in fig.data] == [0, 0, 1, 1]
    np.testing.assert_allclose(np.asarray(fig.data[2].z), np.round(keys[:, 1, :], 4), atol=1e-6)
    title0, title1 = _annotation(fig, "kv0"), _annotation(fig, "kv1")
    assert "K/V head 0 → read by q0..3" in title0.text and title0.bgcolor == group_color(0)
    assert "K/V head 1 → read by q4..7" in title1.text and title1.bgcolor == group_color(1)
    assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax
    assert fig.layout.coloraxis2.cmax == pytest.approx(float(np.abs(values).max()))
    with pytest.raises(ValueError, match="same shape"):
        kv_heads_figure(keys, values[:, :1], TOKENS, 8, max_cells=MAX_DRAWN_CELLS)
    with pytest.raises(ValueError, match="divide"):
        kv_heads_figure(keys, values, TOKENS, 3, max_cells=MAX_DRAWN_CELLS)
    with pytest.raises(ValueError, match="k_labels"):
        kv_heads_figure(keys, values, TOKENS[:3], 8, max_cells=MAX_DRAWN_CELLS)


def _left_of_plot_area(fig) -> list:
    """Frames and annotations placed left of the plot area (paper x < 0): (name, x)."""
    placed = [(s.name, s.x0) for s in fig.layout.shapes if s.type == "rect"]
    placed += [(a.name, a.x) for a in fig.layout.annotations if a.xref == "paper"]
    return [(name, x) for name, x in placed if x < 0]


@pytest.mark.parametrize("inputs", ["tokens", "positions", "kv heads"])
def test_frames_and_labels_stay_inside_a_figure_drawn_wider_than_planned(inputs):
    """A figure is drawn at its column's width: paper fractions stretch with it, pixel margins
    do not. Frames, badges, group and row labels and the grey legend all sit inside the plot
    area (paper x >= 0), where they stay at any width; a group frame at x < 0 reached past the
    left margin and ran off the figure on a 1,920 px screen (Decode's one-row heads)."""
    if inputs == "kv heads":
        rng = np.random.default_rng(0)
        kv = rng.standard_normal((12, 2, 4)).astype(np.float32)
        fig = kv_heads_figure(kv, kv, TOKENS * 2, 8, max_cells=MAX_DRAWN_CELLS)
    else:
        T = 12 if inputs == "tokens" else 64
        labels = TOKENS * 2 if inputs == "tokens" else [str(i) for i in range(T)]
        mask = _causal(T)
        fig = heads_figure(
            _probs(8, T, T, mask), mask, labels, labels, 2, max_cells=MAX_DRAWN_CELLS
        )
        assert _annotation(fig, "group 0").x >= 0 and _masks(fig)  # the legend line is drawn
    assert _left_of_plot_area(fig) == []


def test_dropout_figure():
    mask = _causal(6)
    probs = _probs(1, 6, 6, mask)[0]
    keep = np.random.default_rng(0).random((6, 6)) > 0.5
    dropped = np.where(keep, probs / 0.5, 0.0).astype(np.float32)
    fig = dropout_figure(probs, dropped, mask, TOKENS, TOKENS, head=3, rate=0.5, kv_head=1)
    scores = _scores(fig)
    assert len(scores) == 2 and {tr.coloraxis for tr in scores} == {"coloraxis"}
    assert "before dropout" in scores[0].name
    assert fig.layout.coloraxis.cmax == pytest.approx(float(dropped[mask].max()), rel=1e-4)
    assert np.isnan(np.asarray(scores[1].z, float)[~mask]).all()
    assert _annotation(fig, "caption").text == DROPOUT_CAPTION
    assert "before</b> dropout" in DROPOUT_CAPTION and "Keras returns" in DROPOUT_CAPTION
    assert "q head 3 (K/V head 1)" in fig.layout.title.text
    with pytest.raises(ValueError, match="same shape"):
        dropout_figure(probs, dropped[:5], mask, TOKENS, TOKENS, head=0, rate=0.5)


def test_scores_csv_long_format_and_npy():
    import csv
    import io

    mask = _causal(3)
    labels = ["a", "b,c", "d"]
    values = _probs(4, 3, 3, mask)
    rows = list(csv.DictReader(io.StringIO(scores_csv(values, mask, labels, labels, 2).decode())))
    assert len(rows) == 4 * 3 * 3
    assert list(rows[0]) == SCORES_CSV_HEADER.split(",")
    row = rows[2 * 9 + 1 * 3 + 0]  # head 2, query 1, key 0
    assert (row["head"], row["kv_head"], row["query_pos"], row["query_token"]) == (
        "2",
        "1",
        "1",
        "b,c",
    )
    assert (row["key_pos"], row["key_token"], row["masked"]) == ("0", "a", "0")
    assert float(row["score"]) == pytest.approx(values[2, 1, 0], rel=1e-5)
    assert rows[0 * 9 + 0 * 3 + 2]["masked"] == "1"
    mrows = list(csv.DictReader(io.StringIO(mask_csv(mask, labels, labels).decode())))
    assert len(mrows) == 9 and mrows[1]["allowed"] == "0" and mrows[3]["allowed"] == "1"
    back = np.load(io.BytesIO(npy_bytes(values)))
    assert back.dtype == np.float32 and back.shape == (4, 3, 3)
    np.testing.assert_array_equal(back, values)
    assert np.load(io.BytesIO(npy_bytes(mask))).dtype == bool


def test_saturating_scale_uses_the_percentile_and_says_so():
    rng = np.random.default_rng(5)
    values = rng.random((4, 10, 10)).astype(np.float32) * 0.2
    values[:, 0, 0] = 1.0  # one dominant cell per head, like causal query 0
    mask = np.ones((10, 10), bool)
    labels = [str(i) for i in range(10)]
    fig = heads_figure(values, mask, labels, labels, 2, saturate=99.0, max_cells=MAX_DRAWN_CELLS)
    top = float(np.percentile(values[:, mask], 99))
    assert fig.layout.coloraxis.cmax == pytest.approx(top) and top < 1.0
    title = fig.layout.coloraxis.colorbar.title.text
    assert "99th percentile" in title and f"{top:.2g}" in title and "max 1" in title
    # Without saturation (or when the percentile is the max) the range is [0, max].
    assert heads_figure(
        values, mask, labels, labels, 2, max_cells=MAX_DRAWN_CELLS
    ).layout.coloraxis.cmax == pytest.approx(1.0)
    logits = heads_figure(
        values - 0.5,
        mask,
        labels,
        labels,
        2,
        kind="logits",
        saturate=99.0,
        max_cells=MAX_DRAWN_CELLS,
    )
    assert logits.layout.coloraxis.cmin == -logits.layout.coloraxis.cmax
