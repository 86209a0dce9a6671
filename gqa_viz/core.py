"""The functional core: grouped-query attention as pure, jitted JAX functions.

Axis letters, used in every shape comment and einsum here: B batch, T query length,
S key/value length, N query heads, K kv heads, G = N // K query heads per kv head,
H head_dim, D model dim (the query's feature size; Dk, Dv for key and value inputs).

Parameters are a plain pytree in the layout of Keras' ``GroupQueryAttention`` weights::

    {"query":            {"kernel": [D, N, H],  "bias": [N, H]},
     "key":              {"kernel": [Dk, K, H], "bias": [K, H]},
     "value":            {"kernel": [Dv, K, H], "bias": [K, H]},
     "gate":             {"kernel": [D, N, H],  "bias": [N, H]},   # only with use_gate
     "attention_output": {"kernel": [N, H, D],  "bias": [D]},      # no "bias" without use_bias
     "query_norm":       {"scale": [H]},                          # only with qk_norm
     "key_norm":         {"scale": [H]}}                          # only with qk_norm

Three entry points share one forward pass:

* :func:`attention` returns the output (and, with ``return_scores``, the probabilities).
  Without scores and without active dropout, on an accelerator (or when asked with
  ``implementation``), it runs ``jax.nn.dot_product_attention``, the fused path Keras takes
  (Keras leaves it whenever ``dropout > 0``, even at inference; here only active dropout
  does: both paths agree on every row, so only speed differs); on a CPU it runs the explicit
  heads-major contraction, which is faster there.
* :func:`attention_trace` returns every intermediate a teacher wants to show (an
  :class:`AttentionTrace`). It is a separate compiled function, so the plain path pays
  nothing for it.

Beyond Keras, the spec switches on what real decoder LLMs add to this layer (all off by
default, so a Keras-configured spec computes exactly Keras' layer): rotary position embedding
on Q and K (``rope``, :mod:`gqa_viz.rope`), a per-head RMS norm of Q and K before it
(``qk_norm``: Qwen3, Gemma 3), another softmax scale than 1/sqrt(H) (``scale``: Gemma 2's
``query_pre_attn_scalar ** -0.5``) and tanh soft-capping of the logits (``logit_softcap``:
Gemma 2). The order is theirs: project, norm, rotate, scale, q.k, cap, mask, softmax.

Query head n reads kv head n // G (Keras' ``ops.repeat`` order). K and V are never repeated
here: queries are viewed as [B, T, K, G, H] and contracted against [B, S, K, H] directly.
How the masks of a call merge, and what a row with no allowed key returns, is documented
once, in :func:`gqa_viz.masks.keras_mask`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gqa_viz import masks as M
from gqa_viz.rope import Rope, rotate, tables

Params = dict[str, dict[str, jax.Array]]

FULLY_MASKED_ROWS = ("zero", "uniform")


@dataclass(frozen=True)
class HeadNorm:
    """RMS norm over each head's H features: x / sqrt(mean(x^2) + eps) * (offset + scale).

    Qwen3 uses offset 0 (the weight is the gain), Gemma 3 offset 1 (its weights are stored as
    gain - 1). Computed in float32, as the reference implementations do.
    """

    eps: float = 1e-6
    offset: float = 0.0


@dataclass(frozen=True)
class GQASpec:
    """The static hyperparameters of one layer (hashable: a jit static argument).

    The first seven fields are Keras' ``GroupQueryAttention`` arguments. ``sliding_window`` is
    Keras' symmetric band |i - j| < w; with ``use_causal_mask`` it is exactly the "last w
    keys" window of Mistral, Gemma 2 and Hugging Face (key j allowed iff 0 <= i - j < w).
    ``rope``, ``qk_norm``, ``scale`` and ``logit_softcap`` are the decoder-LLM extensions of
    the module docstring; None means off.
    """

    num_query_heads: int
    num_key_value_heads: int
    head_dim: int
    use_bias: bool = True
    use_gate: bool = False
    sliding_window: int | None = None
    dropout: float = 0.0
    rope: Rope | None = None
    qk_norm: HeadNorm | None = None
    scale: float | None = None
    logit_softcap: float | None = None

    def __post_init__(self):
        for name in ("num_query_heads", "num_key_value_heads", "head_dim"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        N, K = self.num_query_heads, self.num_key_value_heads
        if N % K != 0:
            raise ValueError(
                f"num_query_heads ({N}) must be divisible by num_key_value_heads ({K}): "
                f"each kv head is shared by num_query_heads // num_key_value_heads query heads."
            )
        w = self.sliding_window
        if w is not None and (not _is_int(w) or w <= 0):
            raise ValueError(f"sliding_window must be None or a positive integer, got {w!r}.")
        if not (0.0 <= float(self.dropout) < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        if self.rope is not None:
            if not isinstance(self.rope, Rope):
                raise ValueError(f"rope must be None or a gqa_viz.rope.Rope, got {self.rope!r}.")
            self.rope.dim(self.head_dim)  # raises for a rotary_dim the heads cannot hold
        if self.qk_norm is not None:
            if not isinstance(self.qk_norm, HeadNorm):
                raise ValueError(f"qk_norm must be None or a HeadNorm, got {self.qk_norm!r}.")
            if not (math.isfinite(self.qk_norm.eps) and self.qk_norm.eps >= 0):
                raise ValueError(f"HeadNorm eps must be finite and >= 0, got {self.qk_norm.eps!r}.")
        for name in ("scale", "logit_softcap"):
            value = getattr(self, name)
            # numbers.Real takes NumPy scalars; bool is not a scale; inf would make NaNs.
            real = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if value is not None and not (real and 0 < value < math.inf):
                raise ValueError(f"{name} must be None or a positive number, got {value!r}.")

    @property
    def softmax_scale(self) -> float:
        """What q.k is multiplied by before the softmax: ``scale``, else 1/sqrt(H)."""
        return self.scale if self.scale is not None else 1.0 / math.sqrt(self.head_dim)

    @property
    def groups(self) -> int:
        """G: query heads per kv head."""
        return self.num_query_heads // self.num_key_value_heads


def divisors(n: int) -> list[int]:
    """The valid num_key_value_heads for ``n`` query heads: K must divide N."""
    return [k for k in range(1, n + 1) if n % k == 0]


def nearest_divisor(n: int, k: int) -> int:
    """The divisor of ``n`` closest to ``k`` (ties go to the smaller)."""
    return min(divisors(n), key=lambda d: (abs(d - k), d))


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class AttentionTrace(NamedTuple):
    """Every intermediate of one forward pass. Shapes use the module's axis letters."""

    query: jax.Array  # [B, T, N, H] projected queries (normed and rotated if set; unscaled)
    key: jax.Array  # [B, S, K, H] projected keys, one per kv head (normed and rotated if set)
    value: jax.Array  # [B, S, K, H] projected values
    logits: jax.Array  # [B, N, T, S] q.k * softmax_scale (soft-capped if set), before masking
    mask: jax.Array | None  # [B or 1, T, S] True = attend; None when nothing masks
    probs: jax.Array  # [B, N, T, S] softmax probabilities: Keras' returned "scores"
    dropped_probs: jax.Array  # [B, N, T, S] probs after dropout (== probs unless training)
    gate: jax.Array | None  # [B, T, N, H] sigmoid gate, with use_gate
    context: jax.Array  # [B, T, N, H] per-head weighted sum of values (gated if use_gate)
    output: jax.Array  # [B, T, D]


# ---------------------------------------------------------------------------------------------
# Validation: from shapes only, before tracing, so errors name the user's values.


def check_inputs(
    spec: GQASpec,
    params: Params | None,
    query,
    value,
    key=None,
    *,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
) -> None:
    """Raise ValueError, naming the offending shapes and the rule, for inputs that cannot work."""
    key = value if key is None else key
    for name, x in (("query", query), ("value", value), ("key", key)):
        if jnp.ndim(x) != 3:
            raise ValueError(
                f"{name} must have shape [batch, length, features], got shape {jnp.shape(x)}."
            )
    (Bq, T, D), (Bv, S, Dv), (Bk, Sk, Dk) = query.shape, value.shape, key.shape
    if D != Dv:
        raise ValueError(
            f"The last dimension of query and value must be equal (the output has the query's "
            f"feature size), got query {query.shape} and value {value.shape}."
        )
    if S != Sk:
        raise ValueError(
            f"key and value must have the same length (one key per value), got key {key.shape} "
            f"and value {value.shape}."
        )
    if not (Bq == Bv == Bk):
        raise ValueError(
            f"query, value and key must have the same batch size, got {Bq}, {Bv} and {Bk}."
        )
    for name, x in (("query", query), ("value", value), ("key", key)):
        if min(x.shape) <= 0:
            raise ValueError(f"{name} has an empty axis: shape {x.shape}.")
    if params is not None:
        N, K, H = spec.num_query_heads, spec.num_key_value_heads, spec.head_dim
        expected = {
            ("query", "kernel"): (D, N, H),
            ("key", "kernel"): (Dk, K, H),
            ("value", "kernel"): (Dv, K, H),
            ("attention_output", "kernel"): (N, H, D),
        }
        if spec.use_gate:
            expected[("gate", "kernel")] = (D, N, H)
        if spec.qk_norm is not None:
            expected[("query_norm", "scale")] = (H,)
            expected[("key_norm", "scale")] = (H,)
        if spec.use_bias:
            biases = {"query": (N, H), "key": (K, H), "value": (K, H), "attention_output": (D,)}
            if spec.use_gate:
                biases["gate"] = (N, H)
            expected.update({(layer, "bias"): shape for layer, shape in biases.items()})
        present = {(layer, name) for layer, ws in params.items() for name in ws}
        if present != set(expected):
            missing = sorted("/".join(w) for w in set(expected) - present) or "nothing"
            extra = sorted("/".join(w) for w in present - set(expected)) or "nothing"
            raise ValueError(
                f"The weights do not fit use_bias={spec.use_bias}, use_gate={spec.use_gate}"
                f"{', qk_norm' if spec.qk_norm is not None else ''}: "
                f"missing {missing}, unexpected {extra}."
            )
        for (layer, name), shape in expected.items():
            got = tuple(params[layer][name].shape)
            if got != shape:
                raise ValueError(
                    f"Weight {layer}/{name} has shape {got} but these inputs need {shape} "
                    f"(model dims query={D}, key={Dk}, value={Dv}; N={N}, K={K}, H={H})."
                )
    B = Bq
    for name, m, want in (
        ("query_mask", query_mask, (B, T)),
        ("value_mask", value_mask, (B, S)),
        ("key_mask", key_mask, (B, S)),
    ):
        if m is not None and tuple(jnp.shape(m)) not in (want, (1, want[1])):
            raise ValueError(
                f"{name} must have shape {want} (or {(1, want[1])}), got {jnp.shape(m)}."
            )
    if attention_mask is not None:
        shape = tuple(jnp.shape(attention_mask))
        if shape not in ((B, T, S), (1, T, S), (T, S)):
            raise ValueError(
                f"attention_mask must have shape (B, T, S) = {(B, T, S)} (or (1, T, S), (T, S)), "
                f"got {shape}."
            )
    for name, m in (
        ("query_mask", query_mask),
        ("value_mask", value_mask),
        ("key_mask", key_mask),
        ("attention_mask", attention_mask),
    ):
        if m is not None and not _maskable_dtype(m):
            raise ValueError(
                f"{name} must be boolean or numeric (nonzero = attend), got dtype {m.dtype}."
            )


def _maskable_dtype(m) -> bool:
    kind = jnp.asarray(m).dtype.kind if not hasattr(m, "dtype") else m.dtype.kind
    return kind in "biuf"


# ---------------------------------------------------------------------------------------------
# The forward pass.


def dense(x, layer: dict[str, jax.Array], equation: str):
    """``einsum(equation, x, kernel) + bias``: one Keras EinsumDense layer of the weights."""
    y = jnp.einsum(equation, x, layer["kernel"])
    return y + layer["bias"] if "bias" in layer else y


def _large_negative(dtype) -> float:
    # Keras' Softmax fills masked logits with this before the softmax.
    return -3e4 if jnp.dtype(dtype) == jnp.float16 else -1e9


def project(params: Params, spec: GQASpec, query, value, key):
    """Q [B, T, N, H], K and V [B, S, K, H] (one per kv head, not repeated), and the gate."""
    q = dense(query, params["query"], "btd,dnh->btnh")  # [B, T, N, H]
    k = dense(key, params["key"], "bsd,dkh->bskh")  # [B, S, K, H]
    v = dense(value, params["value"], "bsd,dkh->bskh")  # [B, S, K, H]
    gate = None
    if spec.use_gate:
        gate = jax.nn.sigmoid(dense(query, params["gate"], "btd,dnh->btnh"))  # [B, T, N, H]
    return q, k, v, gate


def head_norm(x, scale, norm: HeadNorm):
    """Per-head RMS norm of x [B, T, N or K, H] with gain ``scale`` [H] (see :class:`HeadNorm`)."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + norm.eps)
    return (normed * (norm.offset + scale.astype(jnp.float32))).astype(x.dtype)


def positions_and_norms(params: Params, spec: GQASpec, q, k, query_positions, key_positions):
    """Q [B, T, N, H] and K [B, S, K, H] after the spec's head norm and RoPE (each if set).

    Positions are integer [B or 1, T] and [B or 1, S]; None means 0, 1, ... . Dynamic RoPE
    reads the sequence length as S (see :mod:`gqa_viz.rope`).
    """
    if spec.qk_norm is not None:
        q = head_norm(q, params["query_norm"]["scale"], spec.qk_norm)
        k = head_norm(k, params["key_norm"]["scale"], spec.qk_norm)
    if spec.rope is not None:
        T, S, H = q.shape[1], k.shape[1], spec.head_dim
        if query_positions is None:
            query_positions = jnp.arange(T)[None]  # [1, T]
        if key_positions is None:
            key_positions = jnp.arange(S)[None]  # [1, S]
        q = rotate(q, *tables(spec.rope, query_positions, H, S))
        k = rotate(k, *tables(spec.rope, key_positions, H, S))
    return q, k


def _merged_mask(spec, T, S, B, query_mask, value_mask, key_mask, attention_mask, causal):
    mask = M.keras_mask(
        query_mask=query_mask,
        value_mask=value_mask,
        key_mask=key_mask,
        attention_mask=attention_mask,
        use_causal_mask=causal,
        sliding_window=spec.sliding_window,
    )
    return None if mask is None else M.materialize(mask, T, S, B)  # [B or 1, T, S]


def scores_and_context(spec, q, k, v, mask, dropout_rng, training, fully_masked_rows):
    """Logits, probabilities and context, computed the way Keras does with scores.

    Public so that a decode step (:mod:`gqa_viz.decode`) rounds exactly like the full pass.
    """
    B, T, N, H = q.shape
    K, G = spec.num_key_value_heads, spec.groups
    S = k.shape[1]
    # Keras scales the queries (not the logits) by 1/sqrt(H); same here, for the same rounding.
    # Heads-major layouts make both contractions plain batched matmuls over (b, k): about 2x
    # faster on CPU than contracting in the [B, T, N, H] layout.
    qg = _heads_major(q * jnp.asarray(spec.softmax_scale, q.dtype), K, G)  # [B, K, G, T, H]
    kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, S, H]
    logits = jnp.einsum("bkgth,bksh->bkgts", qg, kt)  # [B, K, G, T, S]
    if spec.logit_softcap is not None:
        cap = jnp.asarray(spec.logit_softcap, logits.dtype)
        logits = jnp.tanh(logits / cap) * cap
    if mask is None:
        probs = jax.nn.softmax(logits, axis=-1)
    else:
        allowed = mask[:, None, None]  # [B or 1, 1, 1, T, S]
        filled = jnp.where(allowed, logits, _large_negative(logits.dtype))
        e = jnp.exp(filled - jnp.max(filled, axis=-1, keepdims=True))
        total = jnp.sum(e, axis=-1, keepdims=True)
        if fully_masked_rows == "zero":
            # Keras zeroes masked entries after the softmax. Elsewhere they are exp(-1e9) = 0
            # already, so only rows with no allowed key change: dividing by inf zeroes them in
            # one pass instead of a second where over [B, N, T, S].
            total = jnp.where(jnp.any(allowed, axis=-1, keepdims=True), total, jnp.inf)
        probs = e / total
    dropped = probs
    if training and spec.dropout > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - spec.dropout, probs.shape)
        dropped = jnp.where(keep, probs / (1.0 - spec.dropout), 0.0).astype(probs.dtype)
    # Context stays heads-major; the output projection contracts it in that layout. Asking
    # for [B, T, N, H] here makes XLA write the probabilities a second time, transposed.
    context = jnp.einsum("bkgts,bksh->bkgth", dropped, vt)  # [B, K, G, T, H]
    return (
        logits.reshape(B, N, T, S),
        probs.reshape(B, N, T, S),
        dropped.reshape(B, N, T, S),
        context,
    )


def _fused_is_faster(implementation: str | None) -> bool:
    """Whether the output-only path calls jax.nn.dot_product_attention.

    ``implementation`` "xla" or "cudnn" asks for it. With None it is used on accelerators,
    where its fused kernels win; on a CPU the heads-major contraction of :func:`scores_and_context`
    measured 0.75-0.97x its time (``python -m bench.core``), so the CPU uses that.
    """
    if implementation is not None:
        return True
    return jax.default_backend() != "cpu"


def _fused(spec, q, k, v, mask, causal_only, fully_masked_rows, implementation):
    """Context through jax.nn.dot_product_attention (Keras' path without scores)."""
    context = jax.nn.dot_product_attention(
        q,
        k,
        v,
        mask=None if causal_only or mask is None else mask[:, None],
        scale=spec.softmax_scale,
        is_causal=causal_only,
        implementation=implementation,
    )  # [B, T, N, H]
    if mask is not None and not causal_only and fully_masked_rows == "zero":
        # The fused kernel averages all keys on a row with none allowed; zero it instead.
        has_key = jnp.any(mask, axis=-1)  # [B or 1, T]
        context = context * has_key[:, :, None, None].astype(context.dtype)
    return context


def _forward(
    params,
    query,
    value,
    key,
    query_mask,
    value_mask,
    key_mask,
    attention_mask,
    dropout_rng,
    query_positions,
    key_positions,
    *,
    spec,
    use_causal_mask,
    training,
    fully_masked_rows,
    want,
    implementation,
) -> Any:
    key = value if key is None else key
    B, T, _ = query.shape
    S = value.shape[1]
    q, k, v, gate = project(params, spec, query, value, key)
    q, k = positions_and_norms(params, spec, q, k, query_positions, key_positions)
    mask = _merged_mask(
        spec, T, S, B, query_mask, value_mask, key_mask, attention_mask, use_causal_mask
    )
    dropout_active = bool(training) and spec.dropout > 0.0
    fusable = not dropout_active and spec.logit_softcap is None  # the fused kernel cannot cap
    if want == "output" and fusable and _fused_is_faster(implementation):
        causal_only = (
            use_causal_mask
            and all(m is None for m in (query_mask, value_mask, key_mask, attention_mask))
            and spec.sliding_window is None
        )
        context = _fused(spec, q, k, v, mask, causal_only, fully_masked_rows, implementation)
        logits = probs = dropped = None
    else:
        logits, probs, dropped, context = scores_and_context(
            spec, q, k, v, mask, dropout_rng, training, fully_masked_rows
        )
    out_layer = params["attention_output"]
    if context.ndim == 4:  # fused path: [B, T, N, H]
        if gate is not None:
            context = context * gate
        output = dense(context, out_layer, "btnh,nhd->btd")  # [B, T, D]
    else:  # explicit path: [B, K, G, T, H]
        K, G = spec.num_key_value_heads, spec.groups
        if gate is not None:
            context = context * _heads_major(gate, K, G)
        kernel = out_layer["kernel"].reshape(K, G, *out_layer["kernel"].shape[1:])  # [K, G, H, D]
        output = dense(context, {**out_layer, "kernel": kernel}, "bkgth,kghd->btd")  # [B, T, D]
    if want == "output":
        return output
    if want == "scores":
        return output, probs
    if context.ndim == 5:
        B, K, G, T, H = context.shape
        context = context.transpose(0, 3, 1, 2, 4).reshape(B, T, K * G, H)  # [B, T, N, H]
    return AttentionTrace(q, k, v, logits, mask, probs, dropped, gate, context, output)


def _heads_major(x, K: int, G: int):
    """[B, T, N, H] -> [B, K, G, T, H] (query head n = k * G + g)."""
    B, T, _, H = x.shape
    return x.reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4)


_STATIC = ("spec", "use_causal_mask", "training", "fully_masked_rows", "want", "implementation")
_forward_jit = jax.jit(_forward, static_argnames=_STATIC)


def _call(
    want,
    params,
    query,
    value,
    key,
    *,
    spec,
    query_mask,
    value_mask,
    key_mask,
    attention_mask,
    use_causal_mask,
    training,
    dropout_rng,
    fully_masked_rows,
    implementation,
    query_positions=None,
    key_positions=None,
):
    if fully_masked_rows not in FULLY_MASKED_ROWS:
        raise ValueError(
            f"fully_masked_rows must be one of {FULLY_MASKED_ROWS}, got {fully_masked_rows!r}."
        )
    query_mask, value_mask, key_mask, attention_mask = (
        m if m is None or hasattr(m, "shape") else np.asarray(m)
        for m in (query_mask, value_mask, key_mask, attention_mask)
    )
    check_inputs(
        spec,
        params,
        query,
        value,
        key,
        query_mask=query_mask,
        value_mask=value_mask,
        key_mask=key_mask,
        attention_mask=attention_mask,
    )
    training = bool(training)
    if training and spec.dropout > 0.0 and dropout_rng is None:
        raise ValueError("training with dropout > 0 needs a dropout_rng (a jax.random key).")
    return _forward_jit(
        params,
        query,
        value,
        key,
        query_mask,
        value_mask,
        key_mask,
        attention_mask,
        dropout_rng if training and spec.dropout > 0.0 else None,
        _positions(query_positions, B=query.shape[0], length=query.shape[1], what="query"),
        _positions(key_positions, B=value.shape[0], length=value.shape[1], what="key"),
        spec=spec,
        use_causal_mask=bool(use_causal_mask),
        training=training and spec.dropout > 0.0,
        fully_masked_rows=fully_masked_rows,
        want=want,
        implementation=implementation,
    )


def _positions(positions, *, B: int, length: int, what: str):
    """Integer positions as [B or 1, length], or None; a ValueError naming a wrong shape."""
    if positions is None:
        return None
    positions = jnp.asarray(positions)
    if positions.ndim == 1:
        positions = positions[None]
    if positions.dtype.kind not in "iu" or positions.shape not in ((B, length), (1, length)):
        raise ValueError(
            f"{what}_positions must be integers of shape ({B}, {length}) or ({length},), "
            f"got {positions.dtype} {tuple(positions.shape)}."
        )
    return positions


def attention(
    params: Params,
    query,
    value,
    key=None,
    *,
    spec: GQASpec,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    use_causal_mask: bool = False,
    training: bool = False,
    dropout_rng=None,
    return_scores: bool = False,
    fully_masked_rows: str = "zero",
    implementation: str | None = None,
    query_positions=None,
    key_positions=None,
):
    """Grouped-query attention: query [B, T, D], value [B, S, Dv], key [B, S, Dk] -> [B, T, D].

    With ``return_scores`` also returns the probabilities [B, N, T, S] before dropout (what
    Keras returns). Masks follow :func:`gqa_viz.masks.keras_mask`. ``fully_masked_rows``:
    "zero" (default; rows with no allowed key give context 0 on both paths) or "uniform"
    (Keras' fused path: such rows average all S keys). ``implementation`` "xla" or "cudnn"
    sends the output-only path through ``jax.nn.dot_product_attention`` with that
    implementation; None chooses by backend (see :func:`_fused_is_faster`).
    ``query_positions`` [B or 1, T] and ``key_positions`` [B or 1, S] (integers, default
    0, 1, ...) place tokens for ``spec.rope``; without RoPE they change nothing.
    """
    return _call(
        "scores" if return_scores else "output",
        params,
        query,
        value,
        key,
        spec=spec,
        query_mask=query_mask,
        value_mask=value_mask,
        key_mask=key_mask,
        attention_mask=attention_mask,
        use_causal_mask=use_causal_mask,
        training=training,
        dropout_rng=dropout_rng,
        fully_masked_rows=fully_masked_rows,
        implementation=implementation,
        query_positions=query_positions,
        key_positions=key_positions,
    )


def attention_trace(
    params: Params,
    query,
    value,
    key=None,
    *,
    spec: GQASpec,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    use_causal_mask: bool = False,
    training: bool = False,
    dropout_rng=None,
    fully_masked_rows: str = "zero",
    query_positions=None,
    key_positions=None,
) -> AttentionTrace:
    """Like :func:`attention`, returning every intermediate (see :class:`AttentionTrace`)."""
    return _call(
        "trace",
        params,
        query,
        value,
        key,
        spec=spec,
        query_mask=query_mask,
        value_mask=value_mask,
        key_mask=key_mask,
        attention_mask=attention_mask,
        use_causal_mask=use_causal_mask,
        training=training,
        dropout_rng=dropout_rng,
        fully_masked_rows=fully_masked_rows,
        implementation=None,
        query_positions=query_positions,
        key_positions=key_positions,
    )


# ---------------------------------------------------------------------------------------------
# Parameters.

WEIGHT_ORDER = ("query", "key", "gate", "value", "attention_output")  # Keras' build order
# (input_axes, output_axes) of each kernel, as Keras' EinsumDense reads them from its equation:
# [D, N, H] kernels map D -> (N, H); the output kernel [N, H, D] maps (N, H) -> D.
# A fixed stream per weight name, whichever optional weights exist.
_SEED_INDEX = {
    (layer, name): i
    for i, (layer, name) in enumerate(
        (layer, name) for layer in WEIGHT_ORDER for name in ("kernel", "bias")
    )
}
_FAN_AXES = {
    "query": ((0,), (1, 2)),
    "key": ((0,), (1, 2)),
    "gate": ((0,), (1, 2)),
    "value": ((0,), (1, 2)),
    "attention_output": ((0, 1), (2,)),
}


def param_shapes(spec: GQASpec, query_dim: int, value_dim=None, key_dim=None):
    """{(layer, "kernel" | "bias"): shape} in Keras' get_weights() order."""
    value_dim = query_dim if value_dim is None else value_dim
    key_dim = value_dim if key_dim is None else key_dim
    N, K, H, D = spec.num_query_heads, spec.num_key_value_heads, spec.head_dim, query_dim
    kernels = {
        "query": ((D, N, H), (N, H)),
        "key": ((key_dim, K, H), (K, H)),
        "gate": ((D, N, H), (N, H)),
        "value": ((value_dim, K, H), (K, H)),
        "attention_output": ((N, H, D), (D,)),
    }
    shapes = {}
    for layer in WEIGHT_ORDER:
        if layer == "gate" and not spec.use_gate:
            continue
        kernel, bias = kernels[layer]
        shapes[(layer, "kernel")] = kernel
        if spec.use_bias:
            shapes[(layer, "bias")] = bias
    if spec.qk_norm is not None:
        shapes[("query_norm", "scale")] = (H,)
        shapes[("key_norm", "scale")] = (H,)
    return shapes


def init_params(
    spec: GQASpec,
    query_dim: int,
    value_dim: int | None = None,
    key_dim: int | None = None,
    *,
    seed: int = 0,
    kernel_initializer="glorot_uniform",
    bias_initializer="zeros",
    dtype=jnp.float32,
) -> Params:
    """Fresh weights. Each weight draws from its own generator, seeded by ``seed`` and its name.

    The stream of a weight depends only on its name (``query/kernel``, ...), so turning
    ``use_bias`` or ``use_gate`` on or off leaves every other weight as it was.

    Initializers are Keras names, configs or callables (see :mod:`gqa_viz.keras_objects`).
    An initializer with its own seed uses it for every weight, as Keras does, so equal shapes
    then start equal.
    """
    from gqa_viz.keras_objects import get_initializer, initialize

    kinit, binit = get_initializer(kernel_initializer), get_initializer(bias_initializer)
    params: Params = {}
    shapes = param_shapes(spec, query_dim, value_dim, key_dim)
    for (layer, name), shape in shapes.items():
        if name == "scale":  # a QK norm starts as the identity: gain offset + scale = 1
            value = jnp.full(shape, 1.0 - spec.qk_norm.offset, dtype)
            params.setdefault(layer, {})[name] = value
            continue
        rng = np.random.default_rng([seed, _SEED_INDEX[(layer, name)]])
        if name == "kernel":
            value = initialize(kinit, shape, dtype, rng, fan_axes=_FAN_AXES[layer])
        else:
            value = initialize(binit, shape, dtype, rng)
        params.setdefault(layer, {})[name] = value
    return params


def mha_to_gqa(
    params: Params, spec_mha: GQASpec, num_key_value_heads: int
) -> tuple[Params, GQASpec]:
    """Group a multi-head layer's K/V heads by mean-pooling each group (Ainslie et al., 2023).

    Query heads n*G .. n*G + G - 1 share kv head n, matching Keras' repeat order.
    """
    N = spec_mha.num_query_heads
    if spec_mha.num_key_value_heads != N:
        raise ValueError(
            f"mha_to_gqa starts from a multi-head layer (num_key_value_heads == num_query_heads "
            f"== {N}), got num_key_value_heads={spec_mha.num_key_value_heads}."
        )
    spec = dataclasses.replace(spec_mha, num_key_value_heads=num_key_value_heads)
    K, G = num_key_value_heads, spec.groups
    out = {layer: dict(ws) for layer, ws in params.items()}
    for layer in ("key", "value"):
        kernel = params[layer]["kernel"]  # [Dk, N, H]
        out[layer]["kernel"] = kernel.reshape(kernel.shape[0], K, G, -1).mean(axis=2)  # [Dk, K, H]
        if "bias" in params[layer]:
            out[layer]["bias"] = params[layer]["bias"].reshape(K, G, -1).mean(axis=1)  # [K, H]
    return out, spec
