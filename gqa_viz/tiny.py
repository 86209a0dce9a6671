"""Tiny decoder-only transformers whose attention layers are this project's GQA layer.

Axis letters: B batch, L sequence length (self-attention, so T = S = L), N query heads, K kv
heads, G = N // K, H head_dim, D model dim, F MLP dim, V vocab.

The model: token + learned position embeddings, ``num_layers`` pre-LayerNorm blocks of causal
grouped-query self-attention (:func:`gqa_viz.core.attention` on the block's ``attention``
params, so each is a ``GroupQueryAttention`` weight set as it is) and a GELU MLP, a final
LayerNorm and an unembedding. Params are a plain pytree::

    {"token_embedding": [V, D], "position_embedding": [L, D],
     "layers": [{"norm1": {"scale": [D], "bias": [D]},
                 "attention": core.Params (use_bias=True: query/key/value/attention_output),
                 "norm2": {"scale": [D], "bias": [D]},
                 "mlp": {"up": {"kernel": [D, F], "bias": [F]},
                         "down": {"kernel": [F, D], "bias": [D]}}}, ...],
     "final_norm": {"scale": [D], "bias": [D]},
     "unembed": {"kernel": [D, V], "bias": [V]}}   # no kernel with tie_embeddings

Files (:func:`save`, :func:`load`) are safetensors, one tensor per leaf named by its path
(``layers/0/attention/query/kernel``), with the config and a model card as JSON in the
metadata. Training (:func:`train`) needs optax (requirements-dev.txt); loading and running a
model needs only JAX, NumPy and safetensors.

The tasks are in :mod:`gqa_viz.tasks`; their names are re-exported here.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gqa_viz import core, sharing
from gqa_viz.tasks import (
    TASKS,
    Batch,
    answer_keys,
    answer_positions,
    describe,
    make_batch,
    seq_len,
    token_names,
    vocab_size,
)

__all__ = [
    "EVAL_BATCH",
    "EVAL_SEED",
    "TASKS",
    "Accuracy",
    "Batch",
    "Config",
    "LayerTrace",
    "Loaded",
    "ModelTrace",
    "TrainResult",
    "accuracy",
    "answer_keys",
    "answer_positions",
    "block",
    "convert",
    "count_params",
    "describe",
    "embed",
    "evaluate",
    "flatten",
    "init",
    "load",
    "logits",
    "lr_schedule",
    "make_batch",
    "param_shapes",
    "save",
    "seq_len",
    "token_names",
    "trace",
    "train",
    "unembed",
    "vocab_size",
]

# The held-out evaluation: a seed no training stream uses (training draws from
# default_rng([seed, _TRAIN_STREAM, stream]), a different seed sequence).
EVAL_SEED = 20261123
EVAL_BATCH = 1024
_TRAIN_STREAM = 0x7A1
_FORMAT = "gqa_viz.tiny/1"

Params = dict[str, Any]


@dataclass(frozen=True)
class Config:
    """A tiny model's hyperparameters (hashable: a jit static argument). JSON round-trips."""

    task: str
    vocab: int
    seq_len: int
    d_model: int = 64
    num_layers: int = 2
    num_query_heads: int = 8
    num_key_value_heads: int = 8
    head_dim: int = 8
    mlp_dim: int = 64
    tie_embeddings: bool = False
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}.")
        if self.vocab != vocab_size(self.task) or self.seq_len != seq_len(self.task):
            raise ValueError(
                f"Task {self.task!r} has vocab {vocab_size(self.task)} and seq_len "
                f"{seq_len(self.task)}, got vocab={self.vocab}, seq_len={self.seq_len}."
            )
        for name in ("d_model", "num_layers", "mlp_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.spec  # noqa: B018 -- validates N, K, H (N % K == 0) with GQASpec's messages

    @classmethod
    def for_task(cls, task: str, **overrides) -> Config:
        """The config for ``task`` (its vocab and seq_len), other fields from ``overrides``."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
        return cls(task=task, vocab=vocab_size(task), seq_len=seq_len(task), **overrides)

    @property
    def spec(self) -> core.GQASpec:
        """The attention layers' spec (biases on, no gate, no dropout)."""
        return core.GQASpec(
            num_query_heads=self.num_query_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            use_bias=True,
        )

    def replace(self, **changes) -> Config:
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown config fields {unknown}; known: {sorted(known)}.")
        return cls(**data)


# ---------------------------------------------------------------------------------------------
# Parameters.


def param_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """{flat tensor name: shape} of a model with this config, in a fixed order."""
    V, L, D, F = cfg.vocab, cfg.seq_len, cfg.d_model, cfg.mlp_dim
    shapes = {"token_embedding": (V, D), "position_embedding": (L, D)}
    attention = core.param_shapes(cfg.spec, D)
    for i in range(cfg.num_layers):
        p = f"layers/{i}"
        shapes.update({f"{p}/norm1/scale": (D,), f"{p}/norm1/bias": (D,)})
        shapes.update({f"{p}/attention/{a}/{b}": s for (a, b), s in attention.items()})
        shapes.update({f"{p}/norm2/scale": (D,), f"{p}/norm2/bias": (D,)})
        shapes.update({f"{p}/mlp/up/kernel": (D, F), f"{p}/mlp/up/bias": (F,)})
        shapes.update({f"{p}/mlp/down/kernel": (F, D), f"{p}/mlp/down/bias": (D,)})
    shapes.update({"final_norm/scale": (D,), "final_norm/bias": (D,)})
    if not cfg.tie_embeddings:
        shapes["unembed/kernel"] = (D, V)
    shapes["unembed/bias"] = (V,)
    return shapes


def flatten(params: Params) -> dict[str, np.ndarray]:
    """{"layers/0/attention/query/kernel": array, ...}: one NumPy array per leaf."""
    flat: dict[str, np.ndarray] = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}/{k}" if prefix else k, v)
        elif isinstance(node, list | tuple):
            for i, v in enumerate(node):
                walk(f"{prefix}/{i}", v)
        else:
            flat[prefix] = np.asarray(node)

    walk("", params)
    return flat


def _unflatten(flat: dict[str, Any], cfg: Config) -> Params:
    params: Params = {"layers": [{} for _ in range(cfg.num_layers)]}
    for name, value in flat.items():
        parts = name.split("/")
        node = params
        if parts[0] == "layers":
            node, parts = params["layers"][int(parts[1])], parts[2:]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return params


def count_params(params: Params) -> int:
    return sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params))


def init(cfg: Config, seed: int = 0) -> Params:
    """Fresh weights, from NumPy generators seeded by ``seed`` and each weight's name.

    Attention layers start as :func:`gqa_viz.core.init_params` does (Glorot uniform, zero
    biases); MLP and unembedding Glorot uniform; LayerNorms at scale 1, bias 0; embeddings
    N(0, 1), as large as the blocks' outputs: with GPT-2's N(0, 0.02^2) the token and position
    signals start swamped in the residual stream, and recall sat on its loss plateau for
    over 2000 steps.
    """
    flat: dict[str, jax.Array] = {}
    for index, (name, shape) in enumerate(param_shapes(cfg).items()):
        rng = np.random.default_rng([seed, index])
        parts = name.split("/")
        if "attention" in parts:
            continue  # drawn per layer below, by core.init_params
        if name.endswith("embedding"):
            value = rng.standard_normal(shape)
        elif parts[-1] == "kernel":
            limit = math.sqrt(6.0 / (shape[0] + shape[1]))
            value = rng.uniform(-limit, limit, shape)
        elif parts[-1] == "scale":
            value = np.ones(shape)
        else:
            value = np.zeros(shape)
        flat[name] = jnp.asarray(value, jnp.float32)
    params = _unflatten(flat, cfg)
    for i, layer in enumerate(params["layers"]):
        layer_seed = int(np.random.default_rng([seed, 1000 + i]).integers(2**31))
        layer["attention"] = core.init_params(cfg.spec, cfg.d_model, seed=layer_seed)
    return params


# ---------------------------------------------------------------------------------------------
# The forward pass.


class LayerTrace(NamedTuple):
    """What one block's attention saw and did."""

    input: jax.Array  # [B, L, D] the LayerNorm output the attention layer reads (query = value)
    probs: jax.Array  # [B, N, L, L] its causal attention probabilities
    output: jax.Array  # [B, L, D] the attention layer's output (added to the residual stream)


class ModelTrace(NamedTuple):
    logits: jax.Array  # [B, L, V]
    layers: tuple[LayerTrace, ...]  # one per block


def _layer_norm(x, p, eps: float):
    mean = jnp.mean(x, axis=-1, keepdims=True)  # [B, L, 1]
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)  # [B, L, 1]
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _dense(x, p, equation: str):
    return jnp.einsum(equation, x, p["kernel"]) + p["bias"]


def embed(params: Params, tokens, positions=None) -> jax.Array:
    """The residual stream's start [B, T, D]: token plus learned position embeddings.

    ``positions`` [T]: the absolute position of each token (a decode step's chunk sits at
    ``offset .. offset + T - 1``); None means 0 .. T - 1. Positions past the table's rows are
    the caller's to refuse: inside jit an out-of-range row is clamped, not an error.
    """
    tokens = jnp.asarray(tokens)
    table = params["position_embedding"]  # [rows, D]
    pos = table[: tokens.shape[-1]] if positions is None else table[positions]  # [T, D]
    return params["token_embedding"][tokens] + pos  # [B, T, D]


def block(p: Params, cfg: Config, x, attend):
    """One pre-LayerNorm block on the residual stream ``x`` [B, T, D] -> (x [B, T, D], aux).

    ``attend(attention_params, h)`` runs the block's attention on its LayerNorm output
    ``h`` [B, T, D] and returns ``(output [B, T, D], aux)``: the full pass attends causally
    over the whole sequence (:func:`logits`, :func:`trace`), :mod:`gqa_viz.decode` over a
    KV cache plus the new chunk. ``aux`` is passed back untouched.
    """
    eps = cfg.layer_norm_epsilon
    h = _layer_norm(x, p["norm1"], eps)  # [B, T, D]
    attended, aux = attend(p["attention"], h)
    x = x + attended
    h = _layer_norm(x, p["norm2"], eps)  # [B, T, D]
    up = jax.nn.gelu(_dense(h, p["mlp"]["up"], "bld,df->blf"))  # [B, T, F]
    x = x + _dense(up, p["mlp"]["down"], "blf,fd->bld")  # [B, T, D]
    return x, aux


def unembed(params: Params, cfg: Config, x) -> jax.Array:
    """Final LayerNorm and unembedding: residual stream [B, T, D] -> logits [B, T, V]."""
    x = _layer_norm(x, params["final_norm"], cfg.layer_norm_epsilon)  # [B, T, D]
    if cfg.tie_embeddings:
        kernel = params["token_embedding"].T  # [D, V]
    else:
        kernel = params["unembed"]["kernel"]  # [D, V]
    return jnp.einsum("bld,dv->blv", x, kernel) + params["unembed"]["bias"]  # [B, T, V]


def _forward(params: Params, cfg: Config, tokens, with_trace: bool, attention_mask=None):
    x = embed(params, tokens)  # [B, L, D]

    def attend(attention, h):
        kwargs = dict(spec=cfg.spec, use_causal_mask=True, attention_mask=attention_mask)
        if with_trace:
            t = core.attention_trace(attention, h, h, **kwargs)
            return t.output, LayerTrace(h, t.probs, t.output)
        return core.attention(attention, h, h, **kwargs), None

    traces = []
    for p in params["layers"]:
        x, layer_trace = block(p, cfg, x, attend)
        traces.append(layer_trace)
    out = unembed(params, cfg, x)  # [B, L, V]
    return ModelTrace(out, tuple(traces)) if with_trace else out


@functools.partial(jax.jit, static_argnames="cfg")
def logits(params: Params, cfg: Config, tokens, attention_mask=None) -> jax.Array:
    """Next-token logits [B, L, V] for tokens [B, L] (any L up to cfg.seq_len).

    ``attention_mask`` [L, L] (True = attend), when given, is ANDed with the causal mask in
    every block: e.g. :func:`gqa_viz.masks.sink_window` materialized, the full pass a bounded
    KV cache must reproduce (:mod:`gqa_viz.decode`).
    """
    return _forward(params, cfg, tokens, False, attention_mask)


@functools.partial(jax.jit, static_argnames="cfg")
def trace(params: Params, cfg: Config, tokens, attention_mask=None) -> ModelTrace:
    """Logits and, per block, the attention's input, probabilities and output.

    ``(params["layers"][i]["attention"], trace(...).layers[i].input)`` is a
    ``GroupQueryAttention`` weight set with the input it saw: run it with query = value =
    that input and ``use_causal_mask=True`` to get ``layers[i].probs`` again.
    ``attention_mask`` as in :func:`logits`.
    """
    return _forward(params, cfg, tokens, True, attention_mask)


def _loss(params: Params, cfg: Config, tokens, targets, mask):
    logp = jax.nn.log_softmax(_forward(params, cfg, tokens, False), axis=-1)  # [B, L, V]
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # [B, L]
    w = mask.astype(nll.dtype)  # [B, L]
    return jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)


# ---------------------------------------------------------------------------------------------
# Accuracy.


class Accuracy(NamedTuple):
    token: float  # fraction of answer tokens predicted right (argmax)
    sequence: float  # fraction of sequences with every answer token right


@functools.partial(jax.jit, static_argnames="cfg")
def _correct(params, cfg: Config, tokens, targets, mask):
    right = jnp.argmax(logits(params, cfg, tokens), axis=-1) == targets  # [B, L]
    tokens_right = jnp.sum(right & mask)
    sequences_right = jnp.sum(jnp.all(right | ~mask, axis=-1))
    return tokens_right, sequences_right


def accuracy(params: Params, cfg: Config, batch: Batch) -> Accuracy:
    """Token accuracy on the answer positions, and exact match per sequence."""
    t, s = _correct(params, cfg, batch.tokens, batch.targets, batch.loss_mask)
    return Accuracy(int(t) / int(np.sum(batch.loss_mask)), int(s) / len(batch.tokens))


def evaluate(
    params: Params, cfg: Config, *, seed: int = EVAL_SEED, batch: int = EVAL_BATCH
) -> Accuracy:
    """:func:`accuracy` on the held-out batch ``make_batch(cfg.task, seed, batch)``."""
    return accuracy(params, cfg, make_batch(cfg.task, seed, batch))


# ---------------------------------------------------------------------------------------------
# Training.


class TrainResult(NamedTuple):
    params: Params
    losses: np.ndarray  # [steps] training loss of each step (before its update)
    seconds: float  # wall time, compilation included


def lr_schedule(step, steps: int, peak: float, warmup: int):
    """Linear warmup from 0 to ``peak`` over ``warmup`` steps, then cosine decay to 0 at ``steps``.

    Plain jnp on traced scalars (optax's schedules take their step counts as Python numbers),
    so one compiled training step serves every run length.
    """
    step = jnp.asarray(step, jnp.float32)
    warm = (step + 1.0) / jnp.maximum(warmup, 1)
    progress = jnp.clip((step - warmup) / jnp.maximum(steps - warmup, 1), 0.0, 1.0)
    cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    return peak * jnp.where(step < warmup, warm, cosine)


@functools.cache
def _optimizer(weight_decay: float, clip: float):
    """adamw at learning rate 1 (the schedule scales its updates), decaying kernels and
    embeddings only (not biases or LayerNorms)."""
    import optax  # training only: not needed to load or run a model

    decayed = ("kernel", "token_embedding", "position_embedding")
    decay = lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) in decayed, params
    )
    return optax.chain(
        optax.clip_by_global_norm(clip),
        optax.adamw(1.0, b1=0.9, b2=0.98, weight_decay=weight_decay, mask=decay),
    )


@functools.partial(jax.jit, static_argnames=("cfg", "opt"))
def _train_chunk(params, opt_state, tokens, targets, mask, step0, steps, peak, warmup, cfg, opt):
    """Steps over a chunk of batches [C, B, L] in one scan (one dispatch per chunk)."""

    def step(carry, batch):
        params, opt_state, i = carry
        loss, grads = jax.value_and_grad(_loss)(params, cfg, *batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        # adamw's updates are linear in its learning rate, so running it at 1 and scaling
        # here is adamw under the schedule (decoupled weight decay scales with lr as in optax).
        lr = lr_schedule(i, steps, peak, warmup)
        params = jax.tree.map(lambda p, u: p + lr * u, params, updates)
        return (params, opt_state, i + 1), loss

    (params, opt_state, _), losses = jax.lax.scan(
        step, (params, opt_state, step0), (tokens, targets, mask)
    )
    return params, opt_state, losses


def train(
    cfg: Config,
    steps: int,
    seed: int = 0,
    lr: float = 3e-3,
    batch: int = 64,
    *,
    params: Params | None = None,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    clip: float = 1.0,
    stream: int = 0,
    chunk: int = 50,
) -> TrainResult:
    """Train with adamw (b2 = 0.98, gradient clipping) under :func:`lr_schedule`.

    From ``init(cfg, seed)``, or from ``params`` when given (uptraining: fresh optimizer
    state, same schedule shape over ``steps``). ``warmup`` is a fraction of ``steps``.
    Batches come from ``default_rng([seed, 0x7A1, stream])``, never the held-out
    :data:`EVAL_SEED`; pass another ``stream`` for data the first run did not see.
    """
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    start = time.perf_counter()
    opt = _optimizer(float(weight_decay), float(clip))
    params = init(cfg, seed) if params is None else jax.tree.map(jnp.array, params)
    opt_state = opt.init(params)
    rng = np.random.default_rng([seed, _TRAIN_STREAM, stream])
    warmup_steps = round(warmup * steps)
    losses = []
    done = 0
    while done < steps:
        c = min(chunk, steps - done)
        data = make_batch(cfg.task, rng, c * batch)
        tokens, targets, mask = (a.reshape(c, batch, -1) for a in data)  # [C, B, L]
        params, opt_state, chunk_losses = _train_chunk(
            params,
            opt_state,
            tokens,
            targets,
            mask,
            jnp.int32(done),
            jnp.int32(steps),
            jnp.float32(lr),
            jnp.int32(warmup_steps),
            cfg=cfg,
            opt=opt,
        )
        losses.append(chunk_losses)
        done += c
    losses = np.concatenate([np.asarray(x) for x in losses])  # [steps]
    return TrainResult(params, losses, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# MHA -> GQA conversion.


def convert(
    params: Params, cfg: Config, K: int, method: str = "mean", seed: int = 0
) -> tuple[Params, Config]:
    """Every block's attention converted to K kv heads by :func:`gqa_viz.sharing.grouped_heads`.

    ``method``: "mean" (mean-pool each group's K/V heads, as in Ainslie et al., 2023),
    "first" or "random" (keep one head per group; block i draws with ``seed + i``). The model
    must be multi-head (K = N); K = N returns the same weights.
    """
    spec = cfg.spec
    if spec.num_key_value_heads != spec.num_query_heads:
        raise ValueError(
            f"convert starts from a multi-head model (num_key_value_heads == num_query_heads "
            f"== {spec.num_query_heads}), got num_key_value_heads={spec.num_key_value_heads}."
        )
    new_cfg = cfg.replace(num_key_value_heads=K)  # validates K (N % K == 0)
    out = dict(params)
    out["layers"] = []
    for i, layer in enumerate(params["layers"]):
        attention, _ = sharing.grouped_heads(layer["attention"], spec, K, method, seed=seed + i)
        out["layers"].append({**layer, "attention": attention})
    return out, new_cfg


# ---------------------------------------------------------------------------------------------
# Files.


class Loaded(NamedTuple):
    params: Params
    cfg: Config
    card: dict


def save(path: str | os.PathLike, params: Params, cfg: Config, card: dict | None = None) -> None:
    """Write float32 weights to a .safetensors file, with config and ``card`` (JSON) in its metadata."""
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in flatten(params).items()}
    _check_tensors(tensors, cfg, os.fspath(path))
    metadata = {"format": _FORMAT, "config": cfg.to_json(), "card": json.dumps(card or {})}
    save_file(tensors, os.fspath(path), metadata=metadata)


def load(path: str | os.PathLike) -> Loaded:
    """Read a file written by :func:`save` (never unpickles), checking every name and shape."""
    from safetensors import safe_open

    path = os.fspath(path)
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
        if "config" not in metadata:
            raise ValueError(f"{path!r} has no tiny-model config in its metadata.")
        try:
            cfg = Config.from_json(metadata["config"])
            card = json.loads(metadata.get("card", "{}"))
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path!r} has an unreadable config or card: {e}") from None
        flat = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 -- not a dict
    _check_tensors(flat, cfg, path)
    params = _unflatten({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()}, cfg)
    return Loaded(params, cfg, card)


def _check_tensors(flat: dict[str, np.ndarray], cfg: Config, path: str) -> None:
    expected = param_shapes(cfg)
    missing = [k for k in expected if k not in flat]
    extra = sorted(k for k in flat if k not in expected)
    wrong = [
        f"{k} {tuple(np.shape(flat[k]))} (expected {s})"
        for k, s in expected.items()
        if k in flat and tuple(np.shape(flat[k])) != s
    ]
    if missing or extra or wrong:
        raise ValueError(
            f"{path!r} does not match its config (task={cfg.task}, N={cfg.num_query_heads}, "
            f"K={cfg.num_key_value_heads}, D={cfg.d_model}, layers={cfg.num_layers}): "
            f"missing {missing or 'nothing'}, unexpected {extra or 'nothing'}, "
            f"wrong shapes {wrong or 'none'}."
        )
