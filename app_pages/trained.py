"""Trained heads: what the heads of tiny trained models learn, and what KV sharing does to them.

Thin on purpose: the models and the experiment come from :mod:`gqa_viz.trained`, the forward
pass and the conversion from :mod:`gqa_viz.tiny`, the figures from
:mod:`gqa_viz.figures.trained` and :mod:`gqa_viz.figures.heads`. The widgets live in the page
body, not the sidebar (these models fix N, K, H and D). The live conversion and the upload are
fragments: their widgets rerun only their own section.

The page body runs only under Streamlit (a page is executed as ``__main__``), so the tests can
import :func:`parse_prompt` and :func:`accept_upload` from here.
"""

from __future__ import annotations

import hashlib
import io

import jax
import numpy as np
import streamlit as st

from gqa_viz import core, keras_weights, tasks, tiny, trained
from gqa_viz.buckets import bucketed_trace
from gqa_viz.figures.heads import heads_figure
from gqa_viz.figures.trained import (
    METHOD_NAMES,
    experiment_figure,
    experiment_summary,
    prediction_figure,
    previous_token_attention,
    right_key_attention,
    right_key_figure,
    trained_heads_figure,
    uniform_baseline,
)
from gqa_viz.keras_weights import UploadedLayer, WeightsUploadError
from gqa_viz.settings import MAX_PROMPT_CHARS, MAX_SEED, MAX_UPLOAD_MB, UPLOAD_VIEW_MAX_LEN

_CONFIG = {"displaylogo": False}
UPLOAD = "tr_upload"  # session_state: {"name", "digest", "layers"} of the last good upload
UPLOAD_ERROR = "tr_upload_error"  # session_state: the message for the last bad upload


# ---------------------------------------------------------------------------------------------
# Plain helpers (no widgets): what the tests call.


def vocab_summary(task: str) -> str:
    """The task's tokens with runs collapsed: "a..p, 0..9, =" for recall."""
    names = tasks.token_names(task)
    parts, i = [], 0
    while i < len(names):
        j = i
        while j + 1 < len(names) and _follows(names[j], names[j + 1]):
            j += 1
        parts.append(names[i] if j - i < 2 else f"{names[i]}..{names[j]}")
        if 0 < j - i < 2:
            parts.extend(names[i + 1 : j + 1])
        i = j + 1
    return ", ".join(parts)


def _follows(a: str, b: str) -> bool:
    if a.isdigit() and b.isdigit():
        return int(b) == int(a) + 1
    return len(a) == len(b) == 1 and a.isalpha() and ord(b) == ord(a) + 1


def parse_prompt(task: str, text: str) -> tuple[np.ndarray | None, str | None]:
    """A typed prompt as token ids [L], or (None, a message naming the rule it breaks)."""
    vocab = tasks.token_names(task)
    L = tasks.seq_len(task)
    words = text.split()
    rule = f"{task} prompts are {L} tokens of {vocab_summary(task)}, separated by spaces"
    unknown = list(dict.fromkeys(w for w in words if w not in vocab))
    if unknown:
        shown = ", ".join(repr(w[:12]) for w in unknown[:4]) + (" …" if len(unknown) > 4 else "")
        return None, f"{rule}; {shown} {'is' if len(unknown) == 1 else 'are'} not among them."
    if len(words) != L:
        return None, f"{rule}; got {len(words)}."
    return np.array([vocab.index(w) for w in words], np.int32), None


def prompt_text(task: str, tokens) -> str:
    names = tasks.token_names(task)
    return " ".join(names[t] for t in np.asarray(tokens).tolist())


def accept_upload(filename: str, data: bytes, state=None) -> str | None:
    """Read an uploaded weights file into ``state`` (session_state by default).

    A good file replaces the stored layers (``state[UPLOAD]``) and clears the error; a bad one
    sets ``state[UPLOAD_ERROR]`` to the user-facing message, which is returned, and keeps the
    previous layers. The bytes are read in memory and never written anywhere.
    """
    state = st.session_state if state is None else state
    try:
        layers = keras_weights.read_upload(filename, data)
    except WeightsUploadError as e:
        state[UPLOAD_ERROR] = str(e)
        return str(e)
    state[UPLOAD] = {
        "name": filename,
        "digest": hashlib.sha256(data).hexdigest()[:16],
        "layers": layers,
    }
    state.pop(UPLOAD_ERROR, None)
    return None


def example_npz(name: str = "recall-k4", layer: int = 1) -> bytes:
    """A shipped layer as ``np.savez(f, *layer.get_weights())`` bytes: a file to try."""
    params = trained.load(name).params["layers"][layer]["attention"]
    weights = [
        np.asarray(params[sub][what], np.float32)
        for sub in core.WEIGHT_ORDER
        if sub in params
        for what in ("kernel", "bias")
    ]
    buf = io.BytesIO()
    np.savez(buf, *weights)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Cached computations, keyed on plain values.


def _run(params, cfg: tiny.Config, tokens: tuple[int, ...]) -> dict:
    t = tiny.trace(params, cfg, np.asarray(tokens, np.int32)[None])
    p = np.asarray(jax.nn.softmax(t.logits[0], axis=-1))  # [L, V] next-token probabilities
    return {
        "probs": [np.asarray(layer.probs[0]) for layer in t.layers],  # per layer [N, L, L]
        "predicted": p.argmax(-1),  # [L]
        "confidence": p.max(-1),  # [L]
    }


@st.cache_data(max_entries=256, show_spinner=False)
def _trace_model(name: str, tokens: tuple[int, ...]) -> dict:
    model = trained.load(name)
    return _run(model.params, model.cfg, tokens)


def convert(task: str, method: str, K: int) -> tuple[dict, tiny.Config]:
    """The task's MHA model converted to K kv heads as the experiment did (its seed)."""
    mha = trained.load(trained.mha_name(task))
    seed = int(trained.experiment()["training"]["seed"])  # the experiment's random-head draws
    return tiny.convert(mha.params, mha.cfg, K, method, seed=seed)


def evaluate(params: dict, cfg: tiny.Config) -> tiny.Accuracy:
    """Accuracy on the experiment's held-out batch (its eval seed and size): for a fresh
    conversion, experiment.json's "before" number."""
    ev = trained.experiment()["eval"]
    return tiny.evaluate(params, cfg, seed=int(ev["seed"]), batch=int(ev["batch"]))


@st.cache_resource(max_entries=16, show_spinner=False)
def _converted(task: str, method: str, K: int):
    return convert(task, method, K)


@st.cache_data(max_entries=64, show_spinner="Evaluating on the held-out batch…")
def _live_accuracy(task: str, method: str, K: int) -> tuple[float, float]:
    acc = evaluate(*_converted(task, method, K))
    return acc.token, acc.sequence


@st.cache_data(max_entries=128, show_spinner=False)
def _trace_converted(task: str, method: str, K: int, tokens: tuple[int, ...]) -> dict:
    params, cfg = _converted(task, method, K)
    return _run(params, cfg, tokens)


def _probs(source: tuple, tokens: tuple[int, ...]) -> list[np.ndarray]:
    """Per layer [N, L, L]: ``source`` is ("model", name) or ("converted", task, method, K)."""
    if source[0] == "model":
        return _trace_model(source[1], tokens)["probs"]
    return _trace_converted(*source[1:], tokens)["probs"]


@st.cache_resource(max_entries=32, show_spinner=False)
def _heads_fig(source: tuple, layer: int, task: str, tokens: tuple[int, ...], K: int, title: str):
    names = tasks.token_names(task)
    keys = tasks.answer_keys(task, np.asarray(tokens))
    probs = _probs(source, tokens)[layer]
    return trained_heads_figure(probs, [names[t] for t in tokens], keys, K, title)


def _layer_figures(source: tuple, task: str, tokens, K: int, layer: int, title: str) -> None:
    """A layer's heads (left) and its right-key bars with a sentence (right)."""
    keys = tasks.answer_keys(task, np.asarray(tokens))
    probs = _probs(source, tokens)[layer]
    fig = _heads_fig(source, layer, task, tokens, K, title)
    key = "-".join(str(part) for part in source)
    left, right = st.columns([3, 1.1], gap="small")
    with left:
        st.plotly_chart(fig, theme=None, key=f"tr_heads_{key}_{layer}", config=_CONFIG)
    with right:
        bars_title = f"Layer {layer}:<br>attention on the right key"
        bars = right_key_figure(probs, keys, K, bars_title, height=350)
        st.plotly_chart(bars, theme=None, key=f"tr_bars_{key}_{layer}", config=_CONFIG)
        last = layer == len(_probs(source, tokens)) - 1
        st.markdown(_layer_sentence(probs, keys, layer, last))


def _layer_sentence(probs: np.ndarray, keys: np.ndarray, layer: int, last: bool) -> str:
    """What the strongest heads of this layer do on this prompt, from the numbers."""
    if not (keys >= 0).any():
        return "This prompt has no answer position, so no head has a right key to find."
    right = right_key_attention(probs, keys)  # [N]
    prev = previous_token_attention(probs)  # [N]
    n, v = int(np.argmax(right)), float(np.max(right))
    m, w = int(np.argmax(prev)), float(np.max(prev))
    even = uniform_baseline(keys)
    if v >= 0.5:
        text = (
            f"**q{n} finds the answer**: on average it puts {v:.0%} of its attention on the "
            f"right key (spread evenly it would be {even:.0%})."
        )
    else:
        text = (
            f"No head of layer {layer} looks at the right key much: the most is q{n} with "
            f"{v:.0%} (spread evenly: {even:.0%})."
        )
    if w >= 0.5 and not last:  # it matters only to a layer above
        text += (
            f" **q{m} is a previous-token head**: it puts {w:.0%} on the token just before the "
            "query, which lets a head of the next layer find a token by what came before it."
        )
    return text


# ---------------------------------------------------------------------------------------------
# Section 1: task, model, prompt.


def _model_ks(task: str) -> list[int]:
    return [int(n.rsplit("-k", 1)[1]) for n in trained.names() if trained.task_of(n) == task]


def _kind(K: int, N: int) -> str:
    return "MHA" if K == N else "MQA" if K == 1 else "GQA"


def _on_seed(task: str) -> None:
    st.session_state.setdefault("tr_prompts", {}).pop(task, None)


def _on_new_prompt(task: str) -> None:
    # The next seed, wrapping at the box's maximum (a higher value would be refused).
    st.session_state["tr_seed"] = (int(st.session_state.get("tr_seed", 0)) + 1) % (MAX_SEED + 1)
    _on_seed(task)


def _on_typed(task: str) -> None:
    ss = st.session_state
    text = ss.get(f"tr_text_{task}", "")
    tokens, message = parse_prompt(task, text)
    errors = ss.setdefault("tr_prompt_errors", {})
    if tokens is None:
        errors[task] = {"text": text, "message": message}
        return
    errors.pop(task, None)
    ss.setdefault("tr_prompts", {})[task] = {"tokens": tuple(tokens.tolist()), "seed": None}


def _choose() -> tuple[str, str, tuple[int, ...]]:
    """The task, model and prompt widgets: (task, model name, prompt tokens)."""
    ss = st.session_state
    c1, c2 = st.columns([1, 1.25], gap="large")
    with c1:
        task = st.segmented_control(
            "Task", tasks.TASKS, default="recall", required=True, key="tr_task"
        )
    ks = _model_ks(task)
    N = trained.load(f"{task}-k{ks[0]}").cfg.num_query_heads
    if ss.get("tr_k") not in ks:
        ss["tr_k"] = ks[0]
    with c2:
        K = st.segmented_control(
            f"Model: K/V heads shared by the {N} query heads",
            ks,
            required=True,
            key="tr_k",
            format_func=lambda k: f"K = {k} ({_kind(k, N)})",
            help="Four models per task, the same except for K: trained from scratch with "
            "K = 8 (multi-head), 4 and 2 (grouped-query) and 1 (multi-query) K/V heads.",
        )
    st.caption(tasks.describe(task))

    c1, c2, c3 = st.columns([0.9, 0.9, 4], vertical_alignment="bottom")
    seed = c1.number_input(
        "Prompt seed", 0, MAX_SEED, step=1, key="tr_seed", on_change=_on_seed, args=(task,)
    )
    c2.button(
        "New prompt",
        icon=":material/casino:",
        key="tr_new",
        on_click=_on_new_prompt,
        args=(task,),
        help="Draw another prompt of this task (the seed + 1).",
    )
    prompts = ss.setdefault("tr_prompts", {})
    text_key = f"tr_text_{task}"
    current = prompts.get(task)
    if current is None or (current["seed"] is not None and current["seed"] != seed):
        tokens = tuple(trained.prompt(task, int(seed)).tolist())
        current = prompts[task] = {"tokens": tokens, "seed": int(seed)}
        ss[text_key] = prompt_text(task, tokens)
        ss.get("tr_prompt_errors", {}).pop(task, None)
    elif text_key not in ss:  # the widget's state was dropped (another page was shown)
        ss[text_key] = prompt_text(task, current["tokens"])
    L = tasks.seq_len(task)
    c3.text_input(
        f"…or type a prompt: {L} tokens of {vocab_summary(task)}, separated by spaces",
        key=text_key,
        max_chars=MAX_PROMPT_CHARS,
        on_change=_on_typed,
        args=(task,),
        help="Edit the prompt drawn by the seed and press Enter: change a token and see "
        "whether the model follows. A prompt that breaks the task's pattern has fewer (or "
        "different) answer positions.",
    )
    error = ss.get("tr_prompt_errors", {}).get(task)
    shown = prompt_text(task, current["tokens"])
    if error is not None and error["text"] == ss.get(text_key):
        st.warning(f"{error['message']} Still showing the previous prompt: `{shown}`.", icon="⚠️")
    elif current["seed"] is None:
        st.caption("Showing your typed prompt; the seed or *New prompt* draws a fresh one.")
    return task, f"{task}-k{K}", current["tokens"]


# ---------------------------------------------------------------------------------------------
# Section 2: what the model predicts.


def _predictions(task: str, name: str, tokens: tuple[int, ...], run: dict) -> None:
    st.header("What the model predicts")
    names = tasks.token_names(task)
    labels = [names[t] for t in tokens]
    keys = tasks.answer_keys(task, np.asarray(tokens))
    predicted = [names[i] for i in run["predicted"].tolist()]
    answers_at = np.flatnonzero(keys >= 0)
    right = sum(predicted[t] == labels[keys[t]] for t in answers_at)
    card = trained.load(name).card
    held = card.get("eval", {})
    m = st.columns(3)
    m[0].metric(
        "right on this prompt",
        f"{right} of {answers_at.size}" if answers_at.size else "no answers",
        help="Answer positions whose argmax next token is the right answer.",
    )
    if held:
        m[1].metric(
            "held-out answer tokens right",
            f"{100 * held['token']:.1f}%",
            help=f"From the model card: {held['batch']:,} sequences drawn with seed "
            f"{held['seed']}, none of them seen in training.",
        )
        m[2].metric("held-out sequences all right", f"{100 * held['sequence']:.1f}%")
    fig = prediction_figure(labels, keys, predicted, run["confidence"])
    st.plotly_chart(fig, theme=None, key="tr_predictions", config=_CONFIG)


# ---------------------------------------------------------------------------------------------
# Section 3: every layer and head.


def _layers(task: str, name: str, tokens: tuple[int, ...], run: dict) -> None:
    cfg = trained.load(name).cfg
    st.header("Every layer and head")
    G = cfg.num_query_heads // cfg.num_key_value_heads
    st.markdown(
        f"{cfg.num_layers} layers of {cfg.num_query_heads} query heads"
        + (
            f", each K/V head shared by G = {G} of them (one coloured frame per K/V head)"
            if G > 1
            else ", each with its own K/V head"
        )
        + ". Rows are queries, columns keys; the vermilion squares mark, in every head, the "
        "**right key** of each answer position: the earlier token that holds the answer. A "
        "head that has learned the task lights up inside them. The bars beside each layer "
        "measure it."
    )
    for layer in range(len(run["probs"])):
        title = f"Layer {layer} of {trained.label(name)}: every query head on this prompt"
        _layer_figures(("model", name), task, tokens, cfg.num_key_value_heads, layer, title)


# ---------------------------------------------------------------------------------------------
# Section 4: the GQA paper in miniature.


def _paper(task: str, tokens: tuple[int, ...]) -> None:
    st.header("The GQA paper in miniature")
    exp = trained.experiment()
    info = exp["tasks"][task]
    st.markdown(
        "Ainslie et al. (2023) turned trained multi-head models into grouped-query ones by "
        "**mean-pooling** the K/V heads of each group (or keeping the group's first or a "
        "random head), then **uptrained** them for a few percent of the original steps. The "
        f"same, on this task: the MHA model converted to K = 4, 2, 1, uptrained for "
        f"{info['uptrain_steps']} steps, next to the models trained with that K from scratch "
        f"({info['steps']} steps)."
    )
    left, right = st.columns([3, 1.25], gap="medium")
    with left:
        st.plotly_chart(
            experiment_figure(exp, task), theme=None, key="tr_experiment", config=_CONFIG
        )
    with right:
        st.markdown(experiment_summary(exp, task))
    _live_conversion(task, tokens)


@st.fragment
def _live_conversion(task: str, tokens: tuple[int, ...]) -> None:
    exp = trained.experiment()
    ks = sorted({int(r["K"]) for r in exp["rows"] if r["task"] == task}, reverse=True)
    st.subheader("Convert it yourself")
    c1, c2 = st.columns([1.5, 1])
    method = c1.radio(
        "Conversion method",
        list(METHOD_NAMES),
        format_func=lambda m: {
            "mean": "mean-pool each group's K/V heads",
            "first": "keep the group's first head",
            "random": "keep a random head of the group",
        }[m],
        horizontal=True,
        key="tr_live_method",
    )
    K = c2.segmented_control(
        "K after conversion", ks, default=ks[-1], required=True, key="tr_live_k"
    )
    token, sequence = _live_accuracy(task, method, K)
    row = next(
        r for r in exp["rows"] if r["task"] == task and r["method"] == method and r["K"] == K
    )
    ev = exp["eval"]
    same = round(token, 6) == row["before"]["token"]
    m = st.columns(3)
    m[0].metric("measured now", f"{100 * token:.2f}%", f"sequences: {100 * sequence:.1f}%",
                delta_color="off", delta_arrow="off")  # fmt: skip
    m[1].metric(
        "experiment.json, right after conversion",
        f"{100 * row['before']['token']:.2f}%",
        f"sequences: {100 * row['before']['sequence']:.1f}%",
        delta_color="off",
        delta_arrow="off",
    )
    m[2].metric(
        "experiment.json, after uptraining",
        f"{100 * row['after']['token']:.2f}%",
        f"sequences: {100 * row['after']['sequence']:.1f}%",
        delta_color="off",
        delta_arrow="off",
    )
    st.caption(
        f"Converted now with `tiny.convert(mha, K={K}, method={method!r})` and scored on the "
        f"experiment's held-out batch (`make_batch({task!r}, seed={ev['seed']}, "
        f"batch={ev['batch']})`), so it is the table's number: "
        + (
            "**the same** (the table keeps 6 decimals)."
            if same
            else f"they differ by {abs(token - row['before']['token']):.2g}."
        )
    )
    run = _trace_converted(task, method, K, tokens)
    layer = st.radio(
        "Layer shown",
        range(len(run["probs"])),
        index=len(run["probs"]) - 1,
        horizontal=True,
        key="tr_live_layer",
        format_func=lambda i: f"layer {i}",
    )
    title = f"Layer {layer}, converted to K = {K} by {METHOD_NAMES[method]}, not uptrained"
    _layer_figures(("converted", task, method, K), task, tokens, K, layer, title)


# ---------------------------------------------------------------------------------------------
# Section 5: your own Keras layer.


def _on_upload() -> None:
    f = st.session_state.get("tr_upload_file")
    if f is None:  # the file was removed: forget it
        st.session_state.pop(UPLOAD, None)
        st.session_state.pop(UPLOAD_ERROR, None)
        return
    accept_upload(f.name, f.getvalue())


@st.cache_data(max_entries=16, show_spinner=False)
def _upload_probs(digest: str, index: int, length: int, causal: bool, seed: int, _layer):
    """The uploaded layer's probabilities [N, L, L] on seeded random vectors.

    ``_layer`` is not hashed: the upload's digest and index name it.
    """
    layer: UploadedLayer = _layer
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((1, length, layer.query_dim)).astype(np.float32)  # [1, L, D]
    v = rng.standard_normal((1, length, layer.value_dim)).astype(np.float32)  # [1, L, Dv]
    k = None
    if layer.key_dim != layer.value_dim:
        k = rng.standard_normal((1, length, layer.key_dim)).astype(np.float32)  # [1, L, Dk]
    if k is None:  # key = value: lengths share bucketed programs (and count in their cap)
        t = bucketed_trace(layer.params, q, v, spec=layer.spec, use_causal_mask=causal)
    else:
        t = core.attention_trace(layer.params, q, v, k, spec=layer.spec, use_causal_mask=causal)
    return np.asarray(t.probs[0])  # [N, L, L]


@st.fragment
def _upload_section() -> None:
    st.header("Your own Keras layer")
    st.markdown(
        "Upload the weights of a `keras.layers.GroupQueryAttention` layer and see its heads, "
        "grouped by the K/V head they share, on random input vectors. The file is read in "
        "memory (never unpickled, never stored) and kept for this browser session only."
    )
    c1, c2 = st.columns([1.5, 1.3], gap="large")
    with c1:
        st.file_uploader(
            "Weights file (.weights.h5, .h5 or .npz)",
            type=["h5", "npz"],
            key="tr_upload_file",
            on_change=_on_upload,
            help="A Keras model's save_weights file (every GroupQueryAttention layer in it "
            "is found), or one layer's get_weights() saved with np.savez. At most "
            f"{MAX_UPLOAD_MB} MB.",
        )
    with c2:
        st.code(
            "model.save_weights('mine.weights.h5')\n"
            "# or one layer:\n"
            "np.savez('mine.npz', *layer.get_weights())",
            language="python",
            wrap_lines=True,
        )
        st.download_button(
            "Example: recall-k4, layer 1 (.npz)",
            data=lambda: example_npz(),
            file_name="recall-k4-layer1.npz",
            mime="application/octet-stream",
            key="tr_example",
            icon=":material/download:",
            help="A trained layer of this page in get_weights() order, to try the upload.",
        )
    ss = st.session_state
    if ss.get(UPLOAD_ERROR):
        st.error(ss[UPLOAD_ERROR], icon="🚫")
    upload = ss.get(UPLOAD)
    if upload is None:
        return
    if ss.get(UPLOAD_ERROR):
        st.caption(f"Still showing the previous file, {upload['name']}.")
    layers: list[UploadedLayer] = upload["layers"]
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
    spec = layer.spec
    st.markdown(f"**{layer.describe()}**: {_kind_sentence(spec)}")
    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    length = c1.slider("Sequence length L", 4, UPLOAD_VIEW_MAX_LEN, 16, key="tr_upload_len")
    causal = c2.toggle("use_causal_mask", True, key="tr_upload_causal")
    seed = c3.number_input("Input seed", 0, MAX_SEED, 0, key="tr_upload_seed")
    probs = _upload_probs(upload["digest"], index, int(length), bool(causal), int(seed), layer)
    labels = [str(i) for i in range(int(length))]
    mask = np.tril(np.ones((length, length), bool)) if causal else None
    fig = heads_figure(
        probs,
        mask,
        labels,
        labels,
        spec.num_key_value_heads,
        title=f"{upload['name']}: {layer.name} on random vectors",
        saturate=99.0,
    )
    st.plotly_chart(fig, theme=None, key="tr_upload_heads", config=_CONFIG)
    st.caption(
        f"Input: {length} standard normal vectors (seed {seed}) as query and value. Random "
        "inputs show the layer's wiring, not what it learned: for that it needs the inputs "
        "it was trained on."
    )


def _kind_sentence(spec: core.GQASpec) -> str:
    N, K = spec.num_query_heads, spec.num_key_value_heads
    if K == N:
        return "multi-head attention, every query head with its own K/V head."
    if K == 1:
        return f"multi-query attention, all {N} query heads share one K/V head."
    return f"grouped-query attention, each K/V head shared by {N // K} query heads."


# ---------------------------------------------------------------------------------------------
# The page.


def main() -> None:
    st.title("Trained heads")
    cfg = trained.load(trained.names()[0]).cfg
    st.markdown(
        f"Small transformers ({cfg.num_layers} layers, {cfg.num_query_heads} query heads) "
        "trained on tasks whose right answer "
        "sits at a known earlier position, so you can see which heads learned to look there. "
        "Then what sharing K/V heads does to a model that has learned something: trained that "
        "way from the start, or converted from multi-head afterwards, as in the GQA paper."
    )
    task, name, tokens = _choose()
    run = _trace_model(name, tokens)
    _predictions(task, name, tokens, run)
    _layers(task, name, tokens, run)
    _paper(task, tokens)
    _upload_section()


if __name__ == "__main__":
    main()
