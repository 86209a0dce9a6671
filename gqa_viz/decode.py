"""Decoding with a KV cache, on the tiny models of :mod:`gqa_viz.tiny`. No Streamlit.

Axis letters as in :mod:`gqa_viz.core`: B batch, C new tokens of a step (the chunk; T of the
attention), S_max cache slots, N query heads, K kv heads, G = N // K, H head_dim, D model dim,
V vocab, L layers.

The cache
---------
A :class:`DecodeState` holds, per layer, the keys and values of every cached token per K/V
head, ``k, v: [B, S_max, K, H]`` (K heads, not N: grouped-query attention's saving), the
absolute position each slot holds (``positions [S_max]``, -1 for an empty slot), how many
tokens have been seen (``length``: the next token's position) and its :class:`CachePolicy`:

* ``"full"``: slot p holds position p; nothing is dropped. S_max defaults to the model's
  position table (``cfg.seq_len``), the most tokens any run of it can feed.
* ``"rolling"`` (Mistral's rolling buffer, sliding-window attention): S_max = w slots, position
  p in slot p mod w. A step keeps the last w positions and drops the rest, which no later
  query can see: query i sees keys i - w + 1 .. i.
* ``"sink"`` (StreamingLLM's attention sinks): S_max = s + w, the first s positions in slots
  0 .. s - 1 for good, later ones in a ring of w slots, s + (p - s) mod w. It keeps the first
  s tokens and the last w and drops the middle.

A step
------
:func:`step` appends C >= 1 tokens (C = 1 is decoding, C > 1 chunked prefill; :func:`prefill`
is the first step, on an empty cache). Its tokens sit at positions ``offset .. offset + C - 1``
(``offset = length``), so query i of the chunk is position ``offset + i``. Every layer projects
the chunk's queries, keys and values, attends over **the cache as it was plus the chunk's own
keys** (S_max + C columns: slots first, then the chunk), and then writes the chunk's keys and
values into the slots the policy gives. Attending first and writing after is how Mistral's
reference code runs a chunk through its rolling buffer: written first, the chunk's last key
would overwrite a key its first query still needs whenever C > 1 (in a ring of w slots key
``offset + C - 1`` lands on key ``offset + C - 1 - w``, inside query ``offset``'s window).

The mask of a step is the policy's rule over absolute positions, with the chunk's offset
explicit (:func:`gqa_viz.masks.causal_offset` or :func:`gqa_viz.masks.sink_window`), read at
the positions the key columns hold (:func:`gqa_viz.masks.at_key_positions`). That is the causal
mask aligned bottom-right: the chunk is the last C rows of the full sequence's triangle. The
top-left alignment Keras uses when T != S would let the first new token see key 0 alone
(see the comment above ``causal_offset`` in :mod:`gqa_viz.masks`).

Equal to the full pass
----------------------
At every step and layer, the chunk's rows of attention output and probabilities are the full
sequence's causal forward pass's rows (:func:`gqa_viz.tiny.trace`, up to float32 round-off),
the probabilities placed at their key positions (:func:`probs_by_position`), for every K, with
or without a window (``window`` masks the full pass with ``masks.sink_window(window, sinks)``;
a full cache with a window keeps everything but attends to the window). The sink cache equals
the full pass masked with ``causal & (j < s | i - j < w)`` at the original positions. Where a
bounded cache differs from the unbounded causal model: nowhere before position s + w (every
earlier key is still kept); from query s + w on, keys s .. i - w are gone, the softmax shares
its mass among the kept keys only, and the next layer's input differs with it. (StreamingLLM
with rotary models also re-numbers positions inside the cache; the tiny models' learned
positions are added at the input, so kept keys keep their original positions.)

Compiled programs
-----------------
One jitted program per (model config, B, C, S_max): the policy's kind, window and sinks go
into the program as data (:func:`_rule_data`, int32 scalars the slot and mask arithmetic reads
with jnp ops), and so do ``length`` and ``positions``. So every step of a run reuses one
program (a run compiles one for the prompt and one for its C = 1 steps, one more when a
chunked prefill's last chunk is shorter); runs of any length on a full cache share them (its
capacity is the model's position table, not the run's length); and every cache of the same
capacity shares them whatever its kind, window and sinks (a rolling cache of w = 7, a sink
cache of 2 + 5 or 3 + 4, a full cache of 7 slots with any window). Only the capacity must be
static: it is the cache buffers' shape. :func:`step` registers each program with
:func:`gqa_viz.buckets.note_program`, so decoding counts toward the same cap on programs held
in memory as the bucketed attention programs. Each step reads all S_max slots, masked: static
shapes cost a full buffer's work; :func:`step_bytes` counts what a step must read at least.

API
---
:func:`init_cache`, :func:`prefill`, :func:`step`, :func:`generate` (greedy, every step's
outputs for a page to show), :func:`probs_by_position`, :func:`model_config` (a tiny model as
the calculator's :class:`gqa_viz.kv_cache.ModelConfig`) and :func:`step_bytes` (bytes a decode
step reads and its time at a memory bandwidth, from :mod:`gqa_viz.kv_cache`'s formulas).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gqa_viz import buckets, core, kv_cache, tiny
from gqa_viz import masks as M

POLICIES = ("full", "rolling", "sink")


def _is_int(x) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


@dataclass(frozen=True)
class CachePolicy:
    """What a cache keeps (hashable). Only ``capacity`` selects a compiled program; the rest
    goes into it as data (:func:`_rule_data`).

    ``kind`` one of :data:`POLICIES`; ``capacity`` S_max slots; ``window`` w, the attention's
    causal window (query i sees keys i - w + 1 .. i; None: all earlier keys); ``sinks`` s,
    the first tokens every query also sees. Use :meth:`of` to build one with its capacity
    derived.
    """

    kind: str
    capacity: int
    window: int | None = None
    sinks: int = 0

    def __post_init__(self):
        if self.kind not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.kind!r}.")
        w, s = self.window, self.sinks
        if w is not None and (not _is_int(w) or w < 1):
            raise ValueError(f"window must be None or a positive integer, got {w!r}.")
        if not _is_int(s) or s < 0:
            raise ValueError(f"sinks must be an integer >= 0, got {s!r}.")
        if s and w is None:
            raise ValueError(f"sinks = {s} needs a window: sinks are seen beside a window.")
        if self.kind == "rolling":
            if w is None or s:
                raise ValueError(
                    "A rolling cache needs a window and no sinks (use policy 'sink' for sinks), "
                    f"got window={w!r}, sinks={s}."
                )
            if self.capacity != w:
                raise ValueError(
                    f"A rolling cache has capacity = window = {w}, got {self.capacity}."
                )
        if self.kind == "sink":
            if w is None or s < 1:
                raise ValueError(
                    f"A sink cache needs a window and sinks >= 1, got window={w!r}, sinks={s}."
                )
            if self.capacity != s + w:
                raise ValueError(
                    f"A sink cache has capacity = sinks + window = {s} + {w} = {s + w}, got "
                    f"{self.capacity}."
                )
        if not _is_int(self.capacity) or self.capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {self.capacity!r}.")

    @classmethod
    def of(
        cls, kind: str = "full", capacity: int | None = None, window=None, sinks: int = 0
    ) -> CachePolicy:
        """The policy with its capacity: ``capacity`` (needed) for "full", w for "rolling",
        s + w for "sink" (a given capacity must match)."""
        if kind in ("rolling", "sink") and capacity is None:
            capacity = (window if _is_int(window) else 0) + (sinks if _is_int(sinks) else 0)
        if capacity is None:
            raise ValueError("A full cache needs a capacity: the most tokens the run will hold.")
        return cls(kind, capacity, window, sinks)

    @property
    def bounded(self) -> bool:
        """Whether old tokens are dropped (rolling, sink)."""
        return self.kind != "full"

    def rule(self, offset=0) -> M.Mask:
        """Who sees whom, over absolute positions, for queries at q + ``offset``."""
        if self.window is None:
            return M.causal_offset(offset)
        return M.sink_window(self.window, self.sinks, offset)

    def slot(self, position: int) -> int:
        """The slot that holds ``position`` while it is kept."""
        if self.kind == "full" or position < self.sinks:
            return position
        return self.sinks + (position - self.sinks) % self.window

    def kept(self, tokens: int) -> list[int]:
        """The positions held after ``tokens`` tokens (in position order)."""
        if not self.bounded:
            return list(range(tokens))
        s, w = self.sinks, self.window
        return [p for p in range(tokens) if p < s or p >= max(s, tokens - w)]

    def dropped(self, tokens: int) -> list[int]:
        """The positions seen and no longer held after ``tokens`` tokens."""
        held = set(self.kept(tokens))
        return [p for p in range(tokens) if p not in held]

    def describe(self) -> str:
        """One sentence: what this cache keeps and what it drops."""
        s, w, S = self.sinks, self.window, self.capacity
        attends = "every earlier token" if w is None else f"the last {w} tokens"
        if s:
            attends = f"the first {s} tokens and {attends}"
        if self.kind == "full":
            return f"Full cache of {S} slots: keeps every token; each query attends to {attends}."
        if self.kind == "rolling":
            return (
                f"Rolling cache of {w} slots (position p in slot p mod {w}): keeps the last "
                f"{w} tokens and drops every older one, which no later query could see."
            )
        return (
            f"Sink cache of {s} + {w} = {S} slots: keeps the first {s} tokens (the sinks) and "
            f"the last {w}; drops the middle, which the unbounded model would still see."
        )


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["k", "v", "positions", "length"],
    meta_fields=["policy"],
)
@dataclass(frozen=True)
class DecodeState:
    """The KV cache between steps (a pytree; ``policy`` is static)."""

    k: tuple[jax.Array, ...]  # per layer [B, S_max, K, H]
    v: tuple[jax.Array, ...]  # per layer [B, S_max, K, H]
    positions: jax.Array  # [S_max] int32: absolute position in each slot, -1 = empty
    length: jax.Array  # [] int32: tokens seen so far = the next token's position
    policy: CachePolicy

    @property
    def batch(self) -> int:
        return int(self.k[0].shape[0])


class StepOut(NamedTuple):
    """What one step computed. Key columns: the S_max slots as they were, then the chunk."""

    logits: jax.Array  # [B, C, V] next-token logits of each new position
    probs: tuple[jax.Array, ...]  # per layer [B, N, C, S_max + C]; masked columns are 0
    outputs: tuple[jax.Array, ...]  # per layer [B, C, D] the attention layer's output
    query_positions: jax.Array  # [C] absolute positions of the new tokens
    key_positions: jax.Array  # [S_max + C] absolute position of each column, -1 = empty slot
    allowed: jax.Array  # [C, S_max + C] the step's mask: True = attended
    written: jax.Array  # [C] the slot each new token's key and value went to, -1 = not kept


def init_cache(
    cfg: tiny.Config,
    batch: int,
    capacity: int | None = None,
    policy: str | CachePolicy = "full",
    window: int | None = None,
    sinks: int = 0,
) -> DecodeState:
    """An empty cache for ``batch`` sequences: zeros, every slot empty, length 0.

    ``policy`` a :class:`CachePolicy`, or its kind with ``capacity`` (a full cache: the most
    tokens the run holds; default ``cfg.seq_len``, the model's position table), ``window`` and
    ``sinks`` (see :meth:`CachePolicy.of`).
    """
    if not _is_int(batch) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}.")
    if isinstance(policy, CachePolicy):
        if (capacity, window, sinks) != (None, None, 0):
            raise ValueError(
                "Give either a CachePolicy or its kind with capacity, window and sinks, not both."
            )
    else:
        if policy == "full" and capacity is None:
            capacity = cfg.seq_len
        policy = CachePolicy.of(policy, capacity, window, sinks)
    K, H = cfg.num_key_value_heads, cfg.head_dim
    zeros = jnp.zeros((batch, policy.capacity, K, H), jnp.float32)  # [B, S_max, K, H]
    L = cfg.num_layers
    return DecodeState(
        k=(zeros,) * L,
        v=(zeros,) * L,
        positions=jnp.full((policy.capacity,), -1, jnp.int32),
        length=jnp.zeros((), jnp.int32),
        policy=policy,
    )


# ---------------------------------------------------------------------------------------------
# The compiled step.


def _cached_attention(attention: core.Params, h, *, spec, cache_k, cache_v, allowed):
    """Attention of the chunk h [B, C, D] over the cache plus its own keys.

    The arithmetic is the attention core's explicit path (its helpers, not a copy), so a
    decode step rounds like the full pass it must equal.
    """
    if spec.rope is not None or spec.qk_norm is not None:
        # The cache would have to hold rotated keys at their positions; the tiny models this
        # module decodes have neither, and a spec that has them is refused, not run wrongly.
        raise ValueError("decode steps layers without RoPE or QK norm only.")
    q, k_new, v_new, _ = core.project(attention, spec, h, h, h)  # [B,C,N,H], [B,C,K,H] x2
    keys = jnp.concatenate([cache_k, k_new], axis=1)  # [B, S_max + C, K, H]
    values = jnp.concatenate([cache_v, v_new], axis=1)  # [B, S_max + C, K, H]
    _, probs, _, context = core.scores_and_context(
        spec, q, keys, values, allowed[None], None, False, "zero"
    )  # probs [B, N, C, S_max + C], context [B, K, G, C, H]
    out = attention["attention_output"]
    K, G = spec.num_key_value_heads, spec.groups
    kernel = out["kernel"].reshape(K, G, *out["kernel"].shape[1:])  # [K, G, H, D]
    output = core.dense(context, {**out, "kernel": kernel}, "bkgth,kghd->btd")  # [B, C, D]
    return output, (probs, output, k_new, v_new)


# A window no distance reaches: "every earlier key" as data (positions stay below 2**31 - 1).
_NO_WINDOW = np.iinfo(np.int32).max


def _rule_data(policy: CachePolicy) -> dict[str, np.ndarray]:
    """The policy as int32 scalars for the compiled step, so policies of one capacity share it.

    ``window`` and ``sinks``: who a query attends to (``_NO_WINDOW`` for no window).
    ``keep_window`` and ``keep_sinks``: where a position is written (:meth:`CachePolicy.slot`):
    a bounded cache keeps its attention's sinks and window; a full cache is the same arithmetic
    with every slot a sink (keep_sinks = capacity: position p in slot p).
    """
    s, w = policy.sinks, policy.window
    keep = (s, w) if policy.bounded else (policy.capacity, policy.capacity)
    values = {
        "window": _NO_WINDOW if w is None else w,
        "sinks": s,
        "keep_sinks": keep[0],
        "keep_window": keep[1],
    }
    return {name: np.int32(v) for name, v in values.items()}


def _traced_rule(offset, window, sinks) -> M.Mask:
    """:func:`gqa_viz.masks.sink_window` (window, sinks, offset) with all three traced
    (``sink_window`` checks Python ints): allowed iff 0 <= d and (k < sinks or d < window),
    d = q + offset - k. ``window = _NO_WINDOW``, ``sinks = 0`` is :func:`masks.causal_offset`."""

    def fn(b, q, k, T, S):
        d = q + offset - k  # how far key k lies behind the query's own position
        return (d >= 0) & ((k < sinks) | (d < window))

    return M.Mask(fn, "sink_window (traced)")


def _slots(q_pos, end, keep_sinks, keep_window, capacity: int):
    """The slot each new position goes to; ``capacity`` (dropped by the scatter) for a position
    not kept. ``end``: the length after the step. Position p < keep_sinks sits in slot p, later
    ones in a ring of keep_window slots after them (see :func:`_rule_data`)."""
    s, w = keep_sinks, keep_window
    ring = s + (q_pos - s) % w
    # Kept: the sinks, and the last w positions after them (w consecutive: distinct slots).
    in_ring = q_pos >= jnp.maximum(s, end - w)
    return jnp.where(q_pos < s, q_pos, jnp.where(in_ring, ring, capacity))


def _advance(params, cache, tokens, rule, *, cfg: tiny.Config):
    """One step on ``cache`` = (k, v, positions, length) with the policy's ``rule``
    (:func:`_rule_data`); returns the new (k, v, positions, length) and the :class:`StepOut`."""
    cache_ks, cache_vs, positions, offset = cache
    C = tokens.shape[1]
    S = positions.shape[0]  # the capacity: the one part of the policy the program is made for
    q_pos = offset + jnp.arange(C, dtype=jnp.int32)  # query i sits at offset + i
    k_pos = jnp.concatenate([positions, q_pos])  # [S_max + C]
    seen = M.at_key_positions(_traced_rule(offset, rule["window"], rule["sinks"]), k_pos)
    allowed = M.materialize(seen, C, S + C)[0]  # [C, S_max + C]

    x = tiny.embed(params, tokens, q_pos)  # [B, C, D]
    slots = _slots(q_pos, offset + C, rule["keep_sinks"], rule["keep_window"], S)  # [C]
    ks, vs, probs, outputs = [], [], [], []
    for p, cache_k, cache_v in zip(params["layers"], cache_ks, cache_vs, strict=True):
        attend = functools.partial(
            _cached_attention, spec=cfg.spec, cache_k=cache_k, cache_v=cache_v, allowed=allowed
        )
        x, (pr, out, k_new, v_new) = tiny.block(p, cfg, x, attend)
        ks.append(cache_k.at[:, slots].set(k_new, mode="drop"))
        vs.append(cache_v.at[:, slots].set(v_new, mode="drop"))
        probs.append(pr)
        outputs.append(out)
    new_cache = (
        tuple(ks),
        tuple(vs),
        positions.at[slots].set(q_pos, mode="drop"),
        offset + C,
    )
    out = StepOut(
        logits=tiny.unembed(params, cfg, x),
        probs=tuple(probs),
        outputs=tuple(outputs),
        query_positions=q_pos,
        key_positions=k_pos,
        allowed=allowed,
        written=jnp.where(slots < S, slots, -1),
    )
    return new_cache, out


_advance_jit = jax.jit(_advance, static_argnames="cfg")


def program_key(cfg: tiny.Config, policy: CachePolicy, batch: int, chunk: int) -> tuple:
    """What selects a compiled step program: the model, B, C and the capacity (S_max), the one
    static part of a policy. The key :func:`step` gives :func:`gqa_viz.buckets.note_program`."""
    return ("decode", cfg, int(batch), int(chunk), policy.capacity)


def compiled_programs() -> int:
    """How many step programs this process holds compiled (one per :func:`program_key`)."""
    return _advance_jit._cache_size()


def _check_step(params, cfg: tiny.Config, state: DecodeState, tokens) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.dtype.kind not in "iu":
        raise ValueError(
            f"tokens must be an integer array [batch, chunk], got {tokens.dtype} array of shape "
            f"{tokens.shape}."
        )
    B, C = tokens.shape
    if C < 1:
        raise ValueError("A step needs at least one token (chunk C >= 1).")
    if B != state.batch:
        raise ValueError(f"tokens have batch {B} but the cache was made for batch {state.batch}.")
    if tokens.min() < 0 or tokens.max() >= cfg.vocab:
        raise ValueError(
            f"tokens must be ids in 0 .. {cfg.vocab - 1} (vocab {cfg.vocab}), got "
            f"{tokens.min()} .. {tokens.max()}."
        )
    K, H = cfg.num_key_value_heads, cfg.head_dim
    if state.k[0].shape[2:] != (K, H) or len(state.k) != cfg.num_layers:
        raise ValueError(
            f"The cache holds {len(state.k)} layers of {state.k[0].shape[2]} kv heads x "
            f"{state.k[0].shape[3]}, but the model has {cfg.num_layers} layers of K = {K} x "
            f"H = {H}: make it with init_cache for this model."
        )
    length = int(state.length)
    rows = params["position_embedding"].shape[0]
    if length + C > rows:
        raise ValueError(
            f"Positions {length} .. {length + C - 1} go past the model's {rows} learned "
            f"positions (position_embedding has {rows} rows): at most {rows} tokens in all."
        )
    policy = state.policy
    if not policy.bounded and length + C > policy.capacity:
        raise ValueError(
            f"The full cache holds {policy.capacity} tokens; {length} are cached and this step "
            f"adds {C}. Make the cache with capacity >= {length + C}, or use a rolling or sink "
            f"cache."
        )
    return tokens.astype(np.int32)


def step(params, cfg: tiny.Config, state: DecodeState, tokens) -> tuple[DecodeState, StepOut]:
    """Append ``tokens`` [B, C] (C >= 1) at positions length .. length + C - 1.

    Returns the new state and the step's :class:`StepOut`. Raises ValueError for tokens of the
    wrong shape, batch or vocabulary, past the position table, or past a full cache's capacity.
    """
    tokens = _check_step(params, cfg, state, tokens)
    policy = state.policy
    buckets.note_program(program_key(cfg, policy, *tokens.shape))
    cache = (state.k, state.v, state.positions, state.length)
    (k, v, positions, length), out = _advance_jit(
        params, cache, jnp.asarray(tokens), _rule_data(policy), cfg=cfg
    )
    return DecodeState(k, v, positions, length, policy), out


def prefill(params, cfg: tiny.Config, state: DecodeState, tokens) -> tuple[DecodeState, StepOut]:
    """The prompt ``tokens`` [B, T] into an empty cache, in one step (for chunked prefill,
    call :func:`step` once per chunk)."""
    if int(state.length) != 0:
        raise ValueError(
            f"prefill starts from an empty cache, but this one holds {int(state.length)} tokens: "
            f"use step to append."
        )
    return step(params, cfg, state, tokens)


def probs_by_position(probs, key_positions, total: int) -> np.ndarray:
    """Probabilities [..., C, S_max + C] of a step laid out by absolute key position:
    [..., C, total], 0 at every position the step did not attend (dropped or in the future)."""
    probs = np.asarray(probs)
    key_positions = np.asarray(key_positions)
    out = np.zeros((*probs.shape[:-1], total), probs.dtype)
    held = key_positions >= 0
    out[..., key_positions[held]] = probs[..., held]
    return out


# ---------------------------------------------------------------------------------------------
# Greedy generation, every step kept for display.


class Step(NamedTuple):
    kind: str  # "prefill" (a chunk of the prompt) or "decode" (one generated token)
    tokens: np.ndarray  # [B, C] the tokens fed in
    out: StepOut  # as NumPy arrays
    cache_positions: np.ndarray  # [S_max] position each slot holds after the step, -1 empty
    length: int  # tokens seen after the step


class Generation(NamedTuple):
    tokens: np.ndarray  # [B, T + new_tokens]: the prompt, then the greedy tokens
    steps: tuple[Step, ...]
    policy: CachePolicy


def generate(
    params,
    cfg: tiny.Config,
    prompt,
    new_tokens: int,
    *,
    chunk: int | None = None,
    policy: str | CachePolicy = "full",
    window: int | None = None,
    sinks: int = 0,
    capacity: int | None = None,
) -> Generation:
    """Greedy decoding: the prompt [B, T] (or [T]) in chunks of ``chunk`` (None: one step),
    then ``new_tokens`` tokens, each the argmax of the last logits.

    The last generated token is not fed back, so the cache ends at T + new_tokens - 1 tokens.
    A full cache's default capacity is the model's position table (``cfg.seq_len``), not the
    run's length, so runs of every length share compiled programs. Returns every step's
    outputs (:class:`Generation`).
    """
    prompt = np.asarray(prompt)
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be token ids [T] or [B, T] with T >= 1, got {prompt.shape}.")
    if not _is_int(new_tokens) or new_tokens < 1:
        raise ValueError(f"new_tokens must be a positive integer, got {new_tokens!r}.")
    B, T = prompt.shape
    chunk = T if chunk is None else chunk
    if not _is_int(chunk) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}.")
    fed = T + new_tokens - 1
    rows = params["position_embedding"].shape[0]
    if fed > rows:
        raise ValueError(
            f"A prompt of {T} and {new_tokens} new tokens feeds {fed} tokens, more than the "
            f"model's {rows} learned positions."
        )
    state = init_cache(cfg, B, capacity, policy, window, sinks)  # full: cfg.seq_len slots

    steps: list[Step] = []

    def run(kind: str, tokens):
        nonlocal state
        state, out = step(params, cfg, state, tokens)
        out = jax.device_get(out)
        steps.append(Step(kind, tokens, out, np.asarray(state.positions), int(state.length)))
        return out

    tokens = prompt.astype(np.int32)
    for start in range(0, T, chunk):
        out = run("prefill", tokens[:, start : start + chunk])
    for i in range(new_tokens):
        nxt = np.argmax(out.logits[:, -1], axis=-1).astype(np.int32)[:, None]  # [B, 1]
        tokens = np.concatenate([tokens, nxt], axis=1)
        if i < new_tokens - 1:
            out = run("decode", nxt)
    return Generation(tokens, tuple(steps), state.policy)


# ---------------------------------------------------------------------------------------------
# Bytes a decode step reads, and its time at a memory bandwidth (gqa_viz.kv_cache's formulas).


def model_config(
    cfg: tiny.Config, policy: CachePolicy | None = None, kv_heads: int | None = None
) -> kv_cache.ModelConfig:
    """A tiny model as the calculator's model: its layers' cache (a bounded policy caps each
    layer at its capacity, as a sliding layer) and its parameter counts from its shapes.

    ``kv_heads`` makes the same model with that many kv heads (its K/V projections resized).
    ``read_params`` leaves out the embedding tables a step reads one row of (the token table
    when untied, the position table), as :mod:`gqa_viz.kv_cache` counts them.
    """
    if kv_heads is not None:
        cfg = cfg.replace(num_key_value_heads=kv_heads)
    shapes = tiny.param_shapes(cfg)
    total = sum(math.prod(s) for s in shapes.values())
    lookups = math.prod(shapes["position_embedding"])
    if not cfg.tie_embeddings:
        lookups += math.prod(shapes["token_embedding"])
    K, H = cfg.num_key_value_heads, cfg.head_dim
    cap = policy.capacity if policy is not None and policy.bounded else None
    layer = kv_cache.LayerCache("full" if cap is None else "sliding", K, H, window=cap)
    return kv_cache.ModelConfig(
        name=f"tiny {cfg.task} (K = {K})",
        model_type="tiny",
        num_query_heads=cfg.num_query_heads,
        num_key_value_heads=K,
        head_dim=H,
        hidden_size=cfg.d_model,
        layers=(layer,) * cfg.num_layers,
        vocab_size=cfg.vocab,
        max_position_embeddings=cfg.seq_len,
        params=total,
        read_params=total - lookups,
    )


def step_bytes(
    model: tiny.Config | kv_cache.ModelConfig,
    cached_tokens: int,
    batch: int = 1,
    dtype: str = "fp32",
    *,
    weights_dtype: str | None = None,
    policy: CachePolicy | None = None,
    bandwidth_bytes_per_s: float = 3.35e12,
) -> dict:
    """Bytes one decode step must read, and the time that takes at a memory bandwidth.

    A step (one new token for each of ``batch`` sequences, ``cached_tokens`` already cached)
    reads the weights once (``read_params`` x bytes of ``weights_dtype``, default ``dtype``)
    and every cached key and value once: 2 x L x K x H x bytes x S x B, S = ``cached_tokens``,
    or the capacity of a bounded ``policy`` when smaller. Time >= bytes / bandwidth
    (:func:`gqa_viz.kv_cache.decode_time_lower_bound`; the default is an H100 SXM's HBM3 peak).

    ``model``: a tiny :class:`gqa_viz.tiny.Config` (with ``policy``), or a calculator model
    (:func:`gqa_viz.kv_cache.from_config`, its layers' windows as configured; ``policy`` not
    used). Returns ``{"configured": ..., "mha": ..., "mqa": ...}`` (one entry per kv-head
    count: K, N, 1), each a dict of ``kv_heads``, ``weights``, ``cache`` and ``total`` bytes,
    ``seconds`` and ``formula`` (the sum with its numbers), plus ``cached_tokens``, ``batch``,
    ``dtype``, ``weights_dtype``, ``bandwidth_bytes_per_s`` and ``note``. A tiny model's MHA
    and MQA variants are the same model with N or 1 kv heads, weights recounted; a calculator
    model's keep the configured weights (its K/V projections are not resized).
    """
    weights_dtype = dtype if weights_dtype is None else weights_dtype
    if isinstance(model, tiny.Config):
        N, K = model.num_query_heads, model.num_key_value_heads
        models = {
            name: model_config(model, policy, kv_heads=k)
            for name, k in (("configured", K), ("mha", N), ("mqa", 1))
        }
        note = "Each variant is the same tiny model with that many kv heads, weights recounted."
    else:
        N = model.num_query_heads
        models = {"configured": model}
        if not model.is_mla:
            models["mha"] = kv_cache.with_kv_heads(model, N)
            models["mqa"] = kv_cache.with_kv_heads(model, 1)
        note = "Variants change the cache only; the weights are counted as configured."
    out: dict = {}
    for name, m in models.items():
        cache = kv_cache.kv_cache_bytes(m, tokens=cached_tokens, batch=batch, dtype=dtype)
        seconds = kv_cache.decode_time_lower_bound(
            m,
            cached_tokens,
            batch=batch,
            dtype=dtype,
            weights_dtype=weights_dtype,
            bandwidth_bytes_per_s=bandwidth_bytes_per_s,
        )  # validates dtypes, batch, tokens and the parameter count
        read = kv_cache.params_read(m)
        weights = read * kv_cache.dtype_bytes(weights_dtype)
        total = weights + cache.total
        cache_formula = kv_cache.formula(m, tokens=cached_tokens, batch=batch, dtype=dtype)
        formula = (
            f"weights: {read:,} params read × {kv_cache.DTYPE_BYTES[weights_dtype]:g} B "
            f"({weights_dtype}) = {kv_cache.exact_bytes(weights)} B\n"
            f"cache: {cache_formula}\n"
            f"step >= ({kv_cache.exact_bytes(weights)} + {kv_cache.exact_bytes(cache.total)}) B / "
            f"{bandwidth_bytes_per_s / 1e9:,g} GB/s = {kv_cache.duration(seconds)}"
        )
        out[name] = {
            "kv_heads": m.num_key_value_heads,
            "weights": kv_cache.whole(weights),
            "cache": cache.total,
            "total": kv_cache.whole(total),
            "seconds": seconds,
            "formula": formula,
        }
    out.update(
        cached_tokens=cached_tokens,
        batch=batch,
        dtype=dtype,
        weights_dtype=weights_dtype,
        bandwidth_bytes_per_s=bandwidth_bytes_per_s,
        note=note,
    )
    return out
