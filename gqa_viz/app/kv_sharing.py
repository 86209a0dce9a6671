"""What the KV sharing page computes: a multi-head layer grouped down to every K. No Streamlit
here.

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
G = N // K, H head_dim, D model dim.

* :func:`drift`: :func:`gqa_viz.sharing.drift_curve` for the sidebar's input, through the
  server's shared results cache (:data:`gqa_viz.app.playground.RESULTS`); it calls
  :func:`check_size` first, with this page's own, stricter limit on the scores.

The page's KV-cache calculator section calls :mod:`gqa_viz.app.kv_calculator`, the back-end of
the KV calculator page: one copy of those numbers and their wording for both pages.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gqa_viz import core, trained
from gqa_viz.app import settings as cfg
from gqa_viz.app.limits import HEAVY_SCORE_CELLS, KV_SHARING_MAX_SCORE_CELLS, MAX_SCORE_CELLS
from gqa_viz.app.playground import RESULTS, build_inputs, input_shape
from gqa_viz.app.settings import Settings
from gqa_viz.buckets import bucketed_trace
from gqa_viz.core import divisors
from gqa_viz.sharing import controlled_mha, drift_curve, explain

__all__ = ["METHOD_NAMES", "SETTING_NAMES", "Drift", "check_size", "describe", "drift"]

SETTING_NAMES = {
    "random": "random heads (mean-pooled)",
    "controlled": "controlled: shared head + eps·noise",
    "trained": "trained heads (the task's multi-head model)",
}
METHOD_NAMES = {"mean": "mean of the group", "first": "first head", "random": "random head"}


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
    (bounded in bytes); a large input runs in the server's one heavy-work slot. ValueError,
    naming the limit, for an input over this page's size (:func:`check_size`).
    """
    check_size(s)
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
