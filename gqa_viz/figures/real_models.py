"""Figures of the Real models page: every head of a checkpoint at a glance, the next tokens,
and what grouping its K/V heads costs and saves. No Streamlit.

Axis letters: L layers, N query heads, K kv heads (K' after grouping), G = N // K.

* :func:`overview_figure`: one value per head [L, N] as one heatmap (rows = layers, columns =
  query heads in kv-group order with a gap between groups, each group's colour band and label
  on top). One trace whatever L and N, so a 30-layer model draws as fast as a 2-layer one.
* :func:`top_tokens_figure`: the top-5 next tokens as bars.
* :func:`conversion_figure`: loss on the prompt and on the passage against K' (left axis) with
  the KV-cache bytes per token as bars (right axis).
* :func:`token_chips_html`: the prompt as the tokenizer split it, one chip per token, spaces
  shown as a dot.
"""

from __future__ import annotations

import html
import math
import re

import numpy as np
import plotly.graph_objects as go

from gqa_viz.figures.sharing import k_label
from gqa_viz.figures.theme import (
    AXIS_LINE_COLOR,
    CHIP_BORDER,
    CHIP_CHOSEN,
    CHIP_FILL,
    CHIP_SPACE,
    GRID_LINE_COLOR,
    KV_BYTES_COLOR,
    LOSS_COLORS,
    TEXT_DARK,
    TEXT_MUTED,
    TRANSPARENT,
    base_layout,
    group_color,
)

ROW_PX = 15  # one layer's row in the overview
NOMINAL_WIDTH = 700  # px of plot area the group labels are sized for (the figure stretches)


GAP = 0.35  # the gap between two kv groups, in query-head columns


def _columns(N: int, K: int) -> tuple[list[int], list[int], np.ndarray]:
    """Column index of each query head (a narrow gap column between kv groups), each column's
    head (-1 for a gap), and the columns' edges in x (one more than columns)."""
    G = N // K
    col_of = [n + n // G for n in range(N)]
    heads = [-1] * (N + K - 1)
    for n, c in enumerate(col_of):
        heads[c] = n
    widths = [1.0 if h >= 0 else GAP for h in heads]
    return col_of, heads, np.concatenate([[0.0], np.cumsum(widths)])


def overview_figure(
    values,
    num_kv_heads: int,
    *,
    name: str,
    fmt: str,
    colorscale: str,
    title: str,
    subtitle: str = "",
    layer: int | None = None,
    zmax: float | None = None,
) -> go.Figure:
    """``values`` [L, N] (one number per head) as rows of layers and columns of query heads,
    grouped by the K/V head they read (query head n reads kv head n // G).

    ``name`` and ``fmt`` (a d3 format) label the value in the hover and the colour bar;
    ``layer`` outlines that row (the layer shown in full); ``zmax`` fixes the colour scale's top
    (default: the largest value).
    """
    v = np.asarray(values, np.float64)
    if v.ndim != 2 or min(v.shape) == 0:
        raise ValueError(f"values must be [layers, query heads], got shape {v.shape}.")
    L, N = v.shape
    K = int(num_kv_heads)
    if K <= 0 or N % K:
        raise ValueError(f"{K} K/V heads cannot be shared by {N} query heads (K must divide N).")
    G = N // K
    col_of, heads, edges = _columns(N, K)
    C = len(heads)
    centre = (edges[:-1] + edges[1:]) / 2  # [C]
    z = np.full((L, C), np.nan)
    z[:, col_of] = v
    # customdata per cell: query head, kv head (NaN in gaps, which hover skips).
    head = np.array([np.nan if h < 0 else h for h in heads])
    custom = np.stack(
        [np.broadcast_to(head, (L, C)), np.broadcast_to(head // G, (L, C))], axis=-1
    )  # [L, C, 2]
    top = float(np.nanmax(v)) if zmax is None else zmax
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=edges.tolist(),  # one more than columns: the cells' edges
            y=list(range(L)),
            customdata=custom,
            colorscale=colorscale,
            zmin=0.0,
            zmax=top if top > 0 else 1.0,
            hoverongaps=False,
            xgap=1,
            ygap=1,
            colorbar=dict(
                title=dict(text=name.replace(" ", "<br>", 1), side="top"),
                tickformat=fmt,
                thickness=12,
                len=1.0,
                outlinewidth=0,
            ),
            hovertemplate=(
                "layer %{y} · query head %{customdata[0]}<br>K/V head %{customdata[1]}"
                f"<br>{name} = %{{z:{fmt}}}<extra></extra>"
            ),
            name="heads",
            meta={"role": "heads"},
        )
    )
    height = max(300, L * ROW_PX + 160)
    margin = dict(l=64, r=20, t=110, b=50)
    px = 1.0 / (height - margin["t"] - margin["b"])  # one pixel of the plot, in paper units
    # Group bands: a coloured bar over each kv group's columns, labelled when it fits.
    shapes, annotations = [], []
    for j in range(K):
        a, b = edges[col_of[j * G]], edges[col_of[j * G + G - 1] + 1]
        color = group_color(j)
        shapes.append(
            dict(
                type="rect",
                xref="x",
                yref="paper",
                x0=a,
                x1=b,
                y0=1 + 3 * px,
                y1=1 + 11 * px,
                fillcolor=color,
                line=dict(width=0),
                layer="above",
            )
        )
        group_px = G * NOMINAL_WIDTH / edges[-1]
        label = f"K/V {j}" if group_px >= 36 else str(j)
        if group_px >= 12:
            annotations.append(
                dict(
                    x=(a + b) / 2,
                    y=1 + 12 * px,
                    xref="x",
                    yref="paper",
                    text=label,
                    showarrow=False,
                    yanchor="bottom",
                    font=dict(size=10, color=color),
                )
            )
    if layer is not None and 0 <= layer < L:
        shapes.append(
            dict(
                type="rect",
                xref="paper",
                yref="y",
                x0=0,
                x1=1,
                y0=layer - 0.5,
                y1=layer + 0.5,
                line=dict(color=TEXT_DARK, width=1.5),
                fillcolor=TRANSPARENT,
            )
        )
    # Every query head's number under its column (every G-th when crowded).
    step = 1 if N <= 24 else G if G > 1 else max(1, N // 12)
    ticks = [c for n, c in enumerate(col_of) if n % step == 0]  # columns with a tick
    base_layout(fig, title, subtitle, height, margin)
    fig.update_layout(shapes=shapes, annotations=annotations, showlegend=False)
    fig.update_xaxes(
        title_text="query head (grouped by the K/V head it reads)",
        tickmode="array",
        tickvals=[float(centre[c]) for c in ticks],
        ticktext=[str(heads[c]) for c in ticks],
        tickfont=dict(size=10, color=TEXT_MUTED),
        showgrid=False,
        zeroline=False,
        range=[0.0, float(edges[-1])],
        fixedrange=True,
    )
    fig.update_yaxes(
        title_text="layer",
        autorange="reversed",
        tickfont=dict(size=10, color=TEXT_MUTED),
        dtick=1 if L <= 16 else 5 if L <= 60 else 10,
        showgrid=False,
        zeroline=False,
        fixedrange=True,
    )
    return fig


def _shown(token: str) -> str:
    """A token for a label: spaces as "·", quoted ("[id N]", an id the tokenizer lacks, as is),
    HTML-escaped (Plotly reads tags in labels: Llama 2's "<s>" would strike the text through)."""
    if re.fullmatch(r"\[id \d+\]", token):
        return token
    return "'" + html.escape(token.replace(" ", "·"), quote=False) + "'"


def _pct(p: float) -> str:
    return f"{p:.1%}" if p >= 0.001 else f"{p:.2g}"


def top_tokens_figure(tokens, probs, *, title: str, subtitle: str = "", actual: str | None = None):
    """The top next tokens (best first) as horizontal bars of their probability.

    ``actual``: the prompt's own next token, outlined when it is among them.
    """
    probs = [float(p) for p in probs]
    labels = [f"{i + 1}. {_shown(t)}" for i, t in enumerate(tokens)]
    colors = [LOSS_COLORS["prompt"]] * len(tokens)
    lines = [CHIP_CHOSEN if t == actual else LOSS_COLORS["prompt"] for t in tokens]
    fig = go.Figure(
        go.Bar(
            x=probs,
            y=labels,
            orientation="h",
            marker=dict(color=colors, line=dict(color=lines, width=3)),
            text=[_pct(p) for p in probs],
            textposition="outside",
            cliponaxis=False,
            customdata=[html.escape(t) for t in tokens],
            hovertemplate="next token '%{customdata}'<br>p = %{x:.2%}<extra></extra>",
            meta={"role": "top"},
        )
    )
    base_layout(fig, title, subtitle, 60 + 34 * len(tokens) + 50, dict(l=150, r=60, t=80, b=30))
    top = max(probs + [1e-9])
    fig.update_xaxes(
        range=[0, top * 1.25],
        tickformat=".0%" if top >= 0.05 else ".2~e",
        showgrid=True,
        gridcolor=GRID_LINE_COLOR,
        zeroline=False,
        fixedrange=True,
    )
    fig.update_yaxes(autorange="reversed", fixedrange=True, tickfont=dict(size=12))
    return fig


def conversion_figure(
    rows,
    *,
    num_query_heads: int,
    current: int | None,
    dtype: str,
    passage_tokens: int,
    prompt_tokens: int,
) -> go.Figure:
    """Loss against K' (K left, 1 right): one line on the prompt and one on the passage, on
    the left axis, and the KV-cache bytes per token as grey bars on the right.

    ``rows``: :class:`gqa_viz.app.real_models.GroupRow`-like objects (``k``, ``prompt_loss``,
    ``passage_loss``, ``kv_bytes``, ``drift``). ``current`` is ringed.
    """
    rows = sorted(rows, key=lambda r: r.k, reverse=True)
    if not rows:
        raise ValueError("rows is empty.")
    x = [k_label(r.k, num_query_heads) for r in rows]
    finite = [v for r in rows for v in (r.prompt_loss, r.passage_loss) if math.isfinite(v)]
    top_loss = max(finite + [1.0])
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=x,
            y=[r.kv_bytes for r in rows],
            yaxis="y2",
            marker=dict(color=KV_BYTES_COLOR),
            width=0.45,
            name=f"KV cache, bytes per token ({dtype})",
            customdata=[[r.k, r.kv_bytes / rows[0].kv_bytes] for r in rows],
            hovertemplate="K' = %{customdata[0]}<br>KV cache: %{y:,} bytes per token"
            "<br>%{customdata[1]:.0%} of the original<extra></extra>",
            meta={"role": "kv_bytes"},
        )
    )
    for key, label, count in (
        ("prompt", "prompt", prompt_tokens),
        ("passage", "passage", passage_tokens),
    ):
        losses = [getattr(r, f"{key}_loss") for r in rows]
        ppl = [math.exp(v) if v < 700 else math.inf for v in losses]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=losses,
                mode="lines+markers",
                line=dict(color=LOSS_COLORS[key], width=2.5),
                marker=dict(size=9),
                name=f"loss on the {label} ({count} tokens)",
                customdata=[[r.k, p, r.drift] for r, p in zip(rows, ppl, strict=True)],
                hovertemplate=f"K' = %{{customdata[0]}}<br>loss on the {label}: %{{y:.3f}} nats"
                "<br>perplexity %{customdata[1]:,.1f}<br>mean drift (JS) %{customdata[2]:.3f}"
                "<extra></extra>",
                meta={"role": key},
            )
        )
        if current is not None and current in [r.k for r in rows]:
            i = [r.k for r in rows].index(current)
            fig.add_trace(
                go.Scatter(
                    x=[x[i]],
                    y=[losses[i]],
                    mode="markers",
                    hoverinfo="skip",
                    showlegend=False,
                    marker=dict(
                        size=18, color=TRANSPARENT, line=dict(color=LOSS_COLORS[key], width=2)
                    ),
                    meta={"role": "current"},
                )
            )
    base_layout(
        fig,
        "Next-token loss and KV cache against K'",
        "Lines: loss before (left point, K' = K) and after grouping, not uptrained. "
        "Bars: KV-cache bytes per token.",
        380,
        dict(l=64, r=80, t=80, b=60),
    )
    fig.update_layout(
        xaxis=dict(
            title_text="K' (K/V heads per layer after grouping)",
            type="category",
            showline=True,
            linecolor=AXIS_LINE_COLOR,
            fixedrange=True,
        ),
        yaxis=dict(
            title_text="loss (nats per token)",
            range=[0, top_loss * 1.2],  # room above the lines for their hover and rings
            gridcolor=GRID_LINE_COLOR,
            fixedrange=True,
        ),
        yaxis2=dict(
            title_text="KV bytes per token",
            overlaying="y",
            side="right",
            range=[0, rows[0].kv_bytes * 1.45],  # the bars stay below the loss lines' level
            showgrid=False,
            tickformat=".3~s",
            fixedrange=True,
        ),
        legend=dict(orientation="h", x=0, y=-0.22, yanchor="top"),
        barmode="overlay",
        showlegend=True,
    )
    fig.update_layout(margin=dict(l=64, r=80, t=80, b=100), height=420)
    return fig


def token_chips_html(tokens, chosen: int | None = None, ids=None) -> str:
    """The tokens as chips (HTML): spaces as a grey "·", the ``chosen`` position outlined, the
    position (and id) in each chip's tooltip."""
    chips = []
    for i, token in enumerate(tokens):
        body = "".join(
            f'<span style="color:{CHIP_SPACE}">·</span>' if ch == " " else html.escape(ch)
            for ch in token
        )
        tip = f"position {i}" + (f" · id {int(ids[i])}" if ids is not None else "")
        border = f"2px solid {CHIP_CHOSEN}" if i == chosen else f"1px solid {CHIP_BORDER}"
        chips.append(
            f'<span title="{tip}" style="display:inline-block;white-space:pre;margin:2px 2px;'
            f"padding:1px 5px;border:{border};border-radius:4px;background:{CHIP_FILL};"
            f'font-family:monospace;font-size:0.9em;color:{TEXT_DARK}">{body}</span>'
        )
    return f'<div style="line-height:1.9">{"".join(chips)}</div>'


__all__ = [
    "conversion_figure",
    "overview_figure",
    "token_chips_html",
    "top_tokens_figure",
]
