"""KV sharing: what grouping K/V heads does to attention, and what it saves in memory.

Thin on purpose: the sidebar is :func:`app_pages._controls.settings_controls`, the numbers come
from :mod:`gqa_viz.sharing` and :mod:`gqa_viz.kv_cache`, the figures from
:mod:`gqa_viz.figures.heads` and :mod:`gqa_viz.figures.sharing`.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from app_pages._controls import compute_key, settings_controls
from gqa_viz import core, kv_cache, trained
from gqa_viz.buckets import bucketed_trace
from gqa_viz.figures.heads import heads_figure
from gqa_viz.figures.sharing import cache_figure, diff_figure, drift_figure
from gqa_viz.kv_cache import DTYPE_BYTES, GB, GiB
from gqa_viz.models import PRESETS, ModelShape
from gqa_viz.playground import RESULTS, build_inputs, input_shape
from gqa_viz.settings import (
    HEAVY_SCORE_CELLS,
    KV_SHARING_MAX_SCORE_CELLS,
    MAX_SCORE_CELLS,
    Settings,
    check_size,
    divisors,
)
from gqa_viz.sharing import controlled_mha, drift_curve, explain

SETTING_NAMES = {
    "random": "random heads (mean-pooled)",
    "controlled": "controlled: shared head + eps·noise",
    "trained": "trained heads (the task's multi-head model)",
}
METHOD_NAMES = {"mean": "mean of the group", "first": "first head", "random": "random head"}
CUSTOM = "custom"
GPU_CHOICES = {"24 GB": 24, "40 GB": 40, "80 GB": 80, "custom": None}
_CONFIG = {"displaylogo": False}


def _compute_curve(s: Settings, setting: str, eps: float, method: str):
    notes: list[str] = []
    query, value, _, _, q_labels, k_labels = build_inputs(s, notes)
    spec = core.GQASpec(s.n, s.n, s.h, use_bias=s.bias)
    if setting == "trained":  # the MHA model of the sidebar's task, on the same prompt
        view = trained.layer_view(trained.mha_name(trained.task_of(s.model)), s.layer, s.seed)
        params, spec, query, value = view.params, view.spec, view.x, view.x
    elif setting == "controlled":
        params = controlled_mha(spec, s.d, groups_of=s.n // s.k, eps=eps, seed=s.seed)
    else:
        params = core.init_params(spec, s.d, seed=s.seed)
    curve = drift_curve(
        params, spec, query, value, method=method, causal=s.causal, seed=s.seed,
        trace=bucketed_trace, probs_for=s.k,
    )  # fmt: skip
    T, S = len(q_labels), len(k_labels)
    mask = np.tril(np.ones((T, S), bool)) if s.causal else None
    return curve, q_labels, k_labels, mask, notes


def _curve(settings: Settings, setting: str, eps: float, method: str):
    """drift_curve for the sidebar's input (maps kept for the sidebar's K only), the axis
    labels and mask of batch item 0, and the notes on the input (a sentence cut or replaced).

    Shared by every session through the server's results cache (bounded in bytes); a large
    input runs in the server's one heavy-work slot.
    """
    s = compute_key(settings)
    B, T, S = input_shape(s)
    with st.spinner("Grouping the heads for every K…", show_time=True):
        return RESULTS.get(
            ("kv-sharing", s, setting, eps, method),
            lambda: _compute_curve(s, setting, eps, method),
            # the MHA layer once, then one grouped layer per K dividing N
            heavy=(1 + len(divisors(s.n))) * B * s.n * T * S > HEAVY_SCORE_CELLS,
        )


def _gb(b: float) -> str:
    return f"{b / GB:,.2f} GB · {b / GiB:,.2f} GiB"


# ---------------------------------------------------------------------------------------------
# Section 1.


def _effect_section(s: Settings) -> None:
    st.header("Effect of sharing on attention")
    B, T, S = input_shape(s)
    check_size(
        s,
        T,
        S,
        B,
        KV_SHARING_MAX_SCORE_CELLS,
        "on this page, which runs the layer twice for every K dividing N; the Playground "
        f"allows {MAX_SCORE_CELLS:,}",
    )
    c1, c2, c3 = st.columns([1.3, 1, 1])
    is_trained = s.weights == "trained"
    if st.session_state.get("kv_setting") == "trained" and not is_trained:
        st.session_state["kv_setting"] = "random"
    setting = c1.radio(
        "Setting",
        list(SETTING_NAMES) if is_trained else list(SETTING_NAMES)[:2],
        index=2 if is_trained else 0,
        format_func=SETTING_NAMES.get,
        key="kv_setting",
        help="Random weights: the heads of a group are independent, so pooling them is harsh. "
        "Controlled: each group of N // K heads is one shared head plus eps times noise. "
        "Trained (with 'a trained layer' as the sidebar's weights): the multi-head model of "
        "the chosen task, grouped down to the sidebar's K, on the task's prompt.",
    )
    eps = c2.slider(
        "eps (noise on the shared head)",
        0.0,
        1.0,
        0.1,
        0.05,
        key="kv_eps",
        disabled=setting != "controlled",
        help=f"Controlled setting only: groups of N // K = {s.n // s.k} heads.",
    )
    method = c3.selectbox(
        "Grouping method", list(METHOD_NAMES), format_func=METHOD_NAMES.get, key="kv_method"
    )
    eps = float(eps) if setting == "controlled" else 0.0
    curve, q_labels, k_labels, mask, notes = _curve(s, setting, eps, method)
    for note in notes:
        st.info(note, icon="ℹ️")
    row = next(r for r in curve if r["K"] == s.k)
    shown = (
        f"Shown: **{SETTING_NAMES[setting]}**"
        + (
            f" with eps = {eps:g} (groups of {s.n // s.k} near-copies)"
            if setting == "controlled"
            else f": layer {s.layer} of {trained.mha_name(trained.task_of(s.model))}, on a "
            f"prompt of the {trained.task_of(s.model)} task"
            if setting == "trained"
            else ""
        )
        + f", grouped by **{METHOD_NAMES[method]}**; N = {s.n}, K = {s.k} (G = {s.n // s.k}), "
        f"H = {s.h}, D = {s.d}, seed {s.seed}, {'causal' if s.causal else 'no mask'}."
    )
    st.markdown(shown)

    # Side by side while both fit at half width; tabs for more heads.
    if s.n <= 8:
        left, right = st.columns(2, gap="medium")
    else:
        left, right = st.tabs([f"MHA ({s.n} K/V heads)", f"Grouped (K = {s.k})"])
    mha = row["probs_mha"][0]  # [N, T, S]
    gqa = row["probs_gqa"][0]  # [N, T, S]
    with left:
        fig = heads_figure(
            mha, mask, q_labels, k_labels, s.n, title=f"MHA: {s.n} K/V heads", saturate=99.0
        )
        st.plotly_chart(fig, theme=None, key="kv_mha_chart", config=_CONFIG)
    with right:
        fig = heads_figure(
            gqa,
            mask,
            q_labels,
            k_labels,
            s.k,
            title=f"Grouped: K = {s.k} K/V head{'s' if s.k > 1 else ''}",
            saturate=99.0,
        )
        st.plotly_chart(fig, theme=None, key="kv_gqa_chart", config=_CONFIG)

    st.plotly_chart(
        diff_figure(gqa - mha, mask, s.k), theme=None, key="kv_diff_chart", config=_CONFIG
    )
    left, right = st.columns([3, 1.2], gap="medium")
    with left:
        st.plotly_chart(
            drift_figure(curve, current_k=s.k), theme=None, key="kv_drift_chart", config=_CONFIG
        )
    with right:
        st.metric(f"mean JS divergence at K = {s.k}", f"{row['js']:.3g} nats", help="At most ln 2.")
        st.metric(f"relative output error at K = {s.k}", f"{100 * row['rel_error']:.1f}%")
        st.markdown(explain(curve, setting, eps=eps if setting == "controlled" else None))


# ---------------------------------------------------------------------------------------------
# Section 2.


def _custom_model() -> ModelShape | None:
    c = st.columns(5)
    layers = c[0].number_input("layers", 1, 512, 32, key="kv_c_layers")
    n = c[1].number_input("query heads N", 1, 512, 32, key="kv_c_n")
    k = c[2].number_input("kv heads K", 1, 512, 8, key="kv_c_k")
    h = c[3].number_input("head_dim H", 1, 1024, 128, key="kv_c_h")
    params = c[4].number_input("params (billions)", 0.01, 2000.0, 8.0, key="kv_c_p")
    if n % k:
        st.error(f"K = {k} must divide N = {n}.", icon="🚫")
        return None
    kind = "mha" if k == n else "mqa" if k == 1 else "gqa"
    return ModelShape(
        "custom", int(layers), int(n), int(k), int(h), int(n * h), float(params),
        attention=kind, source="your numbers",
    )  # fmt: skip


def _calculator_section() -> None:
    st.header("KV-cache and decoding calculator")
    c = st.columns([1.4, 1, 1, 1, 1])
    name = c[0].selectbox("Model", [*PRESETS, CUSTOM], index=2, key="kv_preset")
    tokens = int(c[1].number_input("context length (tokens)", 1, 4_194_304, 4096, key="kv_ctx"))
    batch = int(c[2].number_input("batch", 1, 4096, 1, key="kv_batch"))
    dtypes = list(DTYPE_BYTES)
    dtype = c[3].selectbox("cache dtype", dtypes, index=1, key="kv_dtype")
    wdtype = c[4].selectbox("weights dtype", dtypes, index=1, key="kv_wdtype")
    c = st.columns([1, 1, 1, 2.4])
    gpu_choice = c[0].selectbox("GPU memory", list(GPU_CHOICES), index=2, key="kv_gpu")
    gpu_gb = GPU_CHOICES[gpu_choice]
    if gpu_gb is None:
        gpu_gb = c[1].number_input("GPU memory (GB)", 1.0, 10_000.0, 141.0, key="kv_gpu_custom")
    bandwidth = c[2].number_input(
        "bandwidth (GB/s)", 1.0, 100_000.0, 3350.0, key="kv_bw", help="H100 SXM: 3350 GB/s."
    )

    model = _custom_model() if name == CUSTOM else PRESETS[name]
    if model is None:
        return
    st.caption(
        f"**{model.name}**: {model.layers} layers, N = {model.num_query_heads}, "
        f"K = {model.num_key_value_heads}, H = {model.head_dim}, {model.params_billion:g}B "
        f"parameters ({model.attention.upper()}). Source: {model.source}."
        + (f" {model.note}" if model.note else "")
    )
    if model.attention == "mla":
        st.warning(
            f"{model.name} uses multi-head latent attention (MLA): its cache is a compressed "
            "latent, not K heads × head_dim, so the GQA formula does not apply and no numbers "
            "are computed for it.",
            icon="⚠️",
        )
        return
    if model.sliding_window is not None:
        st.info(
            f"{model.name} has a {model.sliding_window:,}-token sliding window: its cache is "
            f"capped at {model.sliding_window:,} tokens per sequence, whatever the context.",
            icon="ℹ️",
        )

    gpu = float(gpu_gb) * GB
    v = kv_cache.variants(model, tokens, batch, dtype)
    weights = kv_cache.weights_bytes(model, wdtype)
    m = st.columns(4)
    for col, label, b in (
        (m[0], f"KV cache as configured (K = {model.num_key_value_heads})", v["configured"]),
        (m[1], f"KV cache as MHA (K = {model.num_query_heads})", v["mha"]),
        (m[2], "KV cache as MQA (K = 1)", v["mqa"]),
        (m[3], f"weights ({wdtype})", weights),
    ):
        col.metric(
            label,
            f"{b / GB:,.2f} GB",
            f"{b / GiB:,.2f} GiB",
            delta_color="off",
            delta_arrow="off",
        )
    st.caption("GB = 10⁹ bytes (what GPU makers quote); GiB = 2³⁰ bytes.")
    st.code(kv_cache.formula(model, tokens, batch, dtype), language=None, wrap_lines=True)

    top = max(2 * tokens, 131_072)
    contexts = sorted({2**i for i in range(7, top.bit_length() + 1)} | {tokens})
    sizes = {
        key: [kv_cache.kv_cache_bytes(model, t, batch, dtype, kv_heads=kh) for t in contexts]
        for key, kh in (
            ("mha", model.num_query_heads),
            ("configured", None),
            ("mqa", 1),
        )
    }
    left, right = st.columns([3, 1.2], gap="medium")
    with left:
        fig = cache_figure(contexts, sizes, budget_bytes=gpu - weights, current=tokens)
        st.plotly_chart(fig, theme=None, key="kv_cache_chart", config=_CONFIG)
    with right:
        ctx = kv_cache.max_context(model, gpu, batch, dtype, wdtype)
        fit_b = kv_cache.max_batch(model, gpu, tokens, dtype, wdtype)
        if weights >= gpu:
            st.warning(f"The weights alone ({_gb(weights)}) do not fit in {gpu_gb:g} GB.", icon="⚠️")
        st.metric(
            f"max context at batch {batch}",
            "unlimited (window)" if ctx is None else f"{ctx:,} tokens",
        )
        st.metric(f"max batch at {tokens:,} tokens", f"{fit_b:,}")
        t = kv_cache.decode_time_lower_bound(
            model, tokens, batch, dtype, wdtype, bandwidth_bytes_per_s=float(bandwidth) * 1e9
        )
        st.metric("decode lower bound", f"{1e3 * t:,.2f} ms / token")
        st.caption(
            f"Upper bounds on what fits on a {gpu_gb:g} GB GPU (activations and workspace "
            f"ignored). The decode time assumes every weight and the whole cache are read "
            f"once per step at the full {bandwidth:,.0f} GB/s, with compute ignored."
        )


settings = settings_controls()
st.title("KV sharing")
st.markdown(
    "Grouped-query attention lets G query heads read one K/V head. Below: what that does to "
    "the attention of a multi-head layer, and how much memory the KV cache of real models "
    "needs with N, K or 1 K/V heads."
)
try:
    _effect_section(settings)
except ValueError as error:
    st.error(f"These settings cannot run: {error}", icon="🚫")
_calculator_section()
