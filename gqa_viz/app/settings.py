"""The Playground's settings: defaults, limits, and their URL form. No Streamlit here.

Every control of the app is a field of :class:`Settings`, and every field lives in the URL
(``?n=8&k=2&causal=1``), so a copied link reproduces the view. :func:`from_query_params`
never raises: malformed or out-of-range values are clamped or replaced by defaults, and each
change is reported in a message that names the parameter and its limit.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from gqa_viz.app.limits import (
    MAX_BATCH,
    MAX_DROPOUT,
    MAX_HEAD_DIM,
    MAX_LEN,
    MAX_MODEL_DIM,
    MAX_QUERY_HEADS,
    MAX_SCORE_CELLS,
    MAX_SEED,
    MAX_TEXT_CHARS,
)
from gqa_viz.core import GQASpec, divisors, nearest_divisor

HEAD_DIMS = (4, 8, 16, 32, 64, 128, 256)
# What the controls offer (a URL may ask for other values within the limits).
HEAD_CHOICES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
MODEL_DIMS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

DEFAULT_SENTENCE = "the cat sat on the mat because the cat was tired"
DEFAULT_SOURCE = "le chat est assis sur le tapis"

MODES = ("sentence", "random")
ATTENTION_KINDS = ("self", "cross")
WEIGHT_SOURCES = ("pooled", "independent", "trained", "real")
DEFAULT_MODEL = "recall-k8"  # a shipped tiny model (gqa_viz/trained.py), when weights="trained"
# weights="real": a layer of a checkpoint on this server (gqa_viz.app.real_sources), by the
# name it is listed under; DEFAULT_MODEL there stands for "the first one listed".
VIEWS = ("probs", "logits")
SCALES = ("p99", "max")  # colour scale top: 99th percentile (saturating) or the max
POOLS = ("max", "mean")  # how a big heatmap is downsampled: block max or block mean


@dataclass(frozen=True)
class Settings:
    """One view of the Playground. Field names are the URL parameter names."""

    n: int = 8  # num_query_heads
    k: int = 2  # num_key_value_heads
    h: int = 16  # head_dim
    d: int = 64  # model dim
    mode: str = "sentence"  # "sentence": tokens on the axes; "random": seeded random vectors
    attn: str = "self"  # "self" or "cross" attention
    text: str = DEFAULT_SENTENCE  # query sentence (keys too in self-attention); real: prompt
    source: str = DEFAULT_SOURCE  # key/value sentence in cross-attention
    t: int = 64  # query length in random mode
    s: int = 64  # key/value length in random cross-attention
    batch: int = 1  # batch size B (random mode)
    item: int = 0  # batch item shown
    causal: bool = True  # use_causal_mask
    window: int = 0  # sliding_window; 0 = none
    pad: int = 0  # the last `pad` queries (and keys, in self-attention) are padding
    kpad: int = 0  # the last `kpad` keys are padding (cross-attention)
    dropout: float = 0.0
    training: bool = False
    bias: bool = True  # use_bias
    gate: bool = False  # use_gate
    seed: int = 0
    weights: str = "pooled"  # "pooled": one MHA layer, K/V heads mean-pooled per group
    model: str = DEFAULT_MODEL  # weights="trained"/"real": which model (it fixes n, k, h, d)
    layer: int = 1  # which of its attention layers; input: its task prompt / what it sees of text
    view: str = "probs"  # "probs" or "logits"
    scale: str = "p99"  # colour scale top: "p99" (saturates above) or "max"
    pool: str = "max"  # downsampling of maps too big to draw: "max" or "mean" of each block

    @property
    def groups(self) -> int:
        return self.n // self.k

    @property
    def cross(self) -> bool:
        return self.attn == "cross"

    def spec(self, k: int | None = None) -> GQASpec:
        """The layer these settings describe: the one way a :class:`GQASpec` is made from them.

        ``k`` replaces num_key_value_heads (``k=s.n`` is the multi-head layer of the same
        width, which "pooled" weights start from and KV sharing compares against). A real
        layer's spec also carries its RoPE, QK norm, softmax scale and soft-cap.
        """
        if self.weights == "real":
            from gqa_viz.app import real_sources  # reads the model's config.json

            return replace(
                real_sources.layer_spec(self.model, self.layer),
                num_key_value_heads=self.k if k is None else k,
                use_bias=self.bias,
                use_gate=self.gate,
                sliding_window=self.window or None,
                dropout=self.dropout,
            )
        return GQASpec(
            num_query_heads=self.n,
            num_key_value_heads=self.k if k is None else k,
            head_dim=self.h,
            use_bias=self.bias,
            use_gate=self.gate,
            sliding_window=self.window or None,
            dropout=self.dropout,
        )


DEFAULTS = Settings()

# Fields that change only how a result is drawn, not what is computed.
VIEW_FIELDS = ("view", "scale", "pool")


def compute_key(s: Settings) -> Settings:
    """``s`` with the drawing-only fields at their defaults: the key of a computed result."""
    return replace(s, **{name: getattr(DEFAULTS, name) for name in VIEW_FIELDS})


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}


def _parse(field_type, raw: str):
    if field_type is bool:
        low = raw.strip().lower()
        if low in _BOOL_TRUE:
            return True
        if low in _BOOL_FALSE:
            return False
        raise ValueError("expected 1/0 or true/false")
    if field_type is int:
        # Any number of digits (the text is cut at MAX_TEXT_CHARS first): an out-of-range one is
        # then clamped with a message naming the limit, like any other.
        if not re.fullmatch(r"[+-]?\d+", raw.strip()):
            raise ValueError("expected a whole number")
        return int(raw)
    if field_type is float:
        return _finite(float(raw))
    return raw


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


_TYPES = {"bool": bool, "int": int, "float": float, "str": str}
_FIELD_TYPES = {f.name: f.type for f in fields(Settings)}


def coerce(name: str, value: Any) -> Any:
    """``value`` as the type of the field ``name``, parsed like a URL parameter if it is not.

    Widget state normally arrives typed, but a client can send any value for any widget (and
    Streamlit can hand back the serialized form of a widget not yet drawn in this run, e.g.
    after a page switch): "12" for a number becomes 12. Raises ValueError when it cannot.
    """
    kind = _TYPES[_FIELD_TYPES[name]]
    if isinstance(value, bool):
        if kind is bool:
            return value
        raise ValueError(f"expected {kind.__name__}, got a boolean")
    if kind is float and isinstance(value, int | float):
        return _finite(float(value))
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, kind):
        return value
    return _parse(kind, str(value)[: MAX_TEXT_CHARS + 1])


def from_query_params(params: dict[str, Any]) -> tuple[Settings, list[str]]:
    """Settings from URL parameters, plus one message per value that was changed or ignored."""
    messages: list[str] = []
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name not in params:
            continue
        raw = params[f.name]
        if isinstance(raw, list):
            if len({str(r) for r in raw}) > 1:
                messages.append(
                    f"URL parameter {f.name} is given {len(raw)} times; only one is allowed, "
                    f"using the last, {str(raw[-1])[:40]!r}."
                )
            raw = raw[-1] if raw else ""
        raw = str(raw)[: MAX_TEXT_CHARS + 1]
        try:
            values[f.name] = _parse(_TYPES[f.type], raw)
        except (ValueError, OverflowError) as e:
            messages.append(
                f"URL parameter {f.name}={raw[:40]!r} ignored ({e}); "
                f"using {getattr(DEFAULTS, f.name)!r}."
            )
    unknown = sorted(set(params) - {f.name for f in fields(Settings)})
    if unknown:
        messages.append(f"Unknown URL parameter(s) ignored: {_names(unknown)}.")
    settings, more = validate(replace(DEFAULTS, **values))
    return settings, messages + more


# The numeric fields' limits: (lowest, highest, the name messages use). The highest batch item
# is batch - 1; this is the most any batch allows.
RANGES: dict[str, tuple[Any, Any, str]] = {
    "n": (1, MAX_QUERY_HEADS, "num_query_heads (n)"),
    "k": (1, MAX_QUERY_HEADS, "num_key_value_heads (k)"),
    "h": (HEAD_DIMS[0], MAX_HEAD_DIM, "head_dim (h)"),
    "d": (1, MAX_MODEL_DIM, "model dim (d)"),
    "t": (1, MAX_LEN, "query length T (t)"),
    "s": (1, MAX_LEN, "key/value length S (s)"),
    "batch": (1, MAX_BATCH, "batch size (batch)"),
    "item": (0, MAX_BATCH - 1, "batch item (item)"),
    "window": (0, MAX_LEN, "sliding_window (window, 0 = off)"),
    "pad": (0, MAX_LEN, "query padding (pad)"),
    "kpad": (0, MAX_LEN, "key padding (kpad)"),
    "dropout": (0.0, MAX_DROPOUT, "dropout"),
    "seed": (0, MAX_SEED, "seed"),
}


def _names(names: list[str], room: int = 200) -> str:
    """``names`` joined by commas, whole names only, within about ``room`` characters; the
    rest counted ("and 12 more")."""
    shown: list[str] = []
    for name in names:
        name = _short(name)
        if shown and len(", ".join([*shown, name])) > room:
            break
        shown.append(name)
    rest = len(names) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest else "")


TEXT_FIELDS = ("text", "source")


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def out_of_limits(name: str, value: Any, hi: Any = None) -> str | None:
    """Why ``value`` is outside the limits of the field ``name``, naming them; None if within.

    ``hi`` overrides the highest value of :data:`RANGES` (the batch item's, for a batch).
    """
    if name in TEXT_FIELDS:
        return (
            f"{name} is limited to {MAX_TEXT_CHARS} characters"
            if len(value) > MAX_TEXT_CHARS
            else None
        )
    if name not in RANGES:
        return None
    lo, top, what = RANGES[name]
    hi = top if hi is None else hi
    if lo <= value <= hi:  # False for NaN too
        return None
    return f"{what} must be between {lo} and {hi}; got {_short(value)}"


def sanitize(values: dict[str, Any], current: Settings) -> tuple[dict[str, Any], list[str]]:
    """Widget values given their field's type and limits: (the values that change, messages).

    Values come from the browser, which can send anything; one that cannot be read as its
    type, or is outside its limits, falls back to its value in ``current``, with a message
    that says why. (Streamlit would silently put an out-of-range number back to the widget's
    lowest value.) A value of the right type within the limits is left out of the changes.
    """
    changed: dict[str, Any] = {}
    messages = []
    for name, value in values.items():
        kept = getattr(current, name)
        shown = repr(kept) if len(repr(kept)) <= 40 else "the previous value"
        try:
            fixed = coerce(name, value)
        except (ValueError, OverflowError) as e:
            fixed = kept
            messages.append(f"{name}: {str(value)[:40]!r} is not valid; kept {shown} ({e}).")
        else:
            why = out_of_limits(name, fixed)
            if why is not None:
                fixed = kept
                messages.append(f"{why}; kept {shown}.")
        if type(fixed) is not type(value) or fixed != value:
            changed[name] = fixed
    return changed, messages


def validate(s: Settings) -> tuple[Settings, list[str]]:
    """Clamp every field into its limits; one message per change, naming the limit."""
    msgs: list[str] = []

    def clamp(name: str, hi=None):
        value = getattr(s, name)
        why = out_of_limits(name, value, hi)
        if why is None:
            return value
        lo, top, _ = RANGES[name]
        fixed = lo if value != value else min(max(value, lo), top if hi is None else hi)
        msgs.append(f"{why}, using {fixed}.")
        return fixed

    def choice(name: str, options: tuple[str, ...]):
        value = getattr(s, name)
        if value not in options:
            msgs.append(f"{name} must be one of {', '.join(options)}; got {value[:40]!r}.")
            return getattr(DEFAULTS, name)
        return value

    v: dict[str, Any] = {}
    v["n"] = clamp("n")
    k = clamp("k")
    if k not in divisors(v["n"]):
        fixed = nearest_divisor(v["n"], k)
        msgs.append(
            f"num_query_heads ({v['n']}) must be divisible by num_key_value_heads ({k}); "
            f"valid choices are {', '.join(map(str, divisors(v['n'])))}. Using {fixed}."
        )
        k = fixed
    v["k"] = k
    v["h"] = clamp("h")
    v["d"] = clamp("d")
    v["mode"] = choice("mode", MODES)
    v["attn"] = choice("attn", ATTENTION_KINDS)
    v["weights"] = choice("weights", WEIGHT_SOURCES)
    v["view"] = choice("view", VIEWS)
    v["scale"] = choice("scale", SCALES)
    v["pool"] = choice("pool", POOLS)
    for name in TEXT_FIELDS:
        text = getattr(s, name)
        why = out_of_limits(name, text)
        if why is not None:
            msgs.append(f"{why}; it was cut.")
            text = text[:MAX_TEXT_CHARS]
        v[name] = text
    for name in ("t", "s", "batch", "window", "pad", "kpad", "dropout", "seed"):
        v[name] = clamp(name)
    v["item"] = clamp("item", v["batch"] - 1)
    v["causal"], v["training"], v["bias"], v["gate"] = s.causal, s.training, s.bias, s.gate
    v["model"], v["layer"] = DEFAULT_MODEL, DEFAULTS.layer
    if v["weights"] == "trained":
        _trained(s, v, msgs)
    elif v["weights"] == "real":
        _real(s, v, msgs)
    return Settings(**v), msgs


# The fields of a trained layer's shape: a value asked for in the URL is reported if ignored.
TRAINED_SHAPE_FIELDS = ("n", "k", "h", "d", "bias", "gate")


def fixed_by_trained(model: str, layer: int) -> dict[str, Any]:
    """The fields a shipped trained model fixes: the one place this rule is written.

    Its shape (N, K, H, D, biases, no gate), self-attention, and ``layer`` clamped to its
    layers. An unknown ``model`` is replaced by :data:`DEFAULT_MODEL` (returned as "model").
    """
    from gqa_viz import trained  # loads model files: only when a trained layer is asked for

    model = model if model in trained.names() else DEFAULT_MODEL
    cfg = trained.load(model).cfg
    return {
        "model": model,
        "layer": min(max(layer, 0), cfg.num_layers - 1),
        "n": cfg.num_query_heads,
        "k": cfg.num_key_value_heads,
        "h": cfg.head_dim,
        "d": cfg.d_model,
        "bias": True,
        "gate": False,
        "attn": "self",
    }


def _ignored(v: dict[str, Any], fixed: dict[str, Any], fields) -> list[str]:
    """ "name=value" for each of ``fields`` asked for in ``v`` that a model's layer overrides; a
    value left at its default was not asked for, so it gets no message."""
    return [
        f"{name}={v[name]}"
        for name in fields
        if v[name] != fixed[name] and v[name] != getattr(DEFAULTS, name)
    ]


def _trained(s: Settings, v: dict[str, Any], msgs: list[str]) -> None:
    """A trained layer fixes the shape and the input (its task's prompt, drawn with the seed:
    self-attention, one batch item): :func:`fixed_by_trained`."""
    from gqa_viz import trained

    names = trained.names()
    if s.model not in names:
        msgs.append(f"model must be one of {', '.join(names)}; got {s.model[:40]!r}.")
    fixed = fixed_by_trained(s.model, s.layer)
    if fixed["layer"] != s.layer:
        top = trained.load(fixed["model"]).cfg.num_layers - 1
        msgs.append(f"layer must be between 0 and {top}; got {s.layer}, using {fixed['layer']}.")
    changed = _ignored(v, fixed, (*TRAINED_SHAPE_FIELDS, "attn"))
    if changed:
        msgs.append(
            f"The trained model {fixed['model']} fixes N = {fixed['n']}, K = {fixed['k']}, "
            f"H = {fixed['h']}, D = {fixed['d']}, with biases and no gate, in self-attention; "
            f"{', '.join(changed)} ignored."
        )
    v.update(fixed, batch=1, item=0)


# What a real layer fixes besides its shape: the input is the prompt's hidden states for that
# layer (self-attention, one batch item, no padding), run causally with the layer's window.
REAL_FIXED_FIELDS = (*TRAINED_SHAPE_FIELDS, "attn", "mode", "causal", "window", "pad", "kpad")


def real_models() -> list[str]:
    """The listed real models whose layers the Playground's controls can hold (an empty list
    when this server has none: the app never downloads one)."""
    from gqa_viz.app import real_sources

    def fits(arch) -> bool:
        return (
            arch.num_query_heads <= MAX_QUERY_HEADS
            and HEAD_DIMS[0] <= arch.head_dim <= MAX_HEAD_DIM
            and arch.model_dim <= MAX_MODEL_DIM
        )

    return [e.name for e in real_sources.models() if e.usable and fits(e.summary.arch)]


def fixed_by_real(model: str, layer: int) -> dict[str, Any]:
    """The fields a real model's layer fixes (:data:`REAL_FIXED_FIELDS`): the one place this
    rule is written. ``model`` not among :func:`real_models` is replaced by the first of them
    (returned as "model"); ``layer`` is clamped to its layers. The layer's sliding window is
    kept when it is under ``MAX_LEN`` (a longer one masks nothing in a prompt, which is far
    shorter). ValueError when there is no real model.
    """
    from gqa_viz.app import real_sources

    names = real_models()
    if not names:
        raise ValueError("there is no usable model on this server")
    model = model if model in names else names[0]
    arch = real_sources.architecture(model)
    layer = min(max(layer, 0), arch.num_layers - 1)
    window = arch.windows[layer] or 0
    return {
        "model": model,
        "layer": layer,
        "n": arch.num_query_heads,
        "k": arch.num_kv_heads,
        "h": arch.head_dim,
        "d": arch.model_dim,
        "bias": real_sources.layer_spec(model, layer).use_bias,
        "gate": False,
        "attn": "self",
        "mode": "sentence",
        "causal": True,
        "window": window if window < MAX_LEN else 0,
        "pad": 0,
        "kpad": 0,
    }


def _real(s: Settings, v: dict[str, Any], msgs: list[str]) -> None:
    """A real layer fixes its shape and its input (:func:`fixed_by_real`); with no real model
    on this server the weights fall back to "pooled", with a message."""
    from gqa_viz.app import real_sources

    names = real_models()
    if not names:
        msgs.append(
            f"weights=real needs a model on this server and none is there (it looks in "
            f"{real_sources.where_text()}); using pooled."
        )
        v["weights"] = "pooled"
        return
    if s.model not in names and s.model != DEFAULT_MODEL:  # the default means "the first one"
        e = {e.name: e for e in real_sources.models()}.get(s.model)
        if e is None:
            shown = s.model[:60].replace("`", "'")  # echoed in Markdown: short, as code
            why = f"There is no model called `{shown}` on this server"
        elif e.problem is not None:
            why = f"{e.name} cannot be opened: {e.problem}"
        else:
            why = (
                f"{e.name}'s layers do not fit the Playground (at most {MAX_QUERY_HEADS} query "
                f"heads, head_dim {HEAD_DIMS[0]} to {MAX_HEAD_DIM}, model dim {MAX_MODEL_DIM})"
            )
        msgs.append(f"{why}; using {names[0]}.")
    fixed = fixed_by_real(s.model, s.layer)
    if fixed["layer"] != s.layer and s.layer != DEFAULTS.layer:  # (a one-layer model: no news)
        top = real_sources.architecture(fixed["model"]).num_layers - 1
        msgs.append(
            f"layer must be between 0 and {top} for {fixed['model']}; got {s.layer}, "
            f"using {fixed['layer']}."
        )
    changed = _ignored(v, fixed, REAL_FIXED_FIELDS)
    if changed:
        msgs.append(
            f"Layer {fixed['layer']} of {fixed['model']} fixes N = {fixed['n']}, "
            f"K = {fixed['k']}, H = {fixed['h']}, D = {fixed['d']}, "
            f"{'with' if fixed['bias'] else 'without'} biases, no gate, and its input: the "
            f"prompt's hidden states, causal{_window_words(fixed['window'])}; "
            f"{', '.join(changed)} ignored."
        )
    v.update(fixed, batch=1, item=0)


def _window_words(window: int) -> str:
    return f", sliding_window = {window}" if window else ""


def check_size(
    s: Settings, T: int, S: int, B: int, limit: int = MAX_SCORE_CELLS, why: str = ""
) -> None:
    """Raise ValueError, naming the limit, when B x N x T x S scores are too many to compute.

    ``limit`` and ``why`` (what the limit is, for the message): a page's own, stricter limit.
    """
    cells = B * s.n * T * S
    if cells > limit:
        why = why or "32 heads at T = S = 2048"
        raise ValueError(
            f"B x N x T x S = {B} x {s.n} x {T} x {S} = {cells:,} attention scores; the limit is "
            f"{limit:,} ({why}). Lower the batch size, the number of query heads or the lengths."
        )


def to_query_params(s: Settings) -> dict[str, str]:
    """The URL form of ``s``: only the fields that differ from the defaults."""
    out = {}
    for name, value in asdict(s).items():
        if value == getattr(DEFAULTS, name):
            continue
        out[name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return out
