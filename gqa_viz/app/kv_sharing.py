"""What the KV sharing page computes: a multi-head layer grouped down to every K. No Streamlit
here.

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
G = N // K, H head_dim, D model dim.

* :func:`drift`: :func:`gqa_viz.sharing.drift_curve` for the sidebar's input, through the
  server's shared results cache (:data:`gqa_viz.app.cache.RESULTS`); it calls
  :func:`check_size` first, with this page's own, stricter limit on the scores.
* :func:`figures`: the page's four figures for one :func:`drift`, drawn once per input for
  every session (:mod:`gqa_viz.app.figure_cache`; drawing them was about 90 ms of a rerun
  at the default view).

A real model's layer (the sidebar's weights "real") is already grouped: K of its own K/V
heads. The page then starts from that layer as it is, written as the multi-head layer it
equals (each K/V head repeated G times, which is what Keras' ``repeat`` does), and groups it
with :func:`gqa_viz.sharing.drift` to every K' that divides N and either divides K or is a
multiple of it (:func:`real_ks`). K' >= K only repeats its heads (no drift, the check that the
starting point is the layer itself); K' < K merges runs of K / K' consecutive heads of its
own, by mean or first (exactly :func:`gqa_viz.checkpoints.convert.group_kv_heads` on that
layer) or a random one (the same rule, this page's own seeded draw). Other divisors of N would
pool copies of different heads unequally, so they are left out. For an MHA model (GPT-2) this
is the page's usual curve over every K dividing N. The input is what the layer receives in the
unchanged model, so the drift is this layer's alone.

The page's KV-cache calculator section calls :mod:`gqa_viz.app.kv_calculator`, the back-end of
the KV calculator page: one copy of those numbers and their wording for both pages.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gqa_viz import core, sharing, trained
from gqa_viz.app import settings as cfg
from gqa_viz.app.cache import RESULTS
from gqa_viz.app.figure_cache import shared
from gqa_viz.app.limits import (
    HEAVY_SCORE_CELLS,
    KV_SHARING_MAX_SCORE_CELLS,
    MAX_DRAWN_CELLS,
    MAX_SCORE_CELLS,
)
from gqa_viz.app.playground import build_inputs, input_shape, make_params, trace_function
from gqa_viz.app.settings import Settings
from gqa_viz.buckets import bucketed_trace
from gqa_viz.core import divisors
from gqa_viz.figures.grid import WIDTH_SLACK
from gqa_viz.figures.heads import NOMINAL_WIDTH, heads_figure
from gqa_viz.figures.sharing import diff_figure, drift_figure
from gqa_viz.figures.shipping import FrozenFigure
from gqa_viz.sharing import controlled_mha, drift_curve, explain

__all__ = [
    "METHOD_NAMES",
    "SETTING_NAMES",
    "Drift",
    "SharingFigures",
    "check_size",
    "describe",
    "drift",
    "figures",
    "group_labels",
    "real_ks",
    "real_targets",
    "side_by_side",
]

SETTING_NAMES = {
    "random": "random heads (mean-pooled)",
    "controlled": "controlled: shared head + eps·noise",
    "trained": "trained heads (the task's multi-head model)",
    "real": "this real layer, its K/V heads grouped further",
}
METHOD_NAMES = {"mean": "mean of the group", "first": "first head", "random": "random head"}

# px of one of the page's two figure columns (a 1400 px window, sidebar open): the before and
# after maps are planned for it, so their tick labels do not collide when drawn side by side.
HALF_PAGE_PX = 460
# The narrowest column they are shown in (their ticks are spaced for 80% of the planned width):
# in a narrower window the two stack, each as wide as the page, instead of being squeezed.
HALF_PAGE_LEAST_PX = round(WIDTH_SLACK * HALF_PAGE_PX)
# The widest they are drawn (the same slack the other way): stacked in a narrow window, or side
# by side in a wide one, a map stretched further would have cells much wider than tall.
HALF_PAGE_MOST_PX = round(HALF_PAGE_PX / WIDTH_SLACK)
SIDE_BY_SIDE_HEADS = 8  # up to this N the two maps sit side by side; in tabs beyond


def side_by_side(s: Settings) -> bool:
    """Whether the page shows the before and after maps side by side (else in tabs, each the
    page's full width): both fit at half width up to :data:`SIDE_BY_SIDE_HEADS` heads."""
    return s.n <= SIDE_BY_SIDE_HEADS


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


def real_ks(n: int, k: int) -> list[int]:
    """The K' a real layer with N = ``n`` query heads and K = ``k`` K/V heads is grouped to,
    largest first: the divisors of N that divide K or are multiples of it (module docstring)."""
    return [d for d in sorted(divisors(n), reverse=True) if k % d == 0 or d % k == 0]


def real_targets(k: int) -> list[int]:
    """The K' below K a real layer's heads can be merged into (K itself when K = 1)."""
    return [d for d in range(k - 1, 0, -1) if k % d == 0] or [k]


def _as_mha(params: dict, spec: core.GQASpec) -> tuple[dict, core.GQASpec]:
    """The multi-head layer equal to ``params``: kv head j repeated for its G query heads."""
    G = spec.groups
    out = {layer: dict(ws) for layer, ws in params.items()}
    for layer in ("key", "value"):
        out[layer]["kernel"] = np.repeat(params[layer]["kernel"], G, axis=1)  # [D, N, H]
        if "bias" in params[layer]:
            out[layer]["bias"] = np.repeat(params[layer]["bias"], G, axis=0)  # [N, H]
    return out, replace(spec, num_key_value_heads=spec.num_query_heads)


def _real_curve(s: Settings, method: str, target: int):
    """The real layer of ``s`` grouped to every K' of :func:`real_ks` (maps kept for
    ``target``), on the hidden states it receives."""
    notes: list[str] = []
    query, _, _, _, labels, _ = build_inputs(s, notes)
    spec = replace(s, dropout=0.0).spec()  # the layer's RoPE, QK norm, scale, cap and window
    params, spec = _as_mha(make_params(s, spec), spec)
    trace = trace_function(spec, len(labels), len(labels))
    reference = trace(params, query, query, spec=spec, use_causal_mask=True)
    curve = [
        sharing.drift(
            params,
            spec,
            query,
            query,
            k,
            method=method,
            causal=True,
            seed=s.seed,
            trace=trace,
            reference=reference,
            keep_probs=k == target,
        )  # fmt: skip
        for k in real_ks(s.n, s.k)
    ]
    return curve, labels, labels, np.asarray(reference.mask)[0], notes


def _compute_curve(s: Settings, setting: str, eps: float, method: str, target: int):
    if setting == "real":
        return _real_curve(s, method, target)
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
    row: dict  # the curve's row for the sidebar's K (for a real layer: the K' asked for)
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


def drift(s: Settings, setting: str, eps: float, method: str, target: int | None = None) -> Drift:
    """drift_curve for the input of ``s`` (pass the compute key) with the weights of
    ``setting`` ("random", "controlled" with noise ``eps``, "trained", or "real": the sidebar's
    real layer, see the module docstring), grouped by ``method``.

    Maps are kept for ``target`` only (default ``s.k``; for a real layer one of
    :func:`real_targets`). Shared by every session through the server's results cache
    (bounded in bytes); a large input runs in the server's one heavy-work slot. ValueError,
    naming the limit, for an input over this page's size (:func:`check_size`).
    """
    check_size(s)
    B, T, S = input_shape(s)
    target = s.k if target is None else target
    curve, q_labels, k_labels, mask, notes = RESULTS.get(
        ("kv-sharing", s, setting, eps, method, target),
        lambda: _compute_curve(s, setting, eps, method, target),
        # the MHA layer once, then one grouped layer per K dividing N
        heavy=(1 + len(divisors(s.n))) * B * s.n * T * S > HEAVY_SCORE_CELLS,
    )
    return Drift(
        curve=curve,
        q_labels=q_labels,
        k_labels=k_labels,
        mask=mask,
        notes=notes,
        row=next(r for r in curve if r["K"] == target),
        explanation=explain(
            curve, setting, eps=eps if setting == "controlled" else None, kv_heads=s.k
        ),
    )


def group_labels(s: Settings, target: int | None = None) -> tuple[str, str, int]:
    """(the starting layer, the grouped one, its K): "MHA: N" and "K = k" for the sidebar's
    layer, "As trained: K = k" and "K' = target" for a real layer grouped further."""
    if s.weights == "real":
        target = s.k if target is None else target
        return f"As trained: K = {s.k}", f"K' = {target}", target
    return f"MHA: {s.n}", f"K = {s.k}", s.k


@dataclass(frozen=True)
class SharingFigures:
    """The figures of the page's first section (frozen: shared, never to be changed)."""

    before: FrozenFigure  # the starting layer's heads: multi-head, or a real layer as trained
    after: FrozenFigure  # the same heads, grouped
    diff: FrozenFigure  # grouped minus starting, per query head
    drift: FrozenFigure  # JS divergence and output error against K


def figures(s: Settings, setting: str, eps: float, method: str, target: int) -> SharingFigures:
    """The figures of :func:`drift` with the same arguments, each drawn once for every session
    showing them (:mod:`gqa_viz.app.figure_cache`; a figure larger than that cache is drawn
    on each rerun instead, as the difference map of a large input can be).

    ``target`` is required (``s.k`` but for a real layer) so that one input has one key.
    ValueError as :func:`drift`.
    """
    d = drift(s, setting, eps, method, target)
    is_real = s.weights == "real"
    before, after, K = group_labels(s, target)
    width = HALF_PAGE_PX if side_by_side(s) else NOMINAL_WIDTH
    maps = dict(saturate=99.0, max_cells=MAX_DRAWN_CELLS, planned_width=width, frozen=True)
    what = f"grouped ({after}) − as trained (K = {s.k})" if is_real else None
    diff_title = f"Difference in attention: {what}, per query head" if what else None
    drift_title = f"Drift from layer {s.layer} as trained, by K'" if is_real else None
    draw = {
        "before": lambda: heads_figure(
            d.probs_mha, d.mask, d.q_labels, d.k_labels, s.k if is_real else s.n,
            title=f"{before} K/V heads", **maps,
        ),
        "after": lambda: heads_figure(
            d.probs_gqa, d.mask, d.q_labels, d.k_labels, K,
            title=f"Grouped: {after} K/V head{'s' if K > 1 else ''}", **maps,
        ),
        "diff": lambda: diff_figure(d.diff, d.mask, K, diff_title),
        "drift": lambda: drift_figure(d.curve, K, drift_title),
    }  # fmt: skip
    key = (s, setting, eps, method, target)
    return SharingFigures(
        **{name: shared(("kv-sharing", name, *key), f) for name, f in draw.items()}
    )


def describe(s: Settings, setting: str, eps: float, method: str) -> str:
    """One markdown sentence: which weights, grouping and shape the figures show."""
    if setting == "real":
        return (
            f"Shown: **layer {s.layer} of {s.model}** (K = {s.k} K/V heads), grouped by "
            f"**{METHOD_NAMES[method]}**; N = {s.n}, H = {s.h}, D = {s.d}, on your prompt, "
            f"causal{f', sliding window {s.window}' if s.window else ''}."
        )
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


def first_visit() -> None:
    """Compute what the page's first visit shows with the default settings (prewarming):
    random weights, the first grouping method, every K for the default N, and its figures."""
    s = cfg.compute_key(cfg.DEFAULTS)
    figures(s, "random", 0.0, next(iter(METHOD_NAMES)), s.k)
