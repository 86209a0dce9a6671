"""The KV-cache calculator's results, shared by the KV calculator and KV sharing pages: one
model's caption, its numbers, its charts and what fits on the GPU, worded once.

The numbers and their wording come from :mod:`gqa_viz.app.kv_calculator`, the figures from
:mod:`gqa_viz.figures.kv_cache` and :mod:`gqa_viz.figures.sharing`, the longer prose from
``assets/text/kv_calculator.md``.
"""

from __future__ import annotations

import streamlit as st

from app_pages._chart import chart
from app_pages._layout import wrapping_row
from gqa_viz.app import kv_calculator as kvc
from gqa_viz.app.prose import sections
from gqa_viz.figures.kv_cache import layer_figure
from gqa_viz.figures.sharing import cache_figure

__all__ = ["describe", "results"]

TEXT = sections("kv_calculator")


def describe(model, *, sourced: bool, expanded: bool = False) -> None:
    """The model's caption and, in an expander, how its config.json was read. ``sourced``: a
    preset, whose source is linked."""
    st.caption(kvc.model_caption(model, sourced=sourced))
    if notes := kvc.reading_notes(model, sourced=sourced):
        label = "How its config.json was read"
        if model.defaulted:
            label += f": {len(model.defaulted)} field(s) defaulted"
        with st.expander(label, expanded=expanded):
            st.markdown(notes)


def results(model, s: kvc.CalculatorSettings, *, key: str, layer_chart: bool = True) -> None:
    """What the calculator says of ``model`` at the settings ``s`` (its ``preset`` unused):
    the notes on its layers (MLA, windows), the cache's metrics and formula, the cache per
    layer (``layer_chart``), and the cache against the context beside what fits on the GPU.
    ``key`` prefixes the charts' keys. ValueError for a model the arithmetic refuses."""
    calc = kvc.calculator(model, s.tokens, s.batch, s.dtype, s.wdtype, s.gpu_memory_gb, s.bw)
    if calc.no_variants is not None:  # MLA: why its cache is small, with no MHA/MQA variant
        st.warning(calc.no_variants, icon="⚠️")
    if (note := kvc.window_note(model)) is not None:
        st.info(note, icon="ℹ️")
    _metrics(model, calc, s, key)
    if layer_chart:
        fig = layer_figure(model, calc.cache)
        chart(fig, key=f"{key}_layer_chart")
    left, right = wrapping_row(f"{key}_fit_row", (3, 440), (1.2, 260))
    with left:
        fig = cache_figure(
            calc.contexts,
            calc.sizes,
            budget_bytes=calc.budget,
            current=s.tokens,
            max_context=calc.max_context,
            max_position=model.max_position_embeddings,
        )
        chart(fig, key=f"{key}_cache_chart")
    with right:
        _fit(model, calc, s)
    st.caption(TEXT["units"])


def _metrics(model, calc: kvc.Calculator, s: kvc.CalculatorSettings, key: str) -> None:
    rows = kvc.metric_rows(model, calc, s.wdtype)
    cols = wrapping_row(f"{key}_metrics", *[(1, 165)] * (len(rows) + 1), gap="small")
    cols[0].metric(
        "KV cache per token",
        f"{kvc.exact_bytes(calc.bytes_per_token)} B",
        kvc.binary_bytes(float(calc.bytes_per_token)),
        delta_color="off",
        delta_arrow="off",
        help="Every layer's keys and values (or latent) for one token of one sequence, before "
        "any window.",
    )
    for col, (label, b) in zip(cols[1:], rows, strict=True):
        col.metric(label, kvc.gb(b), kvc.gib(b), delta_color="off", delta_arrow="off")
    st.info(kvc.textbook_note(model, calc), icon=":material/calculate:")
    if calc.beyond_max_position:
        st.warning(kvc.position_note(model, s.tokens), icon="⚠️")
    st.code(calc.formula, language=None, wrap_lines=True)


def _fit(model, calc: kvc.Calculator, s: kvc.CalculatorSettings) -> None:
    if calc.weights is None:  # no parameter count: only the cache is known
        st.info("Give the parameter count above to see what fits.", icon="ℹ️")
        return
    gpu = kvc.GPUS[s.gpu].label if s.gpu in kvc.GPUS else "your number"
    if calc.weights >= calc.gpu_bytes:
        st.warning(
            f"The weights alone ({kvc.gb_gib(calc.weights)}) do not fit in {s.gpu_memory_gb:g} GB.",
            icon="⚠️",
        )
    ctx = calc.max_context
    st.metric(
        f"max context at batch {s.batch}",
        "unlimited (every layer slides)" if ctx is None else f"{ctx:,} tokens",
    )
    if calc.max_context_beyond_max_position:  # a note on what fits: nothing set is wrong
        st.info(kvc.position_note(model, ctx), icon="ℹ️")
    st.metric(f"max batch at {s.tokens:,} tokens", f"{calc.max_batch:,} sequences")
    st.metric(
        "decode step, at least",
        f"{1e3 * calc.decode_s:,.2f} ms",
        help="One new token for each sequence of the batch, if memory-bound: a lower bound.",
    )
    st.caption(TEXT["fit"].format(gpu=gpu, gpu_gb=s.gpu_memory_gb, bandwidth=s.bw))
