"""A checkpoint's tensors -> gqa-viz's weight tree: attention in Keras' layout, one per layer.

Axis letters: L layers, D model dim, N query heads, K kv heads, H head_dim, F the MLP's hidden
size, V vocabulary, P positions.

``weights["layers"]`` is a list of L trees, one per layer; each layer's attention weights are
the tree :mod:`gqa_viz.core` reads (Keras' ``GroupQueryAttention`` layout)::

    attention/query/kernel   [D, N, H]   from q_proj.weight [N*H, D] (or GPT-2's c_attn)
    attention/key/kernel     [D, K, H]   from k_proj.weight [K*H, D]
    attention/value/kernel   [D, K, H]   from v_proj.weight [K*H, D]
    attention/attention_output/kernel [N, H, D]  from o_proj.weight [D, N*H]
    .../bias                 [N, H], [K, H], [D]  (when the family has them)
    attention/query_norm/scale, key_norm/scale [H]  (Qwen3's QK norm)

Keras has one ``use_bias`` for all four projections; Qwen 2 has q/k/v biases but none on the
output, so its output bias is an explicit zero (adding 0 changes nothing). The MLP, norms and
embeddings keep the layout they are stored in (a transpose would only cost memory): gated MLPs
``[F, D]``/``[D, F]`` as ``nn.Linear`` stores them, GPT-2's ``Conv1D`` as ``[in, out]``.

Loading checks every name and shape against the :class:`Architecture` before reading a byte,
then reads one tensor at a time into an aligned host buffer that the device adopts (on a CPU,
without a copy), so peak memory stays near the stored size (``bench/checkpoints.py``).
Weights keep their stored dtype; the forward pass computes in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np

from gqa_viz.checkpoints.config import Architecture
from gqa_viz.checkpoints.files import CheckpointError
from gqa_viz.checkpoints.store import TensorInfo, aligned_empty, read

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Source:
    """Where one leaf comes from: a tensor per layer ("{i}" in the name) or one tensor."""

    name: str
    stored_shape: tuple[int, ...]
    transform: Transform | None = None


def _gpt2_prefix(names) -> str:
    """GPT-2 checkpoints name tensors with or without ``transformer.``; accept both."""
    return "transformer." if "transformer.wte.weight" in names else ""


def plan(arch: Architecture, names) -> tuple[dict[tuple, Source], dict[tuple, Source]]:
    """({leaf path: per-layer source}, {leaf path: global source}) for this architecture."""
    D, N, K, H, F = (
        arch.model_dim,
        arch.num_query_heads,
        arch.num_kv_heads,
        arch.head_dim,
        arch.mlp_dim,
    )
    V, P = arch.vocab_size, arch.max_positions
    per: dict[tuple, Source] = {}
    glob: dict[tuple, Source] = {}
    attn = ("attention",)
    if arch.family == "gpt2":
        pre = _gpt2_prefix(names)
        h = pre + "h.{i}."
        # c_attn is one Conv1D [D, 3D] holding q | k | v columns; each is [D, N*H] = [D, N, H].
        for j, part in enumerate(("query", "key", "value")):
            per[(*attn, part, "kernel")] = Source(
                h + "attn.c_attn.weight",
                (D, 3 * D),
                lambda w, j=j: w[:, j * D : (j + 1) * D].reshape(D, N, H),
            )
            per[(*attn, part, "bias")] = Source(
                h + "attn.c_attn.bias",
                (3 * D,),
                lambda b, j=j: b[j * D : (j + 1) * D].reshape(N, H),
            )
        per[(*attn, "attention_output", "kernel")] = Source(
            h + "attn.c_proj.weight", (D, D), lambda w: w.reshape(N, H, D)
        )
        per[(*attn, "attention_output", "bias")] = Source(h + "attn.c_proj.bias", (D,))
        for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            per[(ours, "scale")] = Source(h + theirs + ".weight", (D,))
            per[(ours, "bias")] = Source(h + theirs + ".bias", (D,))
        per[("mlp", "fc", "kernel")] = Source(h + "mlp.c_fc.weight", (D, F))
        per[("mlp", "fc", "bias")] = Source(h + "mlp.c_fc.bias", (F,))
        per[("mlp", "proj", "kernel")] = Source(h + "mlp.c_proj.weight", (F, D))
        per[("mlp", "proj", "bias")] = Source(h + "mlp.c_proj.bias", (D,))
        glob[("embed",)] = Source(pre + "wte.weight", (V, D))
        glob[("positions",)] = Source(pre + "wpe.weight", (P, D))
        glob[("final_norm", "scale")] = Source(pre + "ln_f.weight", (D,))
        glob[("final_norm", "bias")] = Source(pre + "ln_f.bias", (D,))
        if not arch.tie_embeddings:
            glob[("lm_head",)] = Source("lm_head.weight", (V, D))
        return per, glob

    h = "model.layers.{i}."
    heads = {"q": N, "k": K, "v": K}
    for short, part in (("q", "query"), ("k", "key"), ("v", "value")):
        n = heads[short]
        per[(*attn, part, "kernel")] = Source(
            h + f"self_attn.{short}_proj.weight",
            (n * H, D),
            lambda w, n=n: w.reshape(n, H, D).transpose(2, 0, 1),
        )
        if arch.attention_bias:
            per[(*attn, part, "bias")] = Source(
                h + f"self_attn.{short}_proj.bias", (n * H,), lambda b, n=n: b.reshape(n, H)
            )
    per[(*attn, "attention_output", "kernel")] = Source(
        h + "self_attn.o_proj.weight", (D, N * H), lambda w: w.reshape(D, N, H).transpose(1, 2, 0)
    )
    if arch.output_bias:
        per[(*attn, "attention_output", "bias")] = Source(h + "self_attn.o_proj.bias", (D,))
    if arch.qk_norm:
        per[(*attn, "query_norm", "scale")] = Source(h + "self_attn.q_norm.weight", (H,))
        per[(*attn, "key_norm", "scale")] = Source(h + "self_attn.k_norm.weight", (H,))
    per[("attn_norm", "scale")] = Source(h + "input_layernorm.weight", (D,))
    if arch.sandwich_norms:
        per[("attn_out_norm", "scale")] = Source(h + "post_attention_layernorm.weight", (D,))
        per[("mlp_norm", "scale")] = Source(h + "pre_feedforward_layernorm.weight", (D,))
        per[("mlp_out_norm", "scale")] = Source(h + "post_feedforward_layernorm.weight", (D,))
    else:
        per[("mlp_norm", "scale")] = Source(h + "post_attention_layernorm.weight", (D,))
    for part, shape in (("gate", (F, D)), ("up", (F, D)), ("down", (D, F))):
        per[("mlp", part, "kernel")] = Source(h + f"mlp.{part}_proj.weight", shape)
        if arch.mlp_bias:
            per[("mlp", part, "bias")] = Source(h + f"mlp.{part}_proj.bias", (shape[0],))
    glob[("embed",)] = Source("model.embed_tokens.weight", (V, D))
    glob[("final_norm", "scale")] = Source("model.norm.weight", (D,))
    if not arch.tie_embeddings:
        glob[("lm_head",)] = Source("lm_head.weight", (V, D))
    return per, glob


def _check(tensors: dict[str, TensorInfo], name: str, shape: tuple[int, ...], arch) -> TensorInfo:
    info = tensors.get(name)
    if info is None:
        raise CheckpointError(
            f"The checkpoint has no tensor {name}, which a {arch.family} model with this "
            "config.json needs."
        )
    if info.shape != shape:
        raise CheckpointError(
            f"Tensor {name} has shape {list(info.shape)} but config.json implies {list(shape)} "
            f"(D={arch.model_dim}, N={arch.num_query_heads}, K={arch.num_kv_heads}, "
            f"H={arch.head_dim}, F={arch.mlp_dim}, V={arch.vocab_size})."
        )
    return info


def _to_device(x: np.ndarray) -> jax.Array:
    # On a CPU, JAX adopts the aligned host buffer instead of copying it; elsewhere it copies
    # to the device and the host buffer is freed when the caller drops it.
    return jax.device_put(x, may_alias=True)


def _set(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def load(arch: Architecture, tensors: dict[str, TensorInfo]) -> dict:
    """The weight tree of the module docstring, on the default device, in stored dtypes."""
    per, glob = plan(arch, tensors)
    L = arch.num_layers
    for source in per.values():  # every name and shape first: refuse before reading anything
        for i in range(L):
            _check(tensors, source.name.format(i=i), source.stored_shape, arch)
    for source in glob.values():
        _check(tensors, source.name, source.stored_shape, arch)
    layers = []
    for i in range(L):
        layer: dict = {}
        cached: tuple[str, np.ndarray] | None = None  # GPT-2's c_attn: read once for q, k, v
        for path, source in per.items():
            name = source.name.format(i=i)
            if cached is None or cached[0] != name:
                cached = (name, read(tensors[name]))
            value = cached[1]
            if source.transform is not None:
                value = _contiguous(source.transform(value))
            _set(layer, path, _to_device(value))
        if arch.attention_bias and not arch.output_bias:
            zeros = aligned_empty((arch.model_dim,), np.float32)  # [D]
            zeros[:] = 0
            layer["attention"]["attention_output"]["bias"] = _to_device(zeros)
        layers.append(layer)
    weights: dict = {"layers": layers}
    for path, source in glob.items():
        _set(weights, path, _to_device(read(tensors[source.name])))
    return weights


def _contiguous(x: np.ndarray) -> np.ndarray:
    """An aligned C-contiguous copy of a transposed or sliced view (the device adopts it)."""
    out = aligned_empty(x.shape, x.dtype)
    out[...] = x
    return out
