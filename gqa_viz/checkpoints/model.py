"""The forward pass of a decoder-only checkpoint, every attention layer through gqa_viz.core.

Axis letters: B batch, T tokens, L layers, C chosen layers, D model dim, N query heads,
K kv heads, H head_dim, F MLP hidden size, V vocabulary.

One block, the families' common shape (pre-norm residual)::

    x = embed[ids] (* sqrt(D) for Gemma) (+ positions[t] for GPT-2)
    for each layer:  x = x + [norm] attention(norm(x))     # [norm]: Gemma 2's sandwich norms
                     x = x + [norm] mlp(norm(x))
    logits = norm(x) @ embed.T or lm_head.T  (Gemma 2: soft-capped)

``attention`` is :func:`gqa_viz.core.attention` with the layer's weights in Keras' layout, a
:class:`~gqa_viz.core.GQASpec` carrying the family's RoPE, QK norm, scale and soft-cap, and
``use_causal_mask=True`` with the layer's window as Keras' ``sliding_window`` (under the causal
mask, |i - j| < w is exactly Hugging Face's "key j seen by query i iff 0 <= i - j < w").

The layers are unrolled in one jitted program over per-layer weight arrays. (A ``lax.scan``
over stacked weights compiles no faster here, 1.2-1.4 s either way, but slices every layer's
weights out of the stack on each call: 0.6 s of copying per Llama-3.2-1B forward.)

The pass computes in float32 whatever dtype the weights are stored in.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gqa_viz import buckets, core
from gqa_viz.checkpoints.config import Architecture

F32 = jnp.float32
# Sequences are padded up to a multiple of this (with causal attention, tokens after t change
# nothing at t), so prompts of nearby lengths share one compiled program.
BUCKET = 16


def attention_spec(arch: Architecture, layer: int | None = None) -> core.GQASpec:
    """The core's spec for attention layer ``layer`` of ``arch`` (None: without its window).

    Run it with ``use_causal_mask=True``; ``sliding_window`` is the layer's window.
    """
    return core.GQASpec(
        num_query_heads=arch.num_query_heads,
        num_key_value_heads=arch.num_kv_heads,
        head_dim=arch.head_dim,
        use_bias=arch.attention_bias or arch.output_bias,
        sliding_window=None if layer is None else arch.windows[layer],
        rope=arch.rope,
        qk_norm=core.HeadNorm(eps=arch.norm_eps) if arch.qk_norm else None,
        scale=arch.scale,
        logit_softcap=arch.attn_softcap,
    )


def _norm(arch: Architecture, x, w: dict):
    """The family's norm of x [B, T, D] in float32: RMS (x w or x (1 + w)) or LayerNorm."""
    if arch.norm == "layer":
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + arch.norm_eps) * w["scale"] + w["bias"]
    normed = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + arch.norm_eps)
    return normed * (1.0 + w["scale"] if arch.norm == "rms_plus_one" else w["scale"])


def _act(name: str, x):
    if name == "silu":
        return jax.nn.silu(x)
    if name == "gelu":
        return jax.nn.gelu(x, approximate=False)
    if name == "relu":
        return jax.nn.relu(x)
    return jax.nn.gelu(x, approximate=True)  # gelu_pytorch_tanh, gelu_new, gelu_fast


def _linear(x, w: dict, equation: str):
    y = jnp.einsum(equation, x, w["kernel"])
    return y + w["bias"] if "bias" in w else y


def _mlp(arch: Architecture, x, w: dict):
    if arch.family == "gpt2":  # Conv1D weights are [in, out]
        return _linear(
            _act(arch.activation, _linear(x, w["fc"], "btd,df->btf")), w["proj"], "btf,fd->btd"
        )
    gate = _act(arch.activation, _linear(x, w["gate"], "btd,fd->btf"))  # [B, T, F]
    up = _linear(x, w["up"], "btd,fd->btf")  # [B, T, F]
    return _linear(gate * up, w["down"], "btf,df->btd")  # [B, T, D]


def _layer(arch: Architecture, spec: core.GQASpec, want_probs: bool, x, w: dict):
    """One block on x [B, T, D]: (new x, probabilities [B, N, T, T] or None, attention input)."""
    # Materialise the float32 copy of this layer's weights: left to fuse into the matmuls, a
    # bf16 -> f32 convert makes XLA's CPU backend leave its fast matmul kernels.
    w = jax.lax.optimization_barrier(jax.tree.map(lambda a: a.astype(F32), w))
    h = _norm(arch, x, w["attn_norm"])
    out = core.attention(
        w["attention"], h, h, spec=spec, use_causal_mask=True, return_scores=want_probs
    )
    out, probs = out if want_probs else (out, None)
    if arch.sandwich_norms:
        out = _norm(arch, out, w["attn_out_norm"])
    x = x + out
    m = _mlp(arch, _norm(arch, x, w["mlp_norm"]), w["mlp"])
    if arch.sandwich_norms:
        m = _norm(arch, m, w["mlp_out_norm"])
    return x + m, probs, h


def _embed(arch: Architecture, weights: dict, ids):
    x = jnp.take(weights["embed"], ids, axis=0).astype(F32)  # [B, T, D]
    if arch.embed_scale is not None:
        x = x * jnp.asarray(arch.embed_scale, F32)
    if arch.learned_positions:
        x = x + weights["positions"][: ids.shape[1]].astype(F32)[None]
    return x


def _logits(arch: Architecture, weights: dict, x):
    x = _norm(arch, x, jax.tree.map(lambda a: a.astype(F32), weights["final_norm"]))
    table = weights["embed"] if arch.tie_embeddings else weights["lm_head"]
    table = jax.lax.optimization_barrier(table.astype(F32))  # see _layer: keep the fast matmul
    logits = jnp.einsum("btd,vd->btv", x, table)  # [B, T, V]
    if arch.final_softcap is not None:
        cap = jnp.asarray(arch.final_softcap, F32)
        logits = jnp.tanh(logits / cap) * cap
    return logits


@functools.partial(jax.jit, static_argnames=("arch", "chosen", "inputs"))
def _forward(weights: dict, ids, *, arch: Architecture, chosen: tuple[int, ...], inputs: bool):
    """(logits [B, T, V], probs [C, B, N, T, T] of the ``chosen`` layers, inputs or None).

    ``inputs``: also return what each attention layer received, [L, B, T, D] (normed).
    """
    x = _embed(arch, weights, ids)
    probs, hs = [], []
    for i, w in enumerate(weights["layers"]):
        x, p, h = _layer(arch, attention_spec(arch, i), i in chosen, x, w)
        if i in chosen:
            probs.append(p)
        if inputs:
            hs.append(h)
    return (
        _logits(arch, weights, x),
        jnp.stack(probs) if probs else None,
        jnp.stack(hs) if inputs else None,
    )


def padded_length(arch: Architecture, T: int) -> int:
    """The compiled length for T tokens: a multiple of :data:`BUCKET` where that is exact.

    Dynamic RoPE reads the sequence length, and GPT-2 has P positions, so neither pads past
    what it would see unpadded.
    """
    padded = -(-T // BUCKET) * BUCKET
    if (
        arch.rope is not None
        and arch.rope.kind == "dynamic"
        and padded > arch.rope.max_position_embeddings
    ):
        return T
    return min(padded, arch.max_positions) if arch.learned_positions else padded


def forward(
    weights: dict,
    arch: Architecture,
    ids: np.ndarray,
    chosen: tuple[int, ...] = (),
    inputs: bool = False,
):
    """Run ``ids`` [B, T]: (logits [B, T, V], probs [C, B, N, T, T] of the ``chosen`` layers or
    None, inputs [L, B, T, D] or None), as NumPy float32."""
    B, T = ids.shape
    Tp = padded_length(arch, T)
    padded = np.zeros((B, Tp), np.int32)
    padded[:, :T] = ids
    # Each (model, K', chosen layers, length bucket) is a program of its own: counted toward the
    # cap on programs held in memory, as the attention core's and the decoder's are.
    buckets.note_program(("checkpoints", arch, tuple(chosen), inputs, B, Tp))
    logits, probs, hs = _forward(weights, padded, arch=arch, chosen=tuple(chosen), inputs=inputs)
    logits = np.asarray(logits[:, :T])
    if probs is not None:
        probs = np.asarray(probs[:, :, :, :T, :T])
    return logits, probs, None if hs is None else np.asarray(hs[:, :, :T])
