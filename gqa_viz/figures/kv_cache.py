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
from gqa_viz.kv_cache import CacheBytes, ModelConfig, bytes_per_token

# Decimal units, as GPU makers quote memory (GB = 10**9 bytes).
UNITS = (("GB", 10**9), ("MB", 10**6), ("kB", 10**3), ("B", 1))


def pick_unit(top: float) -> tuple[str, int]:
    """The largest decimal unit in which ``top`` bytes is at least 1: ``("MB", 10**6)``."""
    for name, size in UNITS:
        if top >= size:
            return name, size
    return "B", 1


def _groups(model: ModelConfig) -> list[tuple[tuple[str, int | None], list[int]]]:
    """Layer indices by (kind, window): global first, then local by window (largest first),
    then MLA, as :func:`gqa_viz.kv_cache.layer_groups` orders them."""
    out: dict[tuple[str, int | None], list[int]] = {}
    for i, layer in enumerate(model.layers):
        out.setdefault((layer.kind, layer.window), []).append(i)
    order = {"full": 0, "sliding": 1, "mla": 2}
    return sorted(out.items(), key=lambda g: (order[g[0][0]], -(g[0][1] or 0)))


def _label(kind: str, window: int | None, model: ModelConfig, mixed: bool) -> str:
    if kind == "mla":
        return f"MLA layers ({model.layers[0].latent}-element latent)"
    if kind == "sliding":
        return f"local layers ({window:,}-token window)"
    return "global layers (every token)" if mixed else "layers (every token)"


def layer_figure(model: ModelConfig, cache: CacheBytes, title: str | None = None) -> go.Figure:
    """One bar per layer of ``model``: the bytes ``cache`` (from
    :func:`gqa_viz.kv_cache.kv_cache_bytes` for that model) holds in it.

    A trace per group of layers (``meta["role"] == "layer"``, with ``kind`` and ``window``);
    y in the decimal unit of :func:`pick_unit` (``meta["unit"]`` bytes), the exact bytes in the
    hover. Local layers whose window cuts the context get a pale bar behind them
    (``meta["role"] == "uncapped"``): their bytes per token times the whole context, what a
    calculator that ignores windows counts.
    """
    L = model.num_layers
    if len(cache.per_layer) != L:
        raise ValueError(f"cache has {len(cache.per_layer)} layers; the model has {L}.")
    per_token = bytes_per_token(model, cache.dtype)
    uncapped = [float(b) * cache.tokens * cache.batch for b in per_token]
    held = [float(b) for b in cache.per_layer]
    unit_name, unit = pick_unit(max(uncapped + held))
    groups = _groups(model)
    mixed = len({kind for (kind, _), _ in groups}) > 1
    fig = go.Figure()
    colors: dict[tuple[str, int | None], str] = {}
    extra = iter(EXTRA_WINDOW_COLORS)  # a second or third window size (rare)
    for kind, window in (key for key, _ in groups):
        later_local = kind == "sliding" and any(k == "sliding" for k, _ in colors)
        colors[kind, window] = next(extra, None) if later_local else None
        colors[kind, window] = colors[kind, window] or LAYER_KIND_COLORS[kind]
    capped = [i for i in range(L) if cache.cached_tokens[i] < cache.tokens]
    width = 0.8 if L <= 256 else 1.0  # explicit: each trace holds every other layer or so
    if capped:  # hatched, behind: what a local layer would hold without its window
        color = [colors[model.layers[i].kind, model.layers[i].window] for i in capped]
        fig.add_trace(
            go.Bar(
                x=capped,
                y=[uncapped[i] / unit for i in capped],
                width=width,
                name="local layers without their window (what window-blind calculators count)",
                marker=dict(
                    color=PAPER_BG,
                    line=dict(color=color, width=1),
                    pattern=dict(shape="/", fgcolor=color, bgcolor=PAPER_BG, solidity=0.3),
                ),
                customdata=[[f"{int(uncapped[i]):,}"] for i in capped],
                hovertemplate="layer %{x} without its window: %{customdata[0]} B<extra></extra>",
                legendrank=1001,  # listed after the layers it stands behind
                meta={"role": "uncapped", "unit": unit},
            )
        )
    for (kind, window), index in groups:
        fig.add_trace(
            go.Bar(
                x=index,
                y=[held[i] / unit for i in index],
                width=width,
                name=_label(kind, window, model, mixed),
                marker=dict(color=colors[kind, window]),
                showlegend=True,
                customdata=[
                    [f"{held[i]:,.0f}", f"{cache.cached_tokens[i]:,}", f"{float(per_token[i]):,g}"]
                    for i in index
                ],
                hovertemplate=(
                    "layer %{x}: %{customdata[0]} B<br>%{customdata[1]} tokens cached × "
                    "%{customdata[2]} B per token"
                    + (f" × batch {cache.batch}" * (cache.batch > 1))
                    + f"<extra>{_label(kind, window, model, mixed)}</extra>"
                ),
                meta={"role": "layer", "kind": kind, "window": window, "unit": unit},
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
