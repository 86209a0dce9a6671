"""Figures of the KV calculator page: a model's cache layer by layer. No Streamlit.

Axis letters as in :mod:`gqa_viz.kv_cache`: L layers, S cached tokens.

* :func:`layer_figure`: one bar per layer, the bytes it caches at the chosen context, batch
  and dtype, coloured by what the layer is (global, local with its window, MLA); behind each
  local layer a pale bar shows what it would hold without its window.

The cache against context length is :func:`gqa_viz.figures.sharing.cache_figure`, shared with
the KV sharing page.
"""

from __future__ import annotations

import plotly.graph_objects as go

from gqa_viz.figures.theme import (
    AXIS_LINE_COLOR,
    EXTRA_WINDOW_COLORS,
    GRID_LINE_COLOR,
    LAYER_KIND_COLORS,
    PAPER_BG,
    base_layout,
)
from gqa_viz.kv_cache import CacheBytes, LayerGroup, ModelConfig, dtype_bytes

# Decimal units, as GPU makers quote memory (GB = 10**9 bytes).
UNITS = (("GB", 10**9), ("MB", 10**6), ("kB", 10**3), ("B", 1))


def pick_unit(top: float) -> tuple[str, int]:
    """The largest decimal unit in which ``top`` bytes is at least 1: ``("MB", 10**6)``."""
    for name, size in UNITS:
        if top >= size:
            return name, size
    return "B", 1


def _label(group: LayerGroup) -> str:
    """The group's label (:func:`gqa_viz.kv_cache.layer_groups`) and what its layers keep."""
    layer = group.layer
    if layer.kind == "mla":
        return f"{group.label} ({layer.latent}-element latent)"
    if layer.kind == "sliding":
        return f"{group.label} ({layer.window:,}-token window)"
    return f"{group.label} (every token)"


def layer_figure(model: ModelConfig, cache: CacheBytes, title: str | None = None) -> go.Figure:
    """One bar per layer of ``model``: the bytes ``cache`` (from
    :func:`gqa_viz.kv_cache.kv_cache_bytes` for that model) holds in it.

    A trace per group of layers (``cache.groups``, in their order; ``meta["role"] ==
    "layer"``, with ``kind`` and ``window``); y in the decimal unit of :func:`pick_unit`
    (``meta["unit"]`` bytes), the exact bytes in the hover. Local layers whose window cuts the
    context get a pale bar behind them (``meta["role"] == "uncapped"``): their bytes per token
    times the whole context, what a calculator that ignores windows counts.
    """
    L = model.num_layers
    if len(cache.per_layer) != L:
        raise ValueError(f"cache has {len(cache.per_layer)} layers; the model has {L}.")
    size = dtype_bytes(cache.dtype)
    per_token = {g: g.layer.elements_per_token * size for g in cache.groups}  # one layer's
    held = [float(b) for b in cache.per_layer]
    uncapped = {g: float(per_token[g] * cache.tokens * cache.batch) for g in cache.groups}
    unit_name, unit = pick_unit(max(held + list(uncapped.values())))
    fig = go.Figure()
    colors: dict[LayerGroup, str] = {}
    extra = iter(EXTRA_WINDOW_COLORS)  # a second or third window size (rare)
    for g in cache.groups:
        later_local = g.layer.kind == "sliding" and any(x.layer.kind == "sliding" for x in colors)
        colors[g] = (next(extra, None) if later_local else None) or LAYER_KIND_COLORS[g.layer.kind]
    capped = sorted(
        (i, g) for g in cache.groups if g.cached_tokens < cache.tokens for i in g.indices
    )
    width = 0.8 if L <= 256 else 1.0  # explicit: each trace holds every other layer or so
    if capped:  # hatched, behind: what a local layer would hold without its window
        color = [colors[g] for _, g in capped]
        fig.add_trace(
            go.Bar(
                x=[i for i, _ in capped],
                y=[uncapped[g] / unit for _, g in capped],
                width=width,
                name="local layers without their window (what window-blind calculators count)",
                marker=dict(
                    color=PAPER_BG,
                    line=dict(color=color, width=1),
                    pattern=dict(shape="/", fgcolor=color, bgcolor=PAPER_BG, solidity=0.3),
                ),
                customdata=[[f"{int(uncapped[g]):,}"] for _, g in capped],
                hovertemplate="layer %{x} without its window: %{customdata[0]} B<extra></extra>",
                legendrank=1001,  # listed after the layers it stands behind
                meta={"role": "uncapped", "unit": unit},
            )
        )
    for g in cache.groups:
        fig.add_trace(
            go.Bar(
                x=list(g.indices),
                y=[held[i] / unit for i in g.indices],
                width=width,
                name=_label(g),
                marker=dict(color=colors[g]),
                showlegend=True,
                customdata=[
                    [f"{held[i]:,.0f}", f"{g.cached_tokens:,}", f"{float(per_token[g]):,g}"]
                    for i in g.indices
                ],
                hovertemplate=(
                    "layer %{x}: %{customdata[0]} B<br>%{customdata[1]} tokens cached × "
                    "%{customdata[2]} B per token"
                    + (f" × batch {cache.batch}" * (cache.batch > 1))
                    + f"<extra>{_label(g)}</extra>"
                ),
                meta={
                    "role": "layer",
                    "kind": g.layer.kind,
                    "window": g.layer.window,
                    "unit": unit,
                },
            )
        )
    fig.update_xaxes(
        title_text="layer",
        range=[-0.6, L - 0.4],
        showline=True,
        linecolor=AXIS_LINE_COLOR,
        showgrid=False,
        fixedrange=True,
    )
    fig.update_yaxes(
        title_text=f"KV cache per layer ({unit_name})",
        rangemode="tozero",
        gridcolor=GRID_LINE_COLOR,
        fixedrange=True,
    )
    batch = f" × batch {cache.batch}" if cache.batch > 1 else ""
    base_layout(
        fig,
        title or f"KV cache per layer at {cache.tokens:,} tokens{batch} ({cache.dtype})",
        _subtitle(model, bool(capped)),
        400,
    )
    fig.update_layout(
        barmode="overlay",
        margin=dict(l=70, r=20, t=80, b=95),
        legend=dict(orientation="h", x=0, y=-0.3, xanchor="left", yanchor="top"),
    )
    return fig


def _subtitle(model: ModelConfig, capped: bool) -> str:
    kinds = {layer.kind for layer in model.layers}
    if kinds == {"mla"}:
        return "Every layer caches one latent per token, shared by all query heads."
    parts = []
    if "full" in kinds:
        parts.append("Global layers keep every token.")
    if "sliding" in kinds:
        parts.append(
            "Local layers keep only their window"
            + (" (hatched: what they would hold without it)." if capped else ".")
        )
    return " ".join(parts)
