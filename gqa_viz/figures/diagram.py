"""The GQA wiring diagram: N query heads, each wired to the K/V head it reads.

Query head n reads K/V head n // G, G = N // K (Keras' order; see :mod:`gqa_viz.core`).
Boxes and wires are layout shapes, named so tests and other code can find them:
``"q{n}"`` (query head box), ``"kv{j}"`` (K/V head box), ``"q{n}->kv{j}"`` (wire).
Hover text comes from two invisible marker traces, ``"query heads"`` (one point per query
box) and ``"K/V heads"`` (one point under each query head, on the K/V box it reads).
"""

from __future__ import annotations

from numbers import Integral

import plotly.graph_objects as go

from gqa_viz.core import divisors
from gqa_viz.figures.theme import FONT_FAMILY, PAPER_BG, TEXT_DARK, group_color, text_color

KIND_NAMES = {
    "MHA": "multi-head attention",
    "GQA": "grouped-query attention",
    "MQA": "multi-query attention",
}

_WIDTH = 100.0  # data units spanned by the query row, whatever N is
_LEFT = -19.0  # room for the row labels left of the boxes
_GAP = 18.0  # vertical distance between the two rows (wire length)
_NOMINAL_PX = 900.0  # assumed figure width in px, to size fonts and hover targets
# The most query heads the drawing stays legible for (boxes, fonts and wires shrink with N);
# the app's own limit (gqa_viz/app/limits.py) must not exceed it (a test checks).
LEGIBLE_HEADS = 64


def _check(num_query_heads, num_key_value_heads) -> tuple[int, int]:
    for name, value in (
        ("num_query_heads", num_query_heads),
        ("num_key_value_heads", num_key_value_heads),
    ):
        if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    n, k = int(num_query_heads), int(num_key_value_heads)
    if n > LEGIBLE_HEADS:
        raise ValueError(f"num_query_heads must be at most {LEGIBLE_HEADS}, got {n}.")
    if k not in divisors(n):
        raise ValueError(
            f"num_query_heads ({n}) must be divisible by num_key_value_heads ({k}); "
            f"valid choices are {', '.join(map(str, divisors(n)))}."
        )
    return n, k


def attention_kind(num_query_heads: int, num_key_value_heads: int) -> str:
    """``"MHA"`` (K = N), ``"MQA"`` (K = 1 < N) or ``"GQA"`` (1 < K < N)."""
    n, k = _check(num_query_heads, num_key_value_heads)
    if k == n:
        return "MHA"
    return "MQA" if k == 1 else "GQA"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _heads(first: int, last: int) -> str:
    return f"query head {first}" if first == last else f"query heads {first}-{last}"


def describe(num_query_heads: int, num_key_value_heads: int) -> str:
    """One Markdown sentence: G, the kind of attention, and the K/V cache saving vs MHA."""
    n, k = _check(num_query_heads, num_key_value_heads)
    g = n // k
    if n == 1:
        return (
            "G = 1: a single query head with its own K/V head. With one head, MHA and MQA "
            "coincide, and there is nothing to save in the K/V cache."
        )
    if k == n:
        return (
            f"G = 1: every query head has its own K/V head. This is **multi-head attention "
            f"(MHA)**, the baseline: the K/V cache stores all {n} heads, no saving."
        )
    saved = f"{100 * (1 - k / n):.3g}%"
    if k == 1:
        share = f"G = {g}: all {n} query heads share one K/V head. This is **multi-query attention (MQA)**"
    else:
        share = (
            f"G = {g}: each K/V head is shared by {g} query heads. "
            "This is **grouped-query attention (GQA)**"
        )
    return (
        f"{share}: the K/V cache stores {_plural(k, 'head')} instead of {n}, "
        f"**{g}× smaller** than MHA ({saved} less memory)."
    )


def _labelled(count: int, step: int) -> list[int]:
    """Every ``step``-th of ``count`` heads, plus the last one when it does not crowd."""
    idx = list(range(0, count, step))
    if count - 1 - idx[-1] >= 3:
        idx.append(count - 1)
    return idx


def _fit(width_px: float, chars: int, sizes: tuple[int, ...]) -> int | None:
    """The largest font size of ``sizes`` at which ``chars`` characters fit in ``width_px``."""
    for size in sizes:
        if 0.62 * size * chars + 8 <= width_px:
            return size
    return None


def _step(slot_px: float, chars: int, size: int) -> int:
    """Label every ``step``-th head of a row so that labels ``slot_px`` apart do not touch."""
    step = 1
    while step * slot_px < 0.62 * size * chars + 8:
        step *= 2
    return step


def _row_labels(
    fig: go.Figure,
    name: str,
    xs: list[float],
    y_in: float,
    y_out: float,
    out_position: str,
    box_px: float,
    slot_px: float,
    short: list[str],
    fills: list[str],
    long: list[str] | None = None,
) -> bool:
    """Add one text trace labelling a row of boxes; True if the labels sit outside the row.

    Inside the boxes: ``long`` labels if they fit, else ``short`` ones. Outside: ``short``
    labels for every few boxes, so neighbouring labels never touch.
    """
    size = _fit(box_px, max(map(len, long)), (15, 14, 13)) if long else None
    if size is not None:
        labels, idx, outside = long, list(range(len(xs))), False
    else:
        size = _fit(box_px, max(map(len, short)), (15, 14, 13, 12, 11))
        outside = size is None
        labels = short
        if outside:
            size = 11
            idx = _labelled(len(xs), _step(slot_px, max(map(len, short)), size))
        else:
            idx = list(range(len(xs)))
    fig.add_trace(
        go.Scatter(
            name=name,
            x=[xs[i] for i in idx],
            y=[y_out if outside else y_in] * len(idx),
            text=[labels[i] for i in idx],
            mode="text",
            textposition=out_position if outside else "middle center",
            textfont=dict(
                size=size,
                color=[TEXT_DARK if outside else text_color(fills[i]) for i in idx],
            ),
            hoverinfo="skip",
            showlegend=False,
        )
    )
    return outside


def gqa_diagram(num_query_heads: int, num_key_value_heads: int) -> go.Figure:
    """N query-head boxes (top row) wired to K K/V-head boxes (bottom row), one colour per group.

    Query head n, its wire and K/V head n // G all have the colour ``group_color(n // G)``.
    Box sizes, fonts and wire widths shrink as N grows so that N = 1 ... 64 stay legible;
    labels move outside a row whose boxes are too narrow, and then name every few heads.
    Raises ``ValueError`` unless both numbers are positive integers, N <= LEGIBLE_HEADS
    and K divides N.
    """
    n, k = _check(num_query_heads, num_key_value_heads)
    g = n // k
    kind = attention_kind(n, k)

    slot = _WIDTH / n  # horizontal room per query head
    box_w = min(0.8 * slot, 12.0)
    box_h = min(max(box_w, 6.0), 10.0)
    kv_w = (g - 1) * slot + box_w  # a K/V box spans the query boxes of its group
    kv_y0, kv_y1 = 0.0, box_h
    q_y0, q_y1 = box_h + _GAP, 2 * box_h + _GAP
    px = _NOMINAL_PX / (_WIDTH - _LEFT)  # px per data unit at the nominal width

    q_x = [(i + 0.5) * slot for i in range(n)]
    kv_x = [(j * g + g / 2) * slot for j in range(k)]

    wire_w = 2.5 if n <= 8 else 2.0 if n <= 16 else 1.5 if n <= 32 else 1.0

    shapes: list[dict] = []
    # Wires first, so the boxes are drawn over their ends. Each wire lands on the top edge
    # of its K/V box, pulled towards the box centre, so a group's wires visibly converge.
    for i in range(n):
        j = i // g
        land = kv_x[j] + 0.45 * (q_x[i] - kv_x[j])
        shapes.append(
            dict(
                type="line",
                name=f"q{i}->kv{j}",
                x0=q_x[i],
                y0=q_y0,
                x1=land,
                y1=kv_y1,
                line=dict(color=group_color(j), width=wire_w),
                layer="below",
            )
        )
    for i in range(n):
        c = group_color(i // g)
        shapes.append(
            dict(
                type="rect",
                name=f"q{i}",
                x0=q_x[i] - box_w / 2,
                x1=q_x[i] + box_w / 2,
                y0=q_y0,
                y1=q_y1,
                fillcolor=c,
                line=dict(color="white", width=1 if n > 32 else 1.5),
                layer="below",
            )
        )
    for j in range(k):
        c = group_color(j)
        shapes.append(
            dict(
                type="rect",
                name=f"kv{j}",
                x0=kv_x[j] - kv_w / 2,
                x1=kv_x[j] + kv_w / 2,
                y0=kv_y0,
                y1=kv_y1,
                fillcolor=c,
                line=dict(color="white", width=1 if k > 32 else 1.5),
                layer="below",
            )
        )

    fig = go.Figure()
    # Labels: inside the boxes while they fit, else above/below the row, every few heads.
    q_out = _row_labels(
        fig,
        "query head labels",
        q_x,
        (q_y0 + q_y1) / 2,
        q_y1 + 0.8,
        "top center",
        box_w * px,
        slot * px,
        [f"q{i}" for i in range(n)],
        [group_color(i // g) for i in range(n)],
    )
    kv_out = _row_labels(
        fig,
        "K/V head labels",
        kv_x,
        (kv_y0 + kv_y1) / 2,
        kv_y0 - 0.8,
        "bottom center",
        kv_w * px,
        g * slot * px,
        [f"kv{j}" for j in range(k)],
        [group_color(j) for j in range(k)],
        long=[f"K/V head {j}" for j in range(k)],
    )

    # Hover targets: invisible markers over the boxes.
    q_hover = []
    for i in range(n):
        j = i // g
        q_hover.append(
            f"query head {i} reads K/V head {j} (group {j}: {_heads(j * g, j * g + g - 1)})"
        )
    kv_hover = [
        f"K/V head {j} is read by {_heads(j * g, j * g + g - 1)} (G = {g})" for j in range(k)
    ]
    fig.add_trace(
        go.Scatter(
            name="query heads",
            x=q_x,
            y=[(q_y0 + q_y1) / 2] * n,
            mode="markers",
            marker=dict(
                size=max(box_w, box_h) * px, symbol="square", opacity=0, color=group_color(0)
            ),
            hovertext=q_hover,
            hovertemplate="%{hovertext}<extra></extra>",
            hoverlabel=dict(bgcolor=[group_color(i // g) for i in range(n)]),
            showlegend=False,
        )
    )
    fig.add_trace(
        go.Scatter(
            # one target under each query head, so the whole width of a wide box hovers
            name="K/V heads",
            x=q_x,
            y=[(kv_y0 + kv_y1) / 2] * n,
            mode="markers",
            marker=dict(
                size=max(slot, box_h) * px, symbol="square", opacity=0, color=group_color(0)
            ),
            hovertext=[kv_hover[i // g] for i in range(n)],
            hovertemplate="%{hovertext}<extra></extra>",
            hoverlabel=dict(bgcolor=[group_color(i // g) for i in range(n)]),
            showlegend=False,
        )
    )

    # Row labels, left of the rows.
    annotations = [
        dict(
            x=-2.0,
            y=(y0 + y1) / 2,
            xanchor="right",
            yanchor="middle",
            text=text,
            showarrow=False,
            align="right",
            font=dict(size=13, color=TEXT_DARK),
        )
        for text, y0, y1 in (
            (f"<b>N = {n}</b><br>{'query head' if n == 1 else 'query heads'}", q_y0, q_y1),
            (f"<b>K = {k}</b><br>{'K/V head' if k == 1 else 'K/V heads'}", kv_y0, kv_y1),
        )
    ]

    y_lo, y_hi = kv_y0 - (4.0 if kv_out else 1.5), q_y1 + (4.0 if q_out else 1.5)
    x_lo, x_hi = _LEFT, _WIDTH + 1.0
    margin = dict(l=10, r=10, t=56, b=10)
    height = round((y_hi - y_lo) * px) + margin["t"] + margin["b"]
    suffix = " (= MQA: one head)" if n == 1 else ""
    title = (
        f"<b>{kind}</b>{suffix}: {_plural(n, 'query head')} · {_plural(k, 'K/V head')} · "
        f"G = {n}/{k} = {g} per group"
    )
    fig.update_layout(
        template="none",  # every property it needs is set here, as in every figure of the app
        title=dict(text=title, x=0.0, xanchor="left", font=dict(size=17, color=TEXT_DARK)),
        shapes=shapes,
        annotations=annotations,
        height=height,
        margin=margin,
        paper_bgcolor=PAPER_BG,
        plot_bgcolor=PAPER_BG,
        font=dict(family=FONT_FAMILY, color=TEXT_DARK),
        showlegend=False,
        hovermode="closest",
        dragmode=False,
        meta=dict(num_query_heads=n, num_key_value_heads=k, groups=g, kind=kind),
    )
    fig.update_xaxes(
        range=[x_lo, x_hi], visible=False, showgrid=False, zeroline=False, fixedrange=True
    )
    fig.update_yaxes(
        range=[y_lo, y_hi],
        visible=False,
        showgrid=False,
        zeroline=False,
        fixedrange=True,
        scaleanchor="x",
        scaleratio=1,
    )
    return fig
