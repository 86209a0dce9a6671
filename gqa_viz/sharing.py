"""What converting a multi-head layer to GQA does to its attention. No Streamlit here.

Axis letters as in :mod:`gqa_viz.core`: B batch, T query length, S key length, N query heads,
K kv heads, G = N // K, H head_dim, D model dim.

Two settings:

* random weights (:func:`gqa_viz.core.init_params`): the K/V heads of a group are independent,
  so mean-pooling G of them shrinks the pooled projection by about sqrt(G) and flattens the
  softmax whatever the sharing itself costs (an artifact of random weights);
* controlled (:func:`controlled_mha`): the heads of each group are one shared head plus
  ``eps`` times independent noise, so pooling loses exactly the noise and drift is due to eps.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from gqa_viz import core
from gqa_viz.core import GQASpec, Params, divisors

__all__ = [
    "METHODS",
    "SETTINGS",
    "controlled_mha",
    "divisors",
    "drift",
    "drift_curve",
    "explain",
    "grouped_heads",
    "js_divergence",
]

METHODS = ("mean", "first", "random")
SETTINGS = ("random", "controlled", "trained", "real")
_ZERO = 1e-6  # drift below this counts as none (float32 round-off)


def _check_mha(spec_mha: GQASpec) -> None:
    N = spec_mha.num_query_heads
    if spec_mha.num_key_value_heads != N:
        raise ValueError(
            f"Expected a multi-head layer (num_key_value_heads == num_query_heads == {N}), "
            f"got num_key_value_heads={spec_mha.num_key_value_heads}."
        )


def grouped_heads(
    params: Params, spec_mha: GQASpec, K: int, method: str = "mean", *, seed: int = 0
) -> tuple[Params, GQASpec]:
    """Convert a multi-head layer to K kv heads: "mean", "first" or "random" head per group.

    "mean" is :func:`gqa_viz.core.mha_to_gqa`; "first" keeps head k*G of group k; "random"
    keeps one seeded random head per group (the same head for key and value). K == N returns
    ``params`` and ``spec_mha`` themselves.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    _check_mha(spec_mha)
    if K == spec_mha.num_query_heads:
        return params, spec_mha
    out, spec = core.mha_to_gqa(params, spec_mha, K)  # validates K
    if method == "mean":
        return out, spec
    G = spec.groups
    if method == "first":
        picks = np.zeros(K, dtype=int)  # [K]
    else:
        picks = np.random.default_rng(seed).integers(G, size=K)  # [K]
    heads = np.arange(K) * G + picks  # [K] the MHA head kept for each kv head
    for layer in ("key", "value"):
        out[layer]["kernel"] = params[layer]["kernel"][:, heads]  # [Dk, K, H]
        if "bias" in params[layer]:
            out[layer]["bias"] = params[layer]["bias"][heads]  # [K, H]
    return out, spec


def controlled_mha(
    spec_mha: GQASpec, d: int, *, groups_of: int, eps: float, seed: int = 0
) -> Params:
    """A multi-head layer whose K/V heads come in groups of ``groups_of`` near-copies.

    Each group's key and value heads are one shared head (the group's first, from
    :func:`gqa_viz.core.init_params`) plus ``eps`` times independent noise drawn by the same
    initializer. Mean-pooling to K = N // groups_of then loses only the noise: drift 0 at
    eps = 0, growing with eps. Biases are shared per group (no noise).
    """
    _check_mha(spec_mha)
    N = spec_mha.num_query_heads
    if not isinstance(groups_of, int) or groups_of <= 0 or N % groups_of:
        raise ValueError(f"groups_of must be a positive divisor of N = {N}, got {groups_of!r}.")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}.")
    params = core.init_params(spec_mha, d, seed=seed)
    noise = core.init_params(spec_mha, d, seed=seed + 2**32)  # an independent stream
    shared = np.repeat(np.arange(0, N, groups_of), groups_of)  # [N] first head of each group
    for layer in ("key", "value"):
        base = params[layer]["kernel"][:, shared]  # [Dk, N, H]
        params[layer]["kernel"] = base + jnp.float32(eps) * noise[layer]["kernel"]  # [Dk, N, H]
        if "bias" in params[layer]:
            params[layer]["bias"] = params[layer]["bias"][shared]  # [N, H]
    return params


def js_divergence(p, q, axis: int = -1):
    """Jensen-Shannon divergence (natural log) between distributions along ``axis``.

    Zeros are fine (0 log 0 = 0). Symmetric, 0 for equal inputs, at most ln 2. NumPy: eager
    JAX would compile small programs for every new shape.
    """
    p, q = np.asarray(p), np.asarray(q)
    m = 0.5 * (p + q)
    safe_m = np.where(m > 0, m, 1.0)

    def kl(a):
        return np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0) / safe_m), 0.0), axis)

    return 0.5 * (kl(p) + kl(q))


def drift(
    params_mha: Params,
    spec_mha: GQASpec,
    query,
    value,
    K: int,
    *,
    method: str = "mean",
    causal: bool = True,
    seed: int = 0,
    trace=core.attention_trace,
    reference=None,
    keep_probs: bool = True,
) -> dict:
    """Run the MHA layer and its K-kv-head conversion on the same input and compare them.

    ``trace`` runs a layer (default :func:`gqa_viz.core.attention_trace`); the app passes
    :func:`gqa_viz.buckets.bucketed_trace`, so new lengths do not compile new programs.
    ``reference``: the MHA layer's trace on this input, if already computed. Without
    ``keep_probs`` the two probability maps are left out (None), to keep a curve small.

    Returns a dict: ``K``, ``G``, ``method``, ``js_per_head`` [N] (JS divergence of each query
    row's attention, averaged over rows with at least one allowed key, and the batch), ``js``
    (mean over heads), ``rel_error`` (||out_gqa - out_mha|| / ||out_mha||), and ``probs_mha``,
    ``probs_gqa`` [B, N, T, S] (NumPy) for plotting.
    """
    params_gqa, spec_gqa = grouped_heads(params_mha, spec_mha, K, method, seed=seed)
    a = (
        reference
        if reference is not None
        else trace(params_mha, query, value, spec=spec_mha, use_causal_mask=causal)
    )
    b = trace(params_gqa, query, value, spec=spec_gqa, use_causal_mask=causal)
    js = js_divergence(a.probs, b.probs)  # [B, N, T]
    B, N, T, _ = a.probs.shape
    if a.mask is None:
        rows = np.ones((B, T), bool)  # [B, T]
    else:
        rows = np.broadcast_to(np.any(a.mask, axis=-1), (B, T))  # [B, T]
    weights = rows[:, None, :].astype(js.dtype)  # [B, 1, T]
    count = np.maximum(np.sum(weights), 1.0)
    js_per_head = np.sum(js * weights, axis=(0, 2)) / count  # [N]
    ref = float(np.linalg.norm(a.output))
    err = float(np.linalg.norm(b.output - a.output))
    return {
        "K": K,
        "G": spec_gqa.groups,
        "method": method,
        "js_per_head": np.asarray(js_per_head),
        "js": float(np.mean(js_per_head)),
        "rel_error": err / ref if ref > 0 else err,
        "probs_mha": np.asarray(a.probs) if keep_probs else None,
        "probs_gqa": np.asarray(b.probs) if keep_probs else None,
    }


def drift_curve(
    params_mha: Params,
    spec_mha: GQASpec,
    query,
    value,
    *,
    method: str = "mean",
    causal: bool = True,
    seed: int = 0,
    trace=core.attention_trace,
    probs_for: int | None = None,
) -> list[dict]:
    """:func:`drift` for every K dividing N, from MHA (K = N) down to MQA (K = 1).

    The MHA layer runs once. ``probs_for``: keep the probability maps of that K only (None:
    of every K).
    """
    Ks = sorted(divisors(spec_mha.num_query_heads), reverse=True)
    reference = trace(params_mha, query, value, spec=spec_mha, use_causal_mask=causal)
    return [
        drift(
            params_mha,
            spec_mha,
            query,
            value,
            K,
            method=method,
            causal=causal,
            seed=seed,
            trace=trace,
            reference=reference,
            keep_probs=probs_for in (None, K),
        )  # fmt: skip
        for K in Ks
    ]


def explain(
    curve: list[dict], setting: str, *, eps: float | None = None, kv_heads: int | None = None
) -> str:
    """A few plain sentences describing a :func:`drift_curve` for the current input.

    ``setting``: "random" (independent random weights), "controlled" (:func:`controlled_mha`,
    optionally with its ``eps``), "trained" (a multi-head layer of a trained tiny model) or
    "real" (a real model's layer with ``kv_heads`` K/V heads, each repeated G times to make
    the multi-head layer the curve starts from).
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}.")
    if not curve:
        return "No conversions to describe."
    curve = sorted(curve, key=lambda r: r["K"], reverse=True)
    N = curve[0]["K"] * curve[0]["G"]
    lines = [f"K = {N} keeps every key/value head, so the layer is unchanged and drift is 0."]
    grouped = [r for r in curve if r["K"] < N]
    if not grouped:
        return lines[0]
    start = next((r for r in grouped if r["js"] > _ZERO), None)
    last = grouped[-1]
    if start is None:
        lines.append("No conversion changes the attention of this input.")
    else:
        zero_ks = [r["K"] for r in grouped if r["js"] <= _ZERO]
        if zero_ks:
            lines.append(
                f"Down to K = {min(zero_ks)} the grouped heads attend exactly as before; "
                f"drift starts at K = {start['K']} (G = {start['G']})."
            )
        else:
            lines.append(
                f"Drift starts at the first grouping, K = {start['K']} (G = {start['G']})."
            )
        lines.append(
            f"At K = {last['K']} (G = {last['G']}) the mean Jensen-Shannon divergence is "
            f"{last['js']:.3g} nats (at most ln 2 = 0.693) and the output moves by "
            f"{100 * last['rel_error']:.1f}%."
        )
    if setting == "random" and last.get("method", "mean") == "mean":
        G = last["G"]
        lines.append(
            f"These weights are random, so the heads pooled into a group are independent: "
            f"averaging G of them shrinks the key/value projection by about sqrt(G) "
            f"(x{1 / math.sqrt(G):.2f} at G = {G}), which flattens the softmax whatever the "
            f"sharing does. Much of this drift is that artifact; trained heads are more alike."
        )
    elif setting == "random":
        lines.append(
            "These weights are random and each group keeps one of its heads unchanged, so the "
            "other query heads of the group read an unrelated key/value head: no shrink, but "
            "nothing of the dropped heads survives."
        )
    elif setting == "real":
        K = kv_heads if kv_heads is not None else N
        lines.append(
            f"This is a real model's layer with K = {K} K/V head{'s' if K > 1 else ''}: a K "
            f"of {K} or more only repeats them, so nothing changes there; below {K} its own "
            "K/V heads are merged, consecutive ones together, as the Real models page does "
            "for every layer. Its input is what it receives in the unchanged model, so this is "
            "the drift of this layer alone; the Real models page measures the next-token loss."
        )
    elif setting == "trained":
        lines.append(
            "These heads were trained on a task, so the heads pooled into a group are not "
            "independent: what drift remains is what sharing their keys and values costs this "
            "layer on this prompt. The Trained heads page measures what it costs the model's "
            "accuracy, before and after uptraining."
        )
    else:
        noise = "" if eps is None else f" (eps = {eps:g})"
        lines.append(
            f"Here each group of heads is one shared head plus eps times independent "
            f"noise{noise}: pooling within those groups loses only the noise, so drift there "
            f"is due to eps (0 at eps = 0). Coarser groupings also merge different shared heads."
        )
    return " ".join(lines)
