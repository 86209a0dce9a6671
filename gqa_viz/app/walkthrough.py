"""What the Walkthrough page computes: one forward pass, and what each of its steps shows.

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
G = N // K, H head_dim, D model dim.

:func:`run` is the page's one call: the Playground's result for the settings (the server's
shared results cache, :func:`gqa_viz.app.playground.cached_run`), the inputs and mask of the
shown batch item, and :meth:`Walkthrough.follow` for the arrays of one query head. The
functions below it write the parts of the page's text that depend on the settings; the rest
of the prose is in ``assets/text/walkthrough.md`` (:func:`text`).

A real model's layer (weights "real") does more than Keras' layer: :func:`layer_steps` and
:func:`softcap_step` are the steps it adds (QK-norm and RoPE after the projections, the
soft-cap after the logits), each with its text, formula and figures, for the page to insert;
:func:`logits_text` says how its logits are scaled.

:func:`figure` draws a step's figure once per input and head for every session
(:mod:`gqa_viz.app.figure_cache`): drawing the nine of them was 135 ms of a 170 ms rerun.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import jax
import numpy as np

from gqa_viz import core
from gqa_viz.app import playground, prose
from gqa_viz.app import settings as cfg
from gqa_viz.app.figure_cache import shared
from gqa_viz.app.limits import WALKTHROUGH_MAX_LEN
from gqa_viz.app.settings import Settings
from gqa_viz.figures import steps as F
from gqa_viz.figures import theme
from gqa_viz.figures.shipping import FrozenFigure


class TooLong(ValueError):
    """The input has more positions on an axis than the Walkthrough draws."""


@dataclass(frozen=True)
class Head:
    """The arrays the step figures draw for one query head, in the shown batch item."""

    head: int  # n
    kv: int  # the KV head it reads, n // G
    group: list[int]  # the G query heads that read that KV head
    query: np.ndarray  # [T, H]
    key: np.ndarray  # [S, H] of KV head ``kv``
    value: np.ndarray  # [S, H] of KV head ``kv``
    logits: np.ndarray  # [T, S]
    probs: np.ndarray  # [T, S]
    dropped_probs: np.ndarray  # [T, S]
    context: np.ndarray  # [T, H]
    gate: np.ndarray | None  # [T, H], with use_gate
    ungated: np.ndarray | None  # [T, H] float64: the weighted sum before the gate
    # A real layer's extra steps. query and key above are what meets in the dot product (after
    # its QK-norm and RoPE); these are the stages before them.
    projected_query: np.ndarray | None = None  # [T, H] out of the projection (a Keras layer: query)
    projected_key: np.ndarray | None = None  # [S, H] (a Keras layer: key)
    normed_query: np.ndarray | None = None  # [T, H] after QK-norm, before RoPE (None unless both)
    normed_key: np.ndarray | None = None  # [S, H]
    raw_logits: np.ndarray | None = None  # [T, S] before a soft-cap (= logits without one)


@dataclass
class Walkthrough:
    """One forward pass as the Walkthrough shows it (arrays of the shown batch item)."""

    result: playground.Result
    query_in: np.ndarray  # [T, D] the query input
    value_in: np.ndarray | None  # [S, D] the value input in cross-attention, else None
    mask: np.ndarray  # [T, S] True = attend
    empty_rows: np.ndarray  # query rows with no allowed key
    notes: list[str]  # the result's notes the page shows at the top
    # A real layer's Q [T, N, H] and K [S, K, H] before its QK-norm ("projected") and before
    # its RoPE ("normed"), for the stages it has; empty for a Keras layer.
    stages: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.result.settings

    @property
    def dropout_active(self) -> bool:
        """Whether dropout acts: training with a positive rate (a step of its own)."""
        return self.settings.training and self.settings.dropout > 0

    @property
    def mask_shape(self) -> tuple[int, ...] | None:
        """The shape of the mask the layer was called with, [B or 1, T, S]; None without one."""
        m = self.result.trace.mask
        return None if m is None else tuple(np.shape(m))

    def follow(self, head: int) -> Head:
        """The arrays of query head ``head`` (and of the KV head it reads)."""
        r = self.result
        N, K = r.spec.num_query_heads, r.spec.num_key_value_heads
        G = N // K
        kv = head // G
        gate = ungated = None
        if r.spec.use_gate:
            gate = r.item("gate")[:, head, :]
            weights = r.item("dropped_probs")[head].astype(np.float64)  # [T, S]
            ungated = weights @ r.item("value")[:, kv, :].astype(np.float64)  # [T, H]
        query, key = r.item("query")[:, head, :], r.item("key")[:, kv, :]
        stage = {name: (q[:, head, :], k[:, kv, :]) for name, (q, k) in self.stages.items()}
        raw_logits = r.item("logits")[head]
        if r.spec.logit_softcap is not None:  # q.k times the softmax scale, before the cap
            scaled = query.astype(np.float32) * np.float32(r.spec.softmax_scale)  # [T, H]
            raw_logits = scaled @ key.astype(np.float32).T  # [T, S]
        return Head(
            head=head,
            kv=kv,
            group=list(range(kv * G, kv * G + G)),
            query=query,
            key=key,
            value=r.item("value")[:, kv, :],
            logits=r.item("logits")[head],
            probs=r.item("probs")[head],
            dropped_probs=r.item("dropped_probs")[head],
            context=r.item("context")[:, head, :],
            gate=gate,
            ungated=ungated,
            projected_query=stage.get("projected", (query, key))[0],
            projected_key=stage.get("projected", (query, key))[1],
            normed_query=stage.get("normed", (None, None))[0],
            normed_key=stage.get("normed", (None, None))[1],
            raw_logits=raw_logits,
        )


def run(settings: Settings) -> Walkthrough:
    """The Walkthrough of ``settings`` (pass the compute key: drawing-only fields at defaults).

    Raises :class:`TooLong` when T or S exceeds ``WALKTHROUGH_MAX_LEN`` (before computing
    anything), and ValueError when the settings cannot run.
    """
    _, T, S = playground.input_shape(settings)
    if max(T, S) > WALKTHROUGH_MAX_LEN:
        raise TooLong(
            f"The Walkthrough draws every step at full resolution, for up to "
            f"{WALKTHROUGH_MAX_LEN} positions per axis; this input has T = {T}, S = {S}. Lower "
            "the query length T (and S) in the sidebar; the Playground shows lengths up to 2048."
        )
    result = playground.cached_run(settings)
    s = result.settings
    query, value, *_ = playground.build_inputs(s, [])
    mask = result.mask
    return Walkthrough(
        result=result,
        query_in=query[s.item],
        value_in=value[s.item] if s.cross else None,
        mask=mask,
        empty_rows=np.flatnonzero(~mask.any(axis=1)),
        # Rows with no key to attend to are explained at the mask and softmax steps.
        notes=[note for note in result.notes if "no key to attend" not in note],
        stages=_stages(result, query[s.item : s.item + 1], value[s.item : s.item + 1]),
    )


# The step figures, by name; those of PER_HEAD follow the query head, the others do not.
STEP_FIGURES = (
    "inputs",
    "q",
    "kv",
    "sharing",
    "logits",
    "mask",
    "probs",
    "dropout",
    "context",
    "output",
)
PER_HEAD = frozenset({"q", "kv", "sharing", "logits", "probs", "dropout", "context"})


def figure(walk: Walkthrough, name: str, head: int) -> FrozenFigure:
    """Step figure ``name`` (one of STEP_FIGURES) of ``walk``, following query head ``head``:
    built once and sent to every session that shows it (frozen; see
    :mod:`gqa_viz.app.figure_cache`). Its key is the compute key ``walk`` was run for
    (:func:`run`), the head, and the name."""
    if name not in STEP_FIGURES:
        raise ValueError(f"No Walkthrough figure {name!r}; one of {', '.join(STEP_FIGURES)}.")
    cache_key = ("walkthrough", name, walk.settings, head if name in PER_HEAD else None)
    return shared(cache_key, lambda: _draw(walk, name, head))


def first_visit() -> None:
    """Compute and draw what the page's first visit shows (prewarming): the default settings,
    query head 0, every step figure the page shows for them."""
    walk = run(cfg.compute_key(cfg.DEFAULTS))
    for name in STEP_FIGURES:
        if name != "dropout" or walk.dropout_active:
            figure(walk, name, 0)


def _draw(walk: Walkthrough, name: str, head: int):
    r, one = walk.result, walk.follow(head)
    q, k, spec = r.q_labels, r.k_labels, r.spec
    if name == "inputs":
        return F.inputs_figure(walk.query_in, q, walk.value_in, k)
    if name == "q":
        return F.query_head_figure(one.projected_query, q, head, one.kv)
    if name == "kv":
        return F.kv_figure(one.projected_key, one.value, k, one.kv, one.group)
    if name == "sharing":
        return F.sharing_figure(spec.num_query_heads, spec.num_key_value_heads, head)
    if name == "logits":
        return F.logits_figure(one.raw_logits, q, k, head, logits_text(spec)[2])
    if name == "mask":
        return F.mask_figure(walk.mask, q, k)
    if name == "probs":
        return F.probs_figure(one.probs, walk.mask, q, k, head)
    if name == "dropout":
        dropout = walk.settings.dropout
        return F.dropout_figure(one.dropped_probs, one.probs, walk.mask, q, k, head, dropout)
    if name == "context":
        return F.context_figure(one.context, q, head, one.kv, one.gate, one.ungated)
    return F.output_figure(r.item("output"), q)


def _stages(result: playground.Result, query: np.ndarray, value: np.ndarray) -> dict:
    """Q and K of the shown item before the layer's QK-norm and RoPE (see Walkthrough.stages),
    through the core's own functions."""
    spec = result.spec
    if spec.qk_norm is None and spec.rope is None:
        return {}
    params = jax.tree.map(np.asarray, result.params)
    q, k, _, _ = core.project(params, spec, query, value, value)  # [1, T, N, H], [1, S, K, H]
    out = {"projected": (np.asarray(q[0]), np.asarray(k[0]))}
    if spec.qk_norm is not None and spec.rope is not None:
        q = core.head_norm(q, params["query_norm"]["scale"], spec.qk_norm)
        k = core.head_norm(k, params["key_norm"]["scale"], spec.qk_norm)
        out["normed"] = (np.asarray(q[0]), np.asarray(k[0]))
    return out


# ---------------------------------------------------------------------------------------------
# Text that depends on the settings.


@functools.cache
def text() -> dict[str, str]:
    """The page's prose, ``assets/text/walkthrough.md``, by section (:mod:`gqa_viz.app.prose`)."""
    return prose.sections("walkthrough")


def rows_text(rows: np.ndarray, labels: list[str], limit: int = 8) -> str:
    """``"'<pad>' (t=9), '<pad>' (t=10)"``: the first ``limit`` of the query rows ``rows``."""
    shown = ", ".join(f"'{labels[i]}' (t={i})" for i in rows[:limit])
    return shown + (f", ... ({rows.size} in all)" if rows.size > limit else "")


def key_padding(s: Settings) -> int:
    """Padded keys: ``kpad`` in cross-attention, else the queries' ``pad``."""
    return s.kpad if s.cross else s.pad


def mask_parts(s: Settings, T: int, S: int) -> list[str]:
    """One line of markdown per mask the call ANDs together (none: an empty list)."""
    parts = []
    if s.causal:
        part = "**causal** (`use_causal_mask=True`): query t sees keys s ≤ t"
        if T != S:
            part += " (aligned top-left: with T < S the last keys are never seen)"
        parts.append(part)
    if s.window:
        parts.append(
            f"**sliding window** (`sliding_window={s.window}`): |t − s| < {s.window}, "
            f"i.e. {s.window - 1} key(s) on each side"
        )
    if s.pad:
        parts.append(
            "**query padding** (`query_mask`): a padded query attends to nothing (its whole row)"
        )
    if key_padding(s):
        parts.append(
            "**key padding** (`value_mask`): a padded key is hidden from every query (its column)"
        )
    return parts


def mask_latex(s: Settings) -> str | None:
    """The combined mask M as a LaTeX formula; None when nothing masks."""
    parts = []
    if s.causal:
        parts.append(r"[\,s \le t\,]")
    if s.window:
        parts.append(rf"[\,|t - s| < {s.window}\,]")
    if s.pad:
        parts.append(r"m^{q}_{t}")
    if key_padding(s):
        parts.append(r"m^{v}_{s}")
    return r"M_{t,s} = " + r" \wedge ".join(parts) if parts else None


# ---------------------------------------------------------------------------------------------
# A real layer's own steps.


@dataclass(frozen=True)
class Step:
    """One step the page inserts: its heading, prose, formula, tensors and figures."""

    key: str  # for the figures' widget keys
    title: str
    text: str  # markdown
    latex: str | None
    shapes: list[tuple[str, str]]  # (tensor, axis letters)
    figures: list  # Plotly figures


def _pair_figures(walk: Walkthrough, one: Head, before, after, what: str, subtitle: str):
    """Q of the head and K of its KV head, each before and after a step (two figures, shared as
    :func:`figure`'s: ``what`` names the step)."""
    labels = walk.result.q_labels, walk.result.k_labels
    color = theme.group_color(one.kv)
    pairs = (
        (before[0], after[0], labels[0], f"{what}: Q of query head {one.head}", "query t"),
        (before[1], after[1], labels[1], f"{what}: K of K/V head {one.kv}", "key s"),
    )
    return [
        shared(
            ("walkthrough", what, side, walk.settings, one.head),
            lambda p=p: F.before_after_figure(
                p[0], p[1], p[2], title=p[3], subtitle=subtitle, y_title=p[4], color=color
            ),
        )
        for side, p in zip(("q", "k"), pairs, strict=True)
    ]


def layer_steps(walk: Walkthrough, one: Head) -> list[Step]:
    """The steps a real layer runs between the projections and the logits: QK-norm, RoPE."""
    spec, out = walk.result.spec, []
    projected = (one.projected_query, one.projected_key)
    if spec.qk_norm is not None:
        normed = (one.normed_query, one.normed_key) if spec.rope else (one.query, one.key)
        w = "w" if spec.qk_norm.offset == 0 else "(1 + w)"
        out.append(
            Step(
                "qk_norm",
                "QK-norm: each query and key head RMS-normalized",
                text()["qk_norm"].format(gain=w, eps=f"{spec.qk_norm.eps:g}"),
                r"\hat q = \frac{q}{\sqrt{\tfrac{1}{H}\sum_h q_h^2 + \epsilon}} \odot "
                + w.replace("w", r"w_q")
                + r",\qquad \hat k \text{ likewise with } w_k",
                [("Q", "BTNH"), ("K", "BSKH"), ("w_q, w_k", "H")],
                _pair_figures(
                    walk,
                    one,
                    projected,
                    normed,
                    "QK-norm",
                    "each row scaled to RMS 1, times the learned gain",
                ),
            )  # fmt: skip
        )
        projected = normed
    if spec.rope is not None:
        rope = spec.rope
        d = rope.dim(spec.head_dim)
        kind = "" if rope.kind == "default" else f" ({rope.kind} scaling, factor {rope.factor:g})"
        rest = "" if d == spec.head_dim else f" Features {d}..{spec.head_dim - 1} are not rotated."
        out.append(
            Step(
                "rope",
                "RoPE: queries and keys rotated by position",
                text()["rope"].format(theta=f"{rope.theta:g}", kind=kind, d=d, half=d // 2) + rest,
                r"\begin{gathered}\begin{pmatrix} q'_i \\ q'_{i+d/2} \end{pmatrix} = "
                r"\begin{pmatrix} \cos t\theta_i & -\sin t\theta_i \\ \sin t\theta_i & "
                r"\cos t\theta_i \end{pmatrix} \begin{pmatrix} q_i \\ q_{i+d/2} \end{pmatrix}"
                rf"\\ \theta_i = {rope.theta:g}^{{-2i/{d}}},\quad i < {d // 2}\end{{gathered}}",
                [("Q", "BTNH"), ("K", "BSKH")],
                _pair_figures(
                    walk,
                    one,
                    projected,
                    (one.query, one.key),
                    "RoPE",
                    "row t turned by angles t·θᵢ: q·k then depends on t − s",
                ),
            )  # fmt: skip
        )
    return out


def softcap_step(walk: Walkthrough, one: Head) -> Step | None:
    """A real layer's soft-cap of the logits (Gemma 2), after the dot products; None without."""
    cap = walk.result.spec.logit_softcap
    if cap is None:
        return None
    fig = shared(
        ("walkthrough", "softcap", walk.settings, one.head),
        lambda: F.logits_figure(
            one.logits, walk.result.q_labels, walk.result.k_labels, one.head,
            subtitle=f"c · tanh(L / c), c = {cap:g}: every logit within (−{cap:g}, {cap:g})",
        ),
    )  # fmt: skip
    return Step(
        "softcap",
        "Soft-cap: logits bounded smoothly",
        text()["softcap"].format(cap=f"{cap:g}"),
        rf"L_{{n,t,s}} \leftarrow c \tanh\!\left(L_{{n,t,s}} / c\right),\qquad c = {cap:g}",
        [("logits", "BNTS")],
        [fig],
    )


def logits_text(spec: core.GQASpec) -> tuple[str, str, str, str]:
    """How the layer scales q·k: (an extra sentence for the prose or "", the formula's LaTeX,
    the logits figure's subtitle, the scaling in the code line)."""
    H = spec.head_dim
    capped = " before the soft-cap" if spec.logit_softcap is not None else ""
    if spec.scale is None:
        latex = (
            r"L_{n,t,s} = \frac{Q_{t,n} \cdot K_{s,\mathrm{kv}(n)}}{\sqrt{H}}"
            rf",\qquad \sqrt{{H}} = \sqrt{{{H}}} = {math.sqrt(H):.3g}"
        )
        return "", latex, f"q·k / √H{capped}, before the mask", "/ sqrt(H)"
    latex = (
        r"L_{n,t,s} = s\, Q_{t,n} \cdot K_{s,\mathrm{kv}(n)}"
        rf",\qquad s = {spec.scale:.4g}"
    )
    sentence = text()["logits_scale"].format(
        scale=f"{spec.scale:.4g}", usual=f"{1 / math.sqrt(H):.4g}"
    )
    return sentence, latex, f"q·k × {spec.scale:.4g}{capped}, before the mask", "* s"
