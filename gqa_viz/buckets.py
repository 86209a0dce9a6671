"""Shape bucketing: one compiled program serves every length of a bucket.

Axis letters as in :mod:`gqa_viz.core`: B batch, T query length, S key/value length, N query
heads, K kv heads, H head_dim, D model dim.

XLA compiles a program per input shape (100-400 ms on a CPU), while running one at the app's
sizes takes milliseconds. :func:`bucketed_trace` pads T and S up to the next entry of
``LENGTH_BUCKETS`` and masks the padding, so a slider that moves the length within a bucket
reuses the same program. Everything else that would select a different program is turned
into data as well:

* causal, sliding window, query/value padding and the caller's attention_mask are merged
  by Keras' rules (:func:`gqa_viz.masks.keras_mask`) into one boolean [B, T_b, S_b]
  attention_mask, built here in NumPy;
* a layer without biases runs with zero biases (x + 0.0 == x, so nothing changes);
* the dropout rate only enters the program when training makes it active.

What stays in the program's key: N, K, H, D, B, the bucketed lengths, use_gate, and (only when
training with dropout) the dropout rate. :func:`prewarm` compiles a list of those ahead of time.

Padded results are the unpadded ones up to float32 round-off, not bit for bit: XLA's CPU
backend picks a matmul kernel and a reduction order by shape, so one row of a [16, D] and of a
[64, D] product can round differently (Keras run at two lengths does the same). Which pairs are
masked, and the zeros they get, are exact. ``tests/test_buckets.py`` measures both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading

import jax
import jax.numpy as jnp
import numpy as np

from gqa_viz import core
from gqa_viz import masks as M

# Lengths T and S are padded up to one of these: powers of two with a midpoint above 128, so
# padding adds at most 50% per axis there (2.25x the cells at worst) and small ones stay few.
LENGTH_BUCKETS = (16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def bucket(length: int) -> int:
    """The padded length for ``length``: the first bucket that holds it (itself above all)."""
    if length < 1:
        raise ValueError(f"A sequence length must be at least 1, got {length}.")
    for size in LENGTH_BUCKETS:
        if length <= size:
            return size
    return int(length)


def _with_zero_biases(params: core.Params, spec: core.GQASpec, dims) -> core.Params:
    shapes = core.param_shapes(dataclasses.replace(spec, use_bias=True), *dims)
    out = {layer: dict(ws) for layer, ws in params.items()}
    for (layer, name), shape in shapes.items():
        if name == "bias" and "bias" not in out[layer]:
            out[layer]["bias"] = np.zeros(shape, np.float32)
    return out


# Compiled programs held in memory, about 6 MB each on a CPU: without a cap, many visitors
# exploring many head counts and lengths keep adding programs for as long as a server runs.
# Past the cap JAX's in-memory caches are emptied and programs load again from the persistent
# compilation cache (tens of ms each) as they are used. None (the default) means no cap.
_program_cap: int | None = None
_programs: set = set()
_programs_lock = threading.Lock()


def limit_programs_in_memory(cap: int | None) -> None:
    """Keep at most ``cap`` programs compiled in memory (None: no limit): the bucketed ones
    and every other module's that calls :func:`note_program` (:mod:`gqa_viz.decode`)."""
    global _program_cap
    _program_cap = cap


def note_program(key) -> None:
    """Count the program ``key`` names (any hashable that tells programs apart, a module's name
    first) before running it: a new key past the cap empties JAX's in-memory caches first."""
    with _programs_lock:
        if key in _programs:
            return
        if _program_cap is not None and len(_programs) >= _program_cap:
            jax.clear_caches()  # running computations keep the programs they hold
            _programs.clear()
        _programs.add(key)


def _pad(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return np.pad(x, widths)


def _program_spec(spec: core.GQASpec, training: bool) -> core.GQASpec:
    """The spec the compiled program sees: masks are data, biases always present."""
    return dataclasses.replace(
        spec,
        use_bias=True,
        sliding_window=None,
        dropout=spec.dropout if training else 0.0,
    )


def bucketed_trace(
    params: core.Params,
    query,
    value,
    *,
    spec: core.GQASpec,
    query_mask=None,
    value_mask=None,
    attention_mask=None,
    use_causal_mask: bool = False,
    training: bool = False,
    dropout_rng=None,
) -> core.AttentionTrace:
    """:func:`gqa_viz.core.attention_trace`, run at bucketed lengths and cut back to T and S.

    Takes the arguments of ``attention_trace`` (self- or cross-attention, key = value) and
    returns NumPy arrays of the unpadded shapes; ``mask`` is [B, T, S], or None when nothing
    masks. Fully masked rows follow ``fully_masked_rows="zero"`` (the "uniform" answer would
    average the padding too). With dropout active, the keep/drop draw is made at the bucketed
    shape, so a pair keeps its draw while the length moves within a bucket.
    """
    query = np.asarray(query, np.float32)
    value = np.asarray(value, np.float32)
    if query.ndim != 3 or value.ndim != 3:
        raise ValueError(
            f"query must be [B, T, D] and value [B, S, D]; got shapes {query.shape} and "
            f"{value.shape}."
        )
    B, T, D = query.shape
    S = value.shape[1]
    Tb, Sb = bucket(T), bucket(S)
    query_mask, value_mask, attention_mask = (
        None if m is None else np.asarray(m) for m in (query_mask, value_mask, attention_mask)
    )
    core.check_inputs(
        spec,
        params,
        query,
        value,
        None,
        query_mask=query_mask,
        value_mask=value_mask,
        attention_mask=attention_mask,
    )
    merged = M.keras_mask(
        query_mask=query_mask,
        value_mask=value_mask,
        attention_mask=attention_mask,
        use_causal_mask=use_causal_mask,
        sliding_window=spec.sliding_window,
    )
    allowed = np.zeros((B, Tb, Sb), bool)  # [B, T_b, S_b]; the padding is never attended
    allowed[:, :T, :S] = True if merged is None else M.materialize(merged, T, S, B, xp=np)

    training = bool(training) and spec.dropout > 0.0
    note_program((_program_spec(spec, training), B, D, value.shape[2], Tb, Sb, training))
    params = jax.tree.map(np.asarray, params)
    if not spec.use_bias:
        params = _with_zero_biases(params, spec, (D, value.shape[2]))
    trace = core.attention_trace(
        jax.tree.map(jnp.asarray, params),
        jnp.asarray(_pad(query, 1, Tb)),  # [B, T_b, D]
        jnp.asarray(_pad(value, 1, Sb)),  # [B, S_b, D]
        spec=_program_spec(spec, training),
        attention_mask=jnp.asarray(allowed),
        training=training,
        dropout_rng=dropout_rng if training else None,
    )
    probs = np.asarray(trace.probs)[:, :, :T, :S]
    return core.AttentionTrace(
        query=np.asarray(trace.query)[:, :T],
        key=np.asarray(trace.key)[:, :S],
        value=np.asarray(trace.value)[:, :S],
        logits=np.asarray(trace.logits)[:, :, :T, :S],
        mask=None if merged is None else allowed[:, :T, :S],
        probs=probs,
        # Without active dropout the two are the same array: no second copy of [B, N, T, S].
        dropped_probs=np.asarray(trace.dropped_probs)[:, :, :T, :S] if training else probs,
        gate=None if trace.gate is None else np.asarray(trace.gate)[:, :T],
        context=np.asarray(trace.context)[:, :T],
        output=np.asarray(trace.output)[:, :T],
    )


@dataclasses.dataclass(frozen=True)
class Program:
    """What selects one compiled program of :func:`bucketed_trace` (lengths already bucketed)."""

    num_query_heads: int
    num_key_value_heads: int
    head_dim: int
    model_dim: int
    batch: int = 1
    query_length: int = 64
    kv_length: int = 64
    use_gate: bool = False


def prewarm(programs, stop=None, slot=contextlib.nullcontext) -> int:
    """Compile each :class:`Program` by running it once on zeros; returns how many ran.

    ``stop`` (a ``threading.Event``) ends the loop early; ``slot()`` is entered around each
    program (e.g. :meth:`gqa_viz.app.cache.ResultCache.background`, so requests go first).
    Programs already compiled in this process cost one cached call; with the persistent
    compilation cache on, a restarted server loads them from disk instead of compiling.
    """
    done = 0
    for p in programs:
        if stop is not None and stop.is_set():
            break
        spec = core.GQASpec(
            p.num_query_heads, p.num_key_value_heads, p.head_dim, use_gate=p.use_gate
        )
        params = core.init_params(spec, p.model_dim)
        query = np.zeros((p.batch, bucket(p.query_length), p.model_dim), np.float32)
        value = np.zeros((p.batch, bucket(p.kv_length), p.model_dim), np.float32)
        with slot():
            if stop is not None and stop.is_set():
                break  # set while this waited for its turn
            bucketed_trace(params, query, value, spec=spec, use_causal_mask=True)
        done += 1
    return done
