"""Trained heads: what the heads of tiny trained models learn, and what KV sharing does to them.

Thin on purpose: what the page computes (forward passes, the conversion, prompts, uploads) is
in :mod:`gqa_viz.app.trained_heads`, and so are the figures of the shipped models (drawn by
:mod:`gqa_viz.figures.trained`, once for every session); an upload's are drawn here. The
widgets live in the page body, not the sidebar (these models fix N, K, H and D), the prose in
``assets/text/trained.md``. The live conversion and the upload
are fragments: their widgets rerun only their own section.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from app_pages._chart import chart
from app_pages._layout import wrapping_row
from gqa_viz import tasks, trained
from gqa_viz.app import trained_heads as th
from gqa_viz.app.limits import (
    MAX_DRAWN_CELLS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_UPLOAD_MB,
    UPLOAD_VIEW_MAX_LEN,
)
from gqa_viz.figures.diagram import attention_kind
from gqa_viz.figures.heads import heads_figure
from gqa_viz.figures.trained import (
    METHOD_NAMES,
    experiment_figure,
    experiment_summary,
    layer_sentence,
)

TEXT = th.text()


@st.cache_data(max_entries=16, show_spinner=False)
def _upload_probs(digest: str, index: int, length: int, causal: bool, seed: int, _layer):
    """``_layer`` is not hashed: the upload's digest and index name it."""
    return th.upload_probs(_layer, length, causal, seed)


def _layer_figures(source: tuple, task: str, tokens, K: int, layer: int) -> None:
    """A layer's heads (left) and its right-key bars with a sentence (right); ``source`` is
    ("model", name) or ("converted", task, method, K)."""
    keys = tasks.answer_keys(task, np.asarray(tokens))
    layers = th.layer_probs(source, tokens)
    probs = layers[layer]
    fig = th.layer_heads_figure(source, layer, task, tokens, K)
    key = "-".join(str(part) for part in source)
    # The bars beside the heads while both fit, else below them.
    least = th.HEADS_LEAST_PX
    left, right = wrapping_row(f"tr_row_{key}_{layer}", (3, least), (1.1, 240), gap="small")
    with left:
        chart(fig, key=f"tr_heads_{key}_{layer}")
    with right:
        bars = th.bars_figure(source, layer, task, tokens, K)
        chart(bars, key=f"tr_bars_{key}_{layer}")
        last = layer == len(layers) - 1
        st.markdown(layer_sentence(probs, keys, layer, last))


# --- Section 1: task, model, prompt.
def _choose() -> tuple[str, str, tuple[int, ...]]:
    """The task, model and prompt widgets: (task, model name, prompt tokens)."""
    ss = st.session_state
    c1, c2 = wrapping_row("tr_choose", (1, 250), (1.25, 450), gap="large")  # 450: four Ks
    with c1:
        task = st.segmented_control(
            "Task", tasks.TASKS, default=th.DEFAULT_TASK, required=True, key="tr_task"
        )
    ks = th.model_ks(task)
    N = trained.load(f"{task}-k{ks[0]}").cfg.num_query_heads
    if ss.get("tr_k") not in ks:
        ss["tr_k"] = ks[0]
    with c2:
        K = st.segmented_control(
            f"Model: K/V heads shared by the {N} query heads",
            ks,
            required=True,
            key="tr_k",
            format_func=lambda k: f"K = {k} ({attention_kind(N, k)})",
            help=TEXT["model_help"],
        )
    st.caption(tasks.describe(task))

    c1, c2, c3 = wrapping_row("tr_prompt", (0.9, 120), (0.9, 150), (4, 300), align="bottom")
    seed = c1.number_input(
        "Prompt seed", 0, MAX_SEED, step=1, key=th.SEED, on_change=th.forget_prompt, args=(ss, task)
    )
    c2.button(
        "New prompt",
        icon=":material/casino:",
        key="tr_new",
        on_click=th.next_seed,
        args=(ss, task),
        help="Draw another prompt of this task (the seed + 1).",
    )
    current = th.current_prompt(ss, task, seed)
    L = tasks.seq_len(task)
    c3.text_input(
        f"…or type a prompt: {L} tokens of {th.vocab_summary(task)}, separated by spaces",
        key=th.text_key(task),
        max_chars=MAX_PROMPT_CHARS,
        on_change=th.type_prompt,
        args=(ss, task),
        help=TEXT["prompt_help"],
    )
    error = th.prompt_error(ss, task)
    shown = th.prompt_text(task, current["tokens"])
    if error is not None:
        st.warning(f"{error} Still showing the previous prompt: `{shown}`.", icon="⚠️")
    elif current["seed"] is None:
        st.caption("Showing your typed prompt; the seed or *New prompt* draws a fresh one.")
    return task, f"{task}-k{K}", current["tokens"]


# --- Section 2: what the model predicts.
def _predictions(task: str, name: str, tokens: tuple[int, ...], run: dict) -> None:
    st.header("What the model predicts")
    p = th.predictions(task, tokens, run)
    for col, (label, value, tip) in zip(st.columns(3), th.prediction_metrics(name, p)):
        col.metric(label, value, help=tip)
    fig = th.predictions_figure(task, name, tokens)
    chart(fig, key="tr_predictions")


# --- Section 3: every layer and head.
def _layers(task: str, name: str, tokens: tuple[int, ...], run: dict) -> None:
    cfg = trained.load(name).cfg
    st.header("Every layer and head")
    st.markdown(th.layers_text(name))
    for layer in range(len(run["probs"])):
        _layer_figures(("model", name), task, tokens, cfg.num_key_value_heads, layer)


# --- Section 4: the GQA paper in miniature.
def _paper(task: str, tokens: tuple[int, ...]) -> None:
    st.header("The GQA paper in miniature")
    exp = trained.experiment()
    st.markdown(th.paper_text(task))
    # Full width: every K column holds a bar and dots per method and phase.
    chart(experiment_figure(exp, task), key="tr_experiment")
    st.markdown(experiment_summary(exp, task))
    _live_conversion(task, tokens)


@st.fragment
def _live_conversion(task: str, tokens: tuple[int, ...]) -> None:
    ks = th.experiment_ks(task)
    st.subheader("Convert it yourself")
    c1, c2 = st.columns([1.5, 1])
    method = c1.radio(
        "Conversion method",
        list(METHOD_NAMES),
        format_func=th.METHOD_CHOICES.get,
        horizontal=True,
        key="tr_live_method",
    )
    K = c2.segmented_control(
        "K after conversion", ks, default=ks[-1], required=True, key="tr_live_k"
    )
    with st.spinner("Evaluating on the held-out batch…"):
        accuracy = th.converted_accuracy(task, method, K)
    metrics, caption = th.conversion_report(task, method, K, *accuracy)
    for col, (label, value, sequences) in zip(st.columns(3), metrics, strict=True):
        col.metric(label, value, sequences, delta_color="off", delta_arrow="off")
    st.caption(caption)
    run = th.run_converted(task, method, K, tokens)
    layer = st.radio(
        "Layer shown",
        range(len(run["probs"])),
        index=len(run["probs"]) - 1,
        horizontal=True,
        key="tr_live_layer",
        format_func=lambda i: f"layer {i}",
    )
    _layer_figures(("converted", task, method, K), task, tokens, K, layer)


# --- Section 5: your own Keras layer.
@st.fragment
def _upload_section() -> None:
    st.header("Your own Keras layer")
    st.markdown(TEXT["upload"])
    c1, c2 = st.columns([1.5, 1.3], gap="large")
    with c1:
        st.file_uploader(
            "Weights file (.weights.h5, .h5 or .npz)",
            type=["h5", "npz"],
            key=th.UPLOAD_FILE,
            on_change=th.on_upload,
            args=(st.session_state,),
            help=TEXT["upload_help"].format(mb=MAX_UPLOAD_MB),
        )
    with c2:
        st.code(th.SAVE_CODE, language="python", wrap_lines=True)
        st.download_button(
            "Example: recall-k4, layer 1 (.npz)",
            data=lambda: th.example_npz(),
            file_name="recall-k4-layer1.npz",
            mime="application/octet-stream",
            key="tr_example",
            icon=":material/download:",
            help="A trained layer of this page in get_weights() order, to try the upload.",
        )
    ss = st.session_state
    if ss.get(th.UPLOAD_ERROR):
        st.error(ss[th.UPLOAD_ERROR], icon="🚫")
    upload = ss.get(th.UPLOAD)
    if upload is None:
        return
    if ss.get(th.UPLOAD_ERROR):
        st.caption(f"Still showing the previous file, {upload['name']}.")
    layers = upload["layers"]
    index = 0
    if len(layers) > 1:
        index = st.selectbox(
            f"{len(layers)} attention layers in {upload['name']}",
            range(len(layers)),
            format_func=lambda i: layers[i].name,
            key="tr_upload_layer",
        )
        index = min(int(index), len(layers) - 1)
    layer = layers[index]
    st.markdown(f"**{layer.describe()}**: {th.kind_sentence(layer.spec)}")
    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    length = c1.slider("Sequence length L", 4, UPLOAD_VIEW_MAX_LEN, 16, key="tr_upload_len")
    causal = c2.toggle("use_causal_mask", True, key="tr_upload_causal")
    seed = c3.number_input("Input seed", 0, MAX_SEED, 0, key="tr_upload_seed")
    try:
        probs = _upload_probs(upload["digest"], index, int(length), bool(causal), int(seed), layer)
    except ValueError as error:
        st.error(str(error), icon="🚫")
        return
    labels = [str(i) for i in range(int(length))]
    mask = np.tril(np.ones((length, length), bool)) if causal else None
    title = f"{upload['name']}: {layer.name} on random vectors"
    K = layer.spec.num_key_value_heads
    fig = heads_figure(
        probs,
        mask,
        labels,
        labels,
        K,
        title=title,
        saturate=99.0,
        max_cells=MAX_DRAWN_CELLS,
        frozen=True,
    )
    chart(fig, key="tr_upload_heads")
    st.caption(TEXT["upload_caption"].format(length=length, seed=seed))


# --- The page.
def main() -> None:
    st.title("Trained heads")
    cfg = trained.load(trained.names()[0]).cfg
    st.markdown(TEXT["intro"].format(layers=cfg.num_layers, heads=cfg.num_query_heads))
    task, name, tokens = _choose()
    run = th.run_model(name, tokens)
    _predictions(task, name, tokens, run)
    _layers(task, name, tokens, run)
    _paper(task, tokens)
    _upload_section()


if __name__ == "__main__":
    main()
