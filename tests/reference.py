"""Plain float64 NumPy reference for Keras 3.15.1 ``keras.layers.GroupQueryAttention`` (forward).

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
G = N // K query heads per kv head, H head_dim, D model dim (Dk: model dim of ``key``).

Written for clarity, not speed: the attention core loops explicitly over batch, head and query
position. Only NumPy is used, and everything is computed in float64.

What Keras does (``keras/src/layers/attention/grouped_query_attention.py``):

1. Project: ``query [B,T,D] -> [B,T,N,H]``, ``key [B,S,Dk] -> [B,S,K,H]``,
   ``value [B,S,D] -> [B,S,K,H]`` (each ``x @ kernel + bias``); ``key`` defaults to ``value``.
2. Repeat key and value heads G times along the head axis, so query head n reads kv head n // G.
3. ``logits[b,n,t,s] = (q[b,t,n] . k[b,s,n//G]) / sqrt(H)``.
4. Masked softmax over s (see :func:`reference_mask` for how the mask is built).
5. Optional dropout on the probabilities (the returned scores are the pre-dropout ones).
6. ``context[b,t,n] = sum_s probs[b,n,t,s] * v[b,s,n//G]``; with ``use_gate`` it is multiplied
   elementwise by ``sigmoid(query @ gate_kernel + gate_bias)`` (shape [B,T,N,H]).
7. ``output[b,t] = sum_{n,h} context[b,t,n,h] * out_kernel[n,h] + out_bias`` -> [B,T,D].

Weights are a dict in Keras' layout: ``params["query"|"key"|"value"|"gate"|"attention_output"]``
each holding ``"kernel"`` and (when ``use_bias``) ``"bias"``; see :func:`params_from_keras_weights`.

Beyond Keras, :func:`reference_gqa` optionally does what decoder LLMs add between steps 1 and 4
(all off by default), in this order: per-head RMS norm of q and k (:func:`reference_head_norm`,
gains ``params["query_norm"]["scale"]`` and ``params["key_norm"]["scale"]`` [H]), rotary
position embedding (:func:`reference_rope_inv_freq`, :func:`reference_rope_rotate`), another
softmax scale than 1/sqrt(H), and tanh soft-capping of the scaled logits before the mask.
The RoPE frequencies are written from the formulas of Hugging Face's ``modeling_rope_utils``
(transformers 5) in float64; R = rotary_dim // 2 frequencies.
"""

from __future__ import annotations

import math

import numpy as np

_FULLY_MASKED_ROW_MODES = ("zero", "uniform")


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------


def params_from_keras_weights(weights, use_bias: bool, use_gate: bool) -> dict:
    """Turn ``layer.get_weights()`` into the ``params`` dict used by :func:`reference_gqa`.

    Keras' order (the order the sub-layers are built in): query kernel, query bias, key kernel,
    key bias, [gate kernel, gate bias,] value kernel, value bias, attention_output kernel,
    attention_output bias. Biases are absent when ``use_bias=False``.
    """
    names = ["query", "key"]
    if use_gate:
        names.append("gate")
    names += ["value", "attention_output"]
    per_layer = 2 if use_bias else 1
    weights = list(weights)
    if len(weights) != per_layer * len(names):
        raise ValueError(
            f"Expected {per_layer * len(names)} weight arrays for use_bias={use_bias}, "
            f"use_gate={use_gate}, got {len(weights)}."
        )
    params = {}
    i = 0
    for name in names:
        entry = {"kernel": _f64(weights[i])}
        i += 1
        if use_bias:
            entry["bias"] = _f64(weights[i])
            i += 1
        params[name] = entry
    return params


# ----------------------------------------------------------------------------------------------
# Mask
# ----------------------------------------------------------------------------------------------


def reference_mask(
    T: int,
    S: int,
    *,
    batch: int | None = None,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    use_causal_mask: bool = False,
    sliding_window: int | None = None,
) -> np.ndarray | None:
    """Keras' merged attention mask, ``True`` = "query t may attend to key s".

    Keras' merge rule (``_compute_attention_mask``), every present part ANDed together:

    * ``query_mask [B,T]`` -> ``[B,T,1]`` (a False query position attends to nothing);
    * ``value_mask [B,S]`` -> ``[B,1,S]``;
    * ``key_mask [B,S]``   -> ``[B,1,S]`` (applied whenever given, even if ``key`` is None);
    * causal ``[1,T,S]``, top-left aligned: key s allowed for query t iff ``s <= t``, also when
      T != S (Keras compares 1-based row/column cumsums, so no offset by ``S - T``);
    * sliding window ``[1,T,S]``: allowed iff ``|t - s| < sliding_window`` (a symmetric band);
    * ``attention_mask [B,T,S]``, cast to bool (nonzero = True).

    Returns a new bool array ``[B or 1, T, S]`` (``[batch, T, S]`` when ``batch`` is given), or
    None when nothing masks.
    """
    parts = []  # each a bool array [B or 1, T, S]

    if query_mask is not None:
        qm = np.asarray(query_mask).astype(bool)
        if qm.ndim != 2 or qm.shape[1] != T:
            raise ValueError(f"query_mask must be [B, T={T}], got {qm.shape}")
        parts.append(qm[:, :, None])  # [B, T, 1]

    for name, m in (("value_mask", value_mask), ("key_mask", key_mask)):
        if m is not None:
            m = np.asarray(m).astype(bool)
            if m.ndim != 2 or m.shape[1] != S:
                raise ValueError(f"{name} must be [B, S={S}], got {m.shape}")
            parts.append(m[:, None, :])  # [B, 1, S]

    if use_causal_mask:
        causal = np.zeros((1, T, S), dtype=bool)
        for t in range(T):
            for s in range(S):
                causal[0, t, s] = s <= t
        parts.append(causal)

    if sliding_window is not None:
        if int(sliding_window) != sliding_window or sliding_window <= 0:
            raise ValueError(f"sliding_window must be a positive integer, got {sliding_window}")
        window = np.zeros((1, T, S), dtype=bool)
        for t in range(T):
            for s in range(S):
                window[0, t, s] = abs(t - s) < sliding_window
        parts.append(window)

    if attention_mask is not None:
        # Note: when attention_mask is Keras' *only* mask source, Keras passes it on uncast and
        # its Softmax layer then keeps entries > 0.5 for a non-bool mask; in every other case it
        # is cast to bool (nonzero = True). The two agree for 0/1 masks, which is all we model.
        am = np.asarray(attention_mask).astype(bool)
        if am.ndim == 2:
            am = am[None]
        if am.ndim != 3 or am.shape[1:] != (T, S):
            raise ValueError(f"attention_mask must be [B, T={T}, S={S}], got {am.shape}")
        parts.append(am)

    if not parts:
        return None

    merged = parts[0]
    for part in parts[1:]:
        merged = merged & part  # NumPy broadcasting: 1 against B, 1 against T or S
    leading = merged.shape[0]
    if batch is not None:
        if leading not in (1, batch):
            raise ValueError(f"mask batch {leading} does not match batch={batch}")
        leading = batch
    return np.array(np.broadcast_to(merged, (leading, T, S)), dtype=bool)


# ----------------------------------------------------------------------------------------------
# Forward pass
# ----------------------------------------------------------------------------------------------


def _dense(x: np.ndarray, layer: dict, equation: str) -> np.ndarray:
    """``einsum(equation, x, kernel) + bias`` (bias broadcast over the trailing axes)."""
    y = np.einsum(equation, x, _f64(layer["kernel"]))
    if "bias" in layer:
        y = y + _f64(layer["bias"])
    return y


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 1 / (1 + exp(-x)), written so that exp never overflows.
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


# ----------------------------------------------------------------------------------------------
# Decoder-LLM extensions: RoPE and per-head RMS norm
# ----------------------------------------------------------------------------------------------


def reference_rope_inv_freq(
    head_dim: int,
    seq_len: int,
    *,
    theta: float = 10_000.0,
    rotary_dim: int | None = None,
    kind: str = "default",
    factor: float = 1.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_max_position_embeddings: int | None = None,
    max_position_embeddings: int | None = None,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    attention_factor: float | None = None,
    mscale: float | None = None,
    mscale_all_dim: float | None = None,
    truncate: bool = True,
) -> tuple[np.ndarray, float]:
    """(inv_freq [R] float64, cos/sin multiplier) of one RoPE setting, from the formulas.

    ``d`` = rotary_dim (default head_dim) and base frequency ``f_i = theta ** (-2i / d)``,
    i = 0 .. d/2 - 1:

    * ``default``: f_i.
    * ``linear``: f_i / factor.
    * ``dynamic``: with L = max(seq_len, max_position_embeddings), theta becomes
      theta * (factor * L / max_position_embeddings - (factor - 1)) ** (d / (d - 2)).
    * ``llama3``: wavelength w_i = 2 pi / f_i; w_i < original / high_freq_factor keeps f_i,
      w_i > original / low_freq_factor gives f_i / factor, in between
      (1 - s) f_i / factor + s f_i with s = (original / w_i - low) / (high - low).
    * ``yarn``: the dimension where a frequency turns ``r`` times over the original length is
      c(r) = d ln(original / (2 pi r)) / (2 ln theta); low = c(beta_fast), high = c(beta_slow)
      (floor / ceil when ``truncate``), clipped to [0, d - 1] (high + 0.001 if they meet);
      ramp_i = clip((i - low) / (high - low), 0, 1) and
      f'_i = f_i (1 - ramp_i) + (f_i / factor) ramp_i. The multiplier is ``attention_factor``,
      else m(factor, mscale) / m(factor, mscale_all_dim) when both are set and nonzero, else
      m(factor), where m(s, a) = 1 if s <= 1 else 0.1 a ln(s) + 1 (a = 1 when not given).
    """
    d = head_dim if rotary_dim is None else rotary_dim
    if d <= 0 or d % 2 or d > head_dim:
        raise ValueError(f"rotary_dim must be even and in [2, {head_dim}], got {d}")
    R = d // 2
    base = float(theta)
    if kind == "dynamic":
        L = max(seq_len, max_position_embeddings)
        base = base * (factor * L / max_position_embeddings - (factor - 1)) ** (d / (d - 2))
    inv = np.array([base ** (-2.0 * i / d) for i in range(R)])  # [R]
    multiplier = 1.0

    if kind in ("default", "dynamic"):
        pass
    elif kind == "linear":
        inv = inv / factor
    elif kind == "llama3":
        original = original_max_position_embeddings
        out = np.zeros(R)
        for i in range(R):
            wavelength = 2 * math.pi / inv[i]
            if wavelength < original / high_freq_factor:
                out[i] = inv[i]
            elif wavelength > original / low_freq_factor:
                out[i] = inv[i] / factor
            else:
                s = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
                out[i] = (1 - s) * inv[i] / factor + s * inv[i]
        inv = out
    elif kind == "yarn":
        original = original_max_position_embeddings

        def m(scale, a=1.0):
            return 1.0 if scale <= 1 else 0.1 * a * math.log(scale) + 1.0

        def c(rotations):
            return d * math.log(original / (2 * math.pi * rotations)) / (2 * math.log(theta))

        low, high = c(beta_fast), c(beta_slow)
        if truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        if low == high:
            high += 0.001
        out = np.zeros(R)
        for i in range(R):
            ramp = min(max((i - low) / (high - low), 0.0), 1.0)
            out[i] = inv[i] * (1 - ramp) + inv[i] / factor * ramp
        inv = out
        if attention_factor is not None:
            multiplier = float(attention_factor)
        elif mscale and mscale_all_dim:
            multiplier = m(factor, mscale) / m(factor, mscale_all_dim)
        else:
            multiplier = m(factor)
    else:
        raise ValueError(f"unknown RoPE kind {kind!r}")
    return inv, multiplier


def reference_rope_rotate(x, positions, inv_freq, multiplier: float = 1.0) -> np.ndarray:
    """RoPE, "rotate half" layout, on x [B, T, heads, H] at integer positions [B or 1, T].

    With R = len(inv_freq), features j < R and j + R of a head form a pair rotated by the
    angle positions * inv_freq[j]: (a, b) -> (a cos - b sin, b cos + a sin), both times
    ``multiplier``; features from 2R on pass through (partial rotary).
    """
    x = _f64(x)
    positions = np.asarray(positions)
    B, T, heads, H = x.shape
    R = len(inv_freq)
    out = x.copy()
    for b in range(B):
        for t in range(T):
            p = float(positions[b if positions.shape[0] > 1 else 0, t])
            for n in range(heads):
                for j in range(R):
                    angle = p * inv_freq[j]
                    c, s = math.cos(angle) * multiplier, math.sin(angle) * multiplier
                    a, bb = x[b, t, n, j], x[b, t, n, j + R]
                    out[b, t, n, j] = a * c - bb * s
                    out[b, t, n, j + R] = bb * c + a * s
    return out


def reference_head_norm(x, gain, *, eps: float, offset: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * (offset + gain) over the last axis of x [..., H]."""
    x = _f64(x)
    rms = np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x / rms * (offset + _f64(gain))


def reference_gqa(
    params: dict,
    query,
    value,
    key=None,
    *,
    num_query_heads: int,
    num_key_value_heads: int,
    head_dim: int,
    mask=None,
    use_gate: bool = False,
    fully_masked_rows: str = "zero",
    dropout_keep=None,
    qk_norm: dict | None = None,
    rope: dict | None = None,
    query_positions=None,
    key_positions=None,
    scale: float | None = None,
    logit_softcap: float | None = None,
) -> dict:
    """Float64 forward pass of Keras' GroupQueryAttention; returns every intermediate.

    Args:
        params: weights in Keras' layout (see the module docstring).
        query: [B, T, D]. value: [B, S, D]. key: [B, S, Dk], defaults to ``value``.
        mask: bool, broadcastable to [B, T, S] (e.g. from :func:`reference_mask`), or None.
        use_gate: apply the sigmoid gate ``params["gate"]`` to the context.
        fully_masked_rows: what a query row with no allowed key gets as probabilities:
            ``"zero"`` -> all zeros, so its context is 0 and its output is the output bias
            (Keras' explicit path, used with ``return_attention_scores=True`` or dropout > 0);
            ``"uniform"`` -> 1/S on every key, masked ones included (Keras' fused path, i.e.
            ``jax.nn.dot_product_attention``, used otherwise).
        dropout_keep: optional [B, N, T, S] array of 0 or 1/(1-rate) multiplied into the
            probabilities before they weight the values.
        qk_norm: ``{"eps": ..., "offset": ...}`` to RMS-norm each head of q and k
            (:func:`reference_head_norm`) with ``params["query_norm"|"key_norm"]["scale"]``.
        rope: keyword arguments of :func:`reference_rope_inv_freq` (its ``seq_len`` is S) to
            rotate q and k (after the norm) at ``query_positions`` [B or 1, T] and
            ``key_positions`` [B or 1, S] (integers; default 0, 1, ...).
        scale: the factor on q.k (default 1/sqrt(H)).
        logit_softcap: c replaces each scaled logit x by c tanh(x / c), before the mask.

    Returns:
        dict with "query" [B,T,N,H], "key" [B,S,K,H], "value" [B,S,K,H] (projected, with bias;
        q and k normed and rotated when asked), "logits" [B,N,T,S] (scaled and capped, before
        masking), "probs" [B,N,T,S], "dropped_probs"
        [B,N,T,S], "gate" [B,T,N,H] or None, "context" [B,T,N,H] (gated when use_gate),
        "output" [B,T,D].
    """
    if fully_masked_rows not in _FULLY_MASKED_ROW_MODES:
        raise ValueError(
            f"fully_masked_rows must be one of {_FULLY_MASKED_ROW_MODES}, got {fully_masked_rows!r}"
        )
    N, K, H = num_query_heads, num_key_value_heads, head_dim
    if N % K != 0:
        raise ValueError(f"num_query_heads={N} must be divisible by num_key_value_heads={K}")
    G = N // K

    query_in = _f64(query)
    value_in = _f64(value)
    key_in = value_in if key is None else _f64(key)
    B, T, _ = query_in.shape
    S = value_in.shape[1]
    if key_in.shape[:2] != (B, S):
        raise ValueError(f"key must be [B={B}, S={S}, Dk], got {key_in.shape}")

    # 1. Projections.
    q = _dense(query_in, params["query"], "btd,dnh->btnh")  # [B, T, N, H]
    k = _dense(key_in, params["key"], "bsd,dkh->bskh")  # [B, S, K, H]
    v = _dense(value_in, params["value"], "bsd,dkh->bskh")  # [B, S, K, H]
    if q.shape[2:] != (N, H) or k.shape[2:] != (K, H) or v.shape[2:] != (K, H):
        raise ValueError("kernel shapes do not match num_query_heads/num_key_value_heads/head_dim")

    # 1b. Decoder-LLM extensions: per-head norm, then rotary position embedding.
    if qk_norm is not None:
        q = reference_head_norm(q, params["query_norm"]["scale"], **qk_norm)
        k = reference_head_norm(k, params["key_norm"]["scale"], **qk_norm)
    if rope is not None:
        inv_freq, multiplier = reference_rope_inv_freq(H, S, **rope)
        qp = np.arange(T)[None] if query_positions is None else np.asarray(query_positions)
        kp = np.arange(S)[None] if key_positions is None else np.asarray(key_positions)
        q = reference_rope_rotate(q, qp.reshape(-1, T), inv_freq, multiplier)
        k = reference_rope_rotate(k, kp.reshape(-1, S), inv_freq, multiplier)

    if mask is None:
        allowed = np.ones((B, T, S), dtype=bool)
    else:
        allowed = np.broadcast_to(np.asarray(mask).astype(bool), (B, T, S))

    if dropout_keep is not None:
        dropout_keep = _f64(dropout_keep)
        if dropout_keep.shape != (B, N, T, S):
            raise ValueError(f"dropout_keep must be [B, N, T, S], got {dropout_keep.shape}")

    scale = 1.0 / math.sqrt(H) if scale is None else float(scale)
    logits = np.zeros((B, N, T, S))
    probs = np.zeros((B, N, T, S))
    dropped_probs = np.zeros((B, N, T, S))
    context = np.zeros((B, T, N, H))

    for b in range(B):
        for n in range(N):
            kv = n // G  # the kv head this query head shares with the G - 1 others in its group
            for t in range(T):
                # 2-3. Scaled dot product of this query with every key: [S].
                row = (k[b, :, kv, :] @ q[b, t, n, :]) * scale
                if logit_softcap is not None:
                    row = logit_softcap * np.tanh(row / logit_softcap)
                logits[b, n, t] = row

                # 4. Softmax over the allowed keys only.
                # This is the exact rule: exp(x - max over allowed) / sum over allowed, and 0 for
                # masked keys. Keras computes where(mask, x, -1e9) -> softmax -> where(mask, p, 0)
                # in float32; for any row with an allowed key exp(-1e9 - max) underflows to 0,
                # so it agrees with this up to float32 round-off.
                ok = allowed[b, t]
                p = np.zeros(S)
                if ok.any():
                    x = row[ok]
                    e = np.exp(x - x.max())
                    p[ok] = e / e.sum()
                elif fully_masked_rows == "uniform":
                    # Every logit became the same large negative number, so the softmax is
                    # uniform over all S keys (jax.nn.dot_product_attention does not re-zero).
                    p[:] = 1.0 / S
                # else "zero": Keras' Softmax re-applies the mask after the softmax.
                probs[b, n, t] = p

                # 5. Dropout (probabilities are rescaled by the keep mask, not renormalized).
                pd = p * dropout_keep[b, n, t] if dropout_keep is not None else p.copy()
                dropped_probs[b, n, t] = pd

                # 6. Weighted sum of this head's values: [H].
                context[b, t, n] = pd @ v[b, :, kv, :]

    gate = None
    if use_gate:
        gate = _sigmoid(_dense(query_in, params["gate"], "btd,dnh->btnh"))  # [B, T, N, H]
        context = context * gate

    # 7. Output projection: sum over heads and head_dim.
    output = _dense(context, params["attention_output"], "btnh,nhd->btd")  # [B, T, D]

    return {
        "query": q,
        "key": k,
        "value": v,
        "logits": logits,
        "probs": probs,
        "dropped_probs": dropped_probs,
        "gate": gate,
        "context": context,
        "output": output,
    }
