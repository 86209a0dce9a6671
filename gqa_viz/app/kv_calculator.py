"""What the KV calculator page computes, and the KV sharing page's calculator section with it:
one model's cache, weights, fit and decode time. No Streamlit here.

Axis letters as in :mod:`gqa_viz.kv_cache`: B batch, S cached tokens, N query heads, K kv
heads, H head_dim, D hidden size, L layers. Every number comes from :mod:`gqa_viz.kv_cache`
(presets in :mod:`gqa_viz.models`, read like an upload); this module only chooses what to
compute for a view and words it.

* :class:`CalculatorSettings`: everything a visitor sets on the KV calculator page, with its
  URL form (:func:`from_query_params`, :func:`to_query_params`) and the check of widget values
  (:func:`sanitize`). A pasted or uploaded config is not part of it: it stays in the session.
* :func:`uploaded_model` / :func:`read_config`: a visitor's ``config.json`` within the upload
  limits (parsed, never executed); :func:`custom_model` for a shape typed in,
  :func:`given_params` for a parameter count typed in.
* :func:`calculator`: the numbers of one model at one context, batch, dtype and GPU (the
  configured cache computed once, every number that needs it reading that one).
* Wording: :func:`model_caption`, :func:`reading_notes`, :func:`window_note`,
  :func:`position_note`, :func:`textbook_note`, :func:`metric_rows` (an MLA model's note is
  ``Calculator.no_variants``, :func:`gqa_viz.kv_cache.mla_reason`).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from gqa_viz import kv_cache
from gqa_viz.app import url_state
from gqa_viz.app.limits import (
    KV_CALCULATOR_MAX_BANDWIDTH_GB_S,
    KV_CALCULATOR_MAX_BATCH,
    KV_CALCULATOR_MAX_GPU_GB,
    KV_CALCULATOR_MAX_HEAD_DIM,
    KV_CALCULATOR_MAX_HEADS,
    KV_CALCULATOR_MAX_PARAMS_BILLION,
    KV_CALCULATOR_MAX_TOKENS,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_INT,
    MAX_CONFIG_LAYERS,
)
from gqa_viz.kv_cache import DTYPE_BYTES, GB, GiB, ModelConfig, exact_bytes
from gqa_viz.models import PRESETS, SOURCES

__all__ = [
    "CUSTOM_GPU",
    "CUSTOM_LIMITS",
    "DEFAULTS",
    "DTYPES",
    "GPUS",
    "PRESETS",
    "SOURCES",
    "Calculator",
    "CalculatorSettings",
    "Gpu",
    "calculator",
    "custom_model",
    "binary_bytes",
    "default_preset",
    "exact_bytes",
    "from_query_params",
    "gb",
    "gb_gib",
    "gib",
    "given_params",
    "plain",
    "metric_rows",
    "model_caption",
    "position_note",
    "preset_name",
    "preset_slug",
    "read_config",
    "reading_notes",
    "sanitize",
    "textbook_note",
    "to_query_params",
    "uploaded_model",
    "window_note",
]

DTYPES = list(DTYPE_BYTES)


# ---------------------------------------------------------------------------------------------
# Units.


def gb(b: float) -> str:
    """Decimal gigabytes, two decimals: ``"16.06 GB"``."""
    return f"{b / GB:,.2f} GB"


def gib(b: float) -> str:
    """Binary gibibytes, two decimals: ``"14.96 GiB"``."""
    return f"{b / GiB:,.2f} GiB"


def gb_gib(b: float) -> str:
    """Both: ``"16.06 GB · 14.96 GiB"``."""
    return f"{gb(b)} · {gib(b)}"


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def plain(text: str) -> str:
    """``text`` with markdown's (and Streamlit's LaTeX) punctuation escaped, so a visitor's
    words (a config's values, quoted in a message) show as typed, never as a link or image."""
    return _MARKDOWN.sub(r"\\\1", text)


def binary_bytes(b: float) -> str:
    """The largest binary unit that keeps the number >= 1: ``"128 KiB"``, ``"1.5 MiB"``."""
    for unit, size in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b / size:,.4g} {unit}"
    return f"{b:,.4g} B"


# ---------------------------------------------------------------------------------------------
# Presets and GPUs.


def preset_slug(name: str) -> str:
    """The URL form of a preset: its config file's name (``"gemma-2-9b"``)."""
    return Path(SOURCES[name].file).stem if name in SOURCES else name


_SLUGS = {preset_slug(name): name for name in PRESETS}
# Every way a URL may name a preset, in lower case: its file name, its display name.
_BY_LOWER = {
    **{slug.lower(): name for slug, name in _SLUGS.items()},
    **{name.lower(): name for name in PRESETS},
}


def preset_name(text: str) -> str | None:
    """The preset a URL names, by its file name or its display name (any case); else None."""
    return text if text in PRESETS else _BY_LOWER.get(text.strip().lower())


def default_preset() -> int:
    """Index in :data:`PRESETS` of the model the calculators open on: a Llama 3.1 8B (a GQA
    model everyone knows) when there is one, else the first."""
    names = list(PRESETS)
    for i, name in enumerate(names):
        if "3.1" in name and "8B" in name.upper():
            return i
    return 0


@dataclass(frozen=True)
class Gpu:
    """A GPU as its maker quotes it: memory in decimal GB, HBM/GDDR bandwidth in GB/s."""

    label: str
    memory_gb: float
    bandwidth_gb_s: float

    def describe(self) -> str:
        return f"{self.label} · {self.memory_gb:g} GB"


# Makers' data sheets: NVIDIA's L4, GeForce RTX 4090, A100 (40 GB; 80 GB SXM), H100 SXM, H200,
# and AMD's Instinct MI300X. Memory in decimal GB as quoted (the memory a program can use is a
# little less). Keys are the URL form.
GPUS: dict[str, Gpu] = {
    "l4": Gpu("L4", 24.0, 300.0),
    "rtx4090": Gpu("RTX 4090", 24.0, 1008.0),
    "a100-40": Gpu("A100", 40.0, 1555.0),
    "a100-80": Gpu("A100 SXM", 80.0, 2039.0),
    "h100": Gpu("H100 SXM", 80.0, 3350.0),
    "h200": Gpu("H200", 141.0, 4800.0),
    "mi300x": Gpu("MI300X", 192.0, 5300.0),
}
CUSTOM_GPU = "custom"


# ---------------------------------------------------------------------------------------------
# The page's settings and their URL form.


def _default_preset_name() -> str:
    return list(PRESETS)[default_preset()] if PRESETS else ""


@dataclass(frozen=True)
class CalculatorSettings:
    """What a visitor sets on the KV calculator page. Field names are the URL parameters (the
    preset by its file name). ``gpu_gb`` counts only for the custom GPU; ``bw`` is the memory
    bandwidth in GB/s (the chosen GPU's unless set)."""

    preset: str = _default_preset_name()
    tokens: int = 8192
    batch: int = 1
    dtype: str = "bf16"  # the KV cache's
    wdtype: str = "bf16"  # the weights'
    gpu: str = "h100"
    gpu_gb: float = 80.0
    bw: float = GPUS["h100"].bandwidth_gb_s

    @property
    def gpu_memory_gb(self) -> float:
        return self.gpu_gb if self.gpu == CUSTOM_GPU else GPUS[self.gpu].memory_gb

    @property
    def model(self) -> ModelConfig:
        return PRESETS[self.preset]


DEFAULTS = CalculatorSettings()

# Numeric fields: (lowest, highest, the name messages use).
RANGES: dict[str, tuple[Any, Any, str]] = {
    "tokens": (1, KV_CALCULATOR_MAX_TOKENS, "context length (tokens)"),
    "batch": (1, KV_CALCULATOR_MAX_BATCH, "batch"),
    "gpu_gb": (1.0, KV_CALCULATOR_MAX_GPU_GB, "GPU memory in GB (gpu_gb)"),
    "bw": (1.0, KV_CALCULATOR_MAX_BANDWIDTH_GB_S, "memory bandwidth in GB/s (bw)"),
}
_CHOICES = {"dtype": DTYPES, "wdtype": DTYPES, "gpu": [*GPUS, CUSTOM_GPU]}
_PARAMS = [f.name for f in fields(CalculatorSettings)]
FLOATS = ("gpu_gb", "bw")


def _check(name: str, value: Any) -> tuple[Any, str | None]:
    """(the value as its field's type, within its limits; what was wrong with it, or None).
    Raises ValueError for a value that cannot be read as its type or choice."""
    if name == "preset":
        found = preset_name(str(value)[:200])
        if found is None:
            examples = ", ".join(list(_SLUGS)[:3])
            raise ValueError(f"expected a preset's name, such as {examples}")
        return found, None
    if name in _CHOICES:
        if value not in _CHOICES[name]:
            raise ValueError(f"expected one of {', '.join(_CHOICES[name])}")
        return value, None
    lo, hi, what = RANGES[name]
    return url_state.clamp(url_state.number(float if name in FLOATS else int, value), lo, hi, what)


def from_query_params(params: dict[str, Any]) -> tuple[CalculatorSettings, list[str]]:
    """Settings from URL parameters (a list per name, or one value), plus one message per value
    that was changed or ignored. Parameters of other pages are ignored without a message."""
    values, messages = url_state.read_params(params, DEFAULTS, _PARAMS, _check)
    gpu = values.get("gpu", DEFAULTS.gpu)
    if "bw" not in values and gpu != CUSTOM_GPU:  # the chosen GPU's bandwidth
        values["bw"] = GPUS[gpu].bandwidth_gb_s
    return replace(DEFAULTS, **values), messages


def to_query_params(s: CalculatorSettings) -> dict[str, str]:
    """The URL form of ``s``: only what differs from the defaults (the preset by its file
    name; the bandwidth only when it is not the chosen GPU's; GB only for a custom GPU)."""
    out = {}
    for name, value in asdict(s).items():
        if name == "gpu_gb" and s.gpu != CUSTOM_GPU:
            continue
        if name == "bw":
            if value == (DEFAULTS.bw if s.gpu == CUSTOM_GPU else GPUS[s.gpu].bandwidth_gb_s):
                continue
        elif value == getattr(DEFAULTS, name):
            continue
        if name == "preset":
            out[name] = preset_slug(value)
        elif isinstance(value, float):
            out[name] = str(int(value)) if value.is_integer() else repr(value)
        else:
            out[name] = str(value)
    return out


def sanitize(
    values: dict[str, Any], current: CalculatorSettings
) -> tuple[dict[str, Any], list[str]]:
    """Widget values checked like URL values (:func:`gqa_viz.app.url_state.sanitize`)."""
    return url_state.sanitize(values, current, _check)


# ---------------------------------------------------------------------------------------------
# Models a visitor gives.


# A model typed in: (highest, the name messages use) of each number; the lowest is 1.
CUSTOM_LIMITS: dict[str, tuple[int, str]] = {
    "layers": (MAX_CONFIG_LAYERS, "layers"),
    "n": (KV_CALCULATOR_MAX_HEADS, "query heads N"),
    "k": (KV_CALCULATOR_MAX_HEADS, "kv heads K"),
    "h": (KV_CALCULATOR_MAX_HEAD_DIM, "head_dim H"),
}


def _params(billions: float) -> int:
    """A parameter count typed in billions, as a count; ValueError naming the limit unless
    0 < billions <= KV_CALCULATOR_MAX_PARAMS_BILLION."""
    ok = isinstance(billions, int | float) and not isinstance(billions, bool)
    if not (ok and 0 < billions <= KV_CALCULATOR_MAX_PARAMS_BILLION):
        raise ValueError(
            f"The parameter count must be more than 0 and at most "
            f"{KV_CALCULATOR_MAX_PARAMS_BILLION:,g} billion; got {str(billions)[:40]}."
        )
    return max(1, round(billions * 1e9))


def custom_model(layers: int, n: int, k: int, h: int, params_billion: float) -> ModelConfig:
    """The shape of a model typed in (hidden size N x H, every layer global), read through
    :func:`~gqa_viz.kv_cache.from_config` like a preset, with the parameter count given.

    Raises ValueError naming the limit when a number is out of range (:data:`CUSTOM_LIMITS`,
    the parameter count as :func:`given_params` checks it) or K does not divide N.
    """
    for (hi, what), value in zip(CUSTOM_LIMITS.values(), (layers, n, k, h), strict=True):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
            raise ValueError(f"{what} must be a whole number from 1 to {hi:,}; got {value!r}.")
    params = _params(params_billion)
    if n % k:
        raise ValueError(f"K = {k} must divide N = {n}.")
    config = {
        "num_hidden_layers": layers,
        "num_attention_heads": n,
        "num_key_value_heads": k,
        "head_dim": h,
        "hidden_size": n * h,
    }
    model = kv_cache.from_config(config, name="custom", max_layers=MAX_CONFIG_LAYERS)
    return kv_cache.with_params(model, params)


def _parse(data: bytes | str, what: str) -> dict:
    return kv_cache.parse_config_json(
        data,
        max_bytes=MAX_CONFIG_BYTES,
        max_layers=MAX_CONFIG_LAYERS,
        max_int=MAX_CONFIG_INT,
        what=what,
    )


def uploaded_model(data: bytes | str, name: str | None = None) -> ModelConfig:
    """The model of an uploaded ``config.json``: parsed within the upload limits
    (:data:`~gqa_viz.app.limits.MAX_CONFIG_BYTES`, :data:`~gqa_viz.app.limits.MAX_CONFIG_LAYERS`,
    :data:`~gqa_viz.app.limits.MAX_CONFIG_INT`), never executed, then read like a preset.
    ValueError with a message naming the limit or field for anything refused."""
    return kv_cache.from_config(_parse(data, "file"), name=name, max_layers=MAX_CONFIG_LAYERS)


def read_config(data: bytes | str, what: str) -> tuple[ModelConfig | None, str | None]:
    """(the model, None) or (None, a message naming the limit or field) for a visitor's
    config: ``what`` ("pasted text", "file config.json") is what the message calls it."""
    if isinstance(data, str) and len(data) > MAX_CONFIG_BYTES:  # a paste the text box cut
        return None, (
            f"The pasted text is longer than {MAX_CONFIG_BYTES:,} characters; a config.json "
            f"may be at most {MAX_CONFIG_BYTES:,} bytes ({MAX_CONFIG_BYTES // 2**10} KiB)."
        )
    try:
        config = _parse(data, what)
    except ValueError as error:  # the parser's message names the data as `what`
        return None, str(error)
    try:
        return kv_cache.from_config(config, max_layers=MAX_CONFIG_LAYERS), None
    except ValueError as error:
        return None, f"Could not read the {what}: {error}"


def given_params(model: ModelConfig, billions: float | None) -> ModelConfig:
    """``model`` with a parameter count typed in, in billions, when its config does not give
    one (None: not given). ValueError unless 0 < ``billions`` <=
    :data:`~gqa_viz.app.limits.KV_CALCULATOR_MAX_PARAMS_BILLION`."""
    if billions is None or model.params is not None:
        return model
    return kv_cache.with_params(model, _params(billions))


# ---------------------------------------------------------------------------------------------
# Words.


def model_caption(model: ModelConfig, sourced: bool = True) -> str:
    """One markdown line: the model's shape, parameters and, for a preset (``sourced``), where
    its config was published and when it was read."""
    if model.params is None:
        params = "parameter count unknown"
    else:
        params = f"{model.params / 1e9:,.2f}B parameters"
        if model.active_params is not None:
            params += f" ({model.active_params / 1e9:,.2f}B active)"
    text = (
        f"**{model.name}**: {model.num_layers} layers, N = {model.num_query_heads}, "
        f"K = {model.num_key_value_heads}, H = {model.head_dim}, D = {model.hidden_size}, "
        f"{params} ({model.attention.upper()})."
    )
    if model.max_position_embeddings is not None:
        text += f" max_position_embeddings {model.max_position_embeddings:,}."
    source = SOURCES.get(model.name) if sourced else None
    if source is not None:
        text += f" Source: [{source.repo}]({source.url}) config.json, read {source.read}."
    return text


def reading_notes(model: ModelConfig, sourced: bool = True) -> str:
    """Markdown bullets: how the config was read, each field taken from the config class's
    default (transformers version stated), and, for a preset (``sourced``), its source's note;
    empty when there is nothing to say."""
    source = SOURCES.get(model.name) if sourced else None
    lines = [f"- {plain(note)}" for note in model.notes]  # notes quote the file's values
    if source is not None and source.note:
        lines.append(f"- About this file: {source.note}")
    if model.defaulted:
        fields_ = ", ".join(f"`{k}` = {v!r}" for k, v in model.defaulted.items())
        lines.append(
            f"- **Defaulted** (not in the file, so taken from transformers "
            f"{kv_cache.TRANSFORMERS_VERSION}'s {model.model_type} config defaults): {fields_}."
        )
    return "\n".join(lines)


def window_note(model: ModelConfig) -> str | None:
    """A sentence on the sliding-window layers (their cache is capped), None without any."""
    sliding = [layer for layer in model.layers if layer.kind == "sliding"]
    if not sliding:
        return None
    windows = sorted({layer.window for layer in sliding})
    w = " / ".join(f"{x:,}" for x in windows)
    text = (
        f"{len(sliding)} of {model.num_layers} layers of {model.name} use a {w}-token sliding "
        f"window: their cache is capped at {w} tokens per sequence, whatever the context."
    )
    if len(sliding) < model.num_layers:
        text += f" The other {model.num_layers - len(sliding)} layers grow with the context."
    return text


def position_note(model: ModelConfig, tokens: int) -> str:
    """The context is beyond what the model was built for."""
    return (
        f"{tokens:,} tokens is beyond {model.name}'s max_position_embeddings "
        f"({model.max_position_embeddings:,}): the memory may fit, but the model was not made "
        f"to attend that far."
    )


def _textbook(model: ModelConfig, tokens: int, batch: int, dtype: str) -> Fraction:
    """The cache by the textbook formula 2 · L · D · bytes · tokens · batch: multi-head
    attention with head_dim = D / N in every layer, no window, no latent."""
    return 2 * model.num_layers * model.hidden_size * kv_cache.dtype_bytes(dtype) * tokens * batch


def textbook_note(model: ModelConfig, calc: Calculator) -> str:
    """Markdown: what the textbook 2 · L · D formula says for this view, and why it is wrong
    here (K < N, head_dim != D / N, windows, MLA), or that it is right."""
    naive, real = calc.textbook, calc.variants["configured"]
    L, D, N, K, H = (
        model.num_layers, model.hidden_size, model.num_query_heads,
        model.num_key_value_heads, model.head_dim,
    )  # fmt: skip
    head = f"The textbook 2 × L × D × bytes per token (L = {L}, D = {D:,}) says **{gb(naive)}**"
    if naive == real:
        return f"{head}, and it is right for {model.name}: multi-head, head_dim = D / N, no window."
    why = []
    if model.is_mla:
        why.append(
            f"MLA caches a {model.layers[0].latent}-element latent per layer and token, not "
            f"2 × D = {2 * D:,} elements of keys and values"
        )
    else:
        if K != N:
            why.append(f"only K = {K} K/V head{'s' * (K > 1)}, not N = {N}")
        if H * N != D:
            why.append(f"head_dim is {H}, not D / N = {D / N:g}")
        capped = [x for x in model.layers if x.window is not None and x.window < calc.tokens]
        if capped:
            w = " / ".join(f"{x:,}" for x in sorted({x.window for x in capped}))
            which = f"all {L}" if len(capped) == L else f"{len(capped)} of {L}"
            why.append(f"{which} layers keep only their last {w} tokens")
    ratio = naive / real if real else math.inf
    how = f"{ratio:,.1f}× too much" if ratio >= 1 else f"{1 / ratio:,.1f}× too little"
    return f"{head}: {how}. The cache is {gb(real)}, because " + "; ".join(why) + "."


def metric_rows(model: ModelConfig, calc: Calculator, weights_dtype: str) -> list[tuple]:
    """(label, bytes) of the calculator's headline numbers: the cache as configured, as MHA
    and as MQA where that is another layout (not for MLA; not the one it already is), and the
    weights (when the parameter count is known)."""
    N, K = model.num_query_heads, model.num_key_value_heads
    configured = calc.variants["configured"]
    if model.is_mla:
        rows = [("KV cache (MLA latent)", configured)]
    elif K == N:
        rows = [(f"KV cache (MHA, K = {N})", configured)]
    elif K == 1:
        rows = [("KV cache (MQA, K = 1)", configured)]
    else:
        rows = [(f"KV cache (K = {K})", configured)]  # short: five metrics share a row
    if not model.is_mla and K != N:
        rows.append((f"KV cache as MHA (K = {N})", calc.variants["mha"]))
    if not model.is_mla and K != 1:
        rows.append(("KV cache as MQA (K = 1)", calc.variants["mqa"]))
    if calc.weights is not None:
        rows.append((f"weights ({weights_dtype})", calc.weights))
    return rows


# ---------------------------------------------------------------------------------------------
# The numbers.


@dataclass(frozen=True)
class Calculator:
    """The calculator's numbers for one model, context, batch and GPU; sizes in bytes.

    ``variants`` has "configured", and "mha"/"mqa" unless the model is MLA (``no_variants``
    then says why); ``sizes`` the same less a variant that is the configured layout (an MHA
    or MQA model). ``weights``, ``max_context``, ``max_batch`` and ``decode_s`` are None when
    the model's parameter count is not known.
    """

    gpu_bytes: float
    variants: dict[str, float]  # cache as "configured", as "mha" (K = N), as "mqa" (K = 1)
    weights: float | None
    formula: str  # the cache formula with the numbers filled in, a line per group of layers
    contexts: list[int]  # context lengths of the chart
    sizes: dict[str, list[float]]  # the variants' cache at each of ``contexts``
    max_context: int | None  # tokens per sequence that fit at the batch; None: any (windows)
    max_batch: int | None  # sequences of the context length that fit
    decode_s: float | None  # lower bound on one decode step, in seconds
    no_variants: str | None  # why there is no MHA/MQA variant (MLA)
    beyond_max_position: bool  # the context exceeds max_position_embeddings
    max_context_beyond_max_position: bool
    cache: kv_cache.CacheBytes  # the cache as configured, layer by layer
    bytes_per_token: int | Fraction  # every layer, one token of one sequence (uncapped)
    textbook: float  # the cache by the textbook 2 · L · D formula
    tokens: int
    batch: int

    @property
    def budget(self) -> float | None:
        """GPU memory left for the cache after the weights (negative when they don't fit)."""
        return None if self.weights is None else self.gpu_bytes - self.weights


def _contexts(model: ModelConfig, tokens: int, max_context: int | None) -> list[int]:
    """The chart's context lengths: powers of two from 128 past the chosen context, past
    max_position_embeddings and past the longest context that fits, plus each of those and
    every window (where a curve bends)."""
    limit = model.max_position_embeddings or 0
    top = max(2 * tokens, 131_072, 2 * limit, max_context or 0)
    top = min(top, 4 * KV_CALCULATOR_MAX_TOKENS)
    points = {2**i for i in range(7, top.bit_length() + 1)} | {tokens}
    marks = [x.window for x in model.layers if x.window is not None] + [limit, max_context or 0]
    points |= {m for m in marks if 0 < m <= top}
    return sorted(points)


def _sizes(model: ModelConfig, contexts, batch: int, dtype: str, kv_heads) -> list[float]:
    """The cache at each context, by groups of identical layers (fast for 1,024 layers)."""
    size = kv_cache.dtype_bytes(dtype)
    groups = kv_cache.layer_groups(model, tokens=0, kv_heads=kv_heads)
    return [
        float(
            sum(
                g.count * g.layer.elements_per_token * size * g.layer.cached_tokens(t) * batch
                for g in groups
            )
        )
        for t in contexts
    ]


def calculator(
    model: ModelConfig,
    tokens: int,
    batch: int,
    dtype: str,
    weights_dtype: str,
    gpu_gb: float,
    bandwidth_gb_s: float,
) -> Calculator:
    """The numbers for ``model`` at ``tokens`` per sequence and ``batch`` sequences, with the
    cache in ``dtype`` and the weights in ``weights_dtype``, on a GPU of ``gpu_gb`` decimal GB
    read at ``bandwidth_gb_s`` GB/s. Without a parameter count (see
    :func:`gqa_viz.kv_cache.with_params`) only the cache is computed."""
    gpu = float(gpu_gb) * GB
    cache = kv_cache.kv_cache_bytes(model, tokens=tokens, batch=batch, dtype=dtype)  # once
    known = model.params is not None
    max_ctx = kv_cache.max_context(model, gpu, batch, dtype, weights_dtype) if known else None
    contexts = _contexts(model, tokens, max_ctx)
    # The variants that are another layout: none for MLA; not MHA (MQA) when it is one.
    heads = {"mha": model.num_query_heads, "configured": None, "mqa": 1}
    if model.is_mla:
        heads = {"configured": None}
    heads = {k: h for k, h in heads.items() if h is None or h != model.num_key_value_heads}
    sizes = {key: _sizes(model, contexts, batch, dtype, kh) for key, kh in heads.items()}
    variants = kv_cache.variants(model, tokens=tokens, batch=batch, dtype=dtype, cache=cache)
    if known:
        weights = float(kv_cache.weights_bytes(model, weights_dtype))
        max_batch = kv_cache.max_batch(model, gpu, tokens, dtype, weights_dtype, cache=cache)
        decode_s = kv_cache.decode_time_lower_bound(
            model,
            tokens,
            batch,
            dtype,
            weights_dtype,
            bandwidth_bytes_per_s=float(bandwidth_gb_s) * 1e9,
            cache=cache,
        )
    else:
        weights = max_batch = decode_s = None
    return Calculator(
        gpu_bytes=gpu,
        variants={k: float(v) for k, v in variants.items()},
        weights=weights,
        formula=kv_cache.formula(model, tokens=tokens, batch=batch, dtype=dtype, cache=cache),
        contexts=contexts,
        sizes=sizes,
        max_context=max_ctx,
        max_batch=max_batch,
        decode_s=decode_s,
        no_variants=kv_cache.mla_reason(model) if model.is_mla else None,
        beyond_max_position=kv_cache.beyond_max_position(model, tokens),
        max_context_beyond_max_position=max_ctx is not None
        and kv_cache.beyond_max_position(model, max_ctx),
        cache=cache,
        bytes_per_token=cache.per_token,
        textbook=float(_textbook(model, tokens, batch, dtype)),
        tokens=tokens,
        batch=batch,
    )
