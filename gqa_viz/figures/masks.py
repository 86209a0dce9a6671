"""Boolean mask grids for the Mask Lab. No Streamlit.

Axis letters as in :mod:`gqa_viz.core`: T query length (rows, top to bottom), S key/value
length (columns). A mask is a [T, S] bool array, True = the query may attend to the key.

Every figure is a row (or rows) of equally sized panels drawn by :func:`grid_figure`, with
axes placed by hand with the grid kit it shares with :mod:`gqa_viz.figures.heads`
(:mod:`gqa_viz.figures.grid`):

* each panel is one heatmap trace per cell category (``meta["role"] == "cells"``, with
  ``meta["panel"]`` and ``meta["code"]``): for a boolean mask code 1 ("attend",
  ``ATTEND_COLOR``) and code 0 ("masked", ``MASK_OFF_COLOR``). A trace is NaN outside its
  category, so each cell has exactly one hover label naming what it is;
* a panel's title is a coloured badge (``name == "panel {i}"``); the operator joining two
  panels ("&", "|", "=") sits in the gap between them (``name == "op {i}"``);
* beside the last panel, optional row markers (``meta["role"] == "rows"``): a vermillion ✕
  for a query with no allowed key, an orange ● for a query with exactly one;
* at the right, an optional side panel sharing the query axis (``meta["role"] == "side"``):
  keys per query, or how much the output changed per query.

Grids of more than ``max_cells`` cells in all (the caller's cap) are drawn coarser: boolean panels as the
fraction of allowed pairs per f×f block, other panels every f-th position (the subtitle
says which).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from gqa_viz.figures.grid import (
    CHAR_PX,
    TICK_CHARS,
    TICK_FONT,
    Geometry,
    axis,
    badge,
    block_labels,
    categories,
    check_labels,
    figure_base,
    is_positional,
    ticks,
)
from gqa_viz.figures.theme import (
    ATTEND_COLOR,
    AXIS_LINE_COLOR,
    EMPTY_BLOCK_COLOR,
    EMPTY_BLOCK_FADE,
    EMPTY_BLOCK_FILL,
    FINAL_MASK_COLOR,
    FULL_BLOCK_COLOR,
    FULLY_MASKED_ROW_COLOR,
    GRID_LINE_COLOR,
    MASK_OFF_COLOR,
    NEUTRAL_BADGE_COLOR,
    ONLY_BOTTOM_RIGHT_COLOR,
    ONLY_TOP_LEFT_COLOR,
    PAPER_BG,
    PARTIAL_BLOCK_COLOR,
    SINGLE_KEY_ROW_COLOR,
    TEXT_DARK,
    TEXT_MUTED,
    WINDOW_COLORS,
    component_color,
)
from gqa_viz.mask_tools import block_skip

WIDTH = 1100  # px the layout is planned for (the page's main column); it stretches
PANELS_PER_ROW = 4
# (colour, name) per code of a boolean mask: 0 masked, 1 attend.
BOOL_CODES = ((MASK_OFF_COLOR, "masked"), (ATTEND_COLOR, "attend"))
# Codes of :func:`alignment_figure`'s difference panel.
ALIGN_CODES = (
    (MASK_OFF_COLOR, "masked in both"),
    (ONLY_TOP_LEFT_COLOR, "only top-left allows"),
    (ONLY_BOTTOM_RIGHT_COLOR, "only bottom-right allows"),
    (ATTEND_COLOR, "both allow"),
)
# Codes of :func:`block_figure` with one cell per tile: what a block-sparse kernel does.
BLOCK_CODES = (
    (EMPTY_BLOCK_FILL, "empty: skipped"),
    (PARTIAL_BLOCK_COLOR, "partial: computed, then masked"),
    (FULL_BLOCK_COLOR, "full: computed, no mask needed"),
)
OPERATORS = {"and": "&", "or": "|"}


@dataclass(frozen=True)
class Panel:
    """One grid: a title, cell codes [T, S] (a bool mask is codes 0/1), and its badge colour."""

    title: str
    cells: np.ndarray
    color: str = NEUTRAL_BADGE_COLOR
    codes: tuple[tuple[str, str], ...] = BOOL_CODES


@dataclass(frozen=True)
class Side:
    """A panel right of the grids sharing their query axis: one line (or bar) per series."""

    title: str
    series: tuple[tuple[str, np.ndarray, str], ...]  # (name, values [T], colour)
    kind: str = "lines"  # "lines" or "bars"
    x_title: str = ""
    fmt: str = ".0f"


@dataclass(frozen=True)
class _AxisSpec:
    cats: list[str]
    labels: list[str]  # tick source (tokens, or positions)
    starts: list[int] | None = None  # block starts when drawn coarser


def _as_cells(cells, T: int, S: int, name: str) -> np.ndarray:
    a = np.asarray(cells)
    if a.shape != (T, S):
        raise ValueError(f"{name} must have shape [T, S] = [{T}, {S}], got {list(a.shape)}.")
    return a.astype(np.int8) if a.dtype == bool else a.astype(np.int16)


def _factor(panels: int, T: int, S: int, max_cells: int) -> int:
    f = 1
    while panels * math.ceil(T / f) * math.ceil(S / f) > max_cells:
        f += 1
    return f


def _pool_fraction(a: np.ndarray, f: int) -> np.ndarray:
    """Fraction of allowed cells per f×f block (blocks past the edge count only real cells)."""
    T, S = a.shape
    Tp, Sp = -(-T // f), -(-S // f)
    v = np.zeros((Tp * f, Sp * f), np.float32)
    n = np.zeros_like(v)
    v[:T, :S] = a
    n[:T, :S] = 1
    sums = v.reshape(Tp, f, Sp, f).sum(axis=(1, 3))
    counts = n.reshape(Tp, f, Sp, f).sum(axis=(1, 3))
    return sums / np.maximum(counts, 1)


def _wrap(text: str, width_px: float) -> list[str]:
    """``text`` broken at spaces into lines of at most ``width_px`` (badge font, bold)."""
    limit = max(8, int(width_px / 7.0))
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > limit:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]


def _legend_text(items: Sequence[tuple[str, str, str]]) -> str:
    """``■ attend   ■ masked   ✕ no key``: (symbol, colour, text) per item."""
    return "&nbsp;&nbsp;&nbsp;".join(
        f"<span style='color:{color}'>{sym}</span> {text}" for sym, color, text in items
    )


def grid_figure(
    panels: Sequence[Panel],
    q_labels,
    k_labels,
    *,
    title: str,
    subtitle: str = "",
    operators: Sequence[str] | None = None,
    fully_masked_rows=None,
    single_key_rows=None,
    side: Side | None = None,
    max_cells: int,
    max_cols: int = PANELS_PER_ROW,
    max_panel_px: float = 300.0,
    q_axis: _AxisSpec | None = None,
    k_axis: _AxisSpec | None = None,
    hover_q: str = "query",
    hover_k: str = "key",
    extra_legend: Sequence[tuple[str, str, str]] = (),
) -> go.Figure:
    """Panels of [T, S] cells side by side (see the module docstring).

    ``operators[i]`` joins panel i and panel i + 1. ``fully_masked_rows`` and
    ``single_key_rows`` (query indices) are marked beside the last panel. Beyond
    ``max_cells`` cells in all panels together, each drawn cell is an f×f block.
    """
    if not panels:
        raise ValueError("grid_figure needs at least one panel.")
    T, S = np.asarray(panels[0].cells).shape
    cells = [_as_cells(p.cells, T, S, f"panel {p.title!r}") for p in panels]
    P = len(panels)
    if operators is not None and len(operators) != P - 1:
        raise ValueError(f"operators must have {P - 1} entries, got {len(operators)}.")
    f = 1 if q_axis is not None else _factor(P, T, S, max_cells)
    if q_axis is None or k_axis is None:
        q_labels, k_labels = check_labels(q_labels, k_labels, T, S)
        if f > 1:
            qc, qs = block_labels(T, f)
            kc, ks = block_labels(S, f)
            q_axis = _AxisSpec(qc, [str(a) for a in qs], qs)
            k_axis = _AxisSpec(kc, [str(a) for a in ks], ks)
        else:
            q_axis = _AxisSpec(categories(q_labels), q_labels)
            k_axis = _AxisSpec(categories(k_labels), k_labels)
    Tv, Sv = len(q_axis.cats), len(k_axis.cats)
    markers = fully_masked_rows is not None or single_key_rows is not None
    fully = np.asarray([] if fully_masked_rows is None else fully_masked_rows, int)
    single = np.asarray([] if single_key_rows is None else single_key_rows, int)

    # --- geometry ---------------------------------------------------------------------------
    cols = min(P, max_cols)
    rows = -(-P // cols)
    op_gap = 40.0 if operators is not None else 18.0
    marker_w = 22.0 if markers else 0.0
    positional = is_positional(q_axis.labels) or f > 1 or q_axis.starts is not None
    ylab = (
        len(str(T)) * CHAR_PX + 10
        if positional or Tv > 40
        else min(max(len(t) for t in q_axis.labels), TICK_CHARS) * CHAR_PX + 10
    )
    side_gap, side_w = (ylab + 24.0, 170.0) if side is not None else (0.0, 0.0)
    margin = dict(l=int(ylab + 14), r=24, t=104, b=24)
    avail = WIDTH - margin["l"] - margin["r"]
    panel_w = (avail - (cols - 1) * op_gap - marker_w - side_gap - side_w) / cols
    panel_w = max(60.0, min(panel_w, max_panel_px))
    panel_h = max(60.0, min(panel_w * min(max(Tv / Sv, 0.5), 2.0), 380.0))
    xt = ticks(k_axis.labels, k_axis.cats, panel_w / Sv, "x", k_axis.starts)
    yt = ticks(q_axis.labels, q_axis.cats, panel_h / Tv, "y", q_axis.starts)
    wrapped = [_wrap(p.title, panel_w) for p in panels]
    title_h = 10.0 + 15.0 * max(len(w) for w in wrapped)
    row_h = title_h + panel_h + xt.extent_px + 16
    height = rows * row_h
    geo = Geometry(float(avail), height, margin)

    fig = go.Figure()
    notes = []
    if f > 1:
        notes.append(
            f"Too many cells to draw: each cell is a {f}×{f} block"
            + (
                " (colour = fraction allowed)."
                if all(p.codes == BOOL_CODES for p in panels)
                else "."
            )
        )
    full_subtitle = "<br>".join(x for x in (subtitle, *notes) if x)
    figure_base(fig, title, full_subtitle, height + margin["t"] + margin["b"], margin)

    annotations, shapes = [], []
    where = f"{hover_q} %{{y}}<br>{hover_k} %{{x}}"
    for i, (panel, a) in enumerate(zip(panels, cells)):
        r, c = divmod(i, cols)
        x0 = c * (panel_w + op_gap)
        y0 = r * row_h + title_h
        n = i + 1
        xa, ya = ("x", "y") if n == 1 else (f"x{n}", f"y{n}")
        fig.layout[f"xaxis{'' if n == 1 else n}"] = axis(
            [geo.x(x0), geo.x(x0 + panel_w)], ya, xt, k_axis.cats, True, False
        )
        fig.layout[f"yaxis{'' if n == 1 else n}"] = axis(
            [geo.y(y0 + panel_h), geo.y(y0)], xa, yt, q_axis.cats, c == 0, True
        )
        gaps = 1 if panel_w / Sv >= 7 and panel_h / Tv >= 7 else 0
        if f > 1 and panel.codes == BOOL_CODES:
            frac = _pool_fraction(a.astype(bool), f)
            fig.add_trace(
                go.Heatmap(
                    z=np.round(frac, 3),
                    x=k_axis.cats,
                    y=q_axis.cats,
                    xaxis=xa,
                    yaxis=ya,
                    zmin=0,
                    zmax=1,
                    colorscale=[[0, MASK_OFF_COLOR], [1, ATTEND_COLOR]],
                    showscale=False,
                    name=panel.title,
                    meta={"role": "cells", "panel": i, "code": None},
                    hovertemplate=f"{panel.title}<br>{hover_q}s %{{y}}<br>{hover_k}s %{{x}}"
                    "<br>allowed: %{z:.0%}<extra></extra>",
                )
            )
        else:
            shown = a[::f, ::f] if f > 1 else a
            for code, (color, meaning) in enumerate(panel.codes):
                hit = shown == code
                if not hit.any():
                    continue
                fig.add_trace(
                    go.Heatmap(
                        z=np.where(hit, 1.0, np.nan).astype(np.float32),
                        x=k_axis.cats,
                        y=q_axis.cats,
                        xaxis=xa,
                        yaxis=ya,
                        colorscale=[[0, color], [1, color]],
                        showscale=False,
                        hoverongaps=False,
                        xgap=gaps,
                        ygap=gaps,
                        name=f"{panel.title}: {meaning}",
                        meta={"role": "cells", "panel": i, "code": code},
                        hovertemplate=f"{panel.title}<br>{where}<br><b>{meaning}</b><extra></extra>",
                    )
                )
        prefix = ""
        if operators is not None and i > 0 and c == 0:
            prefix = f"{operators[i - 1]} "  # the first panel of a wrapped row
        text = "<br>".join(
            f"<b>{prefix if n == 0 else ''}{line}</b>" for n, line in enumerate(wrapped[i])
        )
        title_badge = badge(geo.x(x0), geo.y(y0 - 3), text, panel.color, size=11, name=f"panel {i}")
        annotations.append({**title_badge, "align": "left"})
        if operators is not None and i < P - 1 and c < cols - 1:
            annotations.append(
                dict(
                    x=geo.x(x0 + panel_w + op_gap / 2),
                    y=geo.y(y0 + panel_h / 2),
                    xref="paper",
                    yref="paper",
                    xanchor="center",
                    yanchor="middle",
                    showarrow=False,
                    text=f"<b>{operators[i]}</b>",
                    font=dict(size=20, color=TEXT_DARK),
                    name=f"op {i}",
                )
            )

    last_r, last_c = divmod(P - 1, cols)
    right = last_c * (panel_w + op_gap) + panel_w
    y_top = last_r * row_h + title_h
    n_axes = P
    if markers:
        n_axes += 1
        xa, ya = f"x{n_axes}", f"y{n_axes}"
        fig.layout[f"xaxis{n_axes}"] = dict(
            domain=[geo.x(right + 4), geo.x(right + marker_w)],
            anchor=ya,
            range=[0, 1],
            visible=False,
            fixedrange=True,
        )
        fig.layout[f"yaxis{n_axes}"] = dict(
            domain=[geo.y(y_top + panel_h), geo.y(y_top)],
            anchor=xa,
            type="category",
            categoryorder="array",
            categoryarray=q_axis.cats,
            range=[Tv - 0.5, -0.5],  # all rows, top to bottom, whichever are marked
            visible=False,
            fixedrange=True,
        )
        for rows_, symbol, color, what in (
            (fully, "x", FULLY_MASKED_ROW_COLOR, "no key left: a fully masked row"),
            (single, "circle", SINGLE_KEY_ROW_COLOR, "exactly one key left"),
        ):
            shown_rows = sorted({int(i) // f for i in rows_})
            fig.add_trace(
                go.Scatter(
                    x=[0.5] * len(shown_rows),
                    y=[q_axis.cats[i] for i in shown_rows],
                    xaxis=xa,
                    yaxis=ya,
                    mode="markers",
                    marker=dict(
                        symbol=symbol,
                        color=color,
                        size=max(6, min(11, panel_h / Tv - 1)),
                        line=dict(width=0),
                    ),
                    name=what,
                    meta={"role": "rows", "what": "fully" if symbol == "x" else "single"},
                    hovertemplate=f"{hover_q} %{{y}}<br>{what}<extra></extra>",
                    cliponaxis=False,
                )
            )
    if side is not None:
        n_axes += 1
        xa, ya = f"x{n_axes}", f"y{n_axes}"
        sx0 = right + marker_w + side_gap  # beside the last panel
        top_all = max(float(np.nanmax(v)) if np.size(v) else 0.0 for _, v, _ in side.series)
        fig.layout[f"xaxis{n_axes}"] = dict(
            domain=[geo.x(sx0), geo.x(sx0 + side_w)],
            anchor=ya,
            range=[0, max(top_all, 1e-9) * 1.08],
            showgrid=True,
            gridcolor=GRID_LINE_COLOR,
            zeroline=False,
            showline=True,
            linecolor=AXIS_LINE_COLOR,
            tickfont=dict(size=TICK_FONT, color=TEXT_MUTED),
            title=dict(text=side.x_title, font=dict(size=11, color=TEXT_MUTED), standoff=4),
            fixedrange=True,
        )
        fig.layout[f"yaxis{n_axes}"] = dict(
            domain=[geo.y(y_top + panel_h), geo.y(y_top)],
            anchor=xa,
            type="category",
            categoryorder="array",
            categoryarray=q_axis.cats,
            range=[Tv - 0.5, -0.5],
            tickmode="array",
            tickvals=yt.vals,
            ticktext=yt.text,
            tickfont=dict(size=TICK_FONT, color=TEXT_MUTED),
            showticklabels=True,
            ticks="",
            showgrid=False,
            showline=True,
            linecolor=AXIS_LINE_COLOR,
            fixedrange=True,
        )
        for name, values, color in side.series:
            v = np.asarray(values, np.float64)
            if f > 1:
                pad = np.full(-(-v.size // f) * f, np.nan)
                pad[: v.size] = v
                v = np.nanmean(pad.reshape(-1, f), axis=1)
            common = dict(
                y=q_axis.cats,
                xaxis=xa,
                yaxis=ya,
                name=name,
                meta={"role": "side", "series": name},
                hovertemplate=f"{name}<br>{hover_q} %{{y}}<br>%{{x:{side.fmt}}}<extra></extra>",
            )
            if side.kind == "bars":
                fig.add_trace(go.Bar(x=v, orientation="h", marker=dict(color=color), **common))
            else:
                fig.add_trace(
                    go.Scatter(
                        x=v,
                        mode="lines+markers" if Tv <= 64 else "lines",
                        line=dict(color=color, width=2, shape="linear"),
                        marker=dict(size=5, color=color),
                        **common,
                    )
                )
        annotations.append(
            badge(
                geo.x(sx0), geo.y(y_top - 3), f"<b>{side.title}</b>", NEUTRAL_BADGE_COLOR, size=11
            )
        )
        if len(side.series) > 1:
            annotations.append(
                dict(
                    x=geo.x(sx0),
                    y=geo.y(y_top + panel_h + xt.extent_px + 2),
                    xref="paper",
                    yref="paper",
                    xanchor="left",
                    yanchor="top",
                    yshift=-14,
                    showarrow=False,
                    align="left",
                    text="colours as the panels' titles",
                    font=dict(size=10, color=TEXT_MUTED),
                    name="side legend",
                )
            )

    # One legend line under the title: what every colour and marker means.
    seen: dict[str, tuple[str, str, str]] = {}  # by colour: the first name given to it
    for p in panels:
        for color, meaning in p.codes:
            seen.setdefault(color, ("■", color, meaning))
    items = list(seen.values())
    if markers:
        items += [
            ("✕", FULLY_MASKED_ROW_COLOR, "no key left (fully masked row)"),
            ("●", SINGLE_KEY_ROW_COLOR, "one key left"),
        ]
    items += list(extra_legend)
    annotations.append(
        dict(
            x=geo.x(-yt.extent_px),
            y=1.0,
            yshift=22,
            xref="paper",
            yref="paper",
            xanchor="left",
            yanchor="bottom",
            showarrow=False,
            align="left",
            text=_legend_text(items),
            font=dict(size=12, color=TEXT_MUTED),
            name="legend",
        )
    )
    fig.update_layout(annotations=annotations, shapes=shapes, showlegend=False)
    return fig


# ---------------------------------------------------------------------------------------------
# The Mask Lab's figures.


def components_figure(
    components: Sequence[tuple[str, str, np.ndarray]],
    final,
    q_labels,
    k_labels,
    *,
    combine: str = "and",
    settings_mask=None,
    settings_title: str = "sidebar settings",
    fully_masked_rows=None,
    single_key_rows=None,
    title: str = "Your mask, piece by piece",
    max_cells: int,
) -> go.Figure:
    """Each component (kind, label, [T, S]) and the final mask the layer applies.

    ``settings_mask``: the masks of the sidebar settings, merged (drawn first, ANDed with the
    components). Components are joined by ``combine`` ("and" / "or"); the whole is ANDed
    with the settings' mask.
    """
    final = np.asarray(final, bool)
    T, S = final.shape
    panels, ops = [], []
    if settings_mask is not None:
        panels.append(
            Panel(settings_title, np.asarray(settings_mask, bool), component_color("settings"))
        )
    op = OPERATORS[combine]
    for j, (kind, label, allowed) in enumerate(components):
        if panels:
            # The settings mask is always ANDed; OR only joins the components.
            ops.append("&" if j == 0 else op)
        panels.append(Panel(label, np.asarray(allowed, bool), component_color(kind)))
    if panels:
        ops.append("=")
    panels.append(Panel("final mask", final, component_color("final")))
    either = combine == "or" and len(components) > 1
    if either and settings_mask is not None:
        how = "sidebar & (component | component …)"
    elif either:
        how = "component | component …"
    else:
        how = "everything ANDed"
    allowed = int(final.sum())
    subtitle = (
        f"Rows: queries (top to bottom); columns: keys. Final = {how}: "
        f"{allowed} of {T * S} pairs allowed ({allowed / max(T * S, 1):.0%})."
    )
    fig = grid_figure(
        panels,
        q_labels,
        k_labels,
        title=title,
        subtitle=subtitle,
        operators=ops if len(panels) > 1 else None,
        fully_masked_rows=fully_masked_rows,
        single_key_rows=single_key_rows,
        max_cells=max_cells,
    )
    if either:
        _bracket(fig, first=int(settings_mask is not None), last=len(panels) - 2)
    return fig


def _bracket(fig: go.Figure, first: int, last: int) -> None:
    """A dashed frame around panels ``first``..``last`` (one row): the ORed components.

    Its label sits on the frame's top edge, above the panels' title badges; the figure grows
    by ``extra`` px at the top (the legend line moves up with it) to make room.
    """
    xs = [fig.layout[f"xaxis{'' if i == 0 else i + 1}"].domain for i in (first, last)]
    ys = [fig.layout[f"yaxis{'' if i == 0 else i + 1}"].domain for i in (first, last)]
    if ys[0] != ys[1]:
        return  # the components wrap onto two rows: the subtitle says it
    m = fig.layout.margin
    plot_w = WIDTH - m.l - m.r
    plot_h = fig.layout.height - m.t - m.b
    badges = [a for a in fig.layout.annotations if a.name in {f"panel {first}", f"panel {last}"}]
    lines = max(a.text.count("<br>") + 1 for a in badges)
    above = 3 + 15 * lines + 14  # px from the panels' top to the frame's top edge
    extra = 16
    fig.update_layout(height=fig.layout.height + extra, margin=dict(t=m.t + extra))
    for a in fig.layout.annotations:
        if a.name == "legend":
            a.yshift = (a.yshift or 0) + extra
    top = ys[0][1] + above / plot_h
    fig.add_shape(
        type="rect",
        xref="paper",
        yref="paper",
        x0=xs[0][0] - 5 / plot_w,
        x1=xs[1][1] + 5 / plot_w,
        y0=ys[0][0] - 56 / plot_h,
        y1=top,
        line=dict(color=NEUTRAL_BADGE_COLOR, width=1.5, dash="dash"),
        layer="below",
        name="or bracket",
    )
    fig.add_annotation(
        x=(xs[0][0] + xs[1][1]) / 2,
        y=top,
        xref="paper",
        yref="paper",
        xanchor="center",
        yanchor="middle",
        showarrow=False,
        text="any one of these (OR)",
        bgcolor=PAPER_BG,
        font=dict(size=11, color=NEUTRAL_BADGE_COLOR),
        name="or label",
    )


def keras_merge_figure(parts, final, q_labels, k_labels, *, max_cells: int) -> go.Figure:
    """The masks Keras ANDs (``KerasPart``: name, shapes, [T, S]), broadcast, and their AND."""
    final = np.asarray(final, bool)
    panels = [
        Panel(f"{p.name} → {p.broadcast.split(' =')[0]}", p.allowed, NEUTRAL_BADGE_COLOR)
        for p in parts
    ]
    panels.append(Panel("merged mask", final, component_color("final")))
    ops = ["&"] * (len(parts) - 1) + ["="] if parts else None
    counts = final.sum(axis=1)
    return grid_figure(
        panels,
        q_labels,
        k_labels,
        title="How Keras merges the masks of this call",
        subtitle="Each mask broadcast to [T, S] (rows: queries, columns: keys), then ANDed.",
        operators=ops,
        fully_masked_rows=np.flatnonzero(counts == 0),
        single_key_rows=np.flatnonzero(counts == 1),
        max_cells=max_cells,
        max_panel_px=220.0,
    )


def alignment_figure(top_left, bottom_right, q_labels, k_labels, *, max_cells: int) -> go.Figure:
    """Causal aligned top-left (Keras) and bottom-right (KV cache), and where they differ."""
    tl, br = np.asarray(top_left, bool), np.asarray(bottom_right, bool)
    T, S = tl.shape
    diff = tl.astype(np.int8) + 2 * br.astype(np.int8)  # ALIGN_CODES
    empty = np.flatnonzero(~tl.any(axis=1) | ~br.any(axis=1))
    shift = S - T
    panels = [
        Panel("top-left: j ≤ i (Keras)", tl, component_color("causal_window")),
        Panel(
            f"bottom-right: j ≤ i + {shift}" if shift >= 0 else f"bottom-right: j ≤ i − {-shift}",
            br,
            component_color("causal_bottom_right"),
        ),
        Panel("difference", diff, FINAL_MASK_COLOR, ALIGN_CODES),
    ]
    return grid_figure(
        panels,
        q_labels,
        k_labels,
        title=f"Causal alignment with T = {T} queries and S = {S} keys",
        subtitle="Rows: queries (top to bottom); columns: keys. The two alignments agree only "
        "when T = S." + (" ✕: a query one of them leaves with no key." if empty.size else ""),
        fully_masked_rows=empty if empty.size else None,
        max_cells=max_cells,
    )


def window_figure(
    semantics: dict[str, np.ndarray],
    counts: dict[str, np.ndarray],
    window: int,
    q_labels,
    k_labels,
    *,
    max_cells: int,
) -> go.Figure:
    """The same window ``w`` read by each framework, and how many keys each query sees."""
    names = list(semantics)
    panels = [
        Panel(name, np.asarray(semantics[name], bool), WINDOW_COLORS[i % len(WINDOW_COLORS)])
        for i, name in enumerate(names)
    ]
    side = Side(
        "keys per query",
        tuple(
            (name, np.asarray(counts[name]), WINDOW_COLORS[i % len(WINDOW_COLORS)])
            for i, name in enumerate(names)
        ),
        x_title="allowed keys",
    )
    return grid_figure(
        panels,
        q_labels,
        k_labels,
        title=f"One window, w = {window}: what each library makes of it",
        subtitle="Rows: queries (top to bottom); columns: keys. Same number, different bands; "
        "right: how many keys each query sees.",
        side=side,
        max_cells=max_cells,
        max_cols=3,
        max_panel_px=240.0,
    )


def readings_figure(
    as_read,
    inverted,
    output_change,
    q_labels,
    k_labels,
    *,
    convention: str,
    other: str,
    max_cells: int,
) -> go.Figure:
    """An uploaded mask read as given and inverted, and how much each query's output moves."""
    a, b = np.asarray(as_read, bool), np.asarray(inverted, bool)
    cb = b.sum(axis=1)
    panels = [
        Panel(f"read as {convention}", a, component_color("uploaded")),
        Panel(f"read as {other} (inverted)", b, NEUTRAL_BADGE_COLOR),
    ]
    side = Side(
        "output change",
        (("‖Δ output‖", np.asarray(output_change), FULLY_MASKED_ROW_COLOR),),
        kind="bars",
        x_title="‖out(as read) − out(inverted)‖",
        fmt=".3f",
    )
    return grid_figure(
        panels,
        q_labels,
        k_labels,
        title="Your mask, read two ways",
        subtitle="Rows: queries; columns: keys. Right: how far each query's output moves "
        "when the mask is read the other way round.<br>✕ / ● mark rows the inverted reading "
        "leaves with no key / one key.",
        fully_masked_rows=np.flatnonzero(cb == 0),
        single_key_rows=np.flatnonzero(cb == 1),
        side=side,
        max_cells=max_cells,
        max_panel_px=280.0,
    )


def block_figure(
    allowed,
    block_q: int,
    block_k: int,
    q_labels=None,
    k_labels=None,
    *,
    max_tiles: int,
    max_cells: int,
) -> go.Figure:
    """The final mask cut into ``block_q`` × ``block_k`` tiles: empty (skipped), partial, full.

    Up to ``max_tiles`` tiles, the mask's cells are drawn with each tile outlined
    (``name == "tile {state}"`` shapes); beyond, one cell per tile coloured by its state.
    """
    a = np.asarray(allowed, bool)
    T, S = a.shape
    states = block_skip(a, block_q, block_k)["state"]  # 0 empty, 1 partial, 2 full
    Tb, Sb = states.shape
    counts = {code: int((states == code).sum()) for code in range(3)}
    subtitle = (
        f"{counts[0]} empty tiles skipped, {counts[1]} partial, {counts[2]} full (of {Tb * Sb})."
    )
    legend = [
        ("▢", EMPTY_BLOCK_COLOR, "empty tile: skipped"),
        ("▢", PARTIAL_BLOCK_COLOR, "partial tile: computed, then masked"),
        ("▢", FULL_BLOCK_COLOR, "full tile"),
    ]
    if Tb * Sb > max_tiles:

        def tile_axis(n: int, b: int, L: int) -> _AxisSpec:
            cats = [f"{i * b}–{min((i + 1) * b, L) - 1}" for i in range(n)]
            return _AxisSpec(cats, [str(i * b) for i in range(n)], [i * b for i in range(n)])

        return grid_figure(
            [Panel(f"{block_q}×{block_k} tiles", states, FINAL_MASK_COLOR, BLOCK_CODES)],
            None,
            None,
            title="What a block-sparse kernel sees",
            subtitle=subtitle + " One cell per tile: rows are query blocks, columns key blocks.",
            q_axis=tile_axis(Tb, block_q, T),
            k_axis=tile_axis(Sb, block_k, S),
            hover_q="queries",
            hover_k="keys",
            max_cells=max_cells,
            max_panel_px=360.0,
        )
    q_labels = [str(i) for i in range(T)] if q_labels is None else q_labels
    k_labels = [str(j) for j in range(S)] if k_labels is None else k_labels
    fig = grid_figure(
        [Panel(f"final mask in {block_q}×{block_k} tiles", a, FINAL_MASK_COLOR)],
        q_labels,
        k_labels,
        title="What a block-sparse kernel sees",
        subtitle=subtitle + " Faded tiles are skipped.",
        max_cells=max_cells,
        max_panel_px=360.0,
        extra_legend=legend,
    )
    f = _factor(1, T, S, max_cells)  # grid_figure draws f×f blocks of cells beyond max_cells
    shapes = []
    style = {
        0: dict(
            line=dict(color=EMPTY_BLOCK_COLOR, width=1, dash="dot"),
            fillcolor=EMPTY_BLOCK_FADE,
        ),
        1: dict(line=dict(color=PARTIAL_BLOCK_COLOR, width=2.5), fillcolor="rgba(0,0,0,0)"),
        2: dict(line=dict(color=FULL_BLOCK_COLOR, width=2.5), fillcolor="rgba(0,0,0,0)"),
    }
    for code in (0, 2, 1):  # partial outlines last: on top
        for bi, bj in zip(*np.nonzero(states == code)):
            shapes.append(
                dict(
                    type="rect",
                    xref="x",
                    yref="y",
                    x0=bj * block_k / f - 0.5,
                    x1=min((bj + 1) * block_k, S) / f - 0.5,
                    y0=bi * block_q / f - 0.5,
                    y1=min((bi + 1) * block_q, T) / f - 0.5,
                    layer="above",
                    name=f"tile {code}",
                    **style[code],
                )
            )
    fig.update_layout(shapes=shapes)
    return fig


def embedding_figure(query_mask, value_mask, q_labels, k_labels, *, max_cells: int) -> go.Figure:
    """The implicit masks of ``Embedding(mask_zero=True)``: query_mask [T] and value_mask [S]
    broadcast to [T, S], and their AND, with the rows it leaves no key marked."""
    qm, vm = np.asarray(query_mask, bool), np.asarray(value_mask, bool)
    T, S = qm.size, vm.size
    merged = qm[:, None] & vm[None, :]
    panels = [
        Panel("query_mask → [T, 1]", np.broadcast_to(qm[:, None], (T, S))),
        Panel("value_mask → [1, S]", np.broadcast_to(vm[None, :], (T, S))),
        Panel("implicit mask", merged, FINAL_MASK_COLOR),
    ]
    return grid_figure(
        panels,
        q_labels,
        k_labels,
        title="The masks Keras derives from the token ids",
        subtitle="Rows: queries; columns: keys.",
        operators=["&", "="],
        fully_masked_rows=np.flatnonzero(~merged.any(axis=1)),
        max_cells=max_cells,
        max_panel_px=220.0,
    )
