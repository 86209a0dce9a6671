"""Group a real checkpoint's K/V heads further (Ainslie et al., 2023), and what it costs.

Axis letters: B batch, T tokens, L layers, N query heads, K kv heads before, K' after,
H head_dim, D model dim, V vocabulary.

:func:`group_kv_heads` turns a model with K kv heads into one with K' (any divisor of K; for a
multi-head model such as GPT-2, K = N) by merging each run of K / K' consecutive kv heads into
one, in every layer: "mean" averages their key and value projections (the paper's choice),
"first" keeps the first, "random" a seeded random one (the same for key and value). Query head
n then reads kv head n // (N / K'), which is the merged head of the group its old kv head
belonged to, so every query head keeps reading a head made from its own. Qwen3's QK norm has
one gain per feature shared by all heads and stays as it is. Without uptraining the quality
drop is expected: the GQA paper uptrains on 5% of the pretraining data to recover it.

:func:`next_token_loss` and :func:`head_stats` are what the Real models page shows: the mean
cross-entropy of each next token, and per head the entropy of its attention, how far back it
looks, and how much of it lands on the first token (the "attention sink").
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from gqa_viz.checkpoints import Architecture, Checkpoint, CheckpointError, Summary

METHODS = ("mean", "first", "random")


def kv_choices(arch: Architecture) -> list[int]:
    """Every K' a model's kv heads can be grouped into, largest first (K itself included)."""
    K = arch.num_kv_heads
    return [k for k in range(K, 0, -1) if K % k == 0]


def _merge(x: np.ndarray, K2: int, axis: int, method: str, kept: np.ndarray | None):
    """x with K kv heads on ``axis`` -> K2: runs of K / K2 averaged, or the heads ``kept`` [K2]."""
    if method == "mean":
        r = x.shape[axis] // K2  # consecutive old heads per new one
        grouped = x.reshape(*x.shape[:axis], K2, r, *x.shape[axis + 1 :])  # [..., K', r, ...]
        return grouped.mean(axis=axis + 1, dtype=np.float32).astype(x.dtype)
    return np.take(x, kept, axis=axis)


def group_kv_heads(ckpt: Checkpoint, k: int, method: str = "mean", *, seed: int = 0) -> Checkpoint:
    """The model with its kv heads merged into ``k`` per layer (see the module docstring).

    ``k`` equal to the model's K returns ``ckpt`` itself.
    """
    arch = ckpt.arch
    K = arch.num_kv_heads
    if method not in METHODS:
        raise CheckpointError(f"method must be one of {METHODS}, got {method!r}.")
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0 or K % k:
        raise CheckpointError(
            f"K' = {k!r} must divide the model's {K} kv heads: choose one of {kv_choices(arch)}."
        )
    if k == K:
        return ckpt
    L, r = arch.num_layers, K // k
    heads = None
    if method != "mean":
        picks = np.zeros((L, k), int)  # [L, K'] which head of each group: the first
        if method == "random":
            picks = np.random.default_rng(seed).integers(r, size=(L, k))  # [L, K']
        heads = np.arange(k) * r + picks  # [L, K'] the old kv head kept for each new one
    layers = []
    for i, layer in enumerate(ckpt.weights["layers"]):
        attention = dict(layer["attention"])
        kept = None if heads is None else heads[i]  # [K']
        for part in ("key", "value"):
            ws = dict(attention[part])
            ws["kernel"] = _merge(np.asarray(ws["kernel"]), k, 1, method, kept)  # [D, K', H]
            if "bias" in ws:
                ws["bias"] = _merge(np.asarray(ws["bias"]), k, 0, method, kept)  # [K', H]
            attention[part] = {name: jax.device_put(v) for name, v in ws.items()}
        layers.append({**layer, "attention": attention})
    weights = {**ckpt.weights, "layers": layers}
    new_arch = dataclasses.replace(arch, num_kv_heads=k)
    summary = Summary(new_arch, ckpt.summary.params, ckpt.summary.stored_bytes, ckpt.summary.dtype)
    return Checkpoint(ckpt.directory, summary, weights, ckpt.tokenizer)


def next_token_loss(logits: np.ndarray, ids: np.ndarray) -> float:
    """Mean cross-entropy (nats) of token t + 1 given tokens 0 .. t, over t and the batch.

    ``logits`` [B, T, V], ``ids`` [B, T]; perplexity is exp of it. Needs T >= 2.
    """
    logits = np.asarray(logits, np.float64)
    if ids.shape[-1] < 2:
        raise CheckpointError("The loss needs at least 2 tokens (it predicts each next one).")
    x = logits[:, :-1]  # [B, T - 1, V]
    top = x.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(x - top).sum(axis=-1)) + top[..., 0]  # [B, T - 1]
    target = np.take_along_axis(x, ids[:, 1:, None], axis=-1)[..., 0]  # [B, T - 1]
    return float(np.mean(log_z - target))


def head_stats(probs: np.ndarray, window: int | None = None) -> dict[str, np.ndarray]:
    """Per head of one layer's probabilities [B, N, T, T] (causal, narrowed to the layer's
    ``window`` if it has one), averaged over B and rows.

    * ``entropy`` [N]: of each row, in nats, divided by the log of the keys it may see
      (t + 1, or w in a window), so 1 is uniform over them and 0 one key; rows that see a
      single key are skipped.
    * ``distance`` [N]: mean |i - j| weighted by the probabilities: how far back a head looks.
    * ``sink`` [N]: mean probability on key 0, the first token.
    """
    p = np.asarray(probs, np.float64)
    B, N, T, S = p.shape
    i = np.arange(T)[:, None]  # [T, 1]
    j = np.arange(S)[None, :]  # [1, S]
    logp = np.log(np.where(p > 0, p, 1.0))
    entropy = -(p * logp).sum(-1)  # [B, N, T]
    seen = np.arange(1, T + 1) if window is None else np.minimum(np.arange(1, T + 1), window)
    rows = slice(1, None) if T > 1 else slice(0, 1)
    norm = np.log(seen)[rows]  # [T - 1]
    norm = np.where(norm > 0, norm, 1.0)  # a row seeing one key (window 1) has entropy 0
    return {
        "entropy": (entropy[..., rows] / norm).mean(axis=(0, 2)),
        "distance": (p * np.abs(i - j)).sum(-1).mean(axis=(0, 2)),
        "sink": p[..., 0].mean(axis=(0, 2)),
    }


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf
