"""Mask Lab: build an attention mask from pieces, see what the layer does with it, and why.

Thin on purpose: the sidebar is :func:`app_pages._controls.settings_controls` (the Playground's
input, heads, causal, window, padding), the numbers come from :mod:`gqa_viz.mask_lab`
(cached per settings and components), the figures from :mod:`gqa_viz.figures.masks` and
:func:`gqa_viz.figures.heads.heads_figure`.

Widget values live in ``st.session_state["ml_saved"]`` (written by each widget's on_change)
and are put back into the widgets' ``ml_*`` keys on every run, so they survive page switches
(Streamlit drops the state of widgets a page stops rendering). The last good upload is kept
in ``ml_upload`` ({"name", "raw", "id"}): a bad file leaves it in place and shows an error.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from app_pages._controls import compute_key, settings_controls, view_controls
from gqa_viz import mask_lab as L
from gqa_viz import mask_tools as MT
from gqa_viz import masks as M
from gqa_viz import theme
from gqa_viz.figures import masks as F
from gqa_viz.figures.heads import heads_figure, pool_factor
from gqa_viz.playground import RESULTS, input_shape
from gqa_viz.settings import HEAVY_SCORE_CELLS, MAX_LEN, Settings

UPLOAD = "ml_upload"  # the last good upload
UPLOAD_SEEN = "ml_upload_seen"  # (file_id, error or None) of the file last read
SAVED = "ml_saved"
BLOCK_SIZES = (2, 4, 8, 16, 32, 64, 128)
KIND_TITLES = {kind: cls.title for kind, cls in L.KINDS.items()} | {"uploaded": "uploaded mask"}
DEFAULTS = {
    "ml_components": ["document"],
    "ml_combine": "and",
    "ml_prefix": 3,
    "ml_doc_mode": "every",
    "ml_doc_every": 4,
    "ml_doc_ids": "",
    "ml_cw_window": 3,
    "ml_dil_window": 2,
    "ml_dil_dilation": 2,
    "ml_bs_block": 4,
    "ml_bs_local": 1,
    "ml_bs_global": 1,
    "ml_block": 4,
    "ml_window": 3,
    **{f"ml_neg_{kind}": False for kind in KIND_TITLES},
}
HELP = {
    **{kind: M.COMPONENTS[kind].capitalize() + "." for kind in L.KINDS if kind in M.COMPONENTS},
    "uploaded": "Your uploaded mask, read with the convention chosen in *Upload a custom mask*.",
}
HELP["causal_bottom_right"] += " Turn off use_causal_mask in the sidebar to see it alone."


def _compose(settings: Settings, components: tuple, combine: str) -> L.MaskLabResult:
    """Shared by every session in the server's results cache (bounded in bytes; read-only)."""
    key = compute_key(settings)
    B, T, S = input_shape(key)
    with st.spinner("Running the layer with your mask…", show_time=True):
        return RESULTS.get(
            ("mask-lab", key, components, combine),
            lambda: L.compose(key, components, combine),
            heavy=B * key.n * T * S > HEAVY_SCORE_CELLS,
        )


@st.cache_data(max_entries=16, show_spinner="Reading your mask both ways…")
def _readings(settings: Settings, raw: np.ndarray, convention: str) -> L.Readings:
    return L.compare_readings(settings, raw, convention)


def _seed() -> None:
    """Put every ``ml_*`` widget's value from ``ml_saved`` (or its default) into its key.

    Done on every run, before the widgets: after a visit to another page Streamlit has
    dropped these widgets' state, or gets a stale value back for them, and ``ml_saved`` is
    the truth. Each widget's on_change (:func:`_k`) writes a new value into ``ml_saved``
    before the run, so this never undoes the person's change.
    """
    ss = st.session_state
    saved = ss.setdefault(SAVED, {})
    for key, value in DEFAULTS.items():
        ss[key] = saved.setdefault(key, value)


def _remember(key: str) -> None:
    st.session_state[SAVED][key] = st.session_state[key]


def _k(key: str) -> dict:
    """A widget's key and the callback that saves its value."""
    return {"key": key, "on_change": _remember, "args": (key,)}


def _set(key: str, value) -> None:
    """Change a widget's value from the page (before the widget is drawn)."""
    st.session_state[key] = value
    st.session_state[SAVED][key] = value


def _plot(fig, key: str, name: str) -> None:
    st.plotly_chart(
        fig,
        theme=None,
        key=key,
        config={
            "displaylogo": False,
            "toImageButtonOptions": {"format": "png", "filename": f"mask_lab_{name}", "scale": 2},
        },
    )


def _settings_mask(result: L.MaskLabResult) -> bool:
    """Whether the sidebar's settings mask anything (padding, causal, window)."""
    return any(p.name != "attention_mask" for p in result.keras_parts)


SHORT = {"query_mask": "padding", "value_mask": "key padding", "use_causal_mask": "causal"}


def _settings_title(result: L.MaskLabResult) -> str:
    """``sidebar: causal & window 3``: the settings' masks in the first panel's title."""
    names = [
        SHORT.get(p.name, f"window {result.settings.window}")
        for p in result.keras_parts
        if p.name != "attention_mask"
    ]
    if "padding" in names and "key padding" in names and not result.settings.cross:
        names.remove("key padding")
    return "sidebar: " + " & ".join(names)


def _where(labels: list[str], i: int) -> str:
    """A query or key in markdown: the token as code (so <pad> shows), then its position."""
    return f"`{labels[i]}`@{i}"


def _plain(labels: list[str], i: int) -> str:
    """The same, for a table cell."""
    return f"'{labels[i]}' @{i}"


def _rows(labels: list[str], rows, limit: int = 12) -> str:
    shown = ", ".join(_where(labels, int(i)) for i in list(rows)[:limit])
    return shown + (f", … ({len(rows)} in all)" if len(rows) > limit else "")


# ---------------------------------------------------------------------------------------------
# The upload (rendered lower on the page, read first: the components may use it).


def _upload_section(settings: Settings, T: int, S: int):
    """The uploader and its messages; returns (raw [T, S], convention) or None."""
    ss = st.session_state
    st.header("Upload a custom mask")
    limit_mib = MT.MAX_UPLOAD_BYTES / 2**20
    st.markdown(
        f"A `.npy` or `.csv` of shape **[T, S] = [{T}, {S}]** (rows: queries, columns: keys), "
        f"at most {limit_mib:.3g} MiB and {MT.MAX_MASK_ELEMENTS:,} entries. Boolean or 0/1 "
        "(keep or ignore), or additive (0 = keep, a large negative number = masked)."
    )
    file = st.file_uploader(
        "Mask file",
        type=["npy", "csv"],
        key="ml_file",
        help="np.save(...) of a bool / int / float array, or a CSV of numbers, one row per query.",
    )
    if file is not None:
        seen = ss.get(UPLOAD_SEEN)
        if seen is None or seen[0] != file.file_id:
            previous = ss.get(UPLOAD)
            raw, error = L.accept_upload(
                None if previous is None else previous["raw"], file.name, file.getvalue(), T, S
            )
            if error is None:
                ss[UPLOAD] = {"name": file.name, "raw": raw, "id": file.file_id}
            ss[UPLOAD_SEEN] = (file.file_id, error)
        error = ss[UPLOAD_SEEN][1]
        if error is not None:
            st.error(
                error if file.name in error else f"{file.name}: {error}", icon=":material/error:"
            )
            if ss.get(UPLOAD) is not None:
                st.caption(f"Still using the previous mask, **{ss[UPLOAD]['name']}**.")
    upload = ss.get(UPLOAD)
    if upload is None:
        st.caption("No mask uploaded yet. Tip: download the final mask above and upload it back.")
        return None
    raw = np.asarray(upload["raw"])
    if raw.shape != (T, S):
        st.warning(
            f"The uploaded mask **{upload['name']}** is [{raw.shape[0]}, {raw.shape[1]}] but "
            f"this input is [T, S] = [{T}, {S}]: it is not used. Upload one of this shape, or "
            "change the input back.",
            icon=":material/warning:",
        )
        return None
    detected, reason = MT.detect_convention(raw)
    names = list(MT.CONVENTIONS)
    convention = st.radio(
        f"How should **{upload['name']}** be read?",
        names,
        index=names.index(detected) if detected in names else 0,
        key=f"ml_conv_{upload['id']}",
        format_func=lambda c: f"{c}: {MT.CONVENTIONS[c]}",
        help="Frameworks disagree on what a 1 (or True) in a mask means.",
    )
    if detected is None:
        st.warning(
            f"Could not tell the convention: {reason} Pick one above.", icon=":material/warning:"
        )
    else:
        st.caption(f"Auto-detected **{detected}**: {reason}")
    return raw, convention


def _readings_section(settings: Settings, raw: np.ndarray, convention: str) -> None:
    r = _readings(settings, raw, convention)
    a, b = r.as_read, r.inverted
    fig = F.readings_figure(
        a.components[0][2],
        b.components[0][2],
        r.output_change,
        a.q_labels,
        a.k_labels,
        convention=r.convention,
        other=r.inverted_convention,
    )
    _plot(fig, "readings_chart", "readings")
    moved = int((r.output_change > 1e-5).sum())
    st.markdown(
        f"Read as **{r.convention}**, your mask allows {int(a.components[0][2].sum())} pairs; "
        f"read as **{r.inverted_convention}** it allows {int(b.components[0][2].sum())}. "
        f"With the sidebar's masks on top, the layer's output changes on **{moved} of "
        f"{a.T}** query rows (largest change {float(r.output_change.max()):.3g}). A mask read "
        "the wrong way round does not crash: it silently attends to exactly the wrong keys."
    )
    outcomes = r.row_outcomes
    st.markdown("**Rows with no allowed key, framework by framework**")
    flipped = np.flatnonzero(~b.components[0][2].any(axis=1))
    other = (
        f" Read as {r.inverted_convention}, though, it would leave {flipped.size} row(s) with "
        f"no key ({_rows(a.q_labels, flipped, 4)})."
        if flipped.size
        else ""
    )
    if not outcomes:
        st.markdown(
            f"Read as **{r.convention}**, every query row of your mask keeps a key, so the "
            f"frameworks agree.{other} A row with no key is where they part ways:"
        )
    else:
        rows = [o["row"] for o in outcomes]
        st.markdown(
            f"Read as **{r.convention}**, your mask leaves {len(rows)} query row(s) with no "
            f"key: {_rows(a.q_labels, rows)}. What each framework returns there:"
        )
    st.table(
        {
            "framework": list(MT.FRAMEWORK_ROW_RULES),
            "a row with no allowed key becomes": list(MT.FRAMEWORK_ROW_RULES.values()),
            "in short": [MT.ROW_OUTCOME.get(f, "") for f in MT.FRAMEWORK_ROW_RULES],
        }
    )


# ---------------------------------------------------------------------------------------------
# The components.


def _component_controls(T: int, S: int, uploaded_allowed) -> tuple[tuple, str]:
    ss = st.session_state
    options = list(L.KINDS) + (["uploaded"] if uploaded_allowed is not None else [])
    _set("ml_components", [c for c in ss["ml_components"] if c in options])
    chosen = st.multiselect(
        "Extra mask components",
        options,
        **_k("ml_components"),
        format_func=KIND_TITLES.get,
        help="Each component is a [T, S] mask; they are combined below and ANDed with the "
        "sidebar's causal / window / padding masks.",
    )
    comps = []
    for kind in chosen:
        with st.container(border=True):
            cols = st.columns([1.5, 1, 1, 1, 0.7], vertical_alignment="bottom")
            cols[0].markdown(f"**{KIND_TITLES[kind]}**", help=HELP[kind])
            negate = cols[4].checkbox("~ not", **_k(f"ml_neg_{kind}"), help="Use the complement.")
            if kind == "prefix_lm":
                cols[1].number_input("prefix length", 0, MAX_LEN, **_k("ml_prefix"))
                comps.append(L.PrefixLM(ss["ml_prefix"], negate=negate))
            elif kind == "document":
                cols[1].radio(
                    "boundaries",
                    ["every", "ids"],
                    **_k("ml_doc_mode"),
                    format_func={"every": "split every n", "ids": "ids"}.get,
                )
                if ss["ml_doc_mode"] == "every":
                    cols[2].number_input(
                        "n (tokens per document)", 1, MAX_LEN, **_k("ml_doc_every")
                    )
                    comps.append(L.Document(every=ss["ml_doc_every"], negate=negate))
                else:
                    if not ss["ml_doc_ids"]:
                        _set("ml_doc_ids", ",".join(str(i // 4) for i in range(T)))
                    cols[2].text_input(
                        "document id per position",
                        **_k("ml_doc_ids"),
                        max_chars=L.MAX_DOCUMENT_TEXT,
                        help=f"{T} ids, e.g. 0,0,0,1,1,2. Cross-attention: query ids | key ids "
                        f"({S} of them).",
                    )
                    q_ids, k_ids = L.parse_document_ids(ss["ml_doc_ids"])
                    comps.append(L.Document(q_ids, k_ids, negate=negate))
            elif kind == "causal_window":
                cols[1].number_input("window w", 1, MAX_LEN, **_k("ml_cw_window"))
                comps.append(L.CausalWindow(ss["ml_cw_window"], negate=negate))
            elif kind == "dilated_window":
                cols[1].number_input("window w", 1, MAX_LEN, **_k("ml_dil_window"))
                cols[2].number_input("dilation d", 1, MAX_LEN, **_k("ml_dil_dilation"))
                comps.append(
                    L.DilatedWindow(ss["ml_dil_window"], ss["ml_dil_dilation"], negate=negate)
                )
            elif kind == "block_sparse":
                cols[1].number_input("block size", 1, MAX_LEN, **_k("ml_bs_block"))
                cols[2].number_input("local blocks", 0, MAX_LEN, **_k("ml_bs_local"))
                cols[3].number_input("global tokens", 0, MAX_LEN, **_k("ml_bs_global"))
                comps.append(
                    L.BlockSparse(
                        ss["ml_bs_block"], ss["ml_bs_local"], ss["ml_bs_global"], negate=negate
                    )
                )
            elif kind == "causal_bottom_right":
                cols[1].caption("no parameters" + (" (T = S: same as top-left)" if T == S else ""))
                comps.append(L.BottomRightCausal(negate=negate))
            elif kind == "uploaded":
                cols[1].caption("read as chosen in *Upload a custom mask*")
                comps.append(L.Uploaded.from_allowed(uploaded_allowed, negate=negate))
    if len(chosen) > 1:
        st.radio(
            "Combine the components with",
            L.COMBINE,
            **_k("ml_combine"),
            horizontal=True,
            format_func={"and": "AND (all must allow)", "or": "OR (one is enough)"}.get,
            help="The sidebar's masks are always ANDed with the result, as Keras does.",
        )
    return tuple(comps), ss["ml_combine"] if len(chosen) > 1 else "and"


# ---------------------------------------------------------------------------------------------
# The sections.


def _outcome(result: L.MaskLabResult) -> None:
    q, k = result.q_labels, result.k_labels
    st.subheader("What the layer does on the rows to watch")
    if result.fully_masked_rows.size == 0:
        st.markdown("Every query keeps at least one key: **no fully masked rows**.")
    else:
        rows = result.fully_masked_rows
        bias = result.output_bias
        gqa_out = result.output[rows]
        matches = bool(np.allclose(gqa_out, bias, atol=1e-5))
        st.markdown(
            f"**{rows.size} fully masked row(s)** (✕ in the figure): {_rows(q, rows)}. "
            "No key is left to attend to, so the softmax has nothing to normalize, and "
            "implementations disagree on the output:\n"
            "- **Keras, with `return_attention_scores=True`** (the explicit path): the "
            "probabilities of the row are all 0, the context is 0, and the output is just the "
            "output projection's bias"
            + (
                " (zeros here: `use_bias=False`)."
                if not result.settings.bias
                else " (zeros here too: a fresh layer's bias starts at 0)."
                if not np.any(bias)
                else "."
            )
            + "\n- **Keras, without scores** (dropout 0: the fused `dot_product_attention`): a "
            "**uniform average over all S keys, masked ones included**, as if nothing were "
            "masked on that row.\n"
            '- **gqa_viz**: the first answer on both paths (`fully_masked_rows="zero"`), so the '
            "output does not depend on whether you asked for scores"
            + (" — checked: the rows below equal the bias." if matches else ".")
        )
        st.dataframe(
            {
                "query": [_plain(q, int(i)) for i in rows],
                "‖output‖ gqa_viz = Keras with scores": np.linalg.norm(gqa_out, axis=-1),
                "‖output‖ Keras fused (uniform)": np.linalg.norm(result.uniform_output, axis=-1),
                "‖difference‖": np.linalg.norm(gqa_out - result.uniform_output, axis=-1),
            },
            hide_index=True,
        )
    if result.single_key_rows.size:
        pairs = ", ".join(
            f"{_where(q, int(i))} → {_where(k, int(j))}"
            for i, j in list(zip(result.single_key_rows, result.single_keys))[:12]
        )
        st.markdown(
            f"**{result.single_key_rows.size} row(s) with a single key** (● in the figure): "
            f"{pairs}{' …' if result.single_key_rows.size > 12 else ''}. The softmax gives that "
            "key probability 1 whatever the logits: the query copies one value vector per head, "
            "and no gradient flows to its logits."
        )


@st.fragment
def _scores(result: L.MaskLabResult) -> None:
    s = result.settings
    st.subheader("The attention the final mask produces")
    view = view_controls(pool_factor(s.n, result.T, result.S) > 1)
    kind = view.view
    values = result.probs if kind == "probs" else result.logits
    fig = heads_figure(
        values,
        result.final,
        result.q_labels,
        result.k_labels,
        s.k,
        kind=kind,
        title=f"Attention {'probabilities' if kind == 'probs' else 'logits'} with the final mask",
        saturate=99.0 if view.scale == "p99" else None,
        pool=view.pool,
    )
    _plot(fig, "scores_chart", "scores")


def _block_section(result: L.MaskLabResult) -> None:
    st.subheader("Sparsity and what a block-sparse kernel can skip")
    left, right = st.columns([1, 2.4], gap="medium")
    with left:
        options = [b for b in BLOCK_SIZES if b <= max(result.T, result.S)] or [BLOCK_SIZES[0]]
        if st.session_state["ml_block"] not in options:
            _set("ml_block", options[-1] if result.T > 4 else options[0])
        block = st.selectbox(
            "tile size (queries = keys)",
            options,
            **_k("ml_block"),
            help="Flash-style kernels work on tiles of block × block pairs and skip tiles that "
            "are fully masked. Real kernels use 64 or 128; small tiles show the idea on a "
            "short input.",
        )
        info = result.block_skip(block, block)
        st.metric(
            "pairs masked",
            f"{1 - result.allowed_fraction:.1%}",
            help="Fraction of (query, key) pairs the final mask blocks: the most any kernel "
            "could save.",
        )
        st.metric(
            "attention FLOPs skippable",
            f"{info['skippable_fraction']:.1%}",
            help=f"{info['skippable_flops']:,} of {info['dense_flops']:,} FLOPs for QKᵀ and PV "
            f"over {result.spec.num_query_heads} heads of dim {result.spec.head_dim}.",
        )
        st.caption(
            f"{info['empty_blocks']} of {info['blocks']} tiles are empty and skipped, "
            f"{info['partial_blocks']} need the mask, {info['full_blocks']} are full. Masked pairs "
            "inside a partial tile are still computed, so the saving is below the sparsity."
        )
    with right:
        _plot(
            F.block_figure(result.final, block, block, result.q_labels, result.k_labels),
            "block_chart",
            "blocks",
        )


def _alignment_section(result: L.MaskLabResult) -> None:
    T, S = result.T, result.S
    st.subheader("Causal alignment when T ≠ S")
    text = (
        "Keras' `use_causal_mask` aligns the triangle **top-left**: query i sees keys j ≤ i, "
        "even when there are more keys than queries. That is right when query i and key i "
        "are the same position (self-attention, training). When the queries are the **last** "
        "T of S positions — **KV-cache decoding**, chunked prefill — the triangle must be "
        "aligned **bottom-right** (j ≤ i + S − T), as most flash kernels do; with top-left, "
        "a new token would not see the last S − T cached keys."
    )
    if T == S:
        st.markdown(
            text + f" Here T = S = {T}, so the two coincide: switch to cross-attention in the "
            "sidebar to compare them on your input. An example with T = 4 and S = 7:"
        )
        ex = L.alignment(4, 7)
        q, k = [str(i) for i in range(4)], [str(j) for j in range(7)]
    else:
        if T > S:
            text += (
                f" Here T = {T} > S = {S}: bottom-right leaves the first {T - S} queries with "
                "no key at all (✕: fully masked rows), while top-left gives every query at "
                "least key 0."
            )
        else:
            text += (
                f" Here T = {T} < S = {S}: with top-left, even the last query never sees the "
                f"last {S - T} keys."
            )
        st.markdown(text)
        ex = L.alignment(T, S)
        q, k = result.q_labels, result.k_labels
    _plot(F.alignment_figure(ex["top_left"], ex["bottom_right"], q, k), "align_chart", "alignment")


def _window_section(result: L.MaskLabResult) -> None:
    st.subheader("Window semantics: one number, several bands")
    left, right = st.columns([1, 4], gap="medium")
    with left:
        if result.settings.window and "ml_window_from" not in st.session_state:
            _set("ml_window", result.settings.window)  # the sidebar's window, on a first visit
        st.session_state["ml_window_from"] = True
        w = st.number_input("window w", 1, MAX_LEN, **_k("ml_window"))
    with right:
        st.markdown(
            "\n".join(f"- **{name}**: {rule}" for name, rule in MT.WINDOW_RULES.items())
            + "\n\nPorting a model between libraries without converting w silently changes "
            "what each query sees."
        )
    sem = MT.window_semantics(int(w), result.T, result.S)
    counts = {name: MT.count_allowed(m) for name, m in sem.items()}
    _plot(
        F.window_figure(sem, counts, int(w), result.q_labels, result.k_labels),
        "window_chart",
        "windows",
    )


def _keras_section(result: L.MaskLabResult) -> None:
    st.subheader("How Keras merges your masks")
    if not result.keras_parts:
        st.markdown("Nothing masks this call: Keras passes no mask to the softmax.")
    else:
        lines = [
            "| Keras argument | given as | broadcast to | what it masks |",
            "|:--|:--|:--|:--|",
        ]
        lines += [
            f"| `{p.name}` | `{p.given}` | `{p.broadcast}` | {p.rule.replace('|', chr(92) + '|')} |"
            for p in result.keras_parts
        ]
        st.markdown(
            "Keras' `GroupQueryAttention` expands every mask of a call to a common shape and "
            "**ANDs** them: a pair is attended only if every mask allows it.\n\n" + "\n".join(lines)
        )
        _plot(
            F.keras_merge_figure(
                result.keras_parts, result.final, result.q_labels, result.k_labels
            ),
            "merge_chart",
            "keras_merge",
        )
    st.markdown("The same masks in a Keras call:")
    st.code(L.keras_code(result), language="python")


def _embedding_section(result: L.MaskLabResult) -> None:
    st.subheader("Keras' implicit masks: Embedding(mask_zero=True)")
    e = L.embedding_padding(result)
    st.markdown(
        "Give a model `Embedding(..., mask_zero=True)` and Keras attaches a mask to its "
        "output: id 0 is padding. `GroupQueryAttention` then picks it up **without being "
        "asked**, as `query_mask` (from the query) and `value_mask` (from the value). "
        "A padding query has no key to attend to: this is the most common source of fully "
        "masked rows."
    )
    left, right = st.columns([1, 2.4], gap="medium")
    with left:
        st.dataframe(
            {
                "query token": [_plain(result.q_labels, i) for i in range(result.T)],
                "id": e.q_ids,
                "query_mask": e.query_mask,
            },
            hide_index=True,
            height=min(36 + 35 * result.T, 420),
        )
        if result.S != result.T or result.settings.cross:
            st.dataframe(
                {
                    "key token": [_plain(result.k_labels, j) for j in range(result.S)],
                    "id": e.k_ids,
                    "value_mask": e.value_mask,
                },
                hide_index=True,
                height=min(36 + 35 * result.S, 420),
            )
    if not e.fully_masked_rows.size and e.value_mask.all():
        with right:
            st.info(
                "No padding on this input, so the implicit masks allow everything. Set "
                "*Padding* in the sidebar's *Masks* to add `<pad>` tokens (id 0) and see the "
                "rows they mask.",
                icon=":material/info:",
            )
        return
    with right:
        T, S = result.T, result.S
        panels = [
            F.Panel("query_mask → [T, 1]", np.broadcast_to(e.query_mask[:, None], (T, S))),
            F.Panel("value_mask → [1, S]", np.broadcast_to(e.value_mask[None, :], (T, S))),
            F.Panel("implicit mask", e.merged, theme.FINAL_MASK_COLOR),
        ]
        fig = F.grid_figure(
            panels,
            result.q_labels,
            result.k_labels,
            title="The masks Keras derives from the token ids",
            subtitle="Rows: queries; columns: keys.",
            operators=["&", "="],
            fully_masked_rows=e.fully_masked_rows,
            max_panel_px=220.0,
        )
        _plot(fig, "embedding_chart", "embedding_masks")
    if e.fully_masked_rows.size:
        st.markdown(
            f"Padding makes **{e.fully_masked_rows.size} fully masked row(s)**: "
            f"{_rows(result.q_labels, e.fully_masked_rows)}. Their output is the output bias "
            "with scores, a uniform average without (see above): harmless only if the loss "
            "ignores those positions too."
        )


def _downloads(result: L.MaskLabResult) -> None:
    T, S = result.T, result.S
    st.markdown(f"**Download the final mask** [T, S] = [{T}, {S}] (True / 1 = attend):")
    cols = st.columns([1, 1, 3])
    cols[0].download_button(
        "final mask (.npy)",
        data=lambda: L.npy_bytes(result.final),
        file_name=f"mask_T{T}_S{S}.npy",
        mime="application/octet-stream",
        key="ml_dl_npy",
        icon=":material/download:",
    )
    cols[1].download_button(
        "final mask (.csv)",
        data=lambda: L.matrix_csv(result.final),
        file_name=f"mask_T{T}_S{S}.csv",
        mime="text/csv",
        key="ml_dl_csv",
        help="One row per query, one 0/1 column per key; uploads back as keep_bool.",
        icon=":material/download:",
    )


# ---------------------------------------------------------------------------------------------
# The page.

settings = settings_controls()
_seed()
st.title("Mask Lab")
st.markdown(
    "Build an attention mask from pieces, see the mask the layer really applies, and what "
    "it does to the scores. **Blue = attend, grey = masked**; rows are queries (top to "
    "bottom), columns are keys. The sidebar's causal, window and padding masks always apply; "
    "the components below are ANDed with them, as Keras ANDs an `attention_mask`."
)
main = st.container()
upload_box = st.container()

try:
    q_labels, k_labels = L.input_labels(settings)
except ValueError as error:
    st.error(f"These settings cannot run: {error}", icon=":material/error:")
    st.stop()
T, S = len(q_labels), len(k_labels)
with upload_box:
    uploaded = _upload_section(settings, T, S)
uploaded_allowed = None if uploaded is None else MT.to_allowed(*uploaded)

with main:
    st.header("Build a mask")
    try:
        components, combine = _component_controls(T, S, uploaded_allowed)
        result = _compose(settings, components, combine)
    except ValueError as error:
        st.error(f"This mask cannot be built: {error}", icon=":material/error:")
        st.caption("Showing the sidebar's masks alone until the components are fixed.")
        result = _compose(settings, (), "and")
    for note in result.notes:
        st.info(note, icon=":material/info:")
    m = st.columns(4)
    m[0].metric("allowed pairs", f"{int(result.final.sum())} / {T * S}")
    m[1].metric("fraction allowed", f"{result.allowed_fraction:.1%}")
    m[2].metric("fully masked rows", int(result.fully_masked_rows.size))
    m[3].metric("single-key rows", int(result.single_key_rows.size))
    _plot(
        F.components_figure(
            result.components,
            result.final,
            result.q_labels,
            result.k_labels,
            combine=result.combine,
            settings_mask=result.keras_mask if _settings_mask(result) else None,
            settings_title=_settings_title(result),
            fully_masked_rows=result.fully_masked_rows,
            single_key_rows=result.single_key_rows,
        ),
        "components_chart",
        "components",
    )
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
