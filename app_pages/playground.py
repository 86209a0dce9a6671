"""Playground: every query head's attention map, grouped by the K/V head it shares.

Thin on purpose: the controls are :func:`app_pages._controls.settings_controls`, the numbers come
from :func:`gqa_viz.playground.cached_run` (shared by all sessions), the figures from
:mod:`gqa_viz.figures.heads`. The parts below the sidebar are fragments: the view toolbar and
the heads figure, the zoom, and the dropout panel each rerun alone when their own widgets
change, reusing the computed result.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from app_pages._controls import compute_key, settings_controls, view_controls
from gqa_viz.figures.diagram import KIND_NAMES, attention_kind
from gqa_viz.figures.heads import (
    MAX_CELLS,
    dropout_figure,
    heads_figure,
    kv_heads_figure,
    mask_csv,
    npy_bytes,
    pool_factor,
    scores_csv,
    zoom_figure,
)
from gqa_viz.playground import Result, cached_run, input_shape, summary
from gqa_viz.settings import Settings

MAX_CSV_ROWS = 2_000_000  # the long-format CSV has N x T x S rows; beyond this, .npy only
MAX_NPY_BYTES = 256 * 2**20  # a bigger .npy download is refused (the server builds it in memory)
VIEW_NAMES = {"probs": "probabilities", "logits": "logits"}


def _compute(key: Settings) -> Result:
    B, T, S = input_shape(key)
    cells = B * key.n * T * S
    what = f" for {cells:,} attention scores" if cells > 4_000_000 else ""
    with st.spinner(f"Running the layer{what}…", show_time=True):  # shown after 0.5 s
        return cached_run(key)


@st.cache_resource(max_entries=16, show_spinner=False)
def _heads_fig(key: Settings, view: str, scale: str, pool: str):
    result = cached_run(key)
    return heads_figure(
        result.item(view),
        result.mask,
        result.q_labels,
        result.k_labels,
        key.k,
        kind=view,
        title=None,
        saturate=99.0 if scale == "p99" else None,
        pool=pool,
    )


@st.cache_resource(max_entries=16, show_spinner=False)
def _kv_fig(key: Settings):
    result = cached_run(key)
    return kv_heads_figure(result.item("key"), result.item("value"), result.k_labels, key.n)


def _bytes(n: int) -> str:
    """Binary units: 2816 -> '2.75 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.3g} {unit}"
        value /= 1024
    return f"{n} B"


def _summary_markdown(result: Result) -> str:
    s = result.settings
    T, S = len(result.q_labels), len(result.k_labels)
    info = summary(s, T, S)
    kind = attention_kind(s.n, s.k)
    p, p_mha = info["parameters"], info["parameters (MHA)"]
    kv, kv_mha = info["K/V cache per token (float32)"], info["K/V cache per token, MHA"]
    kv_all, kv_all_mha = info["K/V cache for this batch"], info["K/V cache for this batch, MHA"]
    B = 1 if s.mode == "sentence" else s.batch
    shapes = "\n".join(
        f"| {name.split(' [')[0]} | `{value}` |" for name, value in info.items() if "[" in name
    )
    this = "this" if kind == "MHA" else kind
    return f"""
#### {kind}: {KIND_NAMES[kind]}
N = {s.n} query heads, K = {s.k} K/V head{"s" if s.k > 1 else ""}:
**G = {s.groups}** query head{"s" if s.groups > 1 else ""} per K/V head.

| tensor | shape |
|:--|:--|
{shapes}

| | {this} | MHA |
|:--|--:|--:|
| parameters | {p:,} | {p_mha:,} |
| K/V cache per token | {_bytes(kv)} | {_bytes(kv_mha)} |
| K/V cache, this input | {_bytes(kv_all)} | {_bytes(kv_all_mha)} |

{_cache_sentence(s, kind, p, p_mha, B, S)}
"""


def _cache_sentence(s: Settings, kind: str, p: int, p_mha: int, B: int, S: int) -> str:
    floats = f"2·K·H = {2 * s.k * s.h} numbers per token"
    this_input = f"This input: B·S = {B}·{S} tokens."
    if kind == "MHA":
        return (
            "Every query head has its own K/V head: nothing is shared, and the K/V cache "
            f"(float32, one layer) keeps {floats}. {this_input}"
        )
    return (
        f"{100 * (1 - p / p_mha):.0f}% fewer parameters than MHA of the same width. The K/V "
        f"cache (float32, one layer) keeps {floats} instead of 2·N·H = {2 * s.n * s.h}: "
        f"**{s.n // s.k}× smaller**. {this_input}"
    )


def _downloads(result: Result, values: np.ndarray, kind: str, stem: str) -> None:
    s = result.settings
    mask = result.mask
    N, T, S = values.shape
    what = VIEW_NAMES[kind]
    st.markdown(
        f"**Downloads** (batch item {s.item}): the {what} [N, T, S] = [{N}, {T}, {S}] and the "
        f"mask [T, S] (True = attend)."
    )
    cols = st.columns(4)
    too_big = N * T * S > MAX_CSV_ROWS
    cols[0].download_button(
        f"{what} (.csv)",
        data=lambda: scores_csv(values, mask, result.q_labels, result.k_labels, s.k),
        file_name=f"{stem}.csv",
        mime="text/csv",
        key="dl_scores_csv",
        disabled=too_big,
        help=(
            f"{N * T * S:,} rows: too many for a CSV, use .npy"
            if too_big
            else "Long format: head, kv_head, query_pos, query_token, key_pos, key_token, "
            "score, masked."
        ),
        icon=":material/download:",
    )
    npy_too_big = values.size * 4 > MAX_NPY_BYTES
    cols[1].download_button(
        f"{what} (.npy)",
        data=lambda: npy_bytes(values.astype(np.float32)),
        file_name=f"{stem}.npy",
        mime="application/octet-stream",
        key="dl_scores_npy",
        disabled=npy_too_big,
        help=(
            f"{values.size * 4 / 2**20:,.0f} MiB: above the {MAX_NPY_BYTES // 2**20} MiB limit "
            "for downloads; zoom in and download a region's figure, or run gqa_viz locally"
            if npy_too_big
            else "float32 [N, T, S]; np.load() it."
        ),
        icon=":material/download:",
    )
    cols[2].download_button(
        "mask (.csv)",
        data=lambda: mask_csv(mask, result.q_labels, result.k_labels),
        file_name=f"{stem}_mask.csv",
        mime="text/csv",
        key="dl_mask_csv",
        icon=":material/download:",
    )
    cols[3].download_button(
        "mask (.npy)",
        data=lambda: npy_bytes(mask.astype(bool)),
        file_name=f"{stem}_mask.npy",
        mime="application/octet-stream",
        key="dl_mask_npy",
        help="bool [T, S], True = the query may attend to the key.",
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
        st.plotly_chart(
            fig, theme=None, key="dropout_chart", config=_config(result, f"dropout_q{head}")
        )


def _config(result: Result, kind: str) -> dict:
    s = result.settings
    T, S = len(result.q_labels), len(result.k_labels)
    return {
        "displaylogo": False,
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
    pooled = pool_factor(result.settings.n, T, S) > 1
    view = view_controls(pooled)
    with st.spinner("Drawing…", show_time=True):
        fig = _heads_fig(key, view.view, view.scale, view.pool)
    left, right = st.columns([3, 1.15], gap="medium")
    with left:
        st.plotly_chart(fig, theme=None, key="heads_chart", config=_config(result, view.view))
    with right:
        st.markdown(_summary_markdown(result))
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
        f"by one (at most {MAX_CELLS:,} cells), on the same colour scale as the overview."
    )
    side = max(1, min(T, S, 128))
    for name, top, default in (("zoom_q", T, (0, side - 1)), ("zoom_k", S, (0, side - 1))):
        lo, hi = ss.get(name, default)
        ss[name] = (min(lo, top - 1), min(hi, top - 1))
    if ss.get("zoom_group", 0) >= s.k:
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
        )
    except ValueError as error:  # a region too big to draw cell by cell
        st.warning(str(error), icon="⚠️")
        return
    st.plotly_chart(fig, theme=None, key="zoom_chart", config=_config(result, "zoom"))


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
    kv = _kv_fig(key)
    st.plotly_chart(kv, theme=None, key="kv_chart", config=_config(result, "kv_heads"))


settings = settings_controls()
st.title("Playground")
st.markdown(
    "Every query head's attention map for your input, one heatmap per head, **grouped by the "
    "K/V head it shares**: the heads in one coloured frame read the same keys and values, "
    "and grey cells are masked."
)
key = compute_key(settings)
try:
    result = _compute(key)
except ValueError as error:
    st.error(f"These settings cannot run: {error}", icon="🚫")
else:
    _show(result, key)
