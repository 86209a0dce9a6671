"""Attention maps per query head, laid out by the K/V head each one shares. No Streamlit.

Axis letters as in :mod:`gqa_viz.core`: T query length, S key/value length, N query heads,
K kv heads, G = N // K, H head_dim. Query head n reads K/V head n // G.

Every figure here is a plain ``go.Figure`` whose axes are placed by hand with the grid kit
(:mod:`gqa_viz.figures.grid`; no ``make_subplots``), so a group's panels, its label and its
coloured frame line up exactly. :func:`heads_figure` writes its traces and layout as plain
dicts, and with ``frozen=True`` returns them as a
:class:`~gqa_viz.figures.shipping.FrozenFigure` without building graph objects (what the app
does for figures it sends on every rerun). A browser's cost grows with axes and traces, not
cells, so its panels share axes: one pair of axes per row of panels, and in it

* one heatmap trace per K/V group and row (``meta["role"] == "scores"``, named ``"kv{j}"``):
  the group's panels side by side, NaN in the key columns between them (``meta["heads"]``
  and ``meta["starts"]``: which heads, from which column; :func:`head_maps` takes them apart
  again), all on one shared colour axis (one colour bar);
* beneath it, when anything is masked, a grey heatmap of the masked cells
  (``meta["role"] == "mask"``, named ``"kv{j} masked"``). The scores are NaN at masked cells
  and the mask layer is NaN elsewhere, so each cell has exactly one hover label;
* the panels' outlines, one path shape over all of them.

Axes are categorical. A query is named ``"'cat' @1"`` (token and position; ``"@1"`` for random
inputs); a key's name also says whose panel it is in, ``"q head 3 (K/V head 1)<br>key 'cat'
@5"``, so that the row's axis tells the panels apart and the hover label names the head
(:attr:`HeadMap.keys` has the bare names). Tick labels are the bare tokens for short inputs
and every few positions otherwise. Maps of more than ``max_cells`` cells (the caller's cap)
are downsampled, by block max unless asked otherwise (:func:`pool_blocks`; the subtitle and
hover labels say so), and :func:`zoom_figure` draws a region of one at full resolution.

Also here: :func:`kv_heads_figure` (the K/V heads' keys and values), :func:`dropout_figure`
(one head's returned scores beside its dropped weights) and the data behind the heads
figure as download bytes (:func:`scores_csv`, :func:`mask_csv`, :func:`npy_bytes`).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from gqa_viz.figures.grid import (
    CHAR_PX,
    TICK_CHARS,
    TICK_FONT,
    TOKEN_TICKS,
    Geometry,
    Ticks,
    axis,
    badge,
    block_labels,
    categories,
    check_labels,
    figure_base,
    figure_base_dict,
    is_positional,
    left_margin,
    ticks,
)
from gqa_viz.figures.shipping import array_of, frozen_figure, trace_meta
from gqa_viz.figures.theme import (
    AXIS_LINE_COLOR,
    LOGIT_COLORSCALE,
    MASKED_COLOR,
    PROB_COLORSCALE,
    TEXT_MUTED,
    group_color,
)

# What each kind of value is called, its symbol in the hover label, and its colour scale.
KINDS = {
    "probs": ("attention<br>probability", "p", PROB_COLORSCALE),
    "logits": ("logit<br>q·k / √H", "logit", LOGIT_COLORSCALE),
    "dropped": ("weight after<br>dropout", "w", PROB_COLORSCALE),
}

NOMINAL_WIDTH = 820  # px the layout is planned for; the figure is drawn at its column's width
WIDE_WIDTH = 1000  # the same, for the K/V heads figure (a full-width expander on the page)
WIDEST_CELL_PX = 30.0  # widest key column: gaps between panels are whole columns
# The subtitle's line when a typed input is ticked by position (two lines, split after the
# colon, in a figure planned narrower than 640 px).
POSITION_TICKS_NOTE = "Ticks are positions (no room for every token): hover a cell for its tokens."
PERCENTILE_SAMPLE = 2_000_000  # cells a colour-scale percentile is estimated from, at most
POOLS = ("max", "mean")


# ---------------------------------------------------------------------------------------------
# Small helpers.


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _heads_range(first: int, last: int) -> str:
    return f"query head {first}" if first == last else f"query heads {first}–{last}"


def group_label(kv_head: int, groups: int, short: bool = False) -> str:
    """``"K/V head j · query heads a–b"``: the heads that read K/V head ``kv_head``. ``short``,
    for a narrow frame: ``"K/V j · qa–qb"``, or ``"K/V j"`` alone for a single head (whose
    own badge, right below, names it)."""
    a, b = kv_head * groups, kv_head * groups + groups - 1
    if short:
        return f"K/V {kv_head}" + ("" if a == b else f" · q{a}–q{b}")
    return f"K/V head {kv_head} · {_heads_range(a, b)}"


def _nth(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _as_float_array(x, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}.")
    if min(a.shape) <= 0:
        raise ValueError(f"{name} has an empty axis: shape {a.shape}.")
    return a


def _as_mask(mask, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(
            f"mask must have shape [T, S] = {list(shape)} (the scores' last two axes), "
            f"got {list(m.shape)}."
        )
    return m.astype(bool)


def _check_heads(n: int, k) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ValueError(f"num_key_value_heads must be a positive integer, got {k!r}.")
    if n % k:
        divisors = ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)
        raise ValueError(
            f"The {n} query heads cannot be shared by {k} K/V heads: num_key_value_heads must "
            f"divide num_query_heads ({divisors})."
        )
    return int(k)


def _visible(head: np.ndarray, mask: np.ndarray, kind: str) -> np.ndarray:
    v = head[..., mask]
    v = v[np.isfinite(v)]
    return np.abs(v) if kind == "logits" else v


def color_range(
    values: np.ndarray, mask: np.ndarray, kind: str, saturate: float | None = None
) -> tuple[float, float]:
    """One range for every head: [0, max] of the visible values, or ±max|logit| for logits.

    With ``saturate`` (a percentile, e.g. 99) the top is that percentile of the visible
    values instead of their max, so one dominant cell (causal query 0 always has p = 1)
    does not wash out every other head; colours saturate above it. Above
    ``PERCENTILE_SAMPLE`` cells the percentile is taken on an evenly strided sample of rows
    and columns (the max is always exact).
    """
    N, T, S = values.shape
    if saturate is None:
        top = 0.0
        if mask.any():
            with np.errstate(invalid="ignore"):
                hi = np.fmax.reduce(values, axis=(1, 2), where=mask, initial=-np.inf)
                lo = np.fmin.reduce(values, axis=(1, 2), where=mask, initial=np.inf)
            ends = np.concatenate([hi, -lo]) if kind == "logits" else hi
            ends = ends[np.isfinite(ends)]
            top = float(ends.max()) if ends.size else 0.0
    else:
        step = max(1, math.ceil(math.sqrt(N * T * S / PERCENTILE_SAMPLE)))
        sample = _visible(values[:, ::step, ::step], mask[::step, ::step], kind)
        top = float(np.percentile(sample, saturate)) if sample.size else 1.0
    top = top if top > 0 else 1.0
    return (-top, top) if kind == "logits" else (0.0, top)


def pool_factor(n_heads: int, T: int, S: int, *, max_cells: int) -> int:
    """The smallest block side f with ``n_heads`` x ceil(T / f) x ceil(S / f) <= max_cells."""
    f = max(1, math.floor(math.sqrt(n_heads * T * S / max_cells)))
    while n_heads * math.ceil(T / f) * math.ceil(S / f) > max_cells:
        f += 1
    return f


def pool_blocks(values: np.ndarray, mask: np.ndarray, f: int, how: str = "max", kind="probs"):
    """Downsample [N, T, S] to blocks of f x f cells, leaving masked cells out.

    ``how="max"`` keeps each block's largest value, so a thin band or one hot key stays
    visible at any size; for logits it keeps the value of largest magnitude, sign included.
    ``how="mean"`` averages the block's unmasked cells. A block is masked only when all of
    its cells are; the last block of an axis may be smaller than f. Returns the pooled
    [N, ceil(T/f), ceil(S/f)] values (NaN where masked) and the pooled [.., ..] mask.
    """
    if how not in POOLS:
        raise ValueError(f"how must be one of {', '.join(POOLS)}, got {how!r}.")
    N, T, S = values.shape
    rows, cols = np.arange(0, T, f), np.arange(0, S, f)
    counts = np.add.reduceat(np.add.reduceat(mask.astype(np.int32), rows, 0), cols, 1)
    pooled_mask = counts > 0
    out = np.empty((N, rows.size, cols.size), np.float32)

    def blocks(ufunc, head, fill):
        return ufunc.reduceat(ufunc.reduceat(np.where(mask, head, fill), rows, 0), cols, 1)

    with np.errstate(invalid="ignore", divide="ignore"):
        for n in range(N):  # one head at a time: a [T, S] temporary, not [N, T, S]
            head = values[n]
            if how == "mean":
                out[n] = blocks(np.add, head, 0.0) / counts
            elif kind == "logits":
                hi, lo = blocks(np.maximum, head, -np.inf), blocks(np.minimum, head, np.inf)
                out[n] = np.where(np.abs(lo) > np.abs(hi), lo, hi)
            else:
                out[n] = blocks(np.maximum, head, -np.inf)
    out[:, ~pooled_mask] = np.nan
    return out, pooled_mask


# (pool, logits?) -> (hover label word, subtitle phrase) for a downsampled cell.
_POOL_WORDS = {
    ("max", False): ("max", "the largest value"),
    ("max", True): ("largest |logit|", "the logit of largest magnitude"),
    ("mean", False): ("mean", "the mean"),
    ("mean", True): ("mean", "the mean"),
}


def _pool_sentence(f: int, how: str, kind: str, narrow: bool = False) -> str:
    what = _POOL_WORDS[how, kind == "logits"][1]
    return (
        f"Downsampled: each cell is {what}{'<br>' if narrow else ' '}of a {f}×{f} block of "
        "unmasked cells;<br>grey only where the whole block is masked."
    )


# ---------------------------------------------------------------------------------------------
# Layout: where each query head's panel goes.


@dataclass(frozen=True)
class Grid:
    """Panel positions (row, column) of the N query heads, grouped by K/V head."""

    n: int
    k: int
    cols: int  # panels per row in one group block
    groups_per_row: int  # group blocks side by side in one row (small G only)
    rows_per_group: int
    cells: tuple[tuple[int, int], ...]  # (row, column) of query head n

    @property
    def groups(self) -> int:
        return self.n // self.k

    @property
    def rows(self) -> int:
        return max(r for r, _ in self.cells) + 1

    @property
    def total_cols(self) -> int:
        return max(c for _, c in self.cells) + 1

    def group_rows(self, j: int) -> list[int]:
        g = self.groups
        return sorted({self.cells[n][0] for n in range(j * g, (j + 1) * g)})


def grid_layout(n: int, k: int) -> Grid:
    """One row per K/V group, G panels wide; long groups wrap, short ones share a row.

    At most 4 panels a row up to N = 8, 6 up to N = 12 and 8 beyond. A group of G > that wraps onto
    ceil(G / max) rows of equal length. With more than two groups, when two or more whole
    groups fit in a row (G <= max / 2) they sit side by side, each in its own frame.
    """
    g = n // k
    max_cols = 4 if n <= 8 else 6 if n <= 12 else 8
    if k > 2 and 2 * g <= max_cols:
        per_row, rows_per_group, cols = max_cols // g, 1, g
    else:
        per_row, rows_per_group = 1, -(-g // max_cols)
        cols = -(-g // rows_per_group)
    cells = []
    for head in range(n):
        j, i = divmod(head, g)
        block_row, block_col = divmod(j, per_row)
        r, c = divmod(i, cols)
        cells.append((block_row * rows_per_group + r, block_col * cols + c))
    return Grid(n, k, cols, per_row, rows_per_group, tuple(cells))


def _panels_path(panels, *, name: str, **style) -> dict:
    """One path shape of closed rectangles, (x0, x1, y0, y1) each in paper fractions."""
    path = "".join(f"M{x0:.6f},{y0:.6f}H{x1:.6f}V{y1:.6f}H{x0:.6f}Z" for x0, x1, y0, y1 in panels)
    return dict(
        type="path", xref="paper", yref="paper", path=path, layer="above", name=name, **style
    )


def _mask_legend(x: float, y: float, extra: str = "", xanchor: str = "right") -> dict:
    return dict(
        x=x,
        y=y,
        xref="paper",
        yref="paper",
        xanchor=xanchor,
        yanchor="bottom",
        showarrow=False,
        align="right",
        font=dict(size=12, color=TEXT_MUTED),
        text=f"<span style='color:{MASKED_COLOR}'>■</span> grey = masked (not attended){extra}",
        name="mask legend",
    )


# ---------------------------------------------------------------------------------------------
# The heads figure.


def heads_figure(
    values,
    mask,
    q_labels,
    k_labels,
    num_key_value_heads: int,
    kind: str = "probs",
    title: str | None = None,
    saturate: float | None = None,
    pool: str = "max",
    *,
    first_head: int = 0,
    q_start: int = 0,
    k_start: int = 0,
    max_cells: int,
    color_limits: tuple[float, float] | None = None,
    planned_width: float = NOMINAL_WIDTH,
    frozen: bool = False,
) -> go.Figure:
    """A panel per query head [N, T, S], in rows by the K/V head each one reads (drawn as one
    heatmap per K/V group and row of panels, see the module docstring).

    ``values``: probabilities, logits (before masking) or dropped weights, per ``kind``.
    ``mask``: [T, S] bool, True = the query may attend to the key (None: nothing masked).
    All heads share one colour scale: [0, max] for probabilities, ±max|logit| for logits,
    over the unmasked cells, or up to the ``saturate`` percentile (see :func:`color_range`;
    the colour bar then says so). Masked cells are grey, never a low score.

    More than ``max_cells`` cells are drawn as f x f blocks, pooled by ``pool`` (see
    :func:`pool_blocks`); the subtitle and hover labels say so. A zoomed region passes its
    place in the whole: ``first_head`` (a multiple of G, so groups stay whole), ``q_start``
    and ``k_start`` (positions of its first query and key), and the whole map's
    ``color_limits`` so its colours mean what they mean in the overview.

    ``planned_width``: px of the column the figure is shown in. Panel sizes, tick density and
    label lengths are planned for it (the figure then stretches to the column); a figure in
    half a page needs its own, or its tick labels collide. Panels never get narrower than
    40 px and gaps than one key column: where that is still too wide, the figure is planned
    wider and then drawn squeezed.

    ``frozen=True`` returns a :class:`~gqa_viz.figures.shipping.FrozenFigure` of the same
    figure, for a cache that sends it on many reruns: it is assembled from plain dicts without
    building graph objects (90 ms of Plotly validation at 32 heads of 64 x 64), and must not be
    changed. Otherwise a plain, mutable ``go.Figure``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    values = _as_float_array(values, "values [N, T, S]", 3)
    N, T, S = values.shape
    mask = _as_mask(mask, (T, S))
    q_labels, k_labels = check_labels(q_labels, k_labels, T, S)
    K = _check_heads(N, num_key_value_heads)
    G = N // K
    if first_head % G:
        raise ValueError(f"first_head ({first_head}) must be a multiple of G = {G}.")
    quantity, symbol, colorscale = KINDS[kind]
    if color_limits is not None:
        zmin, zmax = color_limits
        bar_title = f"{quantity}<br><sub>the overview's scale</sub>"
    else:
        zmin, zmax = color_range(values, mask, kind, saturate)
        full_top = color_range(values, mask, kind)[1] if saturate is not None else zmax
        if saturate is not None and zmax < full_top:
            bar_title = f"{quantity}<br><sub>darkest at ≥ {zmax:.2g}<br>({saturate:g}th percentile;<br>max {full_top:.2g})</sub>"
        else:
            bar_title = quantity

    # Too many cells for a browser: f x f blocks, pooled (subtitle and hover say how).
    f = pool_factor(N, T, S, max_cells=max_cells)
    if f > 1:
        shown, shown_mask = pool_blocks(values, mask, f, pool, kind)
        q_cats, q_starts = block_labels(T, f, q_start)
        k_cats, k_starts = block_labels(S, f, k_start)
        q_tick_labels, k_tick_labels = [str(a) for a in q_starts], [str(a) for a in k_starts]
    else:
        shown, shown_mask = values, mask
        q_cats, k_cats = categories(q_labels, q_start), categories(k_labels, k_start)
        q_starts = list(range(q_start, q_start + T)) if q_start else None
        k_starts = list(range(k_start, k_start + S)) if k_start else None
        q_tick_labels, k_tick_labels = q_labels, k_labels
    Tv, Sv = shown_mask.shape
    raw_masked = np.where(shown_mask, np.nan, shown).astype(np.float32)
    z_all = np.round(np.where(shown_mask, shown, np.nan), 4).astype(np.float32)  # [N, Tv, Sv]
    any_masked = not shown_mask.all()

    grid = grid_layout(N, K)
    ncols = grid.total_cols

    # --- pixel geometry -----------------------------------------------------------------
    packed = grid.groups_per_row > 1
    # Panels of one row share one categorical x axis, so gaps are whole key columns: one (or
    # a few) between panels, more between two groups side by side.
    vgap = 14.0
    # Provisional y tick room (tokens are at most ~12 characters wide).
    ylab = (
        min(max(len(t) for t in q_tick_labels), TICK_CHARS) * CHAR_PX + 12
        if not is_positional(q_labels) and T <= TOKEN_TICKS and f == 1
        else len(str(T)) * CHAR_PX + 12
    )
    narrow = planned_width < 640  # the subtitle's long sentences take two lines each
    top = (112 if f == 1 else 142) + (16 * (1 + (f > 1)) if narrow else 0)
    # The y tick labels and the group frames' left edge lie inside the plot area, in ``lead``
    # px before the first column, not in the left margin: the figure is drawn at its column's
    # width, where paper fractions stretch and pixel margins do not, so a frame reaching into
    # the margin ran off the figure's edge on a wide screen. The margin holds what the labels
    # need beyond ``lead`` when the figure is drawn narrower than planned (:func:`left_margin`).
    lead = ylab + 5
    margin = dict(l=left_margin(ylab), r=110, t=top, b=16)
    avail = planned_width - margin["l"] - margin["r"] - lead  # px for the panels and gaps
    n_block_gaps = (grid.groups_per_row - 1) if packed else 0

    def gaps(cell_px: float) -> tuple[int, int]:
        """Key columns between two panels, and between two groups side by side (~8, ~18 px;
        one column, not two, once a column is wide enough to part groups on its own)."""
        gap = max(1, round(8.0 / cell_px))
        return gap, max(gap + (cell_px < 12.0), round(18.0 / cell_px))

    panel_w = (avail - (ncols - 1) * 8.0 - n_block_gaps * 10.0) / ncols
    for _ in range(2):  # the gaps are whole columns: fit panels and gaps to the width
        panel_w = max(40.0, min(panel_w, 260.0, WIDEST_CELL_PX * Sv))
        gap, block_gap = gaps(panel_w / Sv)
        columns = ncols * Sv + (ncols - 1 - n_block_gaps) * gap + n_block_gaps * block_gap
        panel_w = avail / columns * Sv
    panel_w = max(40.0, min(panel_w, 260.0, WIDEST_CELL_PX * Sv))
    cell_w = panel_w / Sv  # px of one key column
    gap, block_gap = gaps(cell_w)
    panel_h = max(48.0, min(panel_w * min(max(Tv / Sv, 0.5), 2.0), 320.0))
    xt = ticks(k_tick_labels, k_cats, cell_w, "x", k_starts)
    yt = ticks(q_tick_labels, q_cats, panel_h / Tv, "y", q_starts)
    label_h, title_h = 22.0, 17.0

    # Columns: the first key column of each grid column, counted along its row's x axis.
    col_at = []
    at = 0
    for c in range(ncols):
        if c:
            at += block_gap if packed and c % grid.cols == 0 else gap
        col_at.append(at)
        at += Sv
    col_x = [lead + a * cell_w for a in col_at]  # px of each grid column's left edge
    content_w = col_x[-1] + panel_w
    # Rows: the top of each grid row's panel; a label band above a row that starts a group.
    starts_group = set()
    for j in range(K):
        starts_group.add(grid.group_rows(j)[0])
    row_top, y = [], 0.0
    for r in range(grid.rows):
        if r in starts_group:
            y += label_h
        y += title_h
        row_top.append(y)
        y += panel_h + xt.extent_px + vgap
    plot_h = max(y, 160.0)  # room for the colour bar and its title beside one short row
    plot_w = max(float(avail + lead), content_w)  # panels at their least width may need more
    geo = Geometry(plot_w, plot_h, margin)

    default_title = {
        "probs": "Attention probabilities of every query head",
        "logits": "Attention logits of every query head",
        "dropped": "Attention weights after dropout, every query head",
    }[kind]
    subtitle = (
        "Rows: queries (top to bottom); columns: keys.<br>"
        f"Query head n reads K/V head n // G (G = {G}):{'<br>' if narrow else ' '}"
        "the heads in one frame share it."
    )
    if f > 1:
        subtitle += f"<br>{_pool_sentence(f, pool, kind, narrow)}"
    elif (xt.positions and not is_positional(k_labels)) or (
        yt.positions and not is_positional(q_labels)
    ):
        # Tokens a student typed, labelled by number: say why, and where the tokens are.
        note = POSITION_TICKS_NOTE.replace(": ", ":<br>") if narrow else POSITION_TICKS_NOTE
        subtitle += f"<br>{note}"
        margin["t"] += 16 * (1 + narrow)
    layout = figure_base_dict(
        title or default_title, subtitle, plot_h + margin["t"] + margin["b"], margin
    )

    # --- one pair of axes per grid row ------------------------------------------------------
    # A key's category names its panel's query head, "q head 3 (K/V head 1)<br>key 'cat' @5":
    # unique on the row's axis, and the first two lines of the hover label. (Not a head
    # number per cell: every typed array of a chart costs the browser again when Streamlit
    # copies the drawn figure.) ASCII: thousands of non-ASCII characters spread through the
    # figure's JSON made Plotly's encoding of every rerun 70 % slower.
    head_at = {cell: h for h, cell in enumerate(grid.cells)}
    key_word = "keys" if f > 1 else "key"

    def head_name(h: int) -> str:
        return f"q head {h + first_head} (K/V head {h // G + first_head // G})<br>{key_word} "

    row_cols = [sorted({c for r2, c in grid.cells if r2 == r}) for r in range(grid.rows)]
    row_cats, annotations, shapes = [], [], []
    for r, cols in enumerate(row_cols):
        cats = []
        for c in range(cols[0], cols[-1] + 1):
            if c > cols[0]:
                cats += [f"gap {c}.{i}" for i in range(col_at[c] - col_at[c - 1] - Sv)]
            cats += [head_name(head_at[r, c]) + cat for cat in k_cats]
        row_cats.append(cats)
        i = r + 1
        xa, ya = ("x", "y") if i == 1 else (f"x{i}", f"y{i}")
        x_ticks = Ticks(
            [head_name(head_at[r, c]) + v for c in cols for v in xt.vals],
            list(xt.text) * len(cols),
            xt.angle,
            xt.extent_px,
        )
        x0, x1 = col_x[cols[0]], col_x[cols[-1]] + panel_w
        y0, y1 = row_top[r], row_top[r] + panel_h
        layout[f"xaxis{'' if i == 1 else i}"] = dict(
            axis([geo.x(x0), geo.x(x1)], ya, x_ticks, cats, True, False), showline=False
        )
        layout[f"yaxis{'' if i == 1 else i}"] = dict(
            axis([geo.y(y1), geo.y(y0)], xa, yt, q_cats, True, True), showline=False
        )

    data = []
    # The grey layer: the unused logits where masked (per head), else 1 where masked (shared).
    grey_all = np.round(raw_masked, 4) if kind == "logits" else np.where(shown_mask, np.nan, 1.0)
    where = f"%{{x}}<br>{'queries' if f > 1 else 'query'} %{{y}}"
    value_fmt = ":.2f" if kind == "logits" else ":.3f"
    agg = f" ({_POOL_WORDS[pool, kind == 'logits'][0]} of the block)" if f > 1 else ""
    masked_note = f"masked (logit %{{z{value_fmt}}} not used)" if kind == "logits" else "masked"
    panels = []  # every panel's (x0, x1, y0, y1) in paper fractions, for its outline
    for jj in range(K):
        j = jj + first_head // G  # the K/V head the group reads, numbered in the whole layer
        heads = range(jj * G, (jj + 1) * G)
        for r in grid.group_rows(jj):
            mine = [h for h in heads if grid.cells[h][0] == r]
            first_col, last_col = grid.cells[mine[0]][1], grid.cells[mine[-1]][1]
            lo = col_at[first_col] - col_at[row_cols[r][0]]
            hi = col_at[last_col] - col_at[row_cols[r][0]] + Sv
            starts = [col_at[grid.cells[h][1]] - col_at[first_col] for h in mine]
            z = np.full((Tv, hi - lo), np.nan, np.float32)  # [Tv, the segment's columns]
            grey = np.full((Tv, hi - lo), np.nan, np.float32)
            for h, x in zip(mine, starts, strict=True):
                z[:, x : x + Sv] = z_all[h]
                grey[:, x : x + Sv] = grey_all[h] if kind == "logits" else grey_all
            i = r + 1
            xa, ya = ("x", "y") if i == 1 else (f"x{i}", f"y{i}")
            common = dict(
                type="heatmap",
                x=row_cats[r][lo:hi],
                y=q_cats,
                xaxis=xa,
                yaxis=ya,
                hoverongaps=False,
            )
            meta = {
                "kv_head": j,
                "heads": [h + first_head for h in mine],
                "starts": starts,  # each head's first column in this trace
                "keys": Sv,  # columns per head
            }
            if any_masked:
                data.append(
                    dict(
                        common,
                        z=grey,
                        colorscale=[[0, MASKED_COLOR], [1, MASKED_COLOR]],
                        showscale=False,
                        name=f"kv{j} masked",
                        meta={"role": "mask", **meta},
                        hovertemplate=f"{where}<br>{masked_note}<extra></extra>",
                    )
                )
            data.append(
                dict(
                    common,
                    z=z,
                    coloraxis="coloraxis",
                    name=f"kv{j}",
                    meta={"role": "scores", **meta},
                    hovertemplate=f"{where}<br>{symbol} = %{{z{value_fmt}}}{agg}<extra></extra>",
                )
            )
            for h in mine:
                c = grid.cells[h][1]
                panels.append(
                    (
                        geo.x(col_x[c]),
                        geo.x(col_x[c] + panel_w),
                        geo.y(row_top[r] + panel_h),
                        geo.y(row_top[r]),
                    )
                )
                annotations.append(
                    badge(
                        geo.x(col_x[c]),
                        geo.y(row_top[r] - 2),
                        f"q{h + first_head}",
                        group_color(j),
                        size=10,
                        name=f"q{h + first_head}",
                    )
                )

    # One frame and one label per K/V group.
    for jj in range(K):
        j = jj + first_head // G
        heads = range(jj * G, (jj + 1) * G)
        cols = [grid.cells[h][1] for h in heads]
        rows = grid.group_rows(jj)
        gx0 = col_x[min(cols)] - 5 - (yt.extent_px if min(cols) == 0 else 0)
        gx1 = col_x[max(cols)] + panel_w + 5
        gy0 = row_top[rows[0]] - title_h - label_h + 2
        gy1 = row_top[rows[-1]] + panel_h + xt.extent_px + 4
        color = group_color(j)
        shapes.append(
            dict(
                type="rect",
                xref="paper",
                yref="paper",
                x0=geo.x(gx0),
                x1=geo.x(gx1),
                y0=geo.y(gy1),
                y1=geo.y(gy0),
                line=dict(color=color, width=2),
                fillcolor=_rgba(color, 0.07),
                layer="below",
                name=f"kv{j}",
            )
        )
        # Long label only where it fits even when the figure is drawn narrower than planned.
        short = 0.8 * (gx1 - gx0) < 7.0 * len(group_label(j, G)) + 12
        annotations.append(
            badge(
                geo.x(gx0 + 1),
                geo.y(gy0 + label_h - 3),
                f"<b>{group_label(j, G, short=short)}</b>",
                color,
                size=11,
                name=f"group {j}",
            )
        )

    # The panels' outlines, above them: one path, since the browser draws a shape at about
    # the cost of a trace.
    shapes.append(
        _panels_path(panels, line=dict(color=AXIS_LINE_COLOR, width=1), name="panel outlines")
    )

    colorbar_x = geo.x(content_w + 16)
    layout.update(
        coloraxis=dict(
            colorscale=colorscale,
            cmin=zmin,
            cmax=zmax,
            colorbar=dict(
                title=dict(text=bar_title, side="top"),
                x=min(colorbar_x, 1.02),
                xref="paper",
                xanchor="left",
                y=1.0,
                yanchor="top",
                len=min(300.0, plot_h),
                lenmode="pixels",
                thickness=14,
                outlinewidth=0,
                tickfont=dict(size=10),
            ),
        ),
        shapes=shapes,
    )
    if any_masked:
        extra = "; white = dropped" if kind == "dropped" else ""
        legend_x = geo.x(col_x[0] - yt.extent_px)
        annotations.append(_mask_legend(legend_x, 1.0 + 6.0 / plot_h, extra, "left"))
    layout["annotations"] = annotations
    if frozen:
        return frozen_figure(data, layout)
    return go.Figure(data=data, layout=layout)


@dataclass(frozen=True)
class HeadMap:
    """One query head's panel, taken back out of a heads figure."""

    z: np.ndarray  # [Tv, Sv] as drawn (NaN where another layer covers the cell)
    x: list[str]  # its key categories, on its row's axis ("q head 3 (K/V head 1)<br>key 'a' @0")
    y: list[str]  # its query categories
    xaxis: str  # the row's axes, as the traces name them ("x2", "y2")
    yaxis: str

    @property
    def keys(self) -> list[str]:
        """The keys' names as the hover label shows them (``"'a' @0"``), without the head."""
        return [c.split("<br>", 1)[1].split(" ", 1)[1] for c in self.x]


def head_maps(fig: go.Figure | dict, role: str = "scores") -> dict[int, HeadMap]:
    """Every query head's panel of :func:`heads_figure`'s traces of ``role`` ("scores" or
    "mask"), by head number: what one trace per head would have held. ``fig``: the figure,
    or the JSON spec a page sends of it (a dict, arrays as typed-array specs)."""
    traces = fig["data"] if isinstance(fig, dict) else [t.to_plotly_json() for t in fig.data]
    maps = {}
    for trace in traces:
        meta = trace_meta(trace)
        if meta.get("role") != role:
            continue
        z, width = array_of(trace["z"]).astype(float), meta["keys"]
        x, y = list(trace["x"]), list(trace["y"])
        axes = trace.get("xaxis", "x"), trace.get("yaxis", "y")
        for head, start in zip(meta["heads"], meta["starts"], strict=True):
            cols = slice(start, start + width)
            maps[head] = HeadMap(z[:, cols], x[cols], y, *axes)
    return dict(sorted(maps.items()))


def _region_labels(labels, first: int, last: int) -> list[str]:
    # Positional labels restart at "0": heads_figure adds the region's start to them.
    labels = [str(t) for t in labels]
    if is_positional(labels):
        return [str(i) for i in range(last - first + 1)]
    return labels[first : last + 1]


def zoom_figure(
    values,
    mask,
    q_labels,
    k_labels,
    num_key_value_heads: int,
    *,
    group: int | None,
    queries: tuple[int, int],
    keys: tuple[int, int],
    kind: str = "probs",
    saturate: float | None = None,
    max_cells: int,
) -> go.Figure:
    """A region of :func:`heads_figure`'s map at full resolution, on the whole map's colours.

    ``group``: the K/V head whose G query heads are shown (None: all heads); ``queries`` and
    ``keys``: inclusive (first, last) positions. Raises ValueError when the region has more
    than ``max_cells`` cells, rather than pooling it.
    """
    values = _as_float_array(values, "values [N, T, S]", 3)
    N, T, S = values.shape
    mask = _as_mask(mask, (T, S))
    K = _check_heads(N, num_key_value_heads)
    G = N // K
    (q0, q1), (k0, k1) = queries, keys
    if not (0 <= q0 <= q1 < T and 0 <= k0 <= k1 < S):
        raise ValueError(
            f"The region queries {q0}–{q1}, keys {k0}–{k1} is outside the map "
            f"(queries 0–{T - 1}, keys 0–{S - 1})."
        )
    if group is not None and not 0 <= group < K:
        raise ValueError(f"group must be a K/V head, 0 to {K - 1}, got {group}.")
    heads = slice(0, N) if group is None else slice(group * G, group * G + G)
    region = values[heads, q0 : q1 + 1, k0 : k1 + 1]
    if region.size > max_cells:
        n, rows, cols = region.shape
        raise ValueError(
            f"This region is {n} head(s) × {rows} queries × {cols} keys = {region.size:,} "
            f"cells; at most {max_cells:,} are drawn at full resolution. Narrow the query or "
            "key range."
        )
    span = f"queries {q0}–{q1}, keys {k0}–{k1}"
    who = "all heads" if group is None else group_label(group, G)
    return heads_figure(
        region,
        mask[q0 : q1 + 1, k0 : k1 + 1],
        _region_labels(q_labels, q0, q1),
        _region_labels(k_labels, k0, k1),
        K if group is None else 1,
        kind=kind,
        title=f"Zoom: {who}, {span} (every cell exact)",
        first_head=heads.start,
        q_start=q0,
        k_start=k0,
        max_cells=max_cells,
        color_limits=color_range(values, mask, kind, saturate),
    )


# ---------------------------------------------------------------------------------------------
# The K/V heads themselves.


def kv_heads_figure(keys, values, k_labels, num_query_heads: int, *, max_cells: int) -> go.Figure:
    """Each K/V head's key vectors and value vectors [S, H], one column per K/V head.

    ``keys``, ``values``: [S, K, H] (one batch item). Column j is titled with the query heads
    that read it; keys and values have their own symmetric colour scale. Beyond ``max_cells``
    cells (keys and values together) every few positions and dims are shown.
    """
    keys = _as_float_array(keys, "keys [S, K, H]", 3)
    vals = _as_float_array(values, "values [S, K, H]", 3)
    if keys.shape != vals.shape:
        raise ValueError(
            f"keys and values must have the same shape [S, K, H], got {list(keys.shape)} and "
            f"{list(vals.shape)}."
        )
    S, K, H = keys.shape
    k_labels = [str(t) for t in k_labels]
    if len(k_labels) != S:
        raise ValueError(f"k_labels has {len(k_labels)} labels for S = {S} keys.")
    N = num_query_heads
    if isinstance(N, bool) or not isinstance(N, int | np.integer) or N <= 0:
        raise ValueError(f"num_query_heads must be a positive integer, got {N!r}.")
    N = int(N)
    _check_heads(N, K)
    G = N // K
    # Too many cells: show every fs-th position and every fh-th dim (values, not means).
    fs = fh = 1
    while 2 * math.ceil(S / fs) * K * math.ceil(H / fh) > max_cells:
        if math.ceil(S / fs) >= math.ceil(H / fh):
            fs += 1
        else:
            fh += 1
    rows_shown, dims_shown = list(range(0, S, fs)), list(range(0, H, fh))
    keys, vals = keys[rows_shown][:, :, dims_shown], vals[rows_shown][:, :, dims_shown]
    all_cats = categories(k_labels)
    cats = [all_cats[i] for i in rows_shown]
    shown_labels = [k_labels[i] for i in rows_shown]
    dims = [f"dim {h}" for h in dims_shown]
    Sv, Hv = len(rows_shown), len(dims_shown)

    per_row = min(K, 8)
    blocks = -(-K // per_row)
    hgap, title_h, vgap = 16.0, 24.0, 10.0
    ylab = (
        min(max(len(t) for t in shown_labels), TICK_CHARS) * CHAR_PX + 10
        if not is_positional(k_labels) and S <= TOKEN_TICKS
        else len(str(S)) * CHAR_PX + 10
    )
    # The row names ("keys K"), y tick labels and frames' left edge lie inside the plot area,
    # in ``lead`` px before the first column (as in heads_figure: a figure stretched to a wide
    # column stretches paper fractions, not pixel margins).
    lead = ylab + 38
    margin = dict(l=left_margin(ylab), r=110, t=80 if fs == fh == 1 else 96, b=16)
    avail = WIDE_WIDTH - margin["l"] - margin["r"]
    panel_w = max(40.0, min((avail - lead - (per_row - 1) * hgap) / per_row, 200.0))
    panel_h = max(48.0, min(panel_w * min(max(Sv / Hv, 0.4), 2.5), 260.0))
    yt = ticks(shown_labels, cats, panel_h / Sv, "y", rows_shown if fs > 1 else None)
    xt = ticks([str(h) for h in dims_shown], dims, panel_w / Hv, "x", dims_shown)
    xt = Ticks(xt.vals, xt.text, 0, TICK_FONT + 8)
    tops, y = [], 0.0
    for _ in range(blocks):
        y += title_h
        tops.append(y)
        y += 2 * panel_h + vgap + 2 * (xt.extent_px + 4) + 18
    geo = Geometry(float(avail), y, margin)
    fig = go.Figure()
    subtitle = (
        "Rows: key/value positions; columns: head_dim. Each K/V head is read by G = "
        f"{G} query head{'s' if G > 1 else ''}."
    )
    if fs > 1 or fh > 1:
        parts = [f"every {_nth(f)} {what}" for f, what in ((fs, "position"), (fh, "dim")) if f > 1]
        subtitle += f"<br>Too many cells to draw: showing {' and '.join(parts)}."
    figure_base(
        fig,
        "The K/V heads: projected keys and values",
        subtitle,
        y + margin["t"] + margin["b"],
        margin,
    )
    ranges = []
    for a in (keys, vals):
        top = float(np.abs(a).max()) or 1.0
        ranges.append((-top, top))
    annotations, shapes = [], []
    for j in range(K):
        block, c = divmod(j, per_row)
        x0 = lead + c * (panel_w + hgap)
        color = group_color(j)
        top = tops[block]
        for part, (name, arr) in enumerate((("k", keys), ("v", vals))):
            py0 = top + part * (panel_h + xt.extent_px + 4 + vgap)
            i = 2 * j + part + 1
            xa, ya = ("x", "y") if i == 1 else (f"x{i}", f"y{i}")
            fig.layout[f"xaxis{'' if i == 1 else i}"] = axis(
                [geo.x(x0), geo.x(x0 + panel_w)], ya, xt, dims, True, False
            )
            fig.layout[f"yaxis{'' if i == 1 else i}"] = axis(
                [geo.y(py0 + panel_h), geo.y(py0)], xa, yt, cats, c == 0, True
            )
            if c == 0:
                annotations.append(
                    dict(
                        x=geo.x(x0 - yt.extent_px - 22),
                        y=geo.y(py0 + panel_h / 2),
                        xref="paper",
                        yref="paper",
                        textangle=-90,
                        showarrow=False,
                        text="keys K" if part == 0 else "values V",
                        font=dict(size=12, color=TEXT_MUTED),
                        name=f"row {name}",
                    )
                )
            fig.add_trace(
                go.Heatmap(
                    z=np.round(arr[:, j, :], 4).astype(np.float32),
                    x=dims,
                    y=cats,
                    xaxis=xa,
                    yaxis=ya,
                    coloraxis="coloraxis" if part == 0 else "coloraxis2",
                    name=f"{name}{j}",
                    meta={"role": "keys" if part == 0 else "values", "kv_head": j},
                    hovertemplate=f"K/V head {j} · {'key' if part == 0 else 'value'} "
                    f"%{{y}}<br>%{{x}}<br>{name} = %{{z:.3f}}<extra></extra>",
                )
            )
        a, b = j * G, j * G + G - 1
        readers = f"q{a}" if a == b else f"q{a}..{b}"
        text = f"<b>K/V head {j} → read by {readers}</b>"
        if panel_w < 7.0 * len(text) - 40:
            text = f"<b>K/V {j} → {readers}</b>"
        annotations.append(badge(geo.x(x0), geo.y(top - 3), text, color, name=f"kv{j}"))
        bottom = top + 2 * panel_h + 2 * (xt.extent_px + 4) + vgap + 4
        shapes.append(
            dict(
                type="rect",
                xref="paper",
                yref="paper",
                x0=geo.x(x0 - 5 - (yt.extent_px if c == 0 else 0)),
                x1=geo.x(x0 + panel_w + 5),
                y0=geo.y(bottom),
                y1=geo.y(top - 3),
                line=dict(color=color, width=2),
                fillcolor=_rgba(color, 0.07),
                layer="below",
                name=f"kv{j}",
            )
        )
    content_w = lead + (per_row - 1) * (panel_w + hgap) + panel_w
    cb = dict(
        x=min(geo.x(content_w + 16), 1.02),
        xanchor="left",
        lenmode="pixels",
        len=min(200.0, y / 2 - 10),
        thickness=12,
        outlinewidth=0,
        tickfont=dict(size=10),
    )
    fig.update_layout(
        coloraxis=dict(
            colorscale=LOGIT_COLORSCALE,
            cmin=ranges[0][0],
            cmax=ranges[0][1],
            colorbar=dict(cb, title=dict(text="key<br>entry", side="top"), y=1.0, yanchor="top"),
        ),
        coloraxis2=dict(
            colorscale=LOGIT_COLORSCALE,
            cmin=ranges[1][0],
            cmax=ranges[1][1],
            colorbar=dict(
                cb, title=dict(text="value<br>entry", side="top"), y=0.0, yanchor="bottom"
            ),
        ),
        annotations=annotations,
        shapes=shapes,
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Dropout: what Keras returns beside what the output uses.

DROPOUT_CAPTION = (
    "Keras returns the scores <b>before</b> dropout (left).<br>"
    "The output is computed from the dropped weights (right), the kept ones scaled by 1 / (1 − rate)."
)


def dropout_figure(
    probs,
    dropped,
    mask,
    q_labels,
    k_labels,
    head: int,
    rate: float,
    kv_head: int | None = None,
) -> go.Figure:
    """One head's returned scores [T, S] beside its dropped-and-rescaled weights, one scale."""
    probs = _as_float_array(probs, "probs [T, S]", 2)
    dropped = _as_float_array(dropped, "dropped [T, S]", 2)
    if probs.shape != dropped.shape:
        raise ValueError(
            f"probs and dropped must have the same shape [T, S], got {list(probs.shape)} and "
            f"{list(dropped.shape)}."
        )
    T, S = probs.shape
    mask = _as_mask(mask, (T, S))
    q_labels, k_labels = check_labels(q_labels, k_labels, T, S)
    both = np.stack([probs, dropped])
    zmin, zmax = color_range(both, mask, "probs")
    q_cats, k_cats = categories(q_labels), categories(k_labels)
    margin = dict(l=90, r=110, t=90, b=64)
    avail = NOMINAL_WIDTH - margin["l"] - margin["r"]
    gap = 60.0
    panel_w = min((avail - gap) / 2, 340.0)
    panel_h = max(80.0, min(panel_w * min(max(T / S, 0.5), 2.0), 360.0))
    xt = ticks(k_labels, k_cats, panel_w / S, "x")
    yt = ticks(q_labels, q_cats, panel_h / T, "y")
    title_h = 22.0
    height = title_h + panel_h + xt.extent_px + 6
    geo = Geometry(float(avail), height, margin)
    who = f"q head {head}" + ("" if kv_head is None else f" (K/V head {kv_head})")
    fig = go.Figure()
    figure_base(
        fig,
        f"Dropout on {who}: rate {rate:g}",
        "Same colour scale on both sides; white cells on the right were dropped.",
        height + margin["t"] + margin["b"],
        margin,
    )
    panels = (
        ("returned scores (before dropout)", probs, "p"),
        (f"after dropout, × 1/(1 − {rate:g})", dropped, "w"),
    )
    annotations = []
    masked = not mask.all()
    for p, (label, arr, sym) in enumerate(panels):
        x0 = p * (panel_w + gap)
        i = p + 1
        xa, ya = ("x", "y") if i == 1 else (f"x{i}", f"y{i}")
        fig.layout[f"xaxis{'' if i == 1 else i}"] = axis(
            [geo.x(x0), geo.x(x0 + panel_w)], ya, xt, k_cats, True, False
        )
        fig.layout[f"yaxis{'' if i == 1 else i}"] = axis(
            [geo.y(title_h + panel_h), geo.y(title_h)], xa, yt, q_cats, True, True
        )
        base = f"{who}<br>query %{{y}}<br>key %{{x}}"
        if masked:
            fig.add_trace(
                go.Heatmap(
                    z=np.where(mask, np.nan, 1.0).astype(np.float32),
                    x=k_cats,
                    y=q_cats,
                    xaxis=xa,
                    yaxis=ya,
                    colorscale=[[0, MASKED_COLOR], [1, MASKED_COLOR]],
                    showscale=False,
                    hoverongaps=False,
                    name=f"{sym} masked",
                    meta={"role": "mask", "head": head},
                    hovertemplate=f"{base}<br>masked<extra></extra>",
                )
            )
        fig.add_trace(
            go.Heatmap(
                z=np.round(np.where(mask, arr, np.nan), 4).astype(np.float32),
                x=k_cats,
                y=q_cats,
                xaxis=xa,
                yaxis=ya,
                coloraxis="coloraxis",
                hoverongaps=False,
                name=label,
                meta={"role": "scores", "head": head},
                hovertemplate=f"{base}<br>{sym} = %{{z:.3f}}<extra></extra>",
            )
        )
        annotations.append(
            dict(
                x=geo.x(x0),
                y=geo.y(title_h - 4),
                xref="paper",
                yref="paper",
                xanchor="left",
                yanchor="bottom",
                showarrow=False,
                text=f"<b>{label}</b>",
                font=dict(size=12),
            )
        )
    annotations.append(
        dict(
            x=0.0,
            y=0.0,
            xref="paper",
            yref="paper",
            yshift=-margin["b"] + 6,
            xanchor="left",
            yanchor="bottom",
            showarrow=False,
            text=DROPOUT_CAPTION,
            align="left",
            font=dict(size=12, color=TEXT_MUTED),
            name="caption",
        )
    )
    if masked:
        annotations.append(_mask_legend(geo.x(2 * panel_w + gap), 1.0 + 4.0 / height))
    fig.update_layout(
        annotations=annotations,
        coloraxis=dict(
            colorscale=PROB_COLORSCALE,
            cmin=zmin,
            cmax=zmax,
            colorbar=dict(
                title=dict(text="attention<br>weight", side="top"),
                x=min(geo.x(2 * panel_w + gap + 16), 1.02),
                xanchor="left",
                thickness=14,
                outlinewidth=0,
                tickfont=dict(size=10),
            ),
        ),
    )
    return fig


# ---------------------------------------------------------------------------------------------
# The data behind the heads figure, for download.

SCORES_CSV_HEADER = "head,kv_head,query_pos,query_token,key_pos,key_token,score,masked"


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def scores_csv(values, mask, q_labels, k_labels, num_key_value_heads: int) -> bytes:
    """[N, T, S] values in long format, one row per (head, query, key); ``masked`` is 0/1."""
    values = _as_float_array(values, "values [N, T, S]", 3)
    N, T, S = values.shape
    mask = _as_mask(mask, (T, S))
    q_labels, k_labels = check_labels(q_labels, k_labels, T, S)
    G = N // _check_heads(N, num_key_value_heads)
    q_tok, k_tok = [_csv_field(t) for t in q_labels], [_csv_field(t) for t in k_labels]
    lines = [SCORES_CSV_HEADER]
    for n in range(N):
        prefix = f"{n},{n // G}"
        for i in range(T):
            row = values[n, i].tolist()
            lines.extend(
                f"{prefix},{i},{q_tok[i]},{j},{k_tok[j]},{row[j]:.6g},{int(not mask[i, j])}"
                for j in range(S)
            )
    return ("\n".join(lines) + "\n").encode()


def mask_csv(mask, q_labels, k_labels) -> bytes:
    """[T, S] mask in long format: query_pos, query_token, key_pos, key_token, allowed (0/1)."""
    q_labels, k_labels = [str(t) for t in q_labels], [str(t) for t in k_labels]
    mask = _as_mask(mask, (len(q_labels), len(k_labels)))
    lines = ["query_pos,query_token,key_pos,key_token,allowed"]
    for i, qt in enumerate(q_labels):
        lines.extend(
            f"{i},{_csv_field(qt)},{j},{_csv_field(kt)},{int(mask[i, j])}"
            for j, kt in enumerate(k_labels)
        )
    return ("\n".join(lines) + "\n").encode()


def npy_bytes(array) -> bytes:
    """``array`` as the bytes of a .npy file (``np.load(io.BytesIO(b))`` reads it back)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()
