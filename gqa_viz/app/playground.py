"""What the Playground and Walkthrough pages compute, as one call: :func:`run`; and what the
Playground shows: its two figures, drawn once for every session (:func:`heads_chart`,
:func:`kv_chart`), the summary (:func:`summary_markdown`) and the downloads (:func:`downloads`).

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
G = N // K, H head_dim, D model dim.

Inputs a person can read: a sentence is split into tokens, and each distinct token gets one
seeded random embedding (no positional encoding), so repeated tokens have equal keys and a
query matches them equally. Padding appends ``<pad>`` tokens to a sentence (zero vectors;
what they hold does not matter, since query_mask and value_mask hide them, as
``Embedding(mask_zero=True)`` makes Keras do for token id 0); in random mode the last ``pad``
positions are marked as padding.

Weights: "pooled" initializes one multi-head layer (N kv heads) from the seed and mean-pools
its K/V heads per group (Ainslie et al., 2023), so changing K changes only how heads are
shared; "independent" initializes a fresh GQA layer with K kv heads; "trained" takes one
attention layer of a shipped tiny model (:mod:`gqa_viz.trained`) together with the input it
really sees on a prompt of its task drawn with the seed (tokens on the axes, as
"position:token"); padding then marks the prompt's last positions, as in random mode;
"real" takes one attention layer of a checkpoint on this server
(:func:`gqa_viz.app.real_sources.layer_source`) with what it really receives for the sentence,
split by the model's own tokenizer: the hidden states after the layers before it and its input
norm. Its RoPE, QK norm, softmax scale, soft-cap and sliding window are applied; the mask is
causal, as in the model.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import jax
import numpy as np

from gqa_viz import buckets, core, trained
from gqa_viz.app import real_sources
from gqa_viz.app.cache import RESULTS  # the server's shared results cache
from gqa_viz.app.figure_cache import shared
from gqa_viz.app.limits import (
    HEAVY_SCORE_CELLS,
    MAX_CSV_ROWS,
    MAX_DRAWN_CELLS,
    MAX_LEN,
    MAX_NPY_BYTES,
    MAX_TOKENS,
)
from gqa_viz.app.settings import DEFAULTS, HEAD_CHOICES, Settings, check_size, compute_key
from gqa_viz.core import divisors
from gqa_viz.figures.diagram import KIND_NAMES, attention_kind
from gqa_viz.figures.heads import (
    heads_figure,
    kv_heads_figure,
    mask_csv,
    npy_bytes,
    scores_csv,
)
from gqa_viz.figures.shipping import FrozenFigure, freeze, with_width

PAD = "<pad>"
_TOKEN = re.compile(r"[\w']+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks."""
    return _TOKEN.findall(text.lower())


def embed(tokens: list[str], d: int, seed: int) -> np.ndarray:
    """[T, D] float32: one seeded N(0, 1) vector per distinct token, zeros for ``<pad>``."""
    out = np.zeros((len(tokens), d), np.float32)
    for i, tok in enumerate(tokens):
        if tok != PAD:
            rng = np.random.default_rng([seed, zlib.crc32(tok.encode())])
            out[i] = rng.standard_normal(d).astype(np.float32)
    return out


@dataclass
class Result:
    """Everything a page shows for one :class:`Settings`. Arrays are NumPy."""

    settings: Settings
    spec: core.GQASpec
    q_labels: list[str]  # T axis labels
    k_labels: list[str]  # S axis labels
    trace: core.AttentionTrace  # arrays of the whole batch, [B, ...]
    params: dict
    query_mask: np.ndarray  # [B, T] True = real query
    value_mask: np.ndarray  # [B, S] True = real key
    notes: list[str] = field(default_factory=list)

    @property
    def mask(self) -> np.ndarray:
        """[T, S] allowed pairs for the shown batch item (True = attend)."""
        m = self.trace.mask
        T, S = len(self.q_labels), len(self.k_labels)
        if m is None:
            return np.ones((T, S), bool)
        return np.asarray(m)[min(self.settings.item, m.shape[0] - 1)]

    def item(self, name: str) -> np.ndarray:
        """A trace array for the shown batch item (its leading B axis removed)."""
        a = getattr(self.trace, name)
        return None if a is None else np.asarray(a)[self.settings.item]


def _sentence(text: str, pad: int, notes: list[str], what: str) -> list[str]:
    tokens = tokenize(text)
    if not tokens:
        notes.append(f"The {what} sentence has no words; using a single '.' token.")
        tokens = ["."]
    if len(tokens) > MAX_TOKENS:
        notes.append(
            f"The {what} sentence has {len(tokens)} tokens; only the first {MAX_TOKENS} are used."
        )
        tokens = tokens[:MAX_TOKENS]
    return tokens + [PAD] * min(pad, MAX_LEN - len(tokens))


def build_inputs(s: Settings, notes: list[str]):
    """query [B, T, D], value [B, S, D], their masks [B, T], [B, S], and axis labels."""
    if s.weights == "real":
        src = real_sources.layer_source(s.model, s.text, s.layer)
        prompt = src.prompt
        if prompt.cut_from is not None:
            notes.append(
                f"The prompt is {prompt.cut_from} tokens for {s.model}; only the first "
                f"{len(prompt.ids)} are used (the limit)."
            )
        valid = np.ones((1, len(prompt.ids)), bool)  # [1, T]
        return src.x, src.x, valid, valid, list(prompt.tokens), list(prompt.tokens)
    if s.weights == "trained":
        view = trained.layer_view(s.model, s.layer, s.seed)
        L = view.x.shape[1]
        valid = (np.arange(L) < L - min(s.pad, L - 1))[None]  # [1, L]
        return view.x, view.x, valid, valid, view.labels, view.labels
    if s.mode == "sentence":
        q_tokens = _sentence(s.text, s.pad, notes, "query")
        k_tokens = _sentence(s.source, s.kpad, notes, "source") if s.cross else q_tokens
        query = embed(q_tokens, s.d, s.seed)[None]  # [1, T, D]
        value = embed(k_tokens, s.d, s.seed)[None] if s.cross else query  # [1, S, D]
        q_valid = np.array([[t != PAD for t in q_tokens]])  # [1, T]
        k_valid = np.array([[t != PAD for t in k_tokens]])  # [1, S]
        return query, value, q_valid, k_valid, q_tokens, k_tokens
    rng = np.random.default_rng(s.seed)
    T, S = s.t, (s.s if s.cross else s.t)
    query = rng.standard_normal((s.batch, T, s.d)).astype(np.float32)  # [B, T, D]
    value = rng.standard_normal((s.batch, S, s.d)).astype(np.float32) if s.cross else query
    q_valid = np.broadcast_to(np.arange(T) < T - s.pad, (s.batch, T))  # [B, T]
    kpad = s.kpad if s.cross else s.pad
    k_valid = np.broadcast_to(np.arange(S) < S - kpad, (s.batch, S))  # [B, S]
    return query, value, q_valid, k_valid, [str(i) for i in range(T)], [str(j) for j in range(S)]


def input_shape(s: Settings) -> tuple[int, int, int]:
    """(B, T, S) of the input ``s`` describes, without building it."""
    if s.weights == "real":  # the tokenizer's split (loads the model if needed)
        T = len(real_sources.tokenize(s.model, s.text, cut=True).ids)
        return 1, T, T
    if s.weights == "trained":
        L = trained.load(s.model).cfg.seq_len
        return 1, L, L
    if s.mode == "sentence":
        T = len(_sentence(s.text, s.pad, [], "query"))
        S = len(_sentence(s.source, s.kpad, [], "source")) if s.cross else T
        return 1, T, S
    return s.batch, s.t, (s.s if s.cross else s.t)


def make_params(s: Settings, spec: core.GQASpec) -> core.Params:
    """The layer's weights for ``s.weights`` (see the module docstring), as NumPy arrays.

    NumPy, not JAX: pooling K/V heads eagerly in JAX would compile small programs for each
    new shape.
    """
    if s.weights == "trained":
        return trained.layer_view(s.model, s.layer, s.seed).params
    if s.weights == "real":
        return real_sources.layer_source(s.model, s.text, s.layer).params
    if s.weights == "pooled":
        mha = s.spec(k=s.n)
        mha_params = jax.tree.map(np.asarray, core.init_params(mha, s.d, seed=s.seed))
        params, _ = core.mha_to_gqa(mha_params, mha, s.k)
        return params
    return jax.tree.map(np.asarray, core.init_params(spec, s.d, seed=s.seed))


def run(s: Settings) -> Result:
    """Inputs, weights and the full trace of one forward pass for the settings ``s``.

    Runs at bucketed lengths (:mod:`gqa_viz.buckets`), so lengths within a bucket share one
    compiled program. Raises ValueError when the scores would exceed ``MAX_SCORE_CELLS``.
    """
    notes: list[str] = []
    if s.weights == "trained":
        notes.append(
            f"Trained layer {s.layer} of {trained.label(s.model)}, on a prompt of its task drawn "
            f"with seed {s.seed}: the input is what that layer really reads."
        )
    elif s.mode == "sentence" and (s.batch > 1 or s.item):
        notes.append("A sentence is one batch item; batch size applies in random mode.")
        s = replace(s, batch=1, item=0)
    if s.cross and s.causal:
        notes.append(
            "use_causal_mask is on with cross-attention: Keras still lets query t see only keys "
            "0..t (the lower triangle of [T, S]), so early queries see little of the source. "
            "An encoder-decoder's cross-attention runs without it: turn it off under Masks."
        )
    spec = s.spec()
    query, value, q_valid, k_valid, q_labels, k_labels = build_inputs(s, notes)
    check_size(s, len(q_labels), len(k_labels), query.shape[0])
    params = make_params(s, spec)
    if s.weights == "real":
        notes.append(real_note(s, spec, len(q_labels)))
    trace = trace_function(spec, len(q_labels), len(k_labels))(
        params,
        query,
        value,
        spec=spec,
        query_mask=q_valid if not q_valid.all() else None,
        value_mask=k_valid if not k_valid.all() else None,
        use_causal_mask=s.causal,
        training=s.training,
        dropout_rng=jax.random.key(s.seed) if s.training and s.dropout > 0 else None,
    )
    result = Result(s, spec, q_labels, k_labels, trace, params, q_valid, k_valid, notes)
    empty = np.flatnonzero(~result.mask.any(axis=1))
    if empty.size:
        notes.append(
            f"{empty.size} query row(s) have no key to attend to ({_positions(empty, q_labels)}): "
            "their probabilities are 0 and their output is the output bias, as Keras returns "
            "with return_attention_scores=True (Keras' fused path without scores would average "
            "all keys there instead)."
        )
    return result


def trace_function(spec: core.GQASpec, T: int, S: int):
    """:func:`gqa_viz.buckets.bucketed_trace`, unless padding would change the result: dynamic
    RoPE reads the key length, so past its ``max_position_embeddings`` it runs unpadded."""
    rope = spec.rope
    if rope is None or rope.kind != "dynamic":
        return buckets.bucketed_trace
    if max(buckets.bucket(T), buckets.bucket(S)) <= rope.max_position_embeddings:
        return buckets.bucketed_trace

    def exact(*args, **kwargs) -> core.AttentionTrace:
        trace = core.attention_trace(*args, **kwargs)
        return core.AttentionTrace(*(None if a is None else np.asarray(a) for a in trace))

    return exact


def real_note(s: Settings, spec: core.GQASpec, T: int) -> str:
    """What a real layer's result is: model, layer, prompt, and what the layer adds to Keras'."""
    extras = layer_extras(spec)
    window = real_sources.layer_spec(s.model, s.layer).sliding_window
    if window is not None:
        extras.append(
            f"its sliding window of {window} keys"
            + (" (longer than the prompt: it masks nothing here)" if window >= T else "")
        )
    added = f" Applied as in the model: {', '.join(extras)}." if extras else ""
    return (
        f"Layer {s.layer} of {s.model}, on your sentence split by its tokenizer ({T} tokens): "
        "the input is the hidden state that layer really receives (after the layers before it "
        f"and its input norm), with the model's causal mask.{added}"
    )


def layer_extras(spec: core.GQASpec) -> list[str]:
    """What ``spec`` adds to Keras' GroupQueryAttention, in words (empty for a Keras layer)."""
    out = []
    if spec.qk_norm is not None:
        out.append("QK-norm (an RMS norm of each query and key head)")
    if spec.rope is not None:
        rope = spec.rope
        dims = "" if rope.rotary_dim is None else f", the first {rope.rotary_dim} features"
        kind = "" if rope.kind == "default" else f", {rope.kind} scaling"
        out.append(f"RoPE (theta = {rope.theta:g}{kind}{dims})")
    if spec.scale is not None:
        out.append(f"softmax scale {spec.scale:.4g} instead of 1/sqrt(H)")
    if spec.logit_softcap is not None:
        out.append(f"logit soft-cap {spec.logit_softcap:g}")
    return out


def is_heavy(s: Settings) -> bool:
    """Whether ``s`` computes more than ``HEAVY_SCORE_CELLS`` scores (B x N x T x S)."""
    B, T, S = input_shape(s)
    return B * s.n * T * S > HEAVY_SCORE_CELLS


def cached_run(s: Settings) -> Result:
    """:func:`run` through the process-wide :data:`RESULTS` cache (treat the result as read-only).

    Heavy settings (:func:`is_heavy`) run one at a time; the rest never wait for them.
    """
    return RESULTS.get(s, lambda: run(s), heavy=is_heavy(s))


def heads_chart(
    key: Settings, view: str, scale: str, pool: str, width: int | None = None
) -> FrozenFigure:
    """The page's heads figure of :func:`cached_run` ``(key)``, in a view: drawn once for every
    session that shows it (:mod:`gqa_viz.app.figure_cache`), never to be changed. ``width``:
    px it is shown at, where the page knows its column's width (the figure is planned the
    same; only its layout says the width, so that the browser draws it once)."""

    def draw():
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
            max_cells=MAX_DRAWN_CELLS,
            frozen=True,
        )

    figure = shared(("playground", "heads", key, view, scale, pool), draw)
    return figure if width is None else with_width(figure, width)


def kv_chart(key: Settings) -> FrozenFigure:
    """The K/V heads figure of :func:`cached_run` ``(key)``, shared as :func:`heads_chart`."""

    def draw():
        result = cached_run(key)
        return freeze(
            kv_heads_figure(
                result.item("key"),
                result.item("value"),
                result.k_labels,
                key.n,
                max_cells=MAX_DRAWN_CELLS,
            )
        )

    return shared(("playground", "kv", key), draw)


def first_visit() -> None:
    """Compute and draw what the page's first visit shows with the default settings
    (prewarming)."""
    key = compute_key(DEFAULTS)
    cached_run(key)
    heads_chart(key, DEFAULTS.view, DEFAULTS.scale, DEFAULTS.pool)


def prewarm_programs(s: Settings = DEFAULTS) -> list[buckets.Program]:
    """The compiled programs a visitor is likeliest to need, likeliest first.

    The view ``s`` (its sentence and its random-vector length), then every K for its N, then
    every N and K the controls offer, all at its head_dim and model dim. Other head_dims and
    model dims compile on first use (once per server, then from the persistent cache).
    """
    sentence = bucket_len(len(tokenize(s.text)))
    lengths = list(dict.fromkeys([sentence, bucket_len(s.t)]))
    heads = [(s.n, s.k)] + [(s.n, k) for k in divisors(s.n)]
    heads += [(n, k) for n in HEAD_CHOICES for k in divisors(n)]
    programs = [
        buckets.Program(n, k, s.h, s.d, 1, T, T) for n, k in dict.fromkeys(heads) for T in lengths
    ]
    return list(dict.fromkeys(programs))


def bucket_len(length: int) -> int:
    return buckets.bucket(max(1, min(length, MAX_LEN)))


def _positions(rows: np.ndarray, labels: list[str]) -> str:
    shown = ", ".join(f"{labels[i]}@{i}" for i in rows[:6])
    return shown + (", ..." if rows.size > 6 else "")


# ---------------------------------------------------------------------------------------------
# The summary beside the figure.


def param_count(spec: core.GQASpec, d: int) -> int:
    return sum(int(np.prod(shape)) for shape in core.param_shapes(spec, d).values())


def summary(s: Settings, T: int, S: int) -> dict[str, str | int]:
    """Shapes, parameter counts and K/V cache size, against the MHA layer of the same width."""
    spec, mha = s.spec(), s.spec(k=s.n)
    B = 1 if s.mode == "sentence" else s.batch
    kv_bytes = 2 * s.k * s.h * 4  # K and V, float32, per token
    mha_bytes = 2 * s.n * s.h * 4
    return {
        "query [B, T, D]": f"[{B}, {T}, {s.d}]",
        "Q [B, T, N, H]": f"[{B}, {T}, {s.n}, {s.h}]",
        "K, V [B, S, K, H]": f"[{B}, {S}, {s.k}, {s.h}]",
        "scores [B, N, T, S]": f"[{B}, {s.n}, {T}, {S}]",
        "parameters": param_count(spec, s.d),
        "parameters (MHA)": param_count(mha, s.d),
        "K/V cache per token (float32)": kv_bytes,
        "K/V cache per token, MHA": mha_bytes,
        "K/V cache for this batch": kv_bytes * S * B,
        "K/V cache for this batch, MHA": mha_bytes * S * B,
    }


def format_bytes(n: int) -> str:
    """Binary units: 2816 -> '2.75 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.3g} {unit}"
        value /= 1024
    return f"{n} B"


def summary_markdown(result: Result) -> str:
    """The summary beside the heads figure: the kind of attention, the tensors' shapes, and
    parameters and K/V cache against MHA of the same width (:func:`summary`)."""
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
| K/V cache per token | {format_bytes(kv)} | {format_bytes(kv_mha)} |
| K/V cache, this input | {format_bytes(kv_all)} | {format_bytes(kv_all_mha)} |

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


# ---------------------------------------------------------------------------------------------
# Downloads of the shown map and its mask.

VIEW_NAMES = {"probs": "probabilities", "logits": "logits"}


@dataclass(frozen=True)
class Download:
    """One download button. ``data`` builds the file only when it is asked for."""

    label: str
    data: Callable[[], bytes]
    file_name: str
    mime: str
    key: str
    disabled: bool = False
    help: str | None = None


def downloads(result: Result, values: np.ndarray, kind: str, stem: str) -> list[Download]:
    """The shown ``values`` [N, T, S] (``kind``: "probs" or "logits") and the mask [T, S], as
    CSV and .npy. A CSV over ``limits.MAX_CSV_ROWS`` rows or a .npy over
    ``limits.MAX_NPY_BYTES`` is refused (disabled), with a help text that says why."""
    s, mask = result.settings, result.mask
    q_labels, k_labels = result.q_labels, result.k_labels
    rows = values.size  # the long-format CSV has N x T x S rows
    what = VIEW_NAMES[kind]
    csv_too_big = rows > MAX_CSV_ROWS
    npy_too_big = values.size * 4 > MAX_NPY_BYTES
    return [
        Download(
            f"{what} (.csv)",
            lambda: scores_csv(values, mask, q_labels, k_labels, s.k),
            f"{stem}.csv",
            "text/csv",
            "dl_scores_csv",
            disabled=csv_too_big,
            help=(
                f"{rows:,} rows: too many for a CSV, use .npy"
                if csv_too_big
                else "Long format: head, kv_head, query_pos, query_token, key_pos, key_token, "
                "score, masked."
            ),
        ),
        Download(
            f"{what} (.npy)",
            lambda: npy_bytes(values.astype(np.float32)),
            f"{stem}.npy",
            "application/octet-stream",
            "dl_scores_npy",
            disabled=npy_too_big,
            help=(
                f"{values.size * 4 / 2**20:,.0f} MiB: above the {MAX_NPY_BYTES // 2**20} MiB "
                "limit for downloads; zoom in and download a region's figure, or run gqa_viz "
                "locally"
                if npy_too_big
                else "float32 [N, T, S]; np.load() it."
            ),
        ),
        Download(
            "mask (.csv)",
            lambda: mask_csv(mask, q_labels, k_labels),
            f"{stem}_mask.csv",
            "text/csv",
            "dl_mask_csv",
        ),
        Download(
            "mask (.npy)",
            lambda: npy_bytes(mask.astype(bool)),
            f"{stem}_mask.npy",
            "application/octet-stream",
            "dl_mask_npy",
            help="bool [T, S], True = the query may attend to the key.",
        ),
    ]
