"""What the Real models page computes: a checkpoint's heads on a prompt, and its K/V heads
grouped further. No Streamlit here.

Axis letters: L layers, N query heads, K kv heads, K' kv heads after grouping, T prompt tokens,
H head_dim.

* :class:`RealSettings`: everything the page's URL holds (model by its listed name, prompt,
  layer, position, overview metric, K' and grouping method), read by :func:`from_query_params`
  and written by :func:`to_query_params`.
* :func:`resolve`: the settings checked against the operator's models
  (:mod:`gqa_viz.app.real_sources`) and the prompt's tokens: a :class:`View`, plus one message
  per value refused. A refused model or prompt falls back to the previous view's (else the
  first usable model, the default prompt), so the rest of the page stays as it was.
* :func:`grouping`: the model with its K/V heads grouped to every K' that divides K
  (:func:`gqa_viz.checkpoints.convert.group_kv_heads`): next-token loss on the prompt and on the
  shipped passage, per-head drift (:func:`gqa_viz.sharing.js_divergence`) and the KV-cache
  bytes per token (:mod:`gqa_viz.kv_cache`). Every run goes through the server's shared results
  cache, so a view seen once by anyone costs nothing the next time.
"""

from __future__ import annotations

import functools
import html
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gqa_viz import checkpoints, kv_cache
from gqa_viz import masks as M
from gqa_viz.app import limits, real_sources, url_state
from gqa_viz.app.cache import RESULTS
from gqa_viz.app.prose import TEXT_DIR, sections
from gqa_viz.checkpoints import convert
from gqa_viz.sharing import js_divergence

__all__ = [
    "DEFAULTS",
    "DEFAULT_PROMPT",
    "METHOD_NAMES",
    "METHOD_WORDS",
    "METRICS",
    "PASSAGE_TITLE",
    "GroupRow",
    "Grouping",
    "RealSettings",
    "View",
    "curve_note",
    "describe_grouping",
    "from_query_params",
    "grouping",
    "head_drift",
    "kv_bytes_per_token",
    "layer_mask",
    "metrics",
    "next_token",
    "passage",
    "passage_loss",
    "passage_tokens",
    "resolve",
    "run",
    "text",
    "to_query_params",
    "top_tokens",
]

PASSAGE_FILE = TEXT_DIR / "passage_alice.txt"
PASSAGE_TITLE = "the opening of Alice's Adventures in Wonderland (Lewis Carroll, 1865)"
DEFAULT_PROMPT = (
    "The query heads of a layer share a few key and value heads, so the cache a model keeps "
    "while it writes is smaller, and the text it writes is almost as good."
)
# Head statistics (convert.head_stats): what the overview calls them, and their number format.
METRICS = {
    "entropy": ("attention entropy", "how spread out (0 = one key, 1 = uniform)", ".2f"),
    "distance": ("mean distance", "how far back it looks, in tokens", ".1f"),
    "sink": ("first-token share", "probability on the first token (the 'sink')", ".0%"),
}
# Grouping methods: the radio's label, and the sentence's words.
METHOD_NAMES = dict(zip(convert.METHODS, ("mean", "first head", "random head"), strict=True))
METHOD_WORDS = {
    "mean": "averaging each group's key and value projections (the GQA paper's choice)",
    "first": "keeping each group's first K/V head",
    "random": "keeping one K/V head of each group, drawn at random (seed 0)",
}
# Hugging Face dtypes -> the KV calculator's names (a cache is kept in the model's dtype).
CACHE_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float64": "fp32"}


@functools.cache
def text() -> dict[str, str]:
    """The page's prose (``assets/text/real_models.md``)."""
    return sections("real_models")


@functools.cache
def passage() -> str:
    """The shipped public-domain passage (source: ``assets/text/SOURCES.md``)."""
    return PASSAGE_FILE.read_text(encoding="utf-8").strip()


# ---------------------------------------------------------------------------------------------
# Settings and their URL form.


@dataclass(frozen=True)
class RealSettings:
    """What the page's URL holds. Field names are the URL parameters.

    ``model`` "" means the first usable model; ``layer`` and ``pos`` -1 the middle layer and the
    last token; ``kv`` 0 that the grouping section is closed, else the K' shown in it (-1: the
    model's own K).
    """

    model: str = ""
    prompt: str = DEFAULT_PROMPT
    layer: int = -1
    pos: int = -1
    metric: str = "entropy"
    kv: int = 0
    method: str = "mean"


DEFAULTS = RealSettings()
_INTS = {"layer": "layer", "pos": "position (pos)", "kv": "K' (kv)"}


def _check(name: str, value: Any) -> tuple[Any, str | None]:
    """A URL or widget value as its field's type (ValueError when it cannot be one); the
    model's own bounds (layers, tokens, K) are checked by :func:`resolve`."""
    if name == "metric":
        if value not in METRICS:
            raise ValueError(f"expected one of {', '.join(METRICS)}")
        return value, None
    if name == "method":
        if value not in convert.METHODS:
            raise ValueError(f"expected one of {', '.join(convert.METHODS)}")
        return value, None
    lo = 0 if name == "kv" else -1
    return url_state.clamp(url_state.number(int, value), lo, None, _INTS[name])


def _last(raw) -> str:
    """A URL parameter's value: the last one when repeated."""
    if isinstance(raw, list):
        return str(raw[-1]) if raw else ""
    return str(raw)


def from_query_params(params: dict[str, Any]) -> tuple[RealSettings, list[str]]:
    """Settings from URL parameters (a list per name, or one value), and one message per value
    ignored. The model name and the prompt are kept as text here: :func:`resolve` checks them."""
    values, messages = url_state.read_params(
        params, DEFAULTS, ["layer", "pos", "metric", "kv", "method"], _check
    )
    if "model" in params:
        values["model"] = _last(params["model"])[: limits.MAX_REAL_MODEL_NAME_CHARS + 1]
    if "prompt" in params:
        prompt = _last(params["prompt"])
        if len(prompt) > limits.MAX_REAL_PROMPT_CHARS:
            messages.append(
                f"URL parameter prompt has {len(prompt):,} characters; the limit is "
                f"{limits.MAX_REAL_PROMPT_CHARS:,}. Showing the default prompt."
            )
        else:
            values["prompt"] = prompt
    return replace(DEFAULTS, **values), messages


# ---------------------------------------------------------------------------------------------
# Resolving the settings against the server's models.


@dataclass(frozen=True)
class View:
    """The settings resolved: a usable model, the prompt's tokens, every index within range."""

    model: str
    arch: checkpoints.Architecture
    prompt: str
    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    cap: int  # the prompt's token limit for this model
    layer: int
    pos: int
    metric: str
    kv: int  # 0: the grouping section is closed
    method: str
    kv_choices: tuple[int, ...] = field(default=())
    dtype: str = "bf16"  # the KV cache's dtype (the model's stored one)

    @property
    def settings(self) -> RealSettings:
        return RealSettings(
            self.model, self.prompt, self.layer, self.pos, self.metric, self.kv, self.method
        )


def to_query_params(v: View) -> dict[str, str]:
    """The URL form of a view: model, layer and position always; the prompt and metric when
    not the defaults; K' and method while the grouping section is open."""
    out = {"model": v.model}
    if v.prompt != DEFAULT_PROMPT:
        out["prompt"] = v.prompt
    out["layer"], out["pos"] = str(v.layer), str(v.pos)
    if v.metric != DEFAULTS.metric:
        out["metric"] = v.metric
    if v.kv:
        out["kv"], out["method"] = str(v.kv), v.method
    return out


def _tokens(name: str, prompts: list[str]) -> tuple[str, real_sources.Prompt, list[str]]:
    """The first of ``prompts`` (the one asked for, the previous one, the default) that model
    ``name`` can run, and why the one asked for could not.

    When none fits (the default prompt is longer than a small model's position table), the
    default prompt's first words are. CheckpointError when the model has no tokenizer.
    """
    messages: list[str] = []
    for i, text_ in enumerate(prompts):
        try:
            prompt = real_sources.tokenize(name, text_)
        except checkpoints.CheckpointError as err:
            if real_sources.tokenizer(name) is None:
                raise
            if i == 0 and text_ != DEFAULT_PROMPT:
                messages.append(str(err))
            continue
        if messages:
            shown = "the default prompt" if text_ == DEFAULT_PROMPT else "the previous prompt"
            messages[-1] += f" Still showing {shown}."
        return text_, prompt, messages
    # Only a model with a tiny position table gets here: the default prompt's longest run of
    # whole words that fits (so the text shown is exactly what is tokenized).
    cap = real_sources.max_tokens(real_sources.architecture(name))
    words = DEFAULT_PROMPT.split(" ")
    for n in range(len(words) - 1, 0, -1):
        text_ = " ".join(words[:n])
        try:
            prompt = real_sources.tokenize(name, text_)
        except checkpoints.CheckpointError:
            continue
        messages.append(
            f"The default prompt is longer than {name}'s limit of {cap} tokens: showing its "
            f"first {n} words."
        )
        return text_, prompt, messages
    raise checkpoints.CheckpointError(f"not even two words fit its {cap} tokens.")


def _model(requested: str, previous: View | None) -> tuple[list[str], list[str]]:
    """Names to try, in order, and the message for a requested model that cannot be used."""
    usable = [e.name for e in real_sources.models() if e.usable]
    order = [requested] if requested else []
    order += [previous.model] if previous is not None else []
    order += usable
    messages = []
    if requested and usable:  # with none at all, the page explains that instead
        try:
            real_sources.entry(requested)
        except checkpoints.CheckpointError as err:
            shown = previous.model if previous is not None and previous.model in usable else None
            shown = shown or (usable[0] if usable else None)
            messages.append(f"{err} Showing {shown}." if shown else str(err))
            order.remove(requested)
    seen: set[str] = set()
    return [n for n in order if n in usable and not (n in seen or seen.add(n))], messages


def _clamp(value: int, last: int, what: str, default: int, quiet: bool, messages: list[str]):
    if value == -1:
        return default
    if 0 <= value <= last:
        return value
    if not quiet:
        messages.append(f"{what} must be between 0 and {last}; got {value}, using {default}.")
    return default


def resolve(s: RealSettings, previous: View | None = None) -> tuple[View | None, list[str]]:
    """``s`` checked against this server's models (None when it has no usable one), and one
    message per value refused or changed.

    A model that is not listed, or cannot be opened, falls back to ``previous``'s model (else
    the first usable one); a prompt it cannot run (too long, no tokens) to ``previous``'s
    prompt (else the default). A new model resets the layer, the position and K' to their
    defaults, a new prompt the position, without a message: they are not what was asked for.
    """
    names, messages = _model(s.model, previous)
    for name in names:
        prompts = [s.prompt]
        prompts += [previous.prompt] if previous is not None else []
        prompts += [DEFAULT_PROMPT]
        try:
            real_sources.check_loads(name)
            prompt, tokens, more = _tokens(name, prompts)
        except checkpoints.CheckpointError as err:
            messages.append(f"{name} cannot be shown: {err}")
            continue
        messages += more
        break
    else:
        return None, messages
    arch = real_sources.architecture(name)
    new_model = previous is not None and previous.model != name
    new_prompt = previous is not None and previous.ids != tokens.ids
    layer, pos, kv = s.layer, s.pos, s.kv
    if new_model:
        layer, pos, kv = -1, -1, (arch.num_kv_heads if kv else 0)
    if new_prompt:
        pos = -1
    quiet = previous is not None
    T, L = len(tokens.ids), arch.num_layers
    layer = _clamp(layer, L - 1, "layer", L // 2, quiet, messages)
    pos = _clamp(pos, T - 1, f"position (for this {T}-token prompt)", T - 1, quiet, messages)
    choices = tuple(convert.kv_choices(arch))
    if kv == -1:  # the section just opened: the model as it is
        kv = arch.num_kv_heads
    elif kv and kv not in choices:
        messages.append(
            f"K' must divide {name}'s K = {arch.num_kv_heads} K/V heads: one of "
            f"{', '.join(map(str, choices))}; got {kv}, using {arch.num_kv_heads}."
        )
        kv = arch.num_kv_heads
    dtype = CACHE_DTYPES.get(real_sources.entry(name).summary.dtype, "bf16")
    view = View(
        name,
        arch,
        prompt,
        tokens.ids,
        tokens.tokens,
        real_sources.max_tokens(arch),
        layer,
        pos,
        s.metric,
        kv,
        s.method,
        choices,
        dtype,
    )
    return view, messages


# ---------------------------------------------------------------------------------------------
# What the page shows of a view.


def run(v: View, k: int | None = None) -> dict:
    """The model's run on the prompt (grouped to K' = ``k`` when given and not K)."""
    grouped = k is not None and k != v.arch.num_kv_heads
    return real_sources.run(v.model, v.ids, k if grouped else None, v.method if grouped else "mean")


def layer_mask(v: View) -> np.ndarray:
    """[T, T] which keys each query of the shown layer may see: causal, within its window."""
    window = v.arch.windows[v.layer]
    mask = M.causal() if window is None else M.causal_window(window)
    T = len(v.ids)
    return np.asarray(M.materialize(mask, T, T, xp=np)[0], bool)


def top_tokens(v: View, result: dict) -> tuple[list[str], list[float]]:
    """The top-5 next tokens after position ``v.pos`` and their probabilities."""
    ids = [int(i) for i in result["top_ids"][v.pos]]
    tok = real_sources.tokenizer(v.model)
    return tok.token_strings(ids), [float(p) for p in result["top_p"][v.pos]]


def next_token(v: View) -> tuple[str | None, str]:
    """The prompt's token after position ``v.pos`` (None at its end), and a subtitle saying so
    (for a Plotly title: the tokens HTML-escaped, as Plotly reads tags such as ``<s>``)."""
    T = len(v.ids)
    actual = v.tokens[v.pos + 1] if v.pos + 1 < T else None

    def shown(token: str) -> str:
        return html.escape(repr(token), quote=False)

    after = f"after {shown(v.tokens[v.pos])} (position {v.pos})"
    return actual, after + (
        f"; the prompt goes on with {shown(actual)}" if actual is not None else ", the prompt's end"
    )


def head_drift(probs_a: list[np.ndarray], probs_b: list[np.ndarray]) -> np.ndarray:
    """[L, N] JS divergence between two models' attention rows, averaged over the T rows (all
    causal rows see a key): the KV sharing page's measure, per layer and head."""
    return np.stack(
        [js_divergence(a, b).mean(axis=-1) for a, b in zip(probs_a, probs_b, strict=True)]
    )


def kv_bytes_per_token(arch: checkpoints.Architecture, k: int, dtype: str) -> int:
    """KV-cache bytes per token with ``k`` kv heads in every layer: 2 x L x K' x H x bytes
    (:func:`gqa_viz.kv_cache.bytes_per_token`; before any sliding window caps it)."""
    model = kv_cache.ModelConfig(
        name=arch.family,
        model_type=arch.family,
        num_query_heads=arch.num_query_heads,
        num_key_value_heads=arch.num_kv_heads,
        head_dim=arch.head_dim,
        hidden_size=arch.model_dim,
        layers=tuple(
            kv_cache.LayerCache(
                "full" if w is None else "sliding", arch.num_kv_heads, arch.head_dim, w
            )
            for w in arch.windows
        ),
    )
    return int(sum(kv_cache.bytes_per_token(model, dtype, kv_heads=k)))


def passage_tokens(v: View) -> tuple[int, ...]:
    """The passage's first tokens for this model (at most REAL_PASSAGE_MAX_TOKENS, and its
    position table)."""
    tok = real_sources.tokenizer(v.model)
    n = min(limits.REAL_PASSAGE_MAX_TOKENS, v.arch.max_positions)
    return tuple(int(i) for i in tok.encode(passage())[:n])


def passage_loss(v: View, k: int) -> float:
    """Mean next-token loss (nats) of model ``v.model`` grouped to K' = ``k`` on the passage."""
    ids = passage_tokens(v)
    grouped = k != v.arch.num_kv_heads
    method = v.method if grouped else "mean"
    key = ("real-passage", v.model, str(real_sources.entry(v.model).path), ids, k, method)

    def compute():
        ckpt = real_sources.checkpoint(v.model)  # loaded only when not cached
        model = convert.group_kv_heads(ckpt, k, method) if grouped else ckpt
        logits, _ = model.forward(np.asarray([ids]), probs=False)
        return {"loss": convert.next_token_loss(logits, np.asarray([ids]))}

    return RESULTS.get(key, compute, heavy=True)["loss"]


@dataclass(frozen=True)
class GroupRow:
    """One K' of the conversion curve."""

    k: int
    prompt_loss: float
    passage_loss: float
    kv_bytes: int  # per token, all layers
    drift: float  # mean JS divergence over layers and heads

    @property
    def prompt_ppl(self) -> float:
        return convert.perplexity(self.prompt_loss)

    @property
    def passage_ppl(self) -> float:
        return convert.perplexity(self.passage_loss)


@dataclass(frozen=True)
class Grouping:
    """The conversion curve (one row per K', K first) and the chosen K''s details."""

    rows: tuple[GroupRow, ...]
    k: int
    drift: np.ndarray  # [L, N] of the chosen K'
    passage_tokens: int

    def row(self, k: int) -> GroupRow:
        return next(r for r in self.rows if r.k == k)


def grouping(v: View, progress=None) -> Grouping:
    """Every K' of the model, grouped by ``v.method``: loss on the prompt and the passage,
    drift, KV bytes per token. ``progress(i, n, text)`` is told before each K' is computed."""
    rows, chosen = [], None
    ks = list(v.kv_choices)
    for i, k in enumerate(ks):
        if progress is not None:
            progress(i, len(ks), f"K' = {k}: the prompt and the passage")
        point = _prompt_point(v, k)
        rows.append(
            GroupRow(
                k,
                point["loss"],
                passage_loss(v, k),
                kv_bytes_per_token(v.arch, k, v.dtype),
                float(point["drift"].mean()),
            )
        )
        if k == v.kv:
            chosen = point["drift"]
    return Grouping(tuple(rows), v.kv, chosen, len(passage_tokens(v)))


def _prompt_point(v: View, k: int) -> dict:
    """K' = ``k`` on the prompt: its loss and drift [L, N] from the ungrouped model.

    Only the chosen K' keeps its whole run (every layer's probabilities) in the shared
    results cache; for the other points of the curve only this summary is kept. Light in the
    cache's terms: the runs it makes take the heavy-work slot themselves.
    """
    kept = k in (v.kv, v.arch.num_kv_heads)
    grouped = k != v.arch.num_kv_heads
    method = v.method if grouped else "mean"
    key = ("real-point", v.model, str(real_sources.entry(v.model).path), v.ids, k, method)

    def compute() -> dict:
        base = run(v)
        if kept:
            result = run(v, k)
        else:
            with RESULTS.heavy_slot():
                result = real_sources.run_uncached(v.model, v.ids, k, method)
        drift = head_drift(base["probs"], result["probs"])  # [L, N]
        return {"loss": float(result["loss"]), "drift": drift}

    return RESULTS.get(key, compute, heavy=False)


def describe_grouping(v: View, g: Grouping) -> str:
    """What the chosen K' did, in numbers (for under the curve)."""
    K, first, row = v.arch.num_kv_heads, g.row(v.arch.num_kv_heads), g.row(v.kv)
    if v.kv == K:
        return text()["at_k"].format(k=K, name=v.model)
    saving = 1 - row.kv_bytes / first.kv_bytes
    return text()["grouped"].format(
        k=K,
        k2=v.kv,
        g=v.arch.num_query_heads // v.kv,
        method=METHOD_WORDS[v.method],
        saving=f"{saving:.0%}",
        before=f"{first.kv_bytes:,}",
        after=f"{row.kv_bytes:,}",
        p0=_ppl(first.prompt_ppl),
        p1=_ppl(row.prompt_ppl),
        s0=_ppl(first.passage_ppl),
        s1=_ppl(row.passage_ppl),
        drift=f"{row.drift:.3f}",
    )


def metrics(v: View, g: Grouping) -> list[tuple[str, str, str | None, str, str | None]]:
    """The grouping's numbers for the page's metrics: (label, value, delta, delta colour, help)."""
    K = v.arch.num_kv_heads
    first, row = g.row(K), g.row(v.kv)
    out = [
        (
            "KV cache per token",
            f"{row.kv_bytes:,} B",
            f"{row.kv_bytes / first.kv_bytes - 1:+.0%}",
            "off",
            f"2 × L × K' × H × bytes; {first.kv_bytes:,} B at K' = {K}.",
        )
    ]
    for what, before, after in (
        ("prompt", first.prompt_ppl, row.prompt_ppl),
        ("passage", first.passage_ppl, row.passage_ppl),
    ):
        finite = math.isfinite(after) and math.isfinite(before)
        delta = f"{after - before:+,.1f}" if finite else None
        out.append(
            (
                f"Perplexity on the {what}",
                _ppl(after),
                delta,
                "inverse",
                f"exp(mean next-token loss); {_ppl(before)} at K' = {K}.",
            )
        )
    out.append(
        (
            "Mean drift (JS)",
            f"{row.drift:.3f}",
            None,
            "off",
            "JS divergence of the attention rows, averaged; at most ln 2 ≈ 0.693 nats.",
        )
    )
    return out


def curve_note(v: View, g: Grouping) -> str:
    """What the curve's passage is, and how its bytes are counted."""
    size = kv_cache.dtype_bytes(v.dtype)
    passage_ = text()["passage"].format(title=PASSAGE_TITLE, tokens=g.passage_tokens)
    return passage_ + " " + text()["kv_note"].format(bytes=f"{float(size):g}", dtype=v.dtype)


def _ppl(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:,.1f}" if x < 1e5 else f"{x:.2e}"
