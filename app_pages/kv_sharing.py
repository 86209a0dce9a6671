"""KV sharing: what grouping K/V heads does to attention, and what it saves in memory.

Thin on purpose: the sidebar is :func:`app_pages._controls.settings_controls`, the numbers come
from :mod:`gqa_viz.app.kv_sharing` (over :mod:`gqa_viz.sharing`), and so do the figures
(:func:`~gqa_viz.app.kv_sharing.figures`: drawn by :mod:`gqa_viz.figures.heads` and
:mod:`gqa_viz.figures.sharing`, once for every session). The calculator's results are
the KV calculator page's, drawn by :mod:`app_pages._kv_results` over
:mod:`gqa_viz.app.kv_calculator`.

With a real model's layer in the sidebar the first section starts from that layer as it is
(already grouped: K of its own K/V heads) and groups it further to a K' picked here: every K'
that divides K, by merging runs of its own heads as the Real models page does for the whole
model; the reasons are in :mod:`gqa_viz.app.kv_sharing`'s docstring.
"""

from __future__ import annotations

import streamlit as st

from app_pages import _kv_results as kvr
from app_pages._chart import chart
from app_pages._controls import compute_key, settings_controls
from app_pages._layout import wrapping_row
from gqa_viz.app import kv_calculator as kvc
from gqa_viz.app import kv_sharing as kv
from gqa_viz.app.limits import (
    KV_CALCULATOR_MAX_BANDWIDTH_GB_S,
    KV_CALCULATOR_MAX_BATCH,
    KV_CALCULATOR_MAX_GPU_GB,
    KV_CALCULATOR_MAX_PARAMS_BILLION,
    KV_CALCULATOR_MAX_TOKENS,
)
from gqa_viz.app.settings import Settings

SETTING_NAMES, METHOD_NAMES = kv.SETTING_NAMES, kv.METHOD_NAMES
CUSTOM = "custom"


# ---------------------------------------------------------------------------------------------
# Section 1.


def _effect_section(s: Settings) -> None:
    st.header("Effect of sharing on attention")
    kv.check_size(s)
    c1, c2, c3 = st.columns([1.3, 1, 1])
    is_trained, is_real = s.weights == "trained", s.weights == "real"
    own = "trained" if is_trained else ("real" if is_real else None)
    options = ["real"] if is_real else [*list(SETTING_NAMES)[:2], *([own] if own else [])]
    if st.session_state.get("kv_setting") not in options:
        st.session_state["kv_setting"] = options[-1] if own else "random"
    setting = c1.radio(
        "Setting",
        options,
        format_func=SETTING_NAMES.get,
        key="kv_setting",
        help="Random weights: the heads of a group are independent, so pooling them is harsh. "
        "Controlled: each group of N // K heads is one shared head plus eps times noise. "
        "Trained (with 'a trained layer' as the sidebar's weights): the multi-head model of "
        "the chosen task, grouped down to the sidebar's K, on the task's prompt. Real (with "
        "'a real model's layer'): that layer, its own K/V heads merged further.",
    )
    if is_real:
        targets = kv.real_targets(s.k)
        if st.session_state.get("kv_real_k") not in targets:
            st.session_state["kv_real_k"] = targets[0]
        target = c2.selectbox(
            "Group its K/V heads to K'",
            targets,
            key="kv_real_k",
            format_func=lambda k: f"K' = {k} (G' = {s.n // k})",
            help=f"The layer has K = {s.k} K/V heads: K' divides K, so each new head merges "
            "K / K' of its own (consecutive) heads.",
        )
        eps = 0.0
    else:
        target = s.k
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
    key = compute_key(s)
    with st.spinner("Grouping the heads for every K…", show_time=True):
        drift = kv.drift(key, setting, eps, method, target)
        figs = kv.figures(key, setting, eps, method, target)
    for note in drift.notes:
        st.info(note, icon="ℹ️")
    st.markdown(kv.describe(s, setting, eps, method))
    if is_real and s.k == 1:
        st.info("This layer has one K/V head (multi-query): there is nothing left to merge.")
    before, after, _ = kv.group_labels(s, target)

    if kv.side_by_side(s):  # side by side at half width or more, else one above the other
        least, most = kv.HALF_PAGE_LEAST_PX, kv.HALF_PAGE_MOST_PX
        left, right = wrapping_row("kv_maps_row", (1, least, most), (1, least, most))
    else:
        left, right = st.tabs([f"{before} K/V heads", f"Grouped ({after})"])
    with left:
        chart(figs.before, key="kv_mha_chart")
    with right:
        chart(figs.after, key="kv_gqa_chart")
    chart(figs.diff, key="kv_diff_chart")
    left, right = wrapping_row("kv_drift_row", (3, 420), (1.2, 280))
    with left:
        chart(figs.drift, key="kv_drift_chart")
    with right:
        row = drift.row
        st.metric(f"mean JS divergence at {after}", f"{row['js']:.3g} nats", help="At most ln 2.")
        st.metric(f"relative output error at {after}", f"{100 * row['rel_error']:.1f}%")
        st.markdown(drift.explanation)


# ---------------------------------------------------------------------------------------------
# Section 2.


def _custom_model():
    c = st.columns(5)
    lim = {name: hi for name, (hi, _) in kvc.CUSTOM_LIMITS.items()}
    layers = c[0].number_input("layers", 1, lim["layers"], 32, key="kv_c_layers")
    n = c[1].number_input("query heads N", 1, lim["n"], 32, key="kv_c_n")
    k = c[2].number_input("K/V heads K", 1, lim["k"], 8, key="kv_c_k")
    h = c[3].number_input("head_dim H", 1, lim["h"], 128, key="kv_c_h")
    params = c[4].number_input(
        "params (billions)", 0.01, KV_CALCULATOR_MAX_PARAMS_BILLION, 8.0, key="kv_c_p"
    )
    try:
        return kvc.custom_model(layers, n, k, h, params)
    except ValueError as error:
        st.error(str(error), icon="🚫")
        return None


def _gpu_label(key: str) -> str:
    return kvc.GPUS[key].describe() if key in kvc.GPUS else "custom"


def _calculator_section() -> None:
    st.header("KV-cache and decoding calculator")
    st.page_link(
        "app_pages/kv_calculator.py",
        label="The KV calculator page: any config.json, layer by layer",
        icon=":material/calculate:",
    )
    # The KV calculator page's defaults, labels and formats (kvc.DEFAULTS): the same model
    # shows the same numbers on both pages.
    d = kvc.DEFAULTS
    c = st.columns([1.4, 1, 1, 1, 1])
    names = [*kvc.PRESETS, CUSTOM]
    name = c[0].selectbox("Model", names, index=kvc.default_preset(), key="kv_preset")
    tokens = c[1].number_input(
        "context (tokens)", 1, KV_CALCULATOR_MAX_TOKENS, d.tokens, step=1024, key="kv_ctx"
    )
    batch = c[2].number_input("batch", 1, KV_CALCULATOR_MAX_BATCH, d.batch, key="kv_batch")
    dtype = c[3].selectbox(
        "KV cache dtype", kvc.DTYPES, index=kvc.DTYPES.index(d.dtype), key="kv_dtype"
    )
    wdtype = c[4].selectbox(
        "weights dtype", kvc.DTYPES, index=kvc.DTYPES.index(d.wdtype), key="kv_wdtype"
    )
    c = st.columns([1, 1, 1, 2.4])
    gpus = [*kvc.GPUS, kvc.CUSTOM_GPU]
    gpu_key = c[0].selectbox(
        "GPU", gpus, index=gpus.index(d.gpu), key="kv_gpu", format_func=_gpu_label
    )
    gpu = kvc.GPUS.get(gpu_key, kvc.GPUS[d.gpu])
    gpu_gb = gpu.memory_gb
    if gpu_key == kvc.CUSTOM_GPU:
        gpu_gb = c[1].number_input(
            "memory (GB)", 1.0, KV_CALCULATOR_MAX_GPU_GB, d.gpu_gb, step=8.0, format="%g",
            key="kv_gpu_custom",
        )  # fmt: skip
    bandwidth = c[2].number_input(  # one box per GPU, so a new GPU brings its own bandwidth
        "bandwidth (GB/s)",
        1.0,
        KV_CALCULATOR_MAX_BANDWIDTH_GB_S,
        gpu.bandwidth_gb_s,
        step=100.0,
        format="%g",
        key=f"kv_bw_{gpu_key}",
    )

    model = _custom_model() if name == CUSTOM else kvc.PRESETS[name]
    if model is None:
        return
    kvr.describe(model, sourced=name != CUSTOM)
    s = kvc.CalculatorSettings(
        preset=name, tokens=int(tokens), batch=int(batch), dtype=dtype, wdtype=wdtype,
        gpu=gpu_key, gpu_gb=float(gpu_gb), bw=float(bandwidth),
    )  # fmt: skip
    kvr.results(model, s, key="kv", layer_chart=False)


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
