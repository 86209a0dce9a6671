"""Small Plotly figures for the Walkthrough: one query head at each step of the forward pass.

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
G = N // K, H head_dim, D model dim.

Every builder takes NumPy arrays of ONE batch item (and one head) and returns a
``plotly.graph_objects.Figure``; nothing here imports Streamlit. Matrices are drawn as they
are written: row 0 at the top, query positions down the side. Axes are numeric (so repeated
tokens stay separate rows) with the tokens as tick labels. Masked cells are drawn in
:data:`theme.MASKED_COLOR` on a heatmap layer of their own (named :data:`MASKED_NAME`),
never as a low value, so a masked 0 and a computed 0 look different. All colours come from
:mod:`gqa_viz.figures.theme`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gqa_viz.figures import theme

TICK_LABELS = 32  # tick labels per axis before thinning
MASKED_NAME = "masked"
DROPPED_NAME = "dropped"

_COLORBAR = {"thickness": 12, "len": 0.85, "outlinewidth": 0}


# ---------------------------------------------------------------------------------------------
# Shapes as text.


def dims(result) -> dict[str, int]:
    """The axis letters' current values for a playground ``Result``."""
    B, T, N, H = result.trace.query.shape
    S, K = result.trace.key.shape[1], result.trace.key.shape[2]
    return {"B": B, "T": T, "S": S, "N": N, "K": K, "G": N // K, "H": H, "D": result.settings.d}


def shape_text(letters: str, values: dict[str, int]) -> str:
    """``shape_text("BTNH", d)`` -> ``"[B, T, N, H] = [1, 11, 8, 16]"``."""
    return f"[{', '.join(letters)}] = [{', '.join(str(values[c]) for c in letters)}]"


# ---------------------------------------------------------------------------------------------
# Building blocks.


def _ticks(labels: Sequence[str], max_ticks: int = TICK_LABELS) -> dict:
    n = len(labels)
    step = max(1, -(-n // max_ticks))
    idx = list(range(0, n, step))
    return {"tickmode": "array", "tickvals": idx, "ticktext": [str(labels[i]) for i in idx]}


def _feature_labels(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def _is_features(labels: Sequence[str]) -> bool:
    return all(str(t) == str(i) for i, t in enumerate(labels))


def _height(rows: int) -> int:
    return int(min(520, max(250, 120 + 17 * rows)))


def _layout(fig: go.Figure, title: str, height: int, subtitle: str | None = None, color=None):
    font = {"size": 15}
    if color:
        font["color"] = color
    title_layout = {"text": title, "x": 0.0, "xanchor": "left", "xref": "container", "font": font}
    if subtitle:
        title_layout["subtitle"] = {"text": subtitle, "font": {"size": 12}}
    has_panel_titles = any(a.text for a in fig.layout.annotations)
    fig.update_layout(
        template="none",  # what it needs is set here and by each builder, as across the app
        title=title_layout,
        height=height,
        margin={"l": 10, "r": 10, "t": (72 if subtitle else 44) + (22 if has_panel_titles else 0)},
        paper_bgcolor=theme.PAPER_BG,
        plot_bgcolor=theme.PAPER_BG,
        font={"family": theme.FONT_FAMILY, "size": 12},
        showlegend=False,
    )
    fig.update_annotations(font_size=13)
    return fig


def _symmetric_range(z: np.ndarray) -> tuple[float, float]:
    finite = np.abs(z[np.isfinite(z)])
    m = float(finite.max()) if finite.size else 1.0
    m = m if m > 0 else 1.0
    return -m, m


def _matrix_trace(
    z: np.ndarray,
    *,
    name: str,
    signed: bool,
    x_name: str,
    y_name: str,
    zrange: tuple[float, float] | None = None,
) -> go.Heatmap:
    """A heatmap of ``z`` [rows, cols]: diverging around 0 if ``signed``, else from 0 up."""
    z = np.asarray(z, dtype=np.float32)
    if zrange is None:
        if signed:
            zrange = _symmetric_range(z)
        else:
            finite = z[np.isfinite(z)]
            zrange = (0.0, max(float(finite.max()) if finite.size else 0.0, 1e-9))
    return go.Heatmap(
        z=z,
        x=np.arange(z.shape[1]),
        y=np.arange(z.shape[0]),
        colorscale=theme.LOGIT_COLORSCALE if signed else theme.PROB_COLORSCALE,
        zmin=zrange[0],
        zmax=zrange[1],
        name=name,
        colorbar=dict(_COLORBAR),
        hovertemplate=f"{y_name} %{{y}}, {x_name} %{{x}}<br>{name} = %{{z:.4f}}<extra></extra>",
    )


def _masked_trace(mask: np.ndarray) -> go.Heatmap:
    """A grey layer over the cells where ``mask`` is False (NaN elsewhere: transparent)."""
    z = np.where(mask, np.nan, 0.0).astype(np.float32)
    return go.Heatmap(
        z=z,
        x=np.arange(mask.shape[1]),
        y=np.arange(mask.shape[0]),
        colorscale=[[0.0, theme.MASKED_COLOR], [1.0, theme.MASKED_COLOR]],
        zmin=0.0,
        zmax=1.0,
        showscale=False,
        name=MASKED_NAME,
        hovertemplate="query %{y}, key %{x}<br>masked: not attended<extra></extra>",
    )


def _matrix_axes(
    fig, x_labels, y_labels, x_title, y_title, *, row=None, col=None, show_y=True, x_ticks=None
):
    where = {} if row is None else {"row": row, "col": col}
    if x_ticks is None:
        x_ticks = TICK_LABELS // 2 if _is_features(x_labels) else TICK_LABELS
    fig.update_xaxes(
        title_text=x_title,
        title_standoff=4,
        range=[-0.5, len(x_labels) - 0.5],
        showgrid=False,
        zeroline=False,
        tickangle=-45 if any(len(str(t)) > 2 for t in x_labels) else 0,
        tickfont_size=10,
        automargin=True,
        **where,
        **_ticks(x_labels, x_ticks),
    )
    fig.update_yaxes(
        title_text=y_title if show_y else None,
        title_standoff=4,
        range=[len(y_labels) - 0.5, -0.5],  # row 0 at the top
        showgrid=False,
        zeroline=False,
        showticklabels=show_y,
        ticks="outside" if show_y else "",
        tickfont_size=10,
        automargin=True,
        **where,
        **_ticks(y_labels),
    )


def _single(z, *, title, subtitle, x_labels, y_labels, x_title, y_title, name, signed, color=None):
    fig = go.Figure(_matrix_trace(z, name=name, signed=signed, x_name=x_title, y_name=y_title))
    _matrix_axes(fig, x_labels, y_labels, x_title, y_title)
    return _layout(fig, title, _height(len(y_labels)), subtitle, color)


def _panels(
    panels: Sequence[dict],
    *,
    y_labels: Sequence[str],
    y_title: str,
    title: str,
    subtitle: str | None,
    color: str | None = None,
    spacing: float = 0.12,
) -> go.Figure:
    """Side-by-side heatmaps with a common row axis; each panel has its own colour bar right of
    it unless ``showscale`` is False or ``colorbar`` overrides it (keys: z, name, signed,
    x_labels, x_title, title, zrange, showscale, colorbar)."""
    fig = make_subplots(
        rows=1,
        cols=len(panels),
        subplot_titles=[p["title"] for p in panels],
        horizontal_spacing=spacing,
    )
    for col, p in enumerate(panels, start=1):
        tr = _matrix_trace(
            p["z"],
            name=p["name"],
            signed=p["signed"],
            x_name=p["x_title"],
            y_name=y_title,
            zrange=p.get("zrange"),
        )
        domain = fig.get_subplot(1, col).xaxis.domain
        tr.update(
            showscale=p.get("showscale", True),
            colorbar={
                **_COLORBAR,
                "x": domain[1] + 0.01,
                "xanchor": "left",
                **p.get("colorbar", {}),
            },
        )
        fig.add_trace(tr, row=1, col=col)
        _matrix_axes(
            fig,
            p["x_labels"],
            y_labels,
            p["x_title"],
            y_title,
            row=1,
            col=col,
            show_y=col == 1,
            x_ticks=TICK_LABELS // (2 * len(panels)),
        )
    return _layout(fig, title, _height(len(y_labels)), subtitle, color)


# ---------------------------------------------------------------------------------------------
# The steps.


def inputs_figure(
    query: np.ndarray,
    q_labels: Sequence[str],
    value: np.ndarray | None = None,
    k_labels: Sequence[str] | None = None,
) -> go.Figure:
    """Step 1: the query input [T, D] (and, in cross-attention, the value input [S, D])."""
    T, D = query.shape
    if value is None:
        return _single(
            query,
            title=f"query input  [T, D] = [{T}, {D}]",
            subtitle="one row per token; it also supplies the keys and values",
            x_labels=_feature_labels(D),
            y_labels=q_labels,
            x_title="feature d",
            y_title="query position t",
            name="x",
            signed=True,
        )
    # Cross-attention: two sequences of different lengths; stacked so each keeps its labels.
    S = value.shape[0]
    zrange = _symmetric_range(np.concatenate([query.ravel(), value.ravel()]))
    fig = make_subplots(
        rows=2,
        cols=1,
        subplot_titles=(f"query  [T, D] = [{T}, {D}]", f"value (= key)  [S, D] = [{S}, {D}]"),
        vertical_spacing=0.16,
        row_heights=[T, S],
    )
    for row, (z, labels, ax) in enumerate(
        ((query, q_labels, "query t"), (value, k_labels, "key s")), start=1
    ):
        tr = _matrix_trace(z, name="x", signed=True, x_name="feature d", y_name=ax, zrange=zrange)
        tr.update(showscale=row == 1)
        fig.add_trace(tr, row=row, col=1)
        _matrix_axes(fig, _feature_labels(D), labels, "feature d", ax, row=row, col=1)
    return _layout(
        fig, "inputs (cross-attention)", _height(T + S) + 60, "one row per token, one sequence each"
    )


def query_head_figure(q: np.ndarray, q_labels: Sequence[str], head: int, kv_head: int):
    """Step 2: the projected queries of one head, Q[:, n, :] -> [T, H]."""
    T, H = q.shape
    return _single(
        q,
        title=f"Q of query head {head}  [T, H] = [{T}, {H}]",
        subtitle=f"this head's own projection of every token (it reads K/V head {kv_head})",
        x_labels=_feature_labels(H),
        y_labels=q_labels,
        x_title="head feature h",
        y_title="query position t",
        name="q",
        signed=True,
        color=theme.group_color(kv_head),
    )


def kv_figure(
    k: np.ndarray,
    v: np.ndarray,
    k_labels: Sequence[str],
    kv_head: int,
    query_heads: Sequence[int],
) -> go.Figure:
    """Step 2: the keys and values of one K/V head, K[:, k, :] and V[:, k, :] -> [S, H] each."""
    S, H = k.shape
    first, last = query_heads[0], query_heads[-1]
    readers = f"query head {first}" if first == last else f"query heads {first}–{last}"
    return _panels(
        [
            {
                "z": k,
                "name": "k",
                "signed": True,
                "x_labels": _feature_labels(H),
                "x_title": "head feature h",
                "title": f"K  [S, H] = [{S}, {H}]",
            },
            {
                "z": v,
                "name": "v",
                "signed": True,
                "x_labels": _feature_labels(H),
                "x_title": "head feature h",
                "title": f"V  [S, H] = [{S}, {H}]",
            },
        ],
        y_labels=k_labels,
        y_title="key position s",
        title=f"K and V of K/V head {kv_head}",
        subtitle=f"computed once and read by all of {readers}",
        color=theme.group_color(kv_head),
        spacing=0.18,
    )


def before_after_figure(
    before: np.ndarray,
    after: np.ndarray,
    labels: Sequence[str],
    *,
    title: str,
    subtitle: str,
    y_title: str,
    color: str | None = None,
) -> go.Figure:
    """A step that changes one head's vectors row by row (a real layer's QK-norm or RoPE):
    [rows, H] before and after it, side by side, each on its own colour scale."""
    rows, H = before.shape
    panels = [
        {
            "z": z,
            "name": name,
            "signed": True,
            "x_labels": _feature_labels(H),
            "x_title": "head feature h",
            "title": f"{name}  [{rows}, {H}]",
        }
        for name, z in (("before", before), ("after", after))
    ]
    return _panels(
        panels, y_labels=labels, y_title=y_title, title=title, subtitle=subtitle, color=color,
        spacing=0.18,
    )  # fmt: skip


def sharing_figure(num_query_heads: int, num_kv_heads: int, head: int) -> go.Figure:
    """Step 3: which K/V head each query head reads (n -> n // G), the chosen head highlighted."""
    N, K = num_query_heads, num_kv_heads
    G = N // K
    chosen_kv = head // G
    fig = go.Figure()
    kv_x = [kv * G + (G - 1) / 2 for kv in range(K)]
    for n in range(N):
        kv = n // G
        in_group = kv == chosen_kv
        fig.add_trace(
            go.Scatter(
                x=[n, kv_x[kv]],
                y=[1, 0],
                mode="lines",
                line={
                    "color": theme.group_color(kv),
                    "width": 4 if n == head else (2.5 if in_group else 1.2),
                },
                opacity=1.0 if in_group else 0.35,
                hoverinfo="skip",
                name=f"q{n} -> kv{kv}",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=list(range(N)),
            y=[1] * N,
            mode="markers+text" if N <= 24 else "markers",
            text=[f"q{n}" for n in range(N)],
            textposition="top center",
            marker={
                "size": [18 if n == head else 12 for n in range(N)],
                "color": [theme.group_color(n // G) for n in range(N)],
                "opacity": [1.0 if n // G == chosen_kv else 0.4 for n in range(N)],
                "line": {
                    "width": [3 if n == head else 0 for n in range(N)],
                    "color": theme.PAPER_BG,
                },
            },
            name="query heads",
            customdata=[n // G for n in range(N)],
            hovertemplate="query head %{x} reads K/V head %{customdata}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=kv_x,
            y=[0] * K,
            mode="markers+text" if K <= 24 else "markers",
            text=[f"kv{kv}" for kv in range(K)],
            textposition="bottom center",
            marker={
                "size": [26 if kv == chosen_kv else 18 for kv in range(K)],
                "color": [theme.group_color(kv) for kv in range(K)],
                "symbol": "square",
                "opacity": [1.0 if kv == chosen_kv else 0.45 for kv in range(K)],
                "line": {"width": 1, "color": theme.PAPER_BG},  # parts it from its lines
            },
            name="K/V heads",
            customdata=[f"{kv * G}..{kv * G + G - 1}" for kv in range(K)],
            hovertemplate="K/V head %{text}: read by query heads %{customdata}<extra></extra>",
        )
    )
    fig.update_xaxes(visible=False, range=[-1, N])
    fig.update_yaxes(
        range=[-0.6, 1.6],
        tickvals=[0, 1],
        ticktext=[f"K = {K} K/V heads", f"N = {N} query heads"],
        showgrid=False,
        zeroline=False,
        automargin=True,
    )
    first = chosen_kv * G
    return _layout(
        fig,
        f"query head {head} reads K/V head {chosen_kv}",
        280,
        f"G = N / K = {G} query heads per K/V head; this group: query heads {first}–{first + G - 1}",
        theme.group_color(chosen_kv),
    )


def logits_figure(
    logits: np.ndarray,
    q_labels: Sequence[str],
    k_labels: Sequence[str],
    head: int,
    subtitle: str = "q·k / √H before the mask",
) -> go.Figure:
    """Step 4: the scaled dot products of one head [T, S], before masking (signed scale).

    ``subtitle``: what they are (a real layer may scale otherwise, or soft-cap them)."""
    T, S = logits.shape
    return _single(
        logits,
        title=f"logits of query head {head}  [T, S] = [{T}, {S}]",
        subtitle=f"{subtitle}; red: positive, blue: negative",
        x_labels=k_labels,
        y_labels=q_labels,
        x_title="key position s",
        y_title="query position t",
        name="logit",
        signed=True,
    )


def mask_figure(mask: np.ndarray, q_labels: Sequence[str], k_labels: Sequence[str]) -> go.Figure:
    """Step 5: allowed (True) and masked (False) query-key pairs [T, S]; shared by all heads."""
    T, S = mask.shape
    fig = go.Figure(
        go.Heatmap(
            z=mask.astype(np.int8),
            x=np.arange(S),
            y=np.arange(T),
            colorscale=[
                [0.0, theme.MASKED_COLOR],
                [0.5, theme.MASKED_COLOR],
                [0.5, theme.STEPS_ATTEND_COLOR],
                [1.0, theme.STEPS_ATTEND_COLOR],
            ],
            zmin=0,
            zmax=1,
            colorbar={**_COLORBAR, "tickvals": [0.25, 0.75], "ticktext": ["masked", "attend"]},
            name="mask",
            xgap=1 if S <= 64 else 0,
            ygap=1 if T <= 64 else 0,
            hovertemplate="query %{y}, key %{x}<br>attend = %{z}<extra></extra>",
        )
    )
    _matrix_axes(fig, k_labels, q_labels, "key position s", "query position t")
    empty = int((~mask.any(axis=1)).sum())
    sub = f"{int(mask.sum())} of {T * S} pairs attend; one mask for all heads"
    if empty:
        sub += f"; {empty} row(s) attend to nothing"
    return _layout(fig, f"mask  [T, S] = [{T}, {S}]", _height(T), sub)


def probs_figure(
    probs: np.ndarray,
    mask: np.ndarray,
    q_labels: Sequence[str],
    k_labels: Sequence[str],
    head: int,
) -> go.Figure:
    """Step 6: softmax probabilities of one head [T, S]; masked cells grey, not white."""
    T, S = probs.shape
    fig = go.Figure(
        _matrix_trace(
            np.where(mask, probs, np.nan), name="p", signed=False, x_name="key", y_name="query"
        )
    )
    fig.add_trace(_masked_trace(mask))
    _matrix_axes(fig, k_labels, q_labels, "key position s", "query position t")
    return _layout(
        fig,
        f"probabilities of query head {head}  [T, S] = [{T}, {S}]",
        _height(T),
        "softmax over each row's allowed keys; grey: masked (p = 0)",
    )


def dropout_figure(
    dropped: np.ndarray,
    probs: np.ndarray,
    mask: np.ndarray,
    q_labels: Sequence[str],
    k_labels: Sequence[str],
    head: int,
    rate: float,
) -> go.Figure:
    """Step 7: probabilities after dropout [T, S]; dropped cells marked with an x."""
    T, S = dropped.shape
    fig = go.Figure(
        _matrix_trace(
            np.where(mask, dropped, np.nan),
            name="p after dropout",
            signed=False,
            x_name="key",
            y_name="query",
        )
    )
    fig.add_trace(_masked_trace(mask))
    rows, cols = np.nonzero(mask & (probs > 0) & (dropped == 0))
    fig.add_trace(
        go.Scatter(
            x=cols,
            y=rows,
            mode="markers",
            marker={
                "symbol": "x-thin",
                "size": 8 if max(T, S) <= 32 else 5,
                "line": {"width": 1.5, "color": theme.MASKED_PATTERN_COLOR},
                "color": theme.MASKED_PATTERN_COLOR,
            },
            name=DROPPED_NAME,
            hovertemplate="query %{y}, key %{x}: dropped<extra></extra>",
        )
    )
    _matrix_axes(fig, k_labels, q_labels, "key position s", "query position t")
    return _layout(
        fig,
        f"probabilities after dropout, query head {head}  [T, S] = [{T}, {S}]",
        _height(T),
        f"×: dropped (rate {rate:g}); kept ones × 1 / (1 − {rate:g}); grey: masked",
    )


def context_figure(
    context: np.ndarray,
    q_labels: Sequence[str],
    head: int,
    kv_head: int,
    gate: np.ndarray | None = None,
    ungated: np.ndarray | None = None,
) -> go.Figure:
    """Step 8: the head's context [T, H]; with a gate: weighted sum, gate and their product."""
    T, H = context.shape
    title = f"context of query head {head}  [T, H] = [{T}, {H}]"
    if gate is None:
        return _single(
            context,
            title=title,
            subtitle=f"row t: the probability-weighted average of K/V head {kv_head}'s values",
            x_labels=_feature_labels(H),
            y_labels=q_labels,
            x_title="head feature h",
            y_title="query position t",
            name="c",
            signed=True,
            color=theme.group_color(kv_head),
        )
    zrange = _symmetric_range(np.concatenate([np.ravel(ungated), np.ravel(context)]))
    common = {"x_labels": _feature_labels(H), "x_title": "h"}
    return _panels(
        [
            {
                **common,
                "z": ungated,
                "name": "weighted sum",
                "signed": True,
                "title": "weighted sum of V",
                "zrange": zrange,
                "showscale": False,
            },
            {
                **common,
                "z": gate,
                "name": "gate",
                "signed": False,
                "title": "gate σ(·) in (0, 1)",
                "zrange": (0.0, 1.0),
                "colorbar": {
                    "x": 1.01,
                    "y": 0.0,
                    "yanchor": "bottom",
                    "len": 0.45,
                    "title": "gate",
                },
            },
            {
                **common,
                "z": context,
                "name": "gated context",
                "signed": True,
                "title": "product: the context",
                "zrange": zrange,
                "colorbar": {"x": 1.01, "y": 1.0, "yanchor": "top", "len": 0.45, "title": "c"},
            },
        ],
        y_labels=q_labels,
        y_title="query position t",
        title=title,
        subtitle="use_gate: the weighted sum times a sigmoid gate, elementwise",
        color=theme.group_color(kv_head),
        spacing=0.04,
    )


def output_figure(output: np.ndarray, q_labels: Sequence[str]) -> go.Figure:
    """Step 9: the layer output [T, D]: every head's context projected back and summed."""
    T, D = output.shape
    return _single(
        output,
        title=f"output  [T, D] = [{T}, {D}]",
        subtitle="all heads' contexts, projected back to the model dim and summed",
        x_labels=_feature_labels(D),
        y_labels=q_labels,
        x_title="feature d",
        y_title="query position t",
        name="out",
        signed=True,
    )
