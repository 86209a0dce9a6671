"""What the Walkthrough page computes: one forward pass, and what each of its steps shows.

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
G = N // K, H head_dim, D model dim.

:func:`run` is the page's one call: the Playground's result for the settings (the server's
shared results cache, :func:`gqa_viz.app.playground.cached_run`), the inputs and mask of the
shown batch item, and :meth:`Walkthrough.follow` for the arrays of one query head. The
functions below it write the parts of the page's text that depend on the settings; the rest
of the prose is in ``assets/text/walkthrough.md`` (:func:`text`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from gqa_viz.app import playground, prose
from gqa_viz.app.limits import WALKTHROUGH_MAX_LEN
from gqa_viz.app.settings import Settings


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


@dataclass
class Walkthrough:
    """One forward pass as the Walkthrough shows it (arrays of the shown batch item)."""

    result: playground.Result
    query_in: np.ndarray  # [T, D] the query input
    value_in: np.ndarray | None  # [S, D] the value input in cross-attention, else None
    mask: np.ndarray  # [T, S] True = attend
    empty_rows: np.ndarray  # query rows with no allowed key
    notes: list[str]  # the result's notes the page shows at the top

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
        return Head(
            head=head,
            kv=kv,
            group=list(range(kv * G, kv * G + G)),
            query=r.item("query")[:, head, :],
            key=r.item("key")[:, kv, :],
            value=r.item("value")[:, kv, :],
            logits=r.item("logits")[head],
            probs=r.item("probs")[head],
            dropped_probs=r.item("dropped_probs")[head],
            context=r.item("context")[:, head, :],
            gate=gate,
            ungated=ungated,
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
    )


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
