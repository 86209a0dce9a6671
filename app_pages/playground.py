"""Playground: every query head's attention map, grouped by the K/V head it shares.

Thin on purpose: the controls are :func:`app_pages._controls.settings_controls`, the numbers come
from :func:`gqa_viz.app.playground.cached_run` and the two big figures from its
:func:`~gqa_viz.app.playground.heads_chart` and :func:`~gqa_viz.app.playground.kv_chart` (all
shared by every session), the rest from :mod:`gqa_viz.figures.heads`. The parts below the
sidebar are fragments: the length sliders (drawn into the sidebar) with everything they
change, and inside it the view toolbar with the heads figure, the zoom, and the dropout panel,
each rerunning alone when its own widgets change, reusing the computed result.
"""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

from app_pages._chart import chart
from app_pages._column_width import column_width
from app_pages._controls import compute_key, settings_controls, view_controls
from app_pages._layout import wrapping_row
from app_pages._lengths import LengthSlots, length_controls
from gqa_viz.app import limits
from gqa_viz.app.playground import (
    VIEW_NAMES,
    Result,
    cached_run,
    downloads,
    heads_chart,
    input_shape,
    kv_chart,
    summary_markdown,
)
from gqa_viz.app.settings import Settings
from gqa_viz.figures.heads import dropout_figure, pool_factor, zoom_figure


def _compute(key: Settings) -> Result:
    B, T, S = input_shape(key)
    cells = B * key.n * T * S
    what = f" for {cells:,} attention scores" if cells > 4_000_000 else ""
    with st.spinner(f"Running the layer{what}…", show_time=True):  # shown after 0.5 s
        return cached_run(key)


def _downloads(result: Result, values: np.ndarray, kind: str, stem: str) -> None:
    N, T, S = values.shape
    st.markdown(
        f"**Downloads** (batch item {result.settings.item}): the {VIEW_NAMES[kind]} [N, T, S] "
        f"= [{N}, {T}, {S}] and the mask [T, S] (True = attend)."
    )
    for col, d in zip(st.columns(4), downloads(result, values, kind, stem), strict=True):
        col.download_button(
            d.label,
            data=d.data,
            file_name=d.file_name,
            mime=d.mime,
            key=d.key,
            disabled=d.disabled,
            help=d.help,
            icon=":material/download:",
        )


@st.fragment
def _dropout_section(result: Result) -> None:
    s = result.settings
    st.subheader("Dropout")
    if not s.training:
        st.caption(
            f"dropout = {s.dropout:g} is set but inactive: Keras applies it only in training. "
            "Turn on *training* in *Layer options* to see it."
        )
        return
    left, right = st.columns([3, 1.15], gap="medium")
    with right:
        head = st.selectbox(
            "Query head shown",
            range(s.n),
            format_func=lambda n: f"q{n} (K/V head {n // s.groups})",
            key="dropout_head",
        )
        st.markdown(
            "With `return_attention_scores=True`, Keras returns the **scores before dropout**: "
            "the left panel, and the big figure above. The layer's output is computed from the "
            f"dropped weights on the right: each weight is zeroed with probability {s.dropout:g}, "
            f"the others are scaled by 1 / (1 − {s.dropout:g})."
        )
    fig = dropout_figure(
        result.item("probs")[head],
        result.item("dropped_probs")[head],
        result.mask,
        result.q_labels,
        result.k_labels,
        head=head,
        rate=s.dropout,
        kv_head=head // s.groups,
    )
    with left:
        chart(fig, key="dropout_chart", config=_config(result, f"dropout_q{head}"))


def _config(result: Result, kind: str) -> dict:
    s = result.settings
    T, S = len(result.q_labels), len(result.k_labels)
    return {
        "toImageButtonOptions": {
            "format": "png",
            "filename": f"gqa_N{s.n}_K{s.k}_T{T}_S{S}_{kind}",
            "scale": 2,
        },
    }


@st.fragment
def _heads_panel(result: Result, key: Settings) -> None:
    """The view toolbar, the heads figure and the summary; reruns alone when the view changes.

    ``key``: the settings ``result`` was computed for (figures are cached by it).
    """
    T, S = len(result.q_labels), len(result.k_labels)
    pooled = pool_factor(result.settings.n, T, S, max_cells=limits.MAX_DRAWN_CELLS) > 1
    view = view_controls(pooled)
    # The summary beside the figure while both fit, else below it (a narrow window): 300 px
    # hold its tables whole, 520 px the token ticks of four panels a row.
    left, right = wrapping_row("heads_row", (3, 520), (1.15, 300))
    with left:
        width = column_width("heads_chart")  # None until the browser has said
        with st.spinner("Drawing…", show_time=True):
            fig = heads_chart(key, view.view, view.scale, view.pool, width)
        chart(
            fig,
            key="heads_chart",
            width="content" if width else "stretch",
            config=_config(result, view.view),
        )
    with right:
        st.markdown(summary_markdown(result))
    for note in result.notes:
        st.info(note, icon="ℹ️")
    if pooled:
        _zoom_panel(result, view)
    s = result.settings
    stem = f"gqa_N{s.n}_K{s.k}_T{T}_S{S}_{view.view}_item{s.item}"
    _downloads(result, result.item(view.view), view.view, stem)


@st.fragment
def _zoom_panel(result: Result, view: Settings) -> None:
    """A region of the map at full resolution, for maps too big to draw cell by cell."""
    s = result.settings
    T, S, G = len(result.q_labels), len(result.k_labels), s.groups
    ss = st.session_state
    st.subheader("Zoom in: exact scores of a region")
    st.caption(
        "The map above is downsampled. Pick a region and a K/V group: its cells are drawn one "
        f"by one (at most {limits.MAX_DRAWN_CELLS:,} cells), on the same colour scale as the overview."
    )
    # The first region: a square corner of up to 128 x 128 cells that the limit can draw for
    # all G heads of a group (G x side² cells).
    side = max(1, min(T, S, 128, math.isqrt(limits.MAX_DRAWN_CELLS // G)))
    for name, top, default in (("zoom_q", T, (0, side - 1)), ("zoom_k", S, (0, side - 1))):
        lo, hi = ss.get(name, default)
        ss[name] = (min(lo, top - 1), min(hi, top - 1))
    if ss.get("zoom_group", 0) not in range(s.k):  # also a value the box never offered
        ss["zoom_group"] = 0
    cols = st.columns([1, 2, 2], gap="medium")
    group = cols[0].selectbox(
        "K/V group",
        range(s.k),
        key="zoom_group",
        format_func=lambda j: f"K/V head {j} (q{j * G}–q{j * G + G - 1})" if G > 1 else f"q{j}",
    )
    q0, q1 = cols[1].slider("Queries", 0, T - 1, key="zoom_q")
    k0, k1 = cols[2].slider("Keys", 0, S - 1, key="zoom_k")
    try:
        fig = zoom_figure(
            result.item(view.view),
            result.mask,
            result.q_labels,
            result.k_labels,
            s.k,
            group=group,
            queries=(q0, q1),
            keys=(k0, k1),
            kind=view.view,
            saturate=99.0 if view.scale == "p99" else None,
            max_cells=limits.MAX_DRAWN_CELLS,
        )
    except ValueError as error:  # a region too big to draw cell by cell
        st.warning(str(error), icon="⚠️")
        return
    chart(fig, key="zoom_chart", config=_config(result, "zoom"))


def _show(result: Result, key: Settings) -> None:
    s = result.settings
    _heads_panel(result, key)

    if s.dropout > 0:
        _dropout_section(result)

    _kv_section(result, key)


@st.fragment
def _kv_section(result: Result, key: Settings) -> None:
    """The K/V heads themselves, drawn only when asked for (a second figure costs every rerun)."""
    s = result.settings
    if not st.toggle("Show the K/V heads: what the query heads of each group share", key="show_kv"):
        return
    st.markdown(
        "Each K/V head is one key projection and one value projection, computed once and "
        f"read by its {s.groups} query head{'s' if s.groups > 1 else ''}. "
        "In **'pooled'** weights mode the layer starts from one seeded multi-head layer and "
        "averages the K/V projections of each group, so moving K changes only the sharing: "
        "the query and output projections stay the same. In **'fresh'** mode every K gets "
        f"new random weights. (Now: **{s.weights}**.)"
    )
    kv = kv_chart(key)
    chart(kv, key="kv_chart", config=_config(result, "kv_heads"))


@st.fragment
def _body(slots: LengthSlots) -> None:
    """Everything the length sliders change: moving one reruns this alone."""
    key = compute_key(length_controls(slots))
    try:
        result = _compute(key)
    except ValueError as error:
        st.error(f"These settings cannot run: {error}", icon="🚫")
    else:
        _show(result, key)


slots = LengthSlots()
settings_controls(slots)
st.title("Playground")
st.markdown(
    "Every query head's attention map for your input, one heatmap per head, **grouped by the "
    "K/V head it shares**: the heads in one coloured frame read the same keys and values, "
    "and grey cells are masked."
)
_body(slots)
