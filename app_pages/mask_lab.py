"""Mask Lab: build an attention mask from pieces, see what the layer does with it, and why.

Thin on purpose: the sidebar is :func:`app_pages._controls.settings_controls` (the Playground's
input, heads, causal, window, padding); the numbers, the widgets' state and the prose
(``assets/text/mask_lab.md``) come from :mod:`gqa_viz.app.mask_lab`, and so do the figures
(drawn by :mod:`gqa_viz.figures.masks` and :func:`gqa_viz.figures.heads.heads_figure`, once
for every session); only an upload's readings figure is drawn here.
"""

from __future__ import annotations

import streamlit as st

from app_pages._chart import chart
from app_pages._controls import compute_key, settings_controls, view_controls
from app_pages._layout import wrapping_row
from gqa_viz.app import limits
from gqa_viz.app import mask_lab as L
from gqa_viz.app.settings import Settings
from gqa_viz.figures import masks as F
from gqa_viz.figures.heads import pool_factor

TEXT = L.text()
CELLS = {"max_cells": limits.MAX_DRAWN_CELLS}
ERROR, INFO, WARNING = ":material/error:", ":material/info:", ":material/warning:"


def _compose(settings: Settings, components: tuple, combine: str) -> L.MaskLabResult:
    with st.spinner("Running the layer with your mask…", show_time=True):
        return L.cached_compose(compute_key(settings), components, combine)


@st.cache_data(max_entries=16, show_spinner="Reading your mask both ways…")
def _readings(settings: Settings, raw, convention: str) -> L.Readings:
    return L.compare_readings(settings, raw, convention)


def _k(key: str) -> dict:
    """A widget's key and the callback that saves its value (see L.seed_widgets)."""
    return {"key": key, "on_change": L.remember, "args": (st.session_state, key)}


def _plot(fig, key: str, name: str) -> None:
    image = {"format": "png", "filename": f"mask_lab_{name}", "scale": 2}
    chart(fig, key=key, config={"toImageButtonOptions": image})


def _upload_section(T: int, S: int):
    """The uploader and its messages; returns (raw [T, S], convention) or None."""
    ss = st.session_state
    st.header("Upload a custom mask")
    mib, elements = limits.MAX_UPLOAD_BYTES / 2**20, limits.MAX_MASK_ELEMENTS
    st.markdown(TEXT["upload_intro"].format(T=T, S=S, mib=mib, elements=elements))
    file = st.file_uploader("Mask file", ["npy", "csv"], key="ml_file", help=TEXT["help_upload"])
    if file is not None:
        error = L.receive_upload(ss, file.file_id, file.name, file.getvalue, T, S)
        if error is not None:
            message = error if file.name in error else f"{file.name}: {error}"
            st.error(message, icon=ERROR)
            if ss.get(L.UPLOAD) is not None:
                st.caption(f"Still using the previous mask, **{ss[L.UPLOAD]['name']}**.")
    upload = ss.get(L.UPLOAD)
    if upload is None:
        st.caption("No mask uploaded yet. Tip: download the final mask above and upload it back.")
        return None
    stale = L.upload_stale(upload, T, S)
    if stale is not None:
        st.warning(stale, icon=WARNING)
        return None
    names, index, detected, reason = L.convention_choice(upload["raw"])
    convention = st.radio(
        f"How should **{upload['name']}** be read?",
        names,
        index=index,
        key=f"ml_conv_{upload['id']}",
        format_func=L.convention_label,
        help="Frameworks disagree on what a 1 (or True) in a mask means.",
    )
    if detected is None:
        st.warning(f"Could not tell the convention: {reason} Pick one above.", icon=WARNING)
    else:
        st.caption(f"Auto-detected **{detected}**: {reason}")
    return upload["raw"], convention


def _readings_section(settings: Settings, raw, convention: str) -> None:
    r = _readings(settings, raw, convention)
    a, b = r.as_read, r.inverted
    masks = (a.components[0][2], b.components[0][2], r.output_change, a.q_labels, a.k_labels)
    names = {"convention": r.convention, "other": r.inverted_convention}
    _plot(F.readings_figure(*masks, **names, **CELLS), "readings_chart", "readings")
    summary, rows = L.readings_text(r)
    st.markdown(summary)
    st.markdown("**Rows with no allowed key, framework by framework**")
    st.markdown(rows)
    st.table(L.framework_table())


def _component_controls(T: int, S: int, uploaded_allowed) -> tuple[tuple, str]:
    ss = st.session_state
    options = L.component_options(uploaded_allowed is not None)
    L.set_widget(ss, "ml_components", [c for c in ss["ml_components"] if c in options])
    chosen = st.multiselect(
        "Extra mask components",
        options,
        **_k("ml_components"),
        format_func=L.KIND_TITLES.get,
        help=TEXT["help_components"],
    )
    comps = []
    for kind in chosen:
        with st.container(border=True):
            cols = st.columns([1.5, 1, 1, 1, 0.7], vertical_alignment="bottom")
            cols[0].markdown(f"**{L.KIND_TITLES[kind]}**", help=L.KIND_HELP[kind])
            negate = cols[4].checkbox("~ not", **_k(f"ml_neg_{kind}"), help="Use the complement.")
            for col, (label, key, low) in zip(cols[1:], L.KIND_NUMBERS.get(kind, ())):
                col.number_input(label, low, limits.MAX_LEN, **_k(key))
            if kind == "document":
                modes = L.DOCUMENT_MODES
                cols[1].radio("boundaries", list(modes), **_k("ml_doc_mode"), format_func=modes.get)
                if ss["ml_doc_mode"] == "every":
                    cols[2].number_input(
                        "n (tokens per document)", 1, limits.MAX_LEN, **_k("ml_doc_every")
                    )
                else:
                    if not ss["ml_doc_ids"]:
                        L.set_widget(ss, "ml_doc_ids", L.default_document_ids(T))
                    cols[2].text_input(
                        "document id per position",
                        **_k("ml_doc_ids"),
                        max_chars=limits.MASK_LAB_MAX_DOCUMENT_TEXT,
                        help=TEXT["help_document_ids"].format(T=T, S=S),
                    )
            elif kind == "causal_bottom_right":
                cols[1].caption("no parameters" + (" (T = S: same as top-left)" if T == S else ""))
            elif kind == "uploaded":
                cols[1].caption("read as chosen in *Upload a custom mask*")
            comps.append(L.make_component(kind, ss, negate, uploaded_allowed))
    if len(chosen) > 1:
        st.radio(
            "Combine the components with",
            L.COMBINE,
            **_k("ml_combine"),
            horizontal=True,
            format_func=L.COMBINE_NAMES.get,
            help=TEXT["help_combine"],
        )
    return tuple(comps), ss["ml_combine"] if len(chosen) > 1 else "and"


def _outcome(result: L.MaskLabResult) -> None:
    st.subheader("What the layer does on the rows to watch")
    st.markdown(L.outcome_text(result))
    if result.fully_masked_rows.size:
        st.dataframe(L.outcome_table(result), hide_index=True)
    single = L.single_key_text(result)
    if single is not None:
        st.markdown(single)


@st.fragment
def _scores(result: L.MaskLabResult) -> None:
    st.subheader("The attention the final mask produces")
    view = view_controls(pool_factor(result.settings.n, result.T, result.S, **CELLS) > 1)
    _plot(L.scores_figure(result, view.view, view.scale, view.pool), "scores_chart", "scores")


def _block_section(result: L.MaskLabResult) -> None:
    st.subheader("Sparsity and what a block-sparse kernel can skip")
    left, right = wrapping_row("ml_block_row", (1, 220), (2.4, 540))  # stacked if narrow
    with left:
        options = L.block_options(st.session_state, result.T, result.S)
        block = st.selectbox(
            "tile size (queries = keys)", options, **_k("ml_block"), help=TEXT["block_help"]
        )
        metrics, caption = L.block_view(result, block)
        for label, value, tip in metrics:
            st.metric(label, value, help=tip)
        st.caption(caption)
    with right:
        _plot(L.block_figure(result, block), "block_chart", "blocks")


def _alignment_section(result: L.MaskLabResult) -> None:
    st.subheader("Causal alignment when T ≠ S")
    markdown, *_ = L.alignment_view(result)
    st.markdown(markdown)
    _plot(L.alignment_figure(result), "align_chart", "alignment")


def _window_section(result: L.MaskLabResult) -> None:
    st.subheader("Window semantics: one number, several bands")
    left, right = st.columns([1, 4], gap="medium")
    with left:
        L.seed_window(st.session_state, result.settings.window)
        w = st.number_input("window w", 1, limits.MAX_LEN, **_k("ml_window"))
    rules, *_ = L.window_view(w, result.T, result.S)
    with right:
        st.markdown(rules)
    _plot(L.window_figure(result, int(w)), "window_chart", "windows")


def _keras_section(result: L.MaskLabResult) -> None:
    st.subheader("How Keras merges your masks")
    if not result.keras_parts:
        st.markdown("Nothing masks this call: Keras passes no mask to the softmax.")
    else:
        st.markdown(L.keras_table(result))
        _plot(L.keras_merge_figure(result), "merge_chart", "keras_merge")
    st.markdown("The same masks in a Keras call:")
    st.code(L.keras_code(result), language="python")


def _embedding_section(result: L.MaskLabResult) -> None:
    st.subheader("Keras' implicit masks: Embedding(mask_zero=True)")
    e = L.embedding_padding(result)
    st.markdown(TEXT["embedding"])
    left, right = wrapping_row("ml_embedding_row", (1, 220), (2.4, 480))
    with left:
        for table, n in zip(L.embedding_tables(result, e), (result.T, result.S)):
            st.dataframe(table, hide_index=True, height=min(36 + 35 * n, 420))
    with right:
        if not e.fully_masked_rows.size and e.value_mask.all():
            st.info(TEXT["embedding_no_padding"], icon=INFO)
            return
        _plot(L.embedding_figure(result), "embedding_chart", "embedding_masks")
    padding = L.embedding_text(result, e)
    if padding is not None:
        st.markdown(padding)


def _downloads(result: L.MaskLabResult) -> None:
    T, S = result.T, result.S
    st.markdown(f"**Download the final mask** [T, S] = [{T}, {S}] (True / 1 = attend):")
    with st.container(horizontal=True):  # each button as wide as its label; wraps if narrow
        for button in L.download_files(result):
            st.download_button(**button, icon=":material/download:")


# ---------------------------------------------------------------------------------------------
# The page. The upload is drawn at the bottom but read first: a component may use it.

settings = settings_controls()
L.seed_widgets(st.session_state)
st.title("Mask Lab")
st.markdown(TEXT["intro"])
main = st.container()
upload_box = st.container()

try:
    q_labels, k_labels = L.input_labels(settings)
except ValueError as error:
    st.error(f"These settings cannot run: {error}", icon=ERROR)
    st.stop()
T, S = len(q_labels), len(k_labels)
with upload_box:
    uploaded = _upload_section(T, S)

with main:
    st.header("Build a mask")
    try:
        components, combine = _component_controls(T, S, L.uploaded_allowed(uploaded))
        result = _compose(settings, components, combine)
    except ValueError as error:
        st.error(f"This mask cannot be built: {error}", icon=ERROR)
        st.caption("Showing the sidebar's masks alone until the components are fixed.")
        result = _compose(settings, (), "and")
    for note in result.notes:
        st.info(note, icon=INFO)
    for col, (label, value) in zip(st.columns(4), L.metrics(result)):
        col.metric(label, value)
    _plot(L.components_figure(result), "components_chart", "components")
    _outcome(result)
    _scores(result)
    _downloads(result)
    _block_section(result)
    _alignment_section(result)
    _window_section(result)
    _keras_section(result)
    _embedding_section(result)

with upload_box:
    if uploaded is not None:
        _readings_section(settings, *uploaded)
