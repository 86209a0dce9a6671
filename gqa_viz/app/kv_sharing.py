"""What the KV sharing page computes: a multi-head layer grouped down to every K, and the
numbers of its KV-cache calculator. No Streamlit here.

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
G = N // K, H head_dim, D model dim.

* :func:`drift`: :func:`gqa_viz.sharing.drift_curve` for the sidebar's input, through the
  server's shared results cache (:data:`gqa_viz.app.playground.RESULTS`); :func:`check_size`
  first, with this page's own, stricter limit on the scores;
* :func:`calculator`: cache, weights, fit and decode-time numbers of one model
  (:mod:`gqa_viz.kv_cache`, presets in :mod:`gqa_viz.models`), and :func:`custom_model` for
  a shape typed in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gqa_viz import core, kv_cache, trained
from gqa_viz.app import settings as cfg
from gqa_viz.app.limits import HEAVY_SCORE_CELLS, KV_SHARING_MAX_SCORE_CELLS, MAX_SCORE_CELLS
from gqa_viz.app.playground import RESULTS, build_inputs, input_shape
from gqa_viz.app.settings import Settings
from gqa_viz.buckets import bucketed_trace
from gqa_viz.core import divisors
from gqa_viz.kv_cache import DTYPE_BYTES, GB, GiB
from gqa_viz.models import PRESETS, ModelShape
from gqa_viz.sharing import controlled_mha, drift_curve, explain

__all__ = [
    "DTYPES",
    "METHOD_NAMES",
    "PRESETS",
    "SETTING_NAMES",
    "Calculator",
    "Drift",
    "calculator",
    "check_size",
    "custom_model",
    "describe",
    "drift",
    "gb",
    "gb_gib",
    "gib",
]

SETTING_NAMES = {
    "random": "random heads (mean-pooled)",
    "controlled": "controlled: shared head + eps·noise",
    "trained": "trained heads (the task's multi-head model)",
}
METHOD_NAMES = {"mean": "mean of the group", "first": "first head", "random": "random head"}
DTYPES = list(DTYPE_BYTES)


# ---------------------------------------------------------------------------------------------
# Effect of sharing on attention.


def check_size(s: Settings) -> None:
    """Raise ValueError, naming the limit, when the input has too many scores for this page."""
    B, T, S = input_shape(s)
    cfg.check_size(
        s,
        T,
        S,
        B,
        KV_SHARING_MAX_SCORE_CELLS,
        "on this page, which runs the layer twice for every K dividing N; the Playground "
        f"allows {MAX_SCORE_CELLS:,}",
    )


def _compute_curve(s: Settings, setting: str, eps: float, method: str):
    notes: list[str] = []
    query, value, _, _, q_labels, k_labels = build_inputs(s, notes)
    # The multi-head layer of the sidebar's width: no gate, window or dropout.
    spec = replace(s, gate=False, window=0, dropout=0.0).spec(k=s.n)
    if setting == "trained":  # the MHA model of the sidebar's task, on the same prompt
        view = trained.layer_view(trained.mha_name(trained.task_of(s.model)), s.layer, s.seed)
        params, spec, query, value = view.params, view.spec, view.x, view.x
    elif setting == "controlled":
        params = controlled_mha(spec, s.d, groups_of=s.n // s.k, eps=eps, seed=s.seed)
    else:
        params = core.init_params(spec, s.d, seed=s.seed)
    curve = drift_curve(
        params, spec, query, value, method=method, causal=s.causal, seed=s.seed,
        trace=bucketed_trace, probs_for=s.k,
    )  # fmt: skip
    T, S = len(q_labels), len(k_labels)
    mask = np.tril(np.ones((T, S), bool)) if s.causal else None
    return curve, q_labels, k_labels, mask, notes


@dataclass
class Drift:
    """The drift curve of one input, and what the page shows of it (batch item 0)."""

    curve: list[dict]  # rows of drift_curve, K from N down to 1
    q_labels: list[str]
    k_labels: list[str]
    mask: np.ndarray | None  # [T, S] causal mask, None without one
    notes: list[str]  # on the input (a sentence cut or replaced)
    row: dict  # the curve's row for the sidebar's K
    explanation: str  # a few sentences on the curve

    @property
    def probs_mha(self) -> np.ndarray:
        """[N, T, S] the multi-head layer's attention."""
        return self.row["probs_mha"][0]

    @property
    def probs_gqa(self) -> np.ndarray:
        """[N, T, S] the attention grouped to the sidebar's K."""
        return self.row["probs_gqa"][0]

    @property
    def diff(self) -> np.ndarray:
        """[N, T, S] grouped minus multi-head attention."""
        return self.probs_gqa - self.probs_mha


def drift(s: Settings, setting: str, eps: float, method: str) -> Drift:
    """drift_curve for the input of ``s`` (pass the compute key) with the weights of
    ``setting`` ("random", "controlled" with noise ``eps``, "trained"), grouped by ``method``.

    Maps are kept for ``s.k`` only. Shared by every session through the server's results cache
    (bounded in bytes); a large input runs in the server's one heavy-work slot.
    """
    B, T, S = input_shape(s)
    curve, q_labels, k_labels, mask, notes = RESULTS.get(
        ("kv-sharing", s, setting, eps, method),
        lambda: _compute_curve(s, setting, eps, method),
        # the MHA layer once, then one grouped layer per K dividing N
        heavy=(1 + len(divisors(s.n))) * B * s.n * T * S > HEAVY_SCORE_CELLS,
    )
    return Drift(
        curve=curve,
        q_labels=q_labels,
        k_labels=k_labels,
        mask=mask,
        notes=notes,
        row=next(r for r in curve if r["K"] == s.k),
        explanation=explain(curve, setting, eps=eps if setting == "controlled" else None),
    )


def describe(s: Settings, setting: str, eps: float, method: str) -> str:
    """One markdown sentence: which weights, grouping and shape the figures show."""
    if setting == "controlled":
        weights = f" with eps = {eps:g} (groups of {s.n // s.k} near-copies)"
    elif setting == "trained":
        task = trained.task_of(s.model)
        weights = f": layer {s.layer} of {trained.mha_name(task)}, on a prompt of the {task} task"
    else:
        weights = ""
    return (
        f"Shown: **{SETTING_NAMES[setting]}**{weights}, grouped by **{METHOD_NAMES[method]}**; "
        f"N = {s.n}, K = {s.k} (G = {s.n // s.k}), H = {s.h}, D = {s.d}, seed {s.seed}, "
        f"{'causal' if s.causal else 'no mask'}."
    )


# ---------------------------------------------------------------------------------------------
# The KV-cache calculator.


def gb(b: float) -> str:
    """Decimal gigabytes, two decimals: ``"16.06 GB"``."""
    return f"{b / GB:,.2f} GB"


def gib(b: float) -> str:
    """Binary gibibytes, two decimals: ``"14.96 GiB"``."""
    return f"{b / GiB:,.2f} GiB"


def gb_gib(b: float) -> str:
    """Both: ``"16.06 GB · 14.96 GiB"``."""
    return f"{gb(b)} · {gib(b)}"


def custom_model(layers: int, n: int, k: int, h: int, params_billion: float) -> ModelShape:
    """The shape of a model typed in (hidden size N x H); its kind follows from N and K.

    Raises ValueError when K does not divide N.
    """
    if n % k:
        raise ValueError(f"K = {k} must divide N = {n}.")
    kind = "mha" if k == n else "mqa" if k == 1 else "gqa"
    return ModelShape(
        "custom", int(layers), int(n), int(k), int(h), int(n * h), float(params_billion),
        attention=kind, source="your numbers",
    )  # fmt: skip


@dataclass(frozen=True)
class Calculator:
    """The calculator's numbers for one model, context, batch and GPU; sizes in bytes."""

    gpu_bytes: float
    variants: dict[str, float]  # cache as "configured", as "mha" (K = N), as "mqa" (K = 1)
    weights: float
    formula: str  # the cache formula with the numbers filled in
    contexts: list[int]  # context lengths of the chart
    sizes: dict[str, list[float]]  # the variants' cache at each of ``contexts``
    max_context: int | None  # tokens per sequence that fit at the batch; None: any (window)
    max_batch: int  # sequences of the context length that fit
    decode_s: float  # lower bound on one decode step, in seconds

    @property
    def budget(self) -> float:
        """GPU memory left for the cache after the weights (negative when they don't fit)."""
        return self.gpu_bytes - self.weights


def calculator(
    model: ModelShape,
    tokens: int,
    batch: int,
    dtype: str,
    weights_dtype: str,
    gpu_gb: float,
    bandwidth_gb_s: float,
) -> Calculator:
    """The numbers for ``model`` (not MLA) at ``tokens`` per sequence and ``batch`` sequences,
    with the cache in ``dtype`` and the weights in ``weights_dtype``, on a GPU of ``gpu_gb``
    decimal GB read at ``bandwidth_gb_s`` GB/s."""
    gpu = float(gpu_gb) * GB
    top = max(2 * tokens, 131_072)
    contexts = sorted({2**i for i in range(7, top.bit_length() + 1)} | {tokens})
    sizes = {
        key: [kv_cache.kv_cache_bytes(model, t, batch, dtype, kv_heads=kh) for t in contexts]
        for key, kh in (
            ("mha", model.num_query_heads),
            ("configured", None),
            ("mqa", 1),
        )
    }
    return Calculator(
        gpu_bytes=gpu,
        variants=kv_cache.variants(model, tokens, batch, dtype),
        weights=kv_cache.weights_bytes(model, weights_dtype),
        formula=kv_cache.formula(model, tokens, batch, dtype),
        contexts=contexts,
        sizes=sizes,
        max_context=kv_cache.max_context(model, gpu, batch, dtype, weights_dtype),
        max_batch=kv_cache.max_batch(model, gpu, tokens, dtype, weights_dtype),
        decode_s=kv_cache.decode_time_lower_bound(
            model,
            tokens,
            batch,
            dtype,
            weights_dtype,
            bandwidth_bytes_per_s=float(bandwidth_gb_s) * 1e9,
        ),
    )
