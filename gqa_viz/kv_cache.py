"""KV cache and memory arithmetic for the presets of :mod:`gqa_viz.models`.

Axis letters as in :mod:`gqa_viz.core`: B batch, S cached tokens, N query heads, K kv heads,
H head_dim; L is the number of layers. One sequence's cache is a key and a value of [S, K, H]
per layer, so::

    kv_cache_bytes = 2 * L * K * H * bytes_per_element * S * B

with S = min(tokens, sliding_window) for a sliding-window model (older entries are evicted).
Every size here is in bytes (a float: int4 is half a byte); divide by :data:`GB` (10**9,
decimal, what GPU makers quote) or :data:`GiB` (2**30, binary) to display. GPU budgets are
taken in bytes too, so "an 80 GB GPU" is ``80 * GB``.

Multi-head latent attention (``attention="mla"``) caches a compressed latent, not K heads:
every function that needs the cache raises ValueError for it rather than print a wrong number.
"""

from __future__ import annotations

import math
from fractions import Fraction

from gqa_viz.models import ModelShape

DTYPE_BYTES: dict[str, float] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int4": 0.5}
GB = 10**9
GiB = 2**30


# ---------------------------------------------------------------------------------------------
# Validation: errors name the offending value.


def _dtype_bytes(dtype: str, what: str = "dtype") -> Fraction:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"Unknown {what} {dtype!r}; expected one of {sorted(DTYPE_BYTES)}.")
    return Fraction(str(DTYPE_BYTES[dtype]))


def _count(value, name: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        bound = "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value!r}.")
    return value


def _positive(value, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return Fraction(value)


def _check_gqa(model: ModelShape) -> None:
    if model.attention == "mla":
        raise ValueError(
            f"{model.name} uses multi-head latent attention (MLA): its cache is a compressed "
            f"latent, not {model.num_key_value_heads} kv heads x head_dim {model.head_dim}, so "
            f"the GQA formula does not apply."
        )


def _kv_heads(model: ModelShape, kv_heads: int | None) -> int:
    if kv_heads is None:
        return model.num_key_value_heads
    _count(kv_heads, "kv_heads", minimum=1)
    if model.num_query_heads % kv_heads != 0:
        raise ValueError(
            f"kv_heads ({kv_heads}) must divide {model.name}'s num_query_heads "
            f"({model.num_query_heads})."
        )
    return kv_heads


# ---------------------------------------------------------------------------------------------
# The cache.


def cached_tokens(model: ModelShape, tokens: int) -> int:
    """S: how many of ``tokens`` the cache holds (capped at the sliding window, if any)."""
    _count(tokens, "tokens")
    w = model.sliding_window
    return tokens if w is None else min(tokens, w)


def _bytes_per_token(model: ModelShape, dtype: str, kv_heads: int | None = None) -> Fraction:
    """Exact cache bytes per cached token of one sequence: 2 * L * K * H * bytes."""
    _check_gqa(model)
    K = _kv_heads(model, kv_heads)
    return 2 * model.layers * K * model.head_dim * _dtype_bytes(dtype)


def kv_cache_bytes(
    model: ModelShape,
    tokens: int,
    batch: int = 1,
    dtype: str = "bf16",
    kv_heads: int | None = None,
) -> float:
    """Bytes of K and V cached for ``batch`` sequences of ``tokens`` tokens each.

    ``kv_heads`` overrides the model's K (to compare variants). Raises ValueError for an MLA
    model, negative tokens, batch < 1 or an unknown dtype.
    """
    per_token = _bytes_per_token(model, dtype, kv_heads)
    _count(batch, "batch", minimum=1)
    return float(per_token * cached_tokens(model, tokens) * batch)


def variants(
    model: ModelShape, tokens: int = 4096, batch: int = 1, dtype: str = "bf16"
) -> dict[str, float]:
    """Cache bytes as configured ("configured"), as MHA (K = N, "mha") and as MQA (K = 1, "mqa")."""
    return {
        "configured": kv_cache_bytes(model, tokens, batch, dtype),
        "mha": kv_cache_bytes(model, tokens, batch, dtype, kv_heads=model.num_query_heads),
        "mqa": kv_cache_bytes(model, tokens, batch, dtype, kv_heads=1),
    }


def _weights(model: ModelShape, dtype: str) -> Fraction:
    return Fraction(str(model.params_billion)) * 10**9 * _dtype_bytes(dtype, "weights dtype")


def weights_bytes(model: ModelShape, dtype: str = "bf16") -> float:
    """Bytes of the weights: params_billion * 10**9 * bytes per parameter (all stored in ``dtype``)."""
    return float(_weights(model, dtype))


def _free_bytes(model: ModelShape, gpu_bytes, weights_dtype: str) -> Fraction:
    """GPU bytes left after the weights (negative when they don't fit). Activations, the
    framework's workspace and fragmentation are ignored: the results are upper bounds."""
    return _positive(gpu_bytes, "gpu_bytes") - _weights(model, weights_dtype)


def max_context(
    model: ModelShape,
    gpu_bytes: float,
    batch: int = 1,
    dtype: str = "bf16",
    weights_dtype: str = "bf16",
) -> int | None:
    """Most tokens per sequence whose cache, for ``batch`` sequences, fits beside the weights.

    0 when the weights alone don't fit. None (no limit from memory) when the model has a
    sliding window and the cache for a full window already fits: the cache stops growing at
    the window, so any context length fits. Ignores activations and workspace (an upper bound).
    """
    per_token = _bytes_per_token(model, dtype) * _count(batch, "batch", minimum=1)
    free = _free_bytes(model, gpu_bytes, weights_dtype)
    if free <= 0:
        return 0
    w = model.sliding_window
    if w is not None and w * per_token <= free:
        return None
    return math.floor(free / per_token)


def max_batch(
    model: ModelShape,
    gpu_bytes: float,
    tokens: int,
    dtype: str = "bf16",
    weights_dtype: str = "bf16",
) -> int:
    """Most sequences of ``tokens`` tokens (>= 1) whose caches fit beside the weights.

    0 when the weights alone don't fit. Ignores activations and workspace (an upper bound).
    """
    per_sequence = _bytes_per_token(model, dtype) * cached_tokens(
        model, _count(tokens, "tokens", minimum=1)
    )
    free = _free_bytes(model, gpu_bytes, weights_dtype)
    if free <= 0:
        return 0
    return math.floor(free / per_sequence)


def decode_time_lower_bound(
    model: ModelShape,
    tokens: int,
    batch: int = 1,
    dtype: str = "bf16",
    weights_dtype: str = "bf16",
    bandwidth_bytes_per_s: float = 3.35e12,
) -> float:
    """Seconds per decode step (one new token for each of ``batch`` sequences) if memory-bound.

    (weights bytes + cache bytes) / bandwidth: every weight and the whole cache of ``tokens``
    tokens (window-capped) read once from memory per step, at the full ``bandwidth_bytes_per_s``
    (default 3.35e12, an H100 SXM's HBM3 peak), with compute, kernel launches and the new
    token's own K/V ignored. For a mixture of experts ``params_billion`` counts every expert,
    so at small batch, when only the routed experts are read, this overstates the weights.
    """
    bandwidth = _positive(bandwidth_bytes_per_s, "bandwidth_bytes_per_s")
    cache = kv_cache_bytes(model, tokens, batch, dtype)
    return (weights_bytes(model, weights_dtype) + cache) / float(bandwidth)


def formula(
    model: ModelShape,
    tokens: int,
    batch: int = 1,
    dtype: str = "bf16",
    kv_heads: int | None = None,
) -> str:
    """The cache formula with ``model``'s numbers filled in and the result in B, GB and GiB."""
    total = kv_cache_bytes(model, tokens, batch, dtype, kv_heads)
    K = _kv_heads(model, kv_heads)
    S = cached_tokens(model, tokens)
    size = DTYPE_BYTES[dtype]
    tokens_text = f"{S:,} tokens"
    if S != tokens:
        tokens_text += f" ({tokens:,} capped at the {model.sliding_window:,}-token sliding window)"
    return (
        f"2 (K and V) × {model.layers} layers × {K} kv heads × {model.head_dim} head_dim "
        f"× {size:g} B ({dtype}) × {tokens_text} × {batch} batch "
        f"= {total:,.0f} B = {total / GB:,.2f} GB = {total / GiB:,.2f} GiB"
    )
