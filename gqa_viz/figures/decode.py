"""Figures of the Decode page: one generation step with a KV cache. No Streamlit.

Axis letters as in :mod:`gqa_viz.decode`: C new tokens of a step (the chunk), S_max cache slots,
N query heads, K kv heads, G = N // K. Positions are absolute (0 = the prompt's first token).

* :func:`rows_figure`: the step's new query rows of every head, grouped by the K/V head they
  read (:func:`gqa_viz.figures.heads.heads_figure` on [N, C, positions so far]);
* :func:`mask_figure`: every query row of the run by key position, coloured by what the step
  that computed it did with each key (attended, later position, outside the window, dropped
  from the cache), the current step's rows framed: a chunk is the last C rows of the full
  sequence's triangle, its offset where the frame starts;
* :func:`cache_figure`: one panel per K/V head, slots (rows) by steps (columns): the position
  each slot holds after each step (the cell's number), shaded by how much that head's query
  heads read it at the step's last query; a ▼ where a step overwrote (dropped) a position;
* :func:`bytes_figure`: bytes a step reads, the KV cache alone and with the weights, and their
  running total, for MHA, this model and MQA (from :func:`gqa_viz.decode.step_bytes`).

Every trace carries ``meta["role"]`` (and the figure tests read them).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gqa_viz.figures.grid import TICK_FONT, badge, figure_base
from gqa_viz.figures.heads import heads_figure
from gqa_viz.figures.theme import (
    ATTEND_COLOR,
    AXIS_LINE_COLOR,
    EMPTY_BLOCK_FILL,
    FULLY_MASKED_ROW_COLOR,
    GRID_LINE_COLOR,
    MASK_OFF_COLOR,
    PAPER_BG,
    SINGLE_KEY_ROW_COLOR,
    TEXT_DARK,
    TEXT_MUTED,
    VARIANT_COLORS,
    base_layout,
    group_color,
)

WIDTH = 1000  # px the layouts are planned for; the figures stretch to their container
# The mask figure's codes (gqa_viz.app.decode.CODES): 0 later position, 1 dropped from the
# cache, 2 outside the window, 3 attended. Dropped is the vermilion of the cache figure's ▼.
CODE_COLORS = (MASK_OFF_COLOR, FULLY_MASKED_ROW_COLOR, SINGLE_KEY_ROW_COLOR, ATTEND_COLOR)
CODE_NAMES = ("later position (causal)", "dropped from the cache", "outside the window", "attended")
VARIANT_NAMES = {"mha": "MHA (K = N)", "configured": "this model", "mqa": "MQA (K = 1)"}


def _legend(items, per_line: int = 6) -> str:
    """``■ attended   ■ dropped ...``: (symbol, colour, text) per item, ``per_line`` a line."""
    parts = [f"<span style='color:{c}'>{s}</span> {t}" for s, c, t in items]
    return "<br>".join("   ".join(parts[i : i + per_line]) for i in range(0, len(parts), per_line))


# ---------------------------------------------------------------------------------------------
# The new query rows.


def rows_figure(
    probs,
    mask,
    q_tokens,
    k_tokens,
    num_key_value_heads: int,
    *,
    offset: int,
    title: str,
    max_cells: int,
):
    """The step's attention [N, C, positions] by query head, framed by the K/V head each one
    reads; ``offset`` is the position of the step's first query (its rows are labelled from
    there), ``mask`` [C, positions] True where the step attended."""
    return heads_figure(
        probs,
        mask,
        q_tokens,
        k_tokens,
        num_key_value_heads,
        title=title,
        q_start=offset,
        max_cells=max_cells,
        frozen=True,  # drawn once per step, never changed: no graph objects to build
    )


# ---------------------------------------------------------------------------------------------
# The mask of every step.


def mask_figure(
    codes,
    tokens,
    current: tuple[int, int],
    *,
    title: str,
    subtitle: str = "",
    planned_width: float = 620.0,
):
    """``codes`` [Q, P] (query positions 0 .. Q - 1 by key positions 0 .. P - 1, codes as
    :data:`CODE_NAMES`), ``tokens`` [P] names, ``current`` the current step's query positions
    (first, last): framed, with its offset marked. Cells are square at ``planned_width`` px
    (the column the page gives the figure)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [queries, keys], got shape {codes.shape}.")
    Q, P = codes.shape
    if len(tokens) < max(Q, P):
        raise ValueError(f"tokens has {len(tokens)} names for {max(Q, P)} positions.")
    first, last = current
    if not 0 <= first <= last < Q:
        raise ValueError(f"current rows {current} outside 0 .. {Q - 1}.")
    margin = dict(l=96, r=24, t=140, b=64)
    avail = planned_width - margin["l"] - margin["r"]
    cell = max(10.0, min(26.0, avail / P))
    plot_w, plot_h = cell * P, cell * Q
    fig = go.Figure()
    figure_base(fig, title, subtitle, plot_h + margin["t"] + margin["b"], margin)
    x = list(range(P))
    y = list(range(Q))
    names = [str(t) for t in tokens]
    for code, (color, meaning) in enumerate(zip(CODE_COLORS, CODE_NAMES, strict=True)):
        hit = codes == code
        if not hit.any():
            continue
        fig.add_trace(
            go.Heatmap(
                z=np.where(hit, 1.0, np.nan).astype(np.float32),
                x=x,
                y=y,
                customdata=np.broadcast_to(np.array(names[:P], dtype=object), (Q, P)),
                colorscale=[[0, color], [1, color]],
                showscale=False,
                hoverongaps=False,
                xgap=1,
                ygap=1,
                name=meaning,
                meta={"role": "cells", "code": code},
                hovertemplate=f"query @%{{y}}<br>key @%{{x}} '%{{customdata}}'<br><b>{meaning}</b>"
                "<extra></extra>",
            )
        )
    ticks = dict(
        tickmode="array",
        tickfont=dict(size=TICK_FONT, color=TEXT_MUTED),
        showgrid=False,
        zeroline=False,
        showline=True,
        linecolor=AXIS_LINE_COLOR,
        mirror=True,
        fixedrange=True,
        ticks="",
    )
    fig.update_xaxes(
        **ticks,
        range=[-0.5, P - 0.5],
        # square cells at the planned width (the figure stretches to its container)
        domain=[0.0, min(1.0, plot_w / avail)],
        tickvals=x,
        ticktext=[f"{n} @{i}" for i, n in enumerate(names[:P])],
        tickangle=-90,
        title=dict(text="key position", font=dict(size=11, color=TEXT_MUTED), standoff=4),
    )
    fig.update_yaxes(
        **ticks,
        range=[Q - 0.5, -0.5],
        tickvals=y,
        ticktext=[f"@{i} {n}" for i, n in enumerate(names[:Q])],
        title=dict(text="query position", font=dict(size=11, color=TEXT_MUTED), standoff=4),
    )
    fig.add_shape(
        type="rect",
        x0=-0.5,
        x1=P - 0.5,
        y0=first - 0.5,
        y1=last + 0.5,
        line=dict(color=TEXT_DARK, width=2.5),
        name="current step",
    )
    present = [(s, c, t) for s, c, t in zip("■■■■", CODE_COLORS, CODE_NAMES, strict=True)]
    present = [item for code, item in enumerate(present) if (codes == code).any()]
    fig.update_layout(
        annotations=[
            dict(
                x=0,
                y=1,
                xref="paper",
                yref="paper",
                yshift=8,
                xanchor="left",
                yanchor="bottom",
                showarrow=False,
                align="left",
                text=_legend([*present, ("▭", TEXT_DARK, "this step's rows")], per_line=2),
                font=dict(size=12, color=TEXT_MUTED),
                name="legend",
            )
        ]
    )
    return fig


# ---------------------------------------------------------------------------------------------
# The cache.


def cache_figure(
    positions,
    attention,
    evicted,
    tokens,
    current: int,
    *,
    sinks: int = 0,
    title: str,
    subtitle: str = "",
):
    """One panel per K/V head: slots (rows) by steps (columns, 1-based).

    ``positions`` [S_max, steps] the position each slot holds after each step (-1 empty),
    ``attention`` [K, S_max, steps] the mean attention of that head's query heads on it at the
    step's last query, ``evicted`` [S_max, steps] the position a step overwrote there (-1
    none), ``tokens`` the names of the positions, ``current`` the step framed (1-based),
    ``sinks`` the slots that hold the sinks for good.
    """
    positions = np.asarray(positions)
    attention = np.asarray(attention, np.float32)
    evicted = np.asarray(evicted)
    if positions.ndim != 2 or attention.ndim != 3 or attention.shape[1:] != positions.shape:
        raise ValueError(
            f"positions must be [S_max, steps] and attention [K, S_max, steps], got "
            f"{positions.shape} and {attention.shape}."
        )
    if evicted.shape != positions.shape:
        raise ValueError(f"evicted must be {positions.shape}, got {evicted.shape}.")
    K = attention.shape[0]
    S, n = positions.shape
    if not 1 <= current <= n:
        raise ValueError(f"current step {current} outside 1 .. {n}.")
    cols = min(K, 4)
    rows = -(-K // cols)
    ylab = 64.0
    gap = 24.0 + ylab
    cell_w = max(12.0, min(28.0, (WIDTH - 60 - cols * gap) / (cols * n)))
    cell_h = max(14.0, min(20.0, cell_w))
    panel_w, panel_h = cell_w * n, cell_h * S
    label_h, xlab_h = 24.0, 34.0
    row_h = label_h + panel_h + xlab_h
    margin = dict(l=int(ylab + 8), r=16, t=134, b=8)  # the legend's two lines fit 700 px
    plot_w = cols * panel_w + (cols - 1) * gap
    plot_h = rows * row_h
    fig = go.Figure()
    figure_base(fig, title, subtitle, plot_h + margin["t"] + margin["b"], margin)

    steps = list(range(1, n + 1))
    slots = list(range(S))
    names = [str(t) for t in tokens]
    held = positions >= 0
    text = np.where(held, positions.astype(str), "")
    label = np.array(
        [[names[p] if p >= 0 else "" for p in row] for row in positions.tolist()], dtype=object
    )
    slot_text = [f"{s} (sink)" if s < sinks else str(s) for s in slots]
    annotations, shapes = [], []
    for j in range(K):
        r, c = divmod(j, cols)
        x0 = c * (panel_w + gap)
        y0 = r * row_h + label_h
        xa, ya = ("x", "y") if j == 0 else (f"x{j + 1}", f"y{j + 1}")
        suffix = "" if j == 0 else str(j + 1)
        fig.layout[f"xaxis{suffix}"] = dict(
            domain=[x0 / plot_w, (x0 + panel_w) / plot_w],
            anchor=ya,
            range=[0.5, n + 0.5],
            tickmode="array",
            tickvals=steps,
            ticktext=[str(s) if n <= 16 or s % 2 == 1 else "" for s in steps],
            tickfont=dict(size=TICK_FONT, color=TEXT_MUTED),
            title=dict(text="step", font=dict(size=11, color=TEXT_MUTED), standoff=2),
            showgrid=False,
            zeroline=False,
            showline=True,
            linecolor=AXIS_LINE_COLOR,
            mirror=True,
            fixedrange=True,
        )
        fig.layout[f"yaxis{suffix}"] = dict(
            domain=[1 - (y0 + panel_h) / plot_h, 1 - y0 / plot_h],
            anchor=xa,
            range=[S - 0.5, -0.5],
            tickmode="array",
            tickvals=slots,
            ticktext=slot_text,
            tickfont=dict(size=TICK_FONT, color=TEXT_MUTED),
            title=dict(text="slot", font=dict(size=11, color=TEXT_MUTED), standoff=2),
            showgrid=False,
            zeroline=False,
            showline=True,
            linecolor=AXIS_LINE_COLOR,
            mirror=True,
            fixedrange=True,
        )
        if (~held).any():
            fig.add_trace(
                go.Heatmap(
                    z=np.where(held, np.nan, 1.0).astype(np.float32),
                    x=steps,
                    y=slots,
                    xaxis=xa,
                    yaxis=ya,
                    colorscale=[[0, EMPTY_BLOCK_FILL], [1, EMPTY_BLOCK_FILL]],
                    showscale=False,
                    hoverongaps=False,
                    xgap=1,
                    ygap=1,
                    name=f"kv{j} empty",
                    meta={"role": "empty", "kv_head": j},
                    hovertemplate="slot %{y} after step %{x}: empty<extra></extra>",
                )
            )
        color = group_color(j)
        fig.add_trace(
            go.Heatmap(
                z=np.where(held, np.round(attention[j], 3), np.nan).astype(np.float32),
                x=steps,
                y=slots,
                xaxis=xa,
                yaxis=ya,
                zmin=0.0,
                zmax=1.0,
                colorscale=[[0, PAPER_BG], [1, color]],
                showscale=False,
                hoverongaps=False,
                xgap=1,
                ygap=1,
                text=text,
                texttemplate="%{text}",
                textfont=dict(size=9),
                customdata=label,
                name=f"kv{j}",
                meta={"role": "slots", "kv_head": j},
                hovertemplate=f"K/V head {j}<br>slot %{{y}} after step %{{x}}: position "
                f"%{{text}} '%{{customdata}}'<br>attention of its query heads: %{{z:.3f}}"
                "<extra></extra>",
            )
        )
        gone = np.argwhere(evicted >= 0)  # [(slot, step index)]
        if gone.size:
            fig.add_trace(
                go.Scatter(
                    x=[t + 1 + 0.32 for _, t in gone],
                    y=[s - 0.28 for s, _ in gone],
                    xaxis=xa,
                    yaxis=ya,
                    mode="markers",
                    marker=dict(symbol="triangle-down", size=7, color=FULLY_MASKED_ROW_COLOR),
                    customdata=[
                        [int(evicted[s, t]), int(positions[s, t])] for s, t in gone.tolist()
                    ],
                    name=f"kv{j} dropped",
                    meta={"role": "dropped", "kv_head": j},
                    hovertemplate="step %{customdata[1]}: position %{customdata[0]} dropped, "
                    "overwritten by %{customdata[1]}<extra></extra>",
                    cliponaxis=False,
                )
            )
        shapes.append(
            dict(
                type="rect",
                xref=xa,
                yref=ya,
                x0=current - 0.5,
                x1=current + 0.5,
                y0=-0.5,
                y1=S - 0.5,
                line=dict(color=TEXT_DARK, width=2),
                name=f"current kv{j}",
            )
        )
        annotations.append(
            badge(x0 / plot_w, 1 - (y0 - 3) / plot_h, f"<b>K/V head {j}</b>", color, name=f"kv{j}")
        )
    annotations.append(
        dict(
            x=0,
            y=1,
            xref="paper",
            yref="paper",
            yshift=label_h + 6,
            xanchor="left",
            yanchor="bottom",
            showarrow=False,
            align="left",
            text=_legend(
                [
                    ("12", TEXT_DARK, "position held"),
                    ("■", color, "shade: how much the head's query heads read it"),
                    ("■", EMPTY_BLOCK_FILL, "empty"),
                    ("▼", FULLY_MASKED_ROW_COLOR, "a position dropped (overwritten)"),
                    ("▭", TEXT_DARK, "this step"),
                ],
                per_line=3,
            ),
            font=dict(size=12, color=TEXT_MUTED),
            name="legend",
        )
    )
    fig.update_layout(annotations=annotations, shapes=shapes)
    return fig


# ---------------------------------------------------------------------------------------------
# Bytes.


def _fmt_bytes(b: float) -> str:
    return f"{b / 1e6:,.3f} MB" if b >= 1e6 else f"{b / 1e3:,.1f} kB"


def bytes_figure(table: list[dict], current: int, *, title: str, subtitle: str = ""):
    """Three panels over the steps (``table``: rows of :func:`gqa_viz.app.decode.bytes_table`,
    each with ``step``, per variant ``cache`` and ``total`` bytes, and ``cumulative``): the KV
    cache a step reads, the cache and the weights, and the running total. ``current`` the step
    marked (1-based)."""
    if not table:
        raise ValueError("bytes_figure needs at least one step.")
    steps = [row["step"] for row in table]
    panels = (
        ("KV cache read per step", lambda row, v: float(row[v]["cache"])),
        ("weights + KV cache per step", lambda row, v: float(row[v]["total"])),
        ("running total", lambda row, v: float(row["cumulative"][v])),
    )
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09)
    for c, (name, get) in enumerate(panels, start=1):
        for v, label in VARIANT_NAMES.items():
            y = [get(row, v) for row in table]
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=y,
                    mode="lines+markers",
                    line=dict(color=VARIANT_COLORS[v], width=2.5 if v == "configured" else 1.8),
                    marker=dict(size=5),
                    name=label,
                    legendgroup=v,
                    showlegend=c == 1,
                    meta={"role": "bytes", "panel": name, "variant": v},
                    customdata=[_fmt_bytes(b) for b in y],
                    hovertemplate=f"{label}<br>step %{{x}}<br>{name}: %{{y:,.0f}} B "
                    "(%{customdata})<extra></extra>",
                ),
                row=1,
                col=c,
            )
        fig.add_vline(x=current, line=dict(color=TEXT_MUTED, width=1, dash="dot"), row=1, col=c)
        fig.update_xaxes(title_text="step", row=1, col=c)
        fig.update_yaxes(title_text="bytes" if c == 1 else None, rangemode="tozero", row=1, col=c)
        fig.add_annotation(
            x=0.5,
            y=1.0,
            xref=f"x{'' if c == 1 else c} domain",
            yref="paper",
            yshift=6,
            yanchor="bottom",
            showarrow=False,
            text=f"<b>{name}</b>",
            font=dict(size=12, color=TEXT_DARK),
            name=f"panel {c}",
        )
    base_layout(fig, title, subtitle, 380, dict(l=64, r=16, t=136, b=48))
    axis = dict(
        showgrid=True,
        gridcolor=GRID_LINE_COLOR,
        zeroline=False,
        showline=True,
        linecolor=AXIS_LINE_COLOR,
        tickfont=dict(size=TICK_FONT, color=TEXT_MUTED),
        title_font=dict(size=11, color=TEXT_MUTED),
        fixedrange=True,
    )
    fig.update_xaxes(**axis, dtick=max(1, round(len(steps) / 8)))
    fig.update_yaxes(**axis, tickformat="~s", ticksuffix="B")
    fig.update_layout(
        legend=dict(
            orientation="h", x=0, y=1.16, yanchor="bottom", xanchor="left", font=dict(size=12)
        ),
        showlegend=True,
        hovermode="closest",
    )
    return fig
