"""What the Trained heads page computes, as plain functions. No Streamlit here.

Axis letters as in :mod:`gqa_viz.tiny`: L sequence length (T = S = L), N query heads, K kv
heads, V vocab. The models and the experiment come from :mod:`gqa_viz.trained`, the forward
pass and the conversion from :mod:`gqa_viz.tiny`, uploaded layers from
:mod:`gqa_viz.keras_weights` (read within :data:`UPLOAD_LIMITS`). Forward passes and held-out
accuracies go through the server's shared results cache, and the shipped models' figures
(:func:`layer_heads_figure`, :func:`bars_figure`, :func:`predictions_figure`) through the
shared figure cache (:mod:`gqa_viz.app.figure_cache`), so every session reads one copy and
start-up prewarming (:func:`first_visit`) can compute and draw the page's defaults. The page
(``app_pages/trained.py``) draws them; its prose is in ``assets/text/trained.md``
(:func:`text`). Functions that take ``state`` read and write the
page's session_state (any mutable mapping will do).
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import MutableMapping

import jax
import numpy as np

from gqa_viz import core, keras_weights, tasks, tiny, trained
from gqa_viz.app import limits, prose
from gqa_viz.app.cache import RESULTS
from gqa_viz.app.figure_cache import shared
from gqa_viz.app.limits import MAX_DRAWN_CELLS
from gqa_viz.buckets import bucketed_trace
from gqa_viz.figures.grid import WIDTH_SLACK
from gqa_viz.figures.heads import NOMINAL_WIDTH
from gqa_viz.figures.trained import (
    METHOD_NAMES,
    prediction_figure,
    right_key_figure,
    trained_heads_figure,
)
from gqa_viz.keras_weights import UploadedLayer, UploadLimits, WeightsUploadError

DEFAULT_TASK = "recall"  # the task the page opens on
# The narrowest column a layer's heads figure is shown in (its ticks are spaced for 80% of the
# width it is planned for); in a narrower window the bars go below it.
HEADS_LEAST_PX = round(WIDTH_SLACK * NOMINAL_WIDTH)
PROMPTS = "tr_prompts"  # session_state: {task: {"tokens", "seed"}}, seed None when typed
PROMPT_ERRORS = "tr_prompt_errors"  # session_state: {task: {"text", "message"}} of a bad prompt
SEED = "tr_seed"  # session_state: the prompt seed box
UPLOAD_FILE = "tr_upload_file"  # session_state: the file uploader's file
UPLOAD = "tr_upload"  # session_state: {"name", "digest", "layers"} of the last good upload
UPLOAD_ERROR = "tr_upload_error"  # session_state: the message for the last bad upload
UPLOAD_LIMITS = UploadLimits(
    mb=limits.MAX_UPLOAD_MB,
    array_values=limits.MAX_UPLOAD_ARRAY_VALUES,
    total_values=limits.MAX_UPLOAD_VALUES,
    layers=limits.MAX_UPLOAD_LAYERS,
    query_heads=limits.MAX_QUERY_HEADS,
    head_dim=limits.MAX_HEAD_DIM,
    model_dim=limits.MAX_MODEL_DIM,
)


@functools.cache
def text() -> dict[str, str]:
    """The page's prose, ``assets/text/trained.md``, by section (:mod:`gqa_viz.app.prose`)."""
    return prose.sections("trained")


# ---------------------------------------------------------------------------------------------
# Models and prompts.


def model_ks(task: str) -> list[int]:
    """The K of every shipped model of ``task``, in the catalogue's order."""
    return [int(n.rsplit("-k", 1)[1]) for n in trained.names() if trained.task_of(n) == task]


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


def text_key(task: str) -> str:
    """The session_state key of the task's prompt box."""
    return f"tr_text_{task}"


def forget_prompt(state: MutableMapping, task: str) -> None:
    """The seed changed: the task's next prompt is drawn with it."""
    state.setdefault(PROMPTS, {}).pop(task, None)


def next_seed(state: MutableMapping, task: str) -> None:
    """The seed + 1, wrapping at the seed box's maximum (a higher value would be refused)."""
    state[SEED] = (int(state.get(SEED, 0)) + 1) % (limits.MAX_SEED + 1)
    forget_prompt(state, task)


def type_prompt(state: MutableMapping, task: str) -> None:
    """Take the prompt typed in the task's box, or keep the previous one and note why not."""
    text = state.get(text_key(task), "")
    tokens, message = parse_prompt(task, text)
    errors = state.setdefault(PROMPT_ERRORS, {})
    if tokens is None:
        errors[task] = {"text": text, "message": message}
        return
    errors.pop(task, None)
    state.setdefault(PROMPTS, {})[task] = {"tokens": tuple(tokens.tolist()), "seed": None}


def current_prompt(state: MutableMapping, task: str, seed: int) -> dict:
    """The task's prompt, {"tokens", "seed"}: the typed one, or the one ``seed`` draws (a new
    seed replaces a typed prompt, its text and its error)."""
    prompts = state.setdefault(PROMPTS, {})
    key = text_key(task)
    current = prompts.get(task)
    if current is None or (current["seed"] is not None and current["seed"] != seed):
        tokens = tuple(trained.prompt(task, int(seed)).tolist())
        current = prompts[task] = {"tokens": tokens, "seed": int(seed)}
        state[key] = prompt_text(task, tokens)
        state.get(PROMPT_ERRORS, {}).pop(task, None)
    elif key not in state:  # the widget's state was dropped (another page was shown)
        state[key] = prompt_text(task, current["tokens"])
    return current


def prompt_error(state: MutableMapping, task: str) -> str | None:
    """Why the prompt in the task's box is not used, while the box still holds it."""
    error = state.get(PROMPT_ERRORS, {}).get(task)
    if error is not None and error["text"] == state.get(text_key(task)):
        return error["message"]
    return None


# ---------------------------------------------------------------------------------------------
# Forward passes and the conversion.


def run(params: dict, cfg: tiny.Config, tokens: tuple[int, ...]) -> dict:
    """One prompt through a model: per layer probabilities, next-token argmax and confidence."""
    t = tiny.trace(params, cfg, np.asarray(tokens, np.int32)[None])
    p = np.asarray(jax.nn.softmax(t.logits[0], axis=-1))  # [L, V] next-token probabilities
    return {
        "probs": [np.asarray(layer.probs[0]) for layer in t.layers],  # per layer [N, L, L]
        "predicted": p.argmax(-1),  # [L]
        "confidence": p.max(-1),  # [L]
    }


def run_model(name: str, tokens: tuple[int, ...]) -> dict:
    """:func:`run` with the shipped model ``name``, through the server's shared results cache
    (treat the result as read-only)."""

    def compute():
        model = trained.load(name)
        return run(model.params, model.cfg, tokens)

    return RESULTS.get(("trained-run", name, tokens), compute, heavy=False)


def run_converted(task: str, method: str, K: int, tokens: tuple[int, ...]) -> dict:
    """:func:`run` with :func:`converted`, through the shared results cache (read-only)."""
    key = ("trained-converted-run", task, method, K, tokens)
    return RESULTS.get(key, lambda: run(*converted(task, method, K), tokens), heavy=False)


def predictions(task: str, tokens: tuple[int, ...], result: dict) -> dict:
    """What :func:`run` predicts, as the page shows it: token labels [L], right keys [L],
    predicted tokens [L], and how many answer positions there are and how many are right."""
    names = tasks.token_names(task)
    labels = [names[t] for t in tokens]
    keys = tasks.answer_keys(task, np.asarray(tokens))
    predicted = [names[i] for i in result["predicted"].tolist()]
    answers_at = np.flatnonzero(keys >= 0)
    right = sum(predicted[t] == labels[keys[t]] for t in answers_at)
    return {
        "labels": labels,
        "keys": keys,
        "predicted": predicted,
        "answers": int(answers_at.size),
        "right": int(right),
    }


@functools.lru_cache(maxsize=16)
def converted(task: str, method: str, K: int) -> tuple[dict, tiny.Config]:
    """:func:`convert`, kept for the server's lifetime (the 16 most recent)."""
    return convert(task, method, K)


METHOD_CHOICES = {  # tiny.convert's methods, as the page offers them
    "mean": "mean-pool each group's K/V heads",
    "first": "keep the group's first head",
    "random": "keep a random head of the group",
}


def prediction_metrics(name: str, p: dict) -> list[tuple[str, str, str | None]]:
    """(label, value, help) of each number shown above the predictions: right answers on this
    prompt (``p``: :func:`predictions`), then model ``name``'s held-out accuracy from its card."""
    metrics = [
        (
            "right on this prompt",
            f"{p['right']} of {p['answers']}" if p["answers"] else "no answers",
            "Answer positions whose argmax next token is the right answer.",
        )
    ]
    held = trained.load(name).card.get("eval", {})
    if held:
        metrics += [
            (
                "held-out answer tokens right",
                f"{100 * held['token']:.1f}%",
                f"From the model card: {held['batch']:,} sequences drawn with seed "
                f"{held['seed']}, none of them seen in training.",
            ),
            ("held-out sequences all right", f"{100 * held['sequence']:.1f}%", None),
        ]
    return metrics


def layer_title(source: tuple, layer: int) -> str:
    """The title of a layer's heads figure; ``source`` as in :func:`layer_heads_figure`."""
    if source[0] == "model":
        return f"Layer {layer} of {trained.label(source[1])}: every query head on this prompt"
    _, _, method, K = source
    return f"Layer {layer}, converted to K = {K} by {METHOD_NAMES[method]}, not uptrained"


def layer_probs(source: tuple, tokens: tuple[int, ...]) -> list[np.ndarray]:
    """Per layer [N, L, L] on ``tokens``; ``source`` as in :func:`layer_heads_figure`."""
    if source[0] == "model":
        return run_model(source[1], tokens)["probs"]
    return run_converted(*source[1:], tokens)["probs"]


def layer_heads_figure(source: tuple, layer: int, task: str, tokens: tuple[int, ...], K: int):
    """One layer's heads with the right keys outlined (frozen: shared by every session and
    sent on every rerun; do not change it). ``source``: ("model", name) or ("converted",
    task, method, K)."""

    def draw():
        names = tasks.token_names(task)
        keys = tasks.answer_keys(task, np.asarray(tokens))
        probs = layer_probs(source, tokens)[layer]
        labels = [names[t] for t in tokens]
        title = layer_title(source, layer)
        return trained_heads_figure(probs, labels, keys, K, title, max_cells=MAX_DRAWN_CELLS)

    return shared(("trained", "heads", source, layer, task, tokens, K), draw)


def bars_figure(source: tuple, layer: int, task: str, tokens: tuple[int, ...], K: int):
    """One layer's attention on the right key, per head (frozen and shared, as
    :func:`layer_heads_figure`; drawn once per source, layer and prompt)."""

    def draw():
        probs = layer_probs(source, tokens)[layer]
        keys = tasks.answer_keys(task, np.asarray(tokens))
        title = f"Layer {layer}:<br>attention on the right key"
        return right_key_figure(probs, keys, K, title, height=350)

    return shared(("trained", "bars", source, layer, task, tokens, K), draw)


def predictions_figure(task: str, name: str, tokens: tuple[int, ...]):
    """Model ``name``'s prediction at each position of ``tokens`` (frozen and shared)."""

    def draw():
        result = run_model(name, tokens)
        p = predictions(task, tokens, result)
        return prediction_figure(p["labels"], p["keys"], p["predicted"], result["confidence"])

    return shared(("trained", "predictions", task, name, tokens), draw)


def converted_accuracy(task: str, method: str, K: int) -> tuple[float, float]:
    """Token and sequence accuracy of :func:`converted` on the experiment's held-out batch,
    through the shared results cache (computed once, however many sessions ask at once)."""

    def compute():
        acc = evaluate(*converted(task, method, K))
        return acc.token, acc.sequence

    return RESULTS.get(("trained-accuracy", task, method, K), compute, heavy=False)


def convert(task: str, method: str, K: int) -> tuple[dict, tiny.Config]:
    """The task's MHA model converted to K kv heads as the experiment's first run did (its
    random-head draw: :func:`first_run`)."""
    mha = trained.load(trained.mha_name(task))
    seed = int(first_run(task, method, K).get("draw_seed", 0))
    return tiny.convert(mha.params, mha.cfg, K, method, seed=seed)


def first_run(task: str, method: str, K: int) -> dict:
    """The experiment's first run of a conversion cell (seed 0): {"seed", "draw_seed",
    "before", "after"}; the row itself for a one-run experiment."""
    row = experiment_row(task, method, K)
    if "runs" not in row:
        return {"seed": trained.experiment()["training"]["seed"], "draw_seed": 0, **row}
    return row["runs"][0]


def evaluate(params: dict, cfg: tiny.Config) -> tiny.Accuracy:
    """Accuracy on the experiment's held-out batch (its eval seed and size): for a fresh
    conversion, experiment.json's "before" number."""
    ev = trained.experiment()["eval"]
    return tiny.evaluate(params, cfg, seed=int(ev["seed"]), batch=int(ev["batch"]))


def experiment_ks(task: str) -> list[int]:
    """The Ks the experiment converted ``task``'s MHA model to, largest first."""
    rows = trained.experiment()["rows"]
    return sorted({int(r["K"]) for r in rows if r["task"] == task}, reverse=True)


def experiment_row(task: str, method: str, K: int) -> dict:
    """experiment.json's row for one conversion: its "before" and "after" accuracies."""
    return next(
        r
        for r in trained.experiment()["rows"]
        if r["task"] == task and r["method"] == method and r["K"] == K
    )


def conversion_report(
    task: str, method: str, K: int, token: float, sequence: float
) -> tuple[list[tuple[str, str, str]], str]:
    """A conversion measured now (``token``, ``sequence``: :func:`evaluate`'s accuracies)
    beside experiment.json's numbers: (label, value, note) per metric, and a caption saying
    whether the measurement is the number of the experiment's first run (the same draw).

    After uptraining: the mean over the runs, their min to max in the note."""
    run = first_run(task, method, K)
    after = trained.spread(experiment_row(task, method, K), "after")
    n = len(after.runs)
    metrics = [
        (label, f"{100 * acc['token']:.2f}%", f"sequences: {100 * acc['sequence']:.1f}%")
        for label, acc in (
            ("measured now", {"token": token, "sequence": sequence}),
            ("experiment.json, right after conversion", run["before"]),
        )
    ]
    metrics.append(
        (
            "experiment.json, after uptraining" + (f" (mean of {n} runs)" if n > 1 else ""),
            f"{100 * after.mean:.2f}%",
            f"runs: {100 * after.low:.1f}% to {100 * after.high:.1f}%"
            if n > 1
            else f"sequences: {100 * run['after']['sequence']:.1f}%",
        )
    )
    before = run["before"]["token"]
    if round(token, 6) == before:
        verdict = text()["live_same"]
    else:
        verdict = text()["live_differ"].format(difference=abs(token - before))
    ev = trained.experiment()["eval"]
    caption = text()["live_caption"].format(
        K=K,
        method=method,
        draw=int(run.get("draw_seed", 0)),
        run=run.get("seed"),
        task=task,
        seed=ev["seed"],
        batch=ev["batch"],
        verdict=verdict,
    )
    return metrics, caption


def paper_text(task: str) -> str:
    """The paper section's introduction for ``task``: its steps and runs per conversion."""
    exp = trained.experiment()
    info = exp["tasks"][task]
    runs = len(trained.spread(exp["rows"][0], "after").runs)
    return text()["paper"].format(
        uptrain_steps=info["uptrain_steps"], steps=info["steps"], runs=runs
    )


def layers_text(name: str) -> str:
    """What the page's "Every layer and head" figures show, for model ``name``."""
    cfg = trained.load(name).cfg
    G = cfg.num_query_heads // cfg.num_key_value_heads
    sharing = (
        f", each K/V head shared by G = {G} of them (one coloured frame per K/V head)"
        if G > 1
        else ", each with its own K/V head"
    )
    return text()["layers"].format(
        layers=cfg.num_layers, heads=cfg.num_query_heads, sharing=sharing
    )


# ---------------------------------------------------------------------------------------------
# Uploaded layers.


def read_upload(filename: str, data: bytes) -> list[UploadedLayer]:
    """:func:`gqa_viz.keras_weights.read_upload` within the app's upload limits."""
    return keras_weights.read_upload(filename, data, UPLOAD_LIMITS)


# How to write a file the upload reads, shown beside it.
SAVE_CODE = (
    "model.save_weights('mine.weights.h5')\n"
    "# or one layer:\n"
    "np.savez('mine.npz', *layer.get_weights())"
)


def on_upload(state: MutableMapping) -> None:
    """The file uploader changed: read its file into ``state``, or forget a removed one."""
    f = state.get(UPLOAD_FILE)
    if f is None:  # the file was removed: forget it
        state.pop(UPLOAD, None)
        state.pop(UPLOAD_ERROR, None)
        return
    accept_upload(f.name, f.getvalue(), state)


def accept_upload(filename: str, data: bytes, state: MutableMapping) -> str | None:
    """Read an uploaded weights file into ``state`` (the page's session_state).

    A good file replaces the stored layers (``state[UPLOAD]``) and clears the error; a bad one
    sets ``state[UPLOAD_ERROR]`` to the user-facing message, which is returned, and keeps the
    previous layers. The bytes are read in memory and never written anywhere.
    """
    try:
        layers = read_upload(filename, data)
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


def upload_probs(layer: UploadedLayer, length: int, causal: bool, seed: int) -> np.ndarray:
    """The uploaded layer's probabilities [N, L, L] on seeded random vectors."""
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
    probs = np.asarray(t.probs[0])  # [N, L, L]
    if not np.isfinite(probs).all():
        # Finite weights can still be large enough for the scores to overflow float32.
        largest = max(float(np.abs(w).max()) for ws in layer.params.values() for w in ws.values())
        raise ValueError(
            f"{layer.name}: its attention scores overflow float32 on these inputs (its largest "
            f"weight is {largest:.3g}), so there are no probabilities to show."
        )
    return probs


def kind_sentence(spec: core.GQASpec) -> str:
    """The attention kind of a layer, in words."""
    N, K = spec.num_query_heads, spec.num_key_value_heads
    if K == N:
        return "multi-head attention, every query head with its own K/V head."
    if K == 1:
        return f"multi-query attention, all {N} query heads share one K/V head."
    return f"grouped-query attention, each K/V head shared by {N // K} query heads."


def first_visit() -> None:
    """Compute what the page's first visit shows with its defaults (prewarming): the default
    task's first model on the prompt of seed 0, and the live conversion's defaults (the first
    method, the smallest K) with its held-out accuracy."""
    task = DEFAULT_TASK
    tokens = tuple(trained.prompt(task, 0).tolist())
    name = f"{task}-k{model_ks(task)[0]}"
    cfg = trained.load(name).cfg
    predictions_figure(task, name, tokens)
    for layer in range(cfg.num_layers):
        layer_heads_figure(("model", name), layer, task, tokens, cfg.num_key_value_heads)
        bars_figure(("model", name), layer, task, tokens, cfg.num_key_value_heads)
    method, K = next(iter(METHOD_CHOICES)), experiment_ks(task)[-1]
    converted_accuracy(task, method, K)
    layer_heads_figure(("converted", task, method, K), cfg.num_layers - 1, task, tokens, K)
    bars_figure(("converted", task, method, K), cfg.num_layers - 1, task, tokens, K)
