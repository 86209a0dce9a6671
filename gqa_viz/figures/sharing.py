"""Figures of the KV sharing page: what grouping K/V heads does, and what it saves. No Streamlit.

Axis letters as in :mod:`gqa_viz.core`: N query heads, K kv heads, G = N // K, T queries,
S keys.

* :func:`diff_figure`: per-head difference maps (grouped minus MHA attention) [N, T, S] on one
  symmetric diverging colour axis (``DIFF_COLORSCALE``, centred on 0);
* :func:`drift_figure`: mean Jensen-Shannon divergence and relative output error against K,
  from MHA (K = N) on the left to MQA (K = 1) on the right, two small panels;
* :func:`cache_figure`: KV-cache bytes against context length for the configured model and its
  MHA and MQA variants, with the GPU memory left after the weights as a horizontal line (and,
  on the KV calculator page, the longest context that fits and max_position_embeddings).
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gqa_viz.figures.theme import (
    AXIS_LINE_COLOR,
    DIFF_COLORSCALE,
    DRIFT_COLORS,
    GPU_LINE_COLOR,
    GRID_LINE_COLOR,
    MASKED_COLOR,
    POSITION_LIMIT_COLOR,
    TEXT_MUTED,
    TRANSPARENT,
    VARIANT_COLORS,
    base_layout,
    group_color,
)

VARIANT_NAMES = {"mha": "MHA (K = N)", "configured": "as configured", "mqa": "MQA (K = 1)"}


def k_label(K: int, N: int) -> str:
    """``"8 (MHA)"``, ``"2"``, ``"1 (MQA)"``: an x tick of the drift chart."""
    if K == N:
        return f"{K} (MHA)" if N > 1 else f"{K} (MHA = MQA)"
    return f"{K} (MQA)" if K == 1 else str(K)


# ---------------------------------------------------------------------------------------------
# Difference maps.


def diff_figure(diff, mask=None, num_key_value_heads: int = 1, title: str | None = None):
    """One heatmap per query head of ``diff`` [N, T, S] (grouped minus MHA attention).

    One colour axis for all heads, symmetric about 0 (``cmin = -cmax``, at least 1e-6 wide), on
    ``DIFF_COLORSCALE``. Masked cells (``mask`` [T, S] False) are NaN and drawn grey. Each head's
    title is coloured by the K/V group it falls in.
    """
    d = np.asarray(diff, dtype=np.float32)
    if d.ndim != 3:
        raise ValueError(f"diff must be [N, T, S], got shape {d.shape}.")
    N, T, S = d.shape
    K = int(num_key_value_heads)
    if K <= 0 or N % K:
        raise ValueError(f"num_key_value_heads ({K}) must divide N = {N}.")
    G = N // K
    m = np.ones((T, S), bool) if mask is None else np.asarray(mask, bool)
    if m.shape != (T, S):
        raise ValueError(f"mask must be [T, S] = [{T}, {S}], got {list(m.shape)}.")
    z = np.where(m, d, np.nan)
    finite = np.abs(z[np.isfinite(z)])
    top = max(float(finite.max()) if finite.size else 0.0, 1e-6)
    cols = min(N, 4 if N <= 8 else 8)
    rows = math.ceil(N / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"q{n} · K/V {n // G}" for n in range(N)],
        horizontal_spacing=0.02,
        vertical_spacing=0.12 / max(rows, 1) + 0.02,
    )
    for n in range(N):
        r, c = divmod(n, cols)
        if not m.all():
            fig.add_trace(
                go.Heatmap(
                    z=np.where(m, np.nan, 1.0),
                    colorscale=[[0, MASKED_COLOR], [1, MASKED_COLOR]],
                    showscale=False,
                    hoverinfo="skip",
                    name=f"q{n} masked",
                    meta={"role": "mask", "head": n},
                ),
                row=r + 1,
                col=c + 1,
            )
        fig.add_trace(
            go.Heatmap(
                z=np.round(z[n], 5),
                coloraxis="coloraxis",
                hoverongaps=False,
                name=f"q{n}",
                meta={"role": "diff", "head": n, "kv_head": n // G},
                hovertemplate=f"q head {n}<br>query %{{y}}<br>key %{{x}}<br>Δp = %{{z:+.4f}}"
                "<extra></extra>",
            ),
            row=r + 1,
            col=c + 1,
        )
    hidden = dict(showticklabels=False, ticks="", showgrid=False, zeroline=False, fixedrange=True)
    fig.update_xaxes(**hidden)
    fig.update_yaxes(autorange="reversed", **hidden)
    for n, ann in enumerate(fig.layout.annotations):
        ann.font = dict(size=11, color=group_color(n // G))
    base_layout(
        fig,
        title or "Difference in attention: grouped − MHA, per query head",
        f"Red: the grouped head attends more; blue: less. One colour scale for all heads, "
        f"±{top:.3g}. Grey = masked.",
        int(150 + rows * 170),
    )
    fig.update_layout(
        coloraxis=dict(
            colorscale=DIFF_COLORSCALE,
            cmin=-top,
            cmax=top,
            cmid=0.0,
            colorbar=dict(title=dict(text="Δ probability", side="right"), thickness=12),
        ),
        margin=dict(l=20, r=20, t=100, b=20),
        showlegend=False,
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Drift against K.


def drift_figure(curve: list[dict], current_k: int | None = None, title: str | None = None):
    """Mean JS divergence (left panel) and relative output error (right) against K.

    ``curve``: rows of :func:`gqa_viz.sharing.drift_curve` (``K``, ``G``, ``js``,
    ``rel_error``). The x axis is categorical, K descending (MHA left, MQA right): the divisors
    of N, evenly spaced, which for powers of two is log2 spacing. ``current_k`` is ringed.
    """
    if not curve:
        raise ValueError("curve is empty.")
    rows = sorted(curve, key=lambda r: r["K"], reverse=True)
    N = rows[0]["K"] * rows[0]["G"]
    labels = [k_label(r["K"], N) for r in rows]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["mean JS divergence (nats)", "relative output error"],
        horizontal_spacing=0.14,
    )
    series = (
        ("js", "JS divergence", ".3g", 1),
        ("rel_error", "relative output error", ".1%", 2),
    )
    for key, name, fmt, col in series:
        color = DRIFT_COLORS[key]
        y = [float(r[key]) for r in rows]
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=y,
                mode="lines+markers",
                name=name,
                line=dict(color=color, width=2),
                marker=dict(size=8),
                customdata=[[r["K"], r["G"]] for r in rows],
                hovertemplate=f"K = %{{customdata[0]}} (G = %{{customdata[1]}})<br>{name} = "
                f"%{{y:{fmt}}}<extra></extra>",
                meta={"role": key},
            ),
            row=1,
            col=col,
        )
        if current_k is not None and current_k in [r["K"] for r in rows]:
            i = [r["K"] for r in rows].index(current_k)
            fig.add_trace(
                go.Scatter(
                    x=[labels[i]],
                    y=[y[i]],
                    mode="markers",
                    marker=dict(size=16, color=TRANSPARENT, line=dict(color=color, width=2)),
                    name=f"K = {current_k} (shown)",
                    hoverinfo="skip",
                    meta={"role": "current"},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(
        title_text="K (K/V heads)",
        type="category",
        categoryorder="array",
        categoryarray=labels,
        showline=True,
        linecolor=AXIS_LINE_COLOR,
        gridcolor=GRID_LINE_COLOR,
        fixedrange=True,
    )
    fig.update_yaxes(rangemode="tozero", gridcolor=GRID_LINE_COLOR, fixedrange=True)
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    base_layout(
        fig,
        title or "Drift from the multi-head layer, by number of K/V heads",
        "Same input, same query and output weights; only the K/V heads are grouped.",
        330,
    )
    fig.update_layout(showlegend=False, margin=dict(l=60, r=20, t=90, b=55))
    return fig


# ---------------------------------------------------------------------------------------------
# Cache bytes against context length.


def _tokens(n: int) -> str:
    """``"512"``, ``"4k"``, ``"1M"`` (binary: 1k = 1024 tokens)."""
    if n >= 2**20:
        return f"{n / 2**20:g}M"
    return f"{n / 2**10:g}k" if n >= 2**10 else str(n)


def cache_figure(
    contexts,
    sizes: dict[str, list[float]],
    *,
    budget_bytes: float | None = None,
    unit: float = 10**9,
    unit_name: str = "GB",
    current: int | None = None,
    title: str | None = None,
    max_context: int | None = None,
    max_position: int | None = None,
):
    """KV-cache size against context length, one line per variant in ``sizes``.

    ``sizes``: ``{"configured" | "mha" | "mqa": [bytes at each context]}``. ``budget_bytes``:
    GPU memory minus the weights, drawn as a horizontal line (``meta["role"] == "gpu"``; a
    trace, so it has a legend entry and hover) when it is positive. Values are divided by ``unit`` and shown in
    ``unit_name``. ``current`` marks the chosen context length with a vertical dotted line
    (``meta["role"] == "context"``, with a legend entry).
    ``max_context`` (the longest context that fits) is a ring on the budget line
    (``meta["role"] == "max_context"``) and ``max_position`` (the model's
    max_position_embeddings) a vertical dashed line (``meta["role"] == "max_position"``),
    each drawn when it lies within the contexts.
    """
    x = [int(c) for c in contexts]
    if not x:
        raise ValueError("contexts is empty.")
    fig = go.Figure()
    for key in ("mha", "configured", "mqa"):
        if key not in sizes:
            continue
        y = [float(b) / unit for b in sizes[key]]
        if len(y) != len(x):
            raise ValueError(f"sizes[{key!r}] has {len(y)} values for {len(x)} contexts.")
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                name=VARIANT_NAMES.get(key, key),
                line=dict(color=VARIANT_COLORS.get(key, TEXT_MUTED), width=2.5),
                hovertemplate=f"%{{x:,}} tokens<br>%{{y:,.2f}} {unit_name}<extra>"
                f"{VARIANT_NAMES.get(key, key)}</extra>",
                meta={"role": "cache", "variant": key},
            )
        )
    if budget_bytes is not None and budget_bytes > 0:  # none when the weights alone don't fit
        b = float(budget_bytes) / unit
        fig.add_trace(
            go.Scatter(
                x=[x[0], x[-1]],
                y=[b, b],
                mode="lines",
                name="GPU memory − weights",
                line=dict(color=GPU_LINE_COLOR, width=2, dash="dash"),
                hovertemplate=f"room for the cache: %{{y:,.2f}} {unit_name}<extra></extra>",
                meta={"role": "gpu"},
            )
        )
    inside = range(x[0], x[-1] + 1)
    if max_context and budget_bytes is not None and budget_bytes > 0 and max_context in inside:
        fig.add_trace(
            go.Scatter(
                x=[max_context],
                y=[float(budget_bytes) / unit],
                mode="markers",
                name=f"longest context that fits: {max_context:,}",
                marker=dict(
                    size=12,
                    color=TRANSPARENT,
                    line=dict(color=VARIANT_COLORS["configured"], width=2),
                ),
                hovertemplate=f"{max_context:,} tokens fit<extra></extra>",
                meta={"role": "max_context"},
            )
        )
    top = max([float(b) / unit for ys in sizes.values() for b in ys] + [0.0])
    if budget_bytes is not None and budget_bytes > 0:
        top = max(top, float(budget_bytes) / unit)
    # Vertical lines as traces (not shapes), for their legend entries and hover.
    for at, role, name, hover, line in (
        (max_position, "max_position", "max_position_embeddings: {:,}",
         "max_position_embeddings {:,}", dict(color=POSITION_LIMIT_COLOR, width=1.5, dash="dash")),
        (current, "context", "context chosen above: {:,}", "{:,} tokens (chosen above)",
         dict(color=TEXT_MUTED, width=1, dash="dot")),
    ):  # fmt: skip
        if at is None or at not in inside:
            continue
        fig.add_trace(
            go.Scatter(
                x=[at, at],
                y=[0, top],
                mode="lines",
                name=name.format(at),
                line=line,
                hovertemplate=hover.format(at) + "<extra></extra>",
                meta={"role": role},
            )
        )
    ticks = [2**i for i in range(0, 31, 2) if x[0] <= 2**i <= x[-1]]
    fig.update_xaxes(
        title_text="context length (tokens per sequence)",
        type="log",
        tickvals=ticks,
        ticktext=[_tokens(t) for t in ticks],
        showline=True,
        linecolor=AXIS_LINE_COLOR,
        gridcolor=GRID_LINE_COLOR,
    )
    fig.update_yaxes(
        title_text=f"KV cache ({unit_name})",
        rangemode="tozero",
        showline=True,
        linecolor=AXIS_LINE_COLOR,
        gridcolor=GRID_LINE_COLOR,
    )
    base_layout(
        fig,
        title or "KV cache against context length",
        "The batch and dtypes chosen above (1k = 1024 tokens); dashed: GPU memory left after "
        "the weights.",
        440,
    )
    fig.update_layout(
        margin=dict(l=70, r=20, t=80, b=110),
        legend=dict(orientation="h", x=0, y=-0.3, xanchor="left", yanchor="top"),
    )
    return fig
