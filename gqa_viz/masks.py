"""Attention masks as small composable predicates.

Axis letters: B batch, T query length, S key/value length.

A :class:`Mask` is a predicate ``fn(b, q, k, T, S) -> bool`` over broadcastable integer index
grids (batch, query position, key position); ``True`` means "query q may attend to key k"
(the Keras and JAX convention). Masks combine with ``&``, ``|`` and ``~`` and are turned into
arrays in one place only, :func:`materialize`, which returns a boolean ``[B or 1, T, S]``.
Predicates use only operators and indexing, so they work on NumPy and traced JAX arrays alike.

:func:`keras_mask` states, in one docstring, how Keras' ``GroupQueryAttention`` merges the
masks of a call; the attention core builds its mask with it.

Beyond Keras' own masks (causal, sliding window, padding, an explicit array) the module holds
the common patterns of other models, each a builder whose docstring is its rule:
:func:`causal_window`, :func:`prefix_lm`, :func:`document`, :func:`dilated_window`,
:func:`block_sparse` and :func:`padding`. :data:`COMPONENTS` describes each kind in a line.

For decoding with a KV cache (:mod:`gqa_viz.decode`): :func:`causal_offset` (causal with the
chunk's offset explicit), :func:`sink_window` (attention sinks plus a causal window) and
:func:`at_key_positions` (keys that are cache slots holding absolute positions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

Predicate = Callable[[Any, Any, Any, int, int], Any]


@dataclass(frozen=True)
class Mask:
    """A named predicate over (b, q, k); see the module docstring."""

    fn: Predicate
    name: str
    # True when the predicate ignores b, so it materializes to [1, T, S].
    batch_free: bool = True

    def __call__(self, b, q, k, T: int, S: int):
        return self.fn(b, q, k, T, S)

    def __and__(self, other: Mask) -> Mask:
        return Mask(
            lambda b, q, k, T, S: self.fn(b, q, k, T, S) & other.fn(b, q, k, T, S),
            f"({self.name} & {other.name})",
            self.batch_free and other.batch_free,
        )

    def __or__(self, other: Mask) -> Mask:
        return Mask(
            lambda b, q, k, T, S: self.fn(b, q, k, T, S) | other.fn(b, q, k, T, S),
            f"({self.name} | {other.name})",
            self.batch_free and other.batch_free,
        )

    def __invert__(self) -> Mask:
        return Mask(lambda b, q, k, T, S: ~self.fn(b, q, k, T, S), f"~{self.name}", self.batch_free)

    def __repr__(self) -> str:
        return f"Mask({self.name})"


def materialize(mask: Mask, T: int, S: int, batch: int = 1, xp=jnp):
    """Evaluate ``mask`` on every (b, q, k): a boolean [B or 1, T, S] array of module ``xp``."""
    B = 1 if mask.batch_free else batch
    b = xp.arange(B)[:, None, None]  # [B, 1, 1]
    q = xp.arange(T)[None, :, None]  # [1, T, 1]
    k = xp.arange(S)[None, None, :]  # [1, 1, S]
    out = mask(b, q, k, T, S)
    return xp.broadcast_to(xp.asarray(out, dtype=bool), (B, T, S))


def full() -> Mask:
    """Every query attends to every key."""
    return Mask(lambda b, q, k, T, S: (q >= 0) & (k >= 0), "full")


def causal(align: str = "top_left") -> Mask:
    """Causal: "top_left" (Keras) allows k <= q; "bottom_right" (KV-cache decoding) k <= q + S - T."""
    if align == "top_left":
        return Mask(lambda b, q, k, T, S: k <= q, "causal")
    if align == "bottom_right":
        return Mask(lambda b, q, k, T, S: k <= q + (S - T), "causal_bottom_right")
    raise ValueError(f"causal align must be 'top_left' or 'bottom_right', got {align!r}.")


def sliding_window(window: int) -> Mask:
    """Keras' symmetric band: allowed iff |q - k| < window (so ``window - 1`` keys each side)."""
    if not isinstance(window, int | np.integer) or isinstance(window, bool) or window <= 0:
        raise ValueError(f"sliding_window must be a positive integer, got {window!r}.")
    w = int(window)
    return Mask(lambda b, q, k, T, S: abs(q - k) < w, f"sliding_window({w})")


_sliding_window = sliding_window  # keras_mask's argument of the same name shadows it


def _batch(arr, b):
    # A mask array with batch size 1 serves every batch item.
    return b * 0 if arr.shape[0] == 1 else b


def query_valid(valid) -> Mask:
    """Keras' query_mask [B, T]: a query whose entry is False attends to nothing."""
    return Mask(
        lambda b, q, k, T, S: valid[_batch(valid, b), q] & (k >= 0),
        "query_mask",
        batch_free=False,
    )


def key_valid(valid, name: str = "value_mask") -> Mask:
    """Keras' value_mask / key_mask [B, S]: a key whose entry is False is hidden from all queries."""
    return Mask(
        lambda b, q, k, T, S: valid[_batch(valid, b), k] & (q >= 0),
        name,
        batch_free=False,
    )


def from_array(allowed, name: str = "attention_mask") -> Mask:
    """An explicit boolean mask, [T, S] or [B, T, S]."""
    if allowed.ndim == 2:
        return Mask(lambda b, q, k, T, S: allowed[q, k], name)
    return Mask(
        lambda b, q, k, T, S: allowed[_batch(allowed, b), q, k],
        name,
        batch_free=allowed.shape[0] == 1,
    )


def keras_mask(
    *,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    use_causal_mask: bool = False,
    sliding_window: int | None = None,
) -> Mask | None:
    """The mask Keras 3's ``GroupQueryAttention`` applies for one call, or None if nothing masks.

    Keras' rules (``grouped_query_attention.py``, Keras 3.15.1), each ANDed into one mask:

    1. ``query_mask`` [B, T] becomes [B, T, 1]: a False query attends to nothing, so its whole
       row is masked (a "fully masked row").
    2. ``value_mask`` [B, S] becomes [B, 1, S]: a False position is hidden from every query.
    3. ``key_mask`` [B, S] becomes [B, 1, S], the same rule, ANDed as well.
    4. ``use_causal_mask=True`` adds a [1, T, S] lower triangle aligned **top-left**: query i sees
       keys j <= i even when T != S. With T < S the last S - T keys are never seen; KV-cache
       decoding wants the bottom-right alignment instead (:func:`causal`).
    5. ``sliding_window=w`` adds a symmetric [1, T, S] band, |i - j| < w (w - 1 keys on each
       side). ANDed with causal it is the causal window of Mistral: keys i - w + 1 .. i.
    6. An explicit ``attention_mask`` [B, T, S] is ANDed with everything above. Non-boolean
       masks are cast to bool (nonzero is True), with one Keras quirk kept: when
       ``attention_mask`` is the only mask, Keras' Softmax reads a numeric mask as ``> 0.5``,
       so a 0.3 entry masks there but attends once any other mask is present. (Keras' fused
       path, without scores, reads any nonzero as "attend" even then; gqa_viz uses ``> 0.5``
       on both of its paths so they agree.)
    7. A row with no allowed key: with ``return_attention_scores=True`` Keras' probabilities
       there are all 0, so the row's context is 0 and its output is the output bias. Without
       scores (and dropout 0) Keras calls the fused ``dot_product_attention``, which returns a
       uniform average over all S keys, masked ones included. gqa_viz returns the first
       answer on both of its paths (``fully_masked_rows="zero"``) so the output does not depend
       on whether scores were asked for; ``fully_masked_rows="uniform"`` reproduces the fused one.
    """
    only_attention_mask = (
        attention_mask is not None
        and all(m is None for m in (query_mask, value_mask, key_mask))
        and not use_causal_mask
        and sliding_window is None
    )
    query_mask, value_mask, key_mask = (
        None if m is None else m.astype(bool) for m in (query_mask, value_mask, key_mask)
    )
    if attention_mask is not None and attention_mask.dtype != bool:
        attention_mask = (
            attention_mask > 0.5 if only_attention_mask else attention_mask.astype(bool)
        )
    parts: list[Mask] = []
    if query_mask is not None:
        parts.append(query_valid(query_mask))
    if value_mask is not None:
        parts.append(key_valid(value_mask, "value_mask"))
    if key_mask is not None:
        parts.append(key_valid(key_mask, "key_mask"))
    if use_causal_mask:
        parts.append(causal("top_left"))
    if sliding_window is not None:
        parts.append(_sliding_window(sliding_window))
    if attention_mask is not None:
        parts.append(from_array(attention_mask))
    if not parts:
        return None
    merged = parts[0]
    for part in parts[1:]:
        merged = merged & part
    return merged


# ---------------------------------------------------------------------------------------------
# More patterns: the Mask Lab's components. Each builder checks its arguments (ValueError
# naming the value) and names its mask the way it is called.


def _int_arg(what: str, value, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError naming it."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{what} must be {kind}, got {value!r}.")
    return int(value)


def _shift(align: str, T: int, S: int) -> int:
    """How far query q's own position is from key index q: 0 top-left, S - T bottom-right."""
    return 0 if align == "top_left" else S - T


def causal_window(window: int, align: str = "top_left") -> Mask:
    """Causal window: allowed iff 0 <= q' - k < window; q' = q, or q + S - T for "bottom_right"."""
    w = _int_arg("causal_window window", window, 1)
    if align not in ("top_left", "bottom_right"):
        raise ValueError(
            f"causal_window align must be 'top_left' or 'bottom_right', got {align!r}."
        )
    name = f"causal_window({w})" if align == "top_left" else f'causal_window({w}, "bottom_right")'

    def fn(b, q, k, T, S):
        d = q + _shift(align, T, S) - k  # how far key k lies behind the query
        return (d >= 0) & (d < w)

    return Mask(fn, name)


def prefix_lm(prefix: int) -> Mask:
    """Prefix LM: allowed iff k < prefix (seen by every query) or k <= q (causal after it)."""
    p = _int_arg("prefix_lm prefix", prefix, 0)
    return Mask(lambda b, q, k, T, S: (k < p) | (k <= q), f"prefix_lm({p})")


def _ids(ids, what: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2) or arr.size == 0:
        raise ValueError(
            f"document {what} must be a non-empty integer array [T] or [B, T], got "
            f"{arr.dtype} array of shape {arr.shape}."
        )
    return arr


def _gather(ids: np.ndarray, b, pos, what: str, length: int):
    """ids[pos] ([T] ids) or ids[b, pos] ([B, T] ids), as NumPy or JAX like the index grids."""
    if ids.shape[-1] != length:
        axis = "T" if what == "q_ids" else "S"
        raise ValueError(
            f"document {what} give {ids.shape[-1]} positions but {axis} = {length}: "
            f"give exactly one id per position."
        )
    table = ids if isinstance(pos, np.ndarray) else jnp.asarray(ids)
    if ids.ndim == 1:
        return table[pos]
    B = b.shape[0]
    if ids.shape[0] not in (1, B):
        raise ValueError(
            f"document {what} have batch size {ids.shape[0]} but the input has B = {B}."
        )
    return table[_batch(ids, b), pos]


def document(q_ids, k_ids=None) -> Mask:
    """Packed documents: allowed iff the query's segment id equals the key's (ids [T] or [B, T])."""
    qi = _ids(q_ids, "q_ids")
    ki = qi if k_ids is None else _ids(k_ids, "k_ids")

    def fn(b, q, k, T, S):
        if k_ids is None and T != S:
            raise ValueError(
                f"document(q_ids) without k_ids is for self-attention (S = T), but T = {T} and "
                f"S = {S}: pass k_ids, one id per key."
            )
        return _gather(qi, b, q, "q_ids", T) == _gather(ki, b, k, "k_ids", S)

    batch_free = qi.ndim == 1 and ki.ndim == 1
    return Mask(fn, "document", batch_free=batch_free)


def dilated_window(window: int, dilation: int) -> Mask:
    """Dilated band: allowed iff |q - k| < window * dilation and (q - k) % dilation == 0."""
    w = _int_arg("dilated_window window", window, 1)
    d = _int_arg("dilated_window dilation", dilation, 1)
    return Mask(
        lambda b, q, k, T, S: (abs(q - k) < w * d) & ((q - k) % d == 0),
        f"dilated_window({w}, {d})",
    )


def block_sparse(block: int, local_blocks: int = 1, global_tokens: int = 0) -> Mask:
    """Block sparse: |q // block - k // block| < local_blocks, or k < global_tokens, or q < it."""
    n = _int_arg("block_sparse block", block, 1)
    lb = _int_arg("block_sparse local_blocks", local_blocks, 0)
    g = _int_arg("block_sparse global_tokens", global_tokens, 0)
    return Mask(
        lambda b, q, k, T, S: (abs(q // n - k // n) < lb) | (k < g) | (q < g),
        f"block_sparse({n}, local_blocks={lb}, global_tokens={g})",
    )


def padding(valid_queries: int | None = None, valid_keys: int | None = None) -> Mask:
    """Padding at the end: allowed iff q < valid_queries and k < valid_keys (None = all real)."""
    vq = None if valid_queries is None else _int_arg("padding valid_queries", valid_queries, 0)
    vk = None if valid_keys is None else _int_arg("padding valid_keys", valid_keys, 0)

    def fn(b, q, k, T, S):
        ok_q = (q >= 0) if vq is None else (q < vq)
        ok_k = (k >= 0) if vk is None else (k < vk)
        return ok_q & ok_k

    args = [f"{n}={v}" for n, v in (("valid_queries", vq), ("valid_keys", vk)) if v is not None]
    return Mask(fn, f"padding({', '.join(args)})")


# ---------------------------------------------------------------------------------------------
# Decoding with a KV cache (gqa_viz.decode). The queries are a chunk of C new tokens that sit
# at absolute positions offset .. offset + C - 1, so query index q is position q + offset, and
# the offset is an argument, not read from T and S: a rolling cache's key index is a slot, not
# a position (:func:`at_key_positions`). These predicates compare positions only, so they work
# with an offset and slot positions that are traced JAX values (one program for every step).
#
# Why top-left (Keras' alignment when T != S) is wrong for a decode step: the cache holds the
# `offset` earlier tokens and the step appends C, so T = C and S = offset + C. Top-left lets
# query q see keys 0 .. q: the first new token (position offset) would see key 0 alone, not
# the offset tokens before it, and the last C - 1 keys never at all. Its own position is
# q + offset = q + S - T: bottom-right alignment, causal_offset(S - T) == causal("bottom_right").


def causal_offset(offset) -> Mask:
    """Causal for queries at positions q + offset: allowed iff k <= q + offset (0: top-left)."""
    if isinstance(offset, int | np.integer) and not isinstance(offset, bool):
        o = _int_arg("causal_offset offset", offset, 0)
        return Mask(lambda b, q, k, T, S: k <= q + o, f"causal_offset({o})")
    return Mask(lambda b, q, k, T, S: k <= q + offset, "causal_offset")


def sink_window(window: int, sinks: int = 0, offset=0) -> Mask:
    """Sinks + causal window (StreamingLLM): allowed iff 0 <= q + offset - k and (k < sinks or q + offset - k < window)."""
    w = _int_arg("sink_window window", window, 1)
    s = _int_arg("sink_window sinks", sinks, 0)
    if isinstance(offset, int | np.integer) and not isinstance(offset, bool):
        offset = _int_arg("sink_window offset", offset, 0)

    def fn(b, q, k, T, S):
        d = q + offset - k  # how far key k lies behind the query's own position
        return (d >= 0) & ((k < s) | (d < w))

    return Mask(fn, f"sink_window({w}, sinks={s})")


def at_key_positions(mask: Mask, positions) -> Mask:
    """Key index k read as absolute position positions[k]; a slot with position < 0 (empty) is never allowed."""

    def fn(b, q, k, T, S):
        pos = positions[k]
        return mask.fn(b, q, pos, T, S) & (pos >= 0)

    return Mask(fn, f"{mask.name} at key positions", mask.batch_free)


# One line each, for the UI: what each kind of mask lets a query see.
COMPONENTS: dict[str, str] = {
    "causal": "query i sees keys j <= i (Keras' use_causal_mask, aligned top-left)",
    "causal_bottom_right": "query i sees keys j <= i + S - T (KV-cache decoding, flash kernels)",
    "sliding_window": "query i sees keys with |i - j| < w: w - 1 on each side (Keras)",
    "causal_window": "query i sees exactly the w keys i - w + 1 .. i (Mistral-style)",
    "prefix_lm": "the first p keys are seen by every query; causal after them",
    "document": "packed sequences: a query sees only keys of its own document (segment id)",
    "dilated_window": "every d-th key within a band of w * d on each side",
    "block_sparse": "local blocks plus global tokens (BigBird / Longformer style)",
    "padding": "only the first real queries and keys take part; the rest is padding",
    "custom": "an uploaded or hand-drawn [T, S] mask",
}
