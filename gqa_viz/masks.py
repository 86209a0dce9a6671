"""Attention masks as small composable predicates.

Axis letters: B batch, T query length, S key/value length.

A :class:`Mask` is a predicate ``fn(b, q, k, T, S) -> bool`` over broadcastable integer index
grids (batch, query position, key position); ``True`` means "query q may attend to key k"
(the Keras and JAX convention). Masks combine with ``&``, ``|`` and ``~`` and are turned into
arrays in one place only, :func:`materialize`, which returns a boolean ``[B or 1, T, S]``.
Predicates use only operators and indexing, so they work on NumPy and traced JAX arrays alike.

:func:`keras_mask` states, in one docstring, how Keras' ``GroupQueryAttention`` merges the
masks of a call; the attention core builds its mask with it.
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
       so a 0.3 entry masks there but attends once any other mask is present.
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
