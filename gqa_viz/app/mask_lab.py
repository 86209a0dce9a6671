"""What the Mask Lab page computes. No Streamlit.

Axis letters as in :mod:`gqa_viz.core`: B batch, T query length, S key/value length,
N query heads, K kv heads, G = N // K, H head_dim, D model dim.

The page's main call is :func:`compose`: it builds the Playground's input for a
:class:`~gqa_viz.app.settings.Settings` (the same tokens, embeddings and weights as
:func:`gqa_viz.app.playground.run`), materializes each extra mask *component* the person chose
(hashable specs: :class:`PrefixLM`, :class:`Document`, ...) as a boolean [T, S], combines them
(AND, or OR between the components), and runs the attention core with that as
``attention_mask``. The core ANDs it with the masks the settings imply (padding as
``query_mask`` / ``value_mask``, ``use_causal_mask``, ``sliding_window``), exactly as Keras
merges them (:func:`gqa_viz.masks.keras_mask`), so the final mask is
``settings masks & (c1 op c2 op ...)``. The result (:class:`MaskLabResult`) holds every
component, the settings' Keras masks one by one, the final mask, the scores, and the rows
a student should look at: rows with no allowed key, and rows where one key is left.

Smaller helpers explain single points: :func:`accept_upload` (a custom mask file, keeping
the last good one), :func:`compare_readings` (an uploaded mask read as given and inverted),
:func:`alignment` (top-left against bottom-right causal), :func:`embedding_padding`
(the masks ``Embedding(mask_zero=True)`` makes Keras derive) and :func:`keras_code`.

The rest serves the page (``app_pages/mask_lab.py``) without Streamlit: its widgets' keys and
defaults, the upload kept in its session_state (functions taking ``state`` read and write it;
any mutable mapping will do), and its prose, ``assets/text/mask_lab.md`` (:func:`text`), filled
in with the numbers of a result.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from gqa_viz import buckets, core, mask_tools
from gqa_viz import masks as M
from gqa_viz.app import limits, playground, prose
from gqa_viz.app.figure_cache import shared
from gqa_viz.app.limits import MAX_DRAWN_CELLS
from gqa_viz.app.settings import DEFAULTS, Settings, compute_key
from gqa_viz.figures import masks as F
from gqa_viz.figures.heads import heads_figure
from gqa_viz.figures.shipping import FrozenFigure

COMBINE = ("and", "or")


# ---------------------------------------------------------------------------------------------
# Components: hashable specs, one per kind, each knows how to build its Mask.


@dataclass(frozen=True)
class Component:
    """One extra mask of the Mask Lab. ``negate``: use its complement (``~``)."""

    negate: bool = field(default=False, kw_only=True)
    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""

    def mask(self, T: int, S: int) -> M.Mask:
        raise NotImplementedError

    def describe(self) -> str:
        """``name(params)``, as the builder in :mod:`gqa_viz.masks` is called."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        return ("~" if self.negate else "") + self.describe()

    def allowed(self, T: int, S: int) -> np.ndarray:
        """[T, S] bool, True = attend (after ``negate``)."""
        m = self.mask(T, S)
        if self.negate:
            m = ~m
        return np.asarray(M.materialize(m, T, S, xp=np))[0]


def _positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class BottomRightCausal(Component):
    """Causal aligned bottom-right: query i sees keys j <= i + S - T (KV-cache decoding)."""

    kind: ClassVar[str] = "causal_bottom_right"
    title: ClassVar[str] = "causal, bottom-right aligned"

    def mask(self, T, S):
        return M.causal("bottom_right")

    def describe(self):
        return 'causal(align="bottom_right")'


@dataclass(frozen=True)
class CausalWindow(Component):
    """Causal sliding window (Mistral): the last ``window`` keys up to the query itself."""

    window: int = 4
    align: str = "top_left"
    kind: ClassVar[str] = "causal_window"
    title: ClassVar[str] = "causal window"

    def mask(self, T, S):
        return M.causal_window(_positive("causal window", self.window), align=self.align)

    def describe(self):
        extra = "" if self.align == "top_left" else f', align="{self.align}"'
        return f"causal_window({self.window}{extra})"


@dataclass(frozen=True)
class PrefixLM(Component):
    """Prefix LM: the first ``prefix`` keys are seen by every query, causal after them."""

    prefix: int = 3
    kind: ClassVar[str] = "prefix_lm"
    title: ClassVar[str] = "prefix LM"

    def mask(self, T, S):
        return M.prefix_lm(_positive("prefix length", self.prefix, 0))

    def describe(self):
        return f"prefix_lm({self.prefix})"


@dataclass(frozen=True)
class Document(Component):
    """Packed documents: a query sees only keys of its own document.

    ``every`` > 0 starts a new document every ``every`` positions (queries and keys alike);
    otherwise ``q_ids`` (and ``k_ids`` for cross-attention; None = the same as ``q_ids``)
    give one document id per position.
    """

    q_ids: tuple[int, ...] = ()
    k_ids: tuple[int, ...] | None = None
    every: int = 0
    kind: ClassVar[str] = "document"
    title: ClassVar[str] = "documents"

    def ids(self, T: int, S: int) -> tuple[np.ndarray, np.ndarray]:
        if self.every:
            n = _positive("document length", self.every)
            return np.arange(T) // n, np.arange(S) // n
        if not self.q_ids:
            raise ValueError("Give one document id per query position, e.g. 0,0,0,1,1,2.")
        q = np.asarray(self.q_ids, np.int32)
        k = q if self.k_ids is None else np.asarray(self.k_ids, np.int32)
        if q.size != T:
            raise ValueError(
                f"The document ids give {q.size} query positions but the input has T = {T} "
                f"queries: give exactly {T} ids (or use 'split every n')."
            )
        if k.size != S:
            raise ValueError(
                f"The document ids give {k.size} key positions but the input has S = {S} keys: "
                f"give the keys' ids after a '|' (queries | keys), or use 'split every n'."
            )
        return q, k

    def mask(self, T, S):
        q, k = self.ids(T, S)
        return M.document(q, k)

    def describe(self):
        if self.every:
            return f"document(split every {self.every})"
        ids = ",".join(map(str, self.q_ids))
        if len(ids) > 24:
            ids = ids[:22] + "…"
        return f"document({ids}{'' if self.k_ids is None else ' | …'})"


def parse_document_ids(text: str) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """``"0,0,1,1"`` or ``"0,0,1 | 0,0,0,1,1"`` (queries | keys) -> (q_ids, k_ids or None).

    Raises ValueError with a message for a person: what is wrong and an example.
    """
    if len(text) > limits.MASK_LAB_MAX_DOCUMENT_TEXT:
        raise ValueError(
            f"The document ids are limited to {limits.MASK_LAB_MAX_DOCUMENT_TEXT} characters."
        )
    parts = text.split("|")
    if len(parts) > 2:
        raise ValueError("Use at most one '|' (query ids | key ids).")
    out = []
    for part in parts:
        items = [x for x in re.split(r"[,\s;]+", part.strip()) if x]
        if not items:
            raise ValueError("The document ids are empty: write e.g. 0,0,0,1,1,2.")
        bad = [x for x in items if not re.fullmatch(r"\d{1,6}", x)]
        if bad:
            raise ValueError(
                f"Document ids must be non-negative whole numbers; {bad[0][:20]!r} is not. "
                "Example: 0,0,0,1,1,2."
            )
        out.append(tuple(int(x) for x in items))
    return out[0], (out[1] if len(out) == 2 else None)


@dataclass(frozen=True)
class DilatedWindow(Component):
    """Dilated window: every ``dilation``-th key with |q - k| < window * dilation."""

    window: int = 3
    dilation: int = 2
    kind: ClassVar[str] = "dilated_window"
    title: ClassVar[str] = "dilated window"

    def mask(self, T, S):
        return M.dilated_window(
            _positive("dilated window", self.window), _positive("dilation", self.dilation)
        )

    def describe(self):
        return f"dilated_window({self.window}, {self.dilation})"


@dataclass(frozen=True)
class BlockSparse(Component):
    """Block-sparse (BigBird/Longformer-like): local blocks plus global tokens."""

    block: int = 4
    local_blocks: int = 1
    global_tokens: int = 0
    kind: ClassVar[str] = "block_sparse"
    title: ClassVar[str] = "block sparse"

    def mask(self, T, S):
        return M.block_sparse(
            _positive("block size", self.block),
            local_blocks=_positive("local blocks", self.local_blocks, 0),
            global_tokens=_positive("global tokens", self.global_tokens, 0),
        )

    def describe(self):
        return (
            f"block_sparse({self.block}, local_blocks={self.local_blocks}, "
            f"global_tokens={self.global_tokens})"
        )


@dataclass(frozen=True)
class Uploaded(Component):
    """An uploaded mask, already read into allowed pairs (bit-packed so the spec hashes)."""

    shape: tuple[int, int] = (0, 0)
    bits: bytes = b""
    name: str = "uploaded"
    kind: ClassVar[str] = "uploaded"
    title: ClassVar[str] = "uploaded mask"

    @classmethod
    def from_allowed(cls, allowed, name: str = "uploaded", negate: bool = False) -> Uploaded:
        a = np.asarray(allowed, bool)
        if a.ndim != 2:
            raise ValueError(f"An uploaded mask must be [T, S], got shape {a.shape}.")
        return cls(shape=a.shape, bits=np.packbits(a).tobytes(), name=name, negate=negate)

    def array(self) -> np.ndarray:
        T, S = self.shape
        bits = np.unpackbits(np.frombuffer(self.bits, np.uint8), count=T * S)
        return bits.reshape(T, S).astype(bool)

    def mask(self, T, S):
        if self.shape != (T, S):
            raise ValueError(
                f"The uploaded mask is [T, S] = {list(self.shape)} but the current input is "
                f"[{T}, {S}]: upload a mask of that shape, or change the input back."
            )
        return M.from_array(self.array(), self.name)

    def describe(self):
        return f"{self.name} [{self.shape[0]}×{self.shape[1]}]"


KINDS: dict[str, type[Component]] = {
    c.kind: c
    for c in (PrefixLM, Document, CausalWindow, DilatedWindow, BlockSparse, BottomRightCausal)
}


def combine_allowed(arrays: list[np.ndarray], how: str = "and") -> np.ndarray | None:
    """AND (or OR) of [T, S] bool arrays; None for none."""
    if how not in COMBINE:
        raise ValueError(f"combine must be one of {COMBINE}, got {how!r}.")
    if not arrays:
        return None
    out = arrays[0].copy()
    for a in arrays[1:]:
        out = (out & a) if how == "and" else (out | a)
    return out


# ---------------------------------------------------------------------------------------------
# The result.


@dataclass(frozen=True)
class KerasPart:
    """One mask Keras ANDs for this call, as the settings produce it."""

    name: str  # the Keras argument
    given: str  # the shape it is given in, e.g. "[B, T] = [1, 11]"
    broadcast: str  # the shape Keras expands it to before the AND
    rule: str  # one sentence: what it masks
    allowed: np.ndarray  # [T, S], broadcast, for the shown batch item


@dataclass
class MaskLabResult:
    """Everything the Mask Lab shows for one (settings, components). Arrays are NumPy."""

    settings: Settings
    spec: core.GQASpec
    q_labels: list[str]  # T axis labels
    k_labels: list[str]  # S axis labels
    components: list[tuple[str, str, np.ndarray]]  # (kind, label, [T, S]) per component
    combine: str  # "and" or "or" between the components
    extra: np.ndarray | None  # [T, S] the combined components: the attention_mask passed
    keras_parts: list[KerasPart]  # the settings' masks, in Keras' order
    keras_mask: np.ndarray  # [T, S] the settings' masks merged (all True if none)
    final: np.ndarray  # [T, S] what the layer applies: keras_mask & extra
    probs: np.ndarray  # [N, T, S] of the shown batch item
    logits: np.ndarray  # [N, T, S]
    output: np.ndarray  # [T, D]
    output_bias: np.ndarray  # [D] (zeros without use_bias)
    fully_masked_rows: np.ndarray  # query indices with no allowed key
    single_key_rows: np.ndarray  # query indices with exactly one allowed key
    single_keys: np.ndarray  # that key, per single-key row
    uniform_output: np.ndarray  # [len(fully_masked_rows), D] Keras' fused path there
    query_mask: np.ndarray  # [B, T] from the padding
    value_mask: np.ndarray  # [B, S]
    notes: list[str] = field(default_factory=list)
    key: tuple = ()  # (settings, components, combine) it was composed for: names its figures

    @property
    def T(self) -> int:
        return len(self.q_labels)

    @property
    def S(self) -> int:
        return len(self.k_labels)

    @property
    def allowed_fraction(self) -> float:
        """The fraction of (query, key) pairs the final mask allows."""
        return mask_tools.sparsity(self.final)

    def block_skip(self, block_q: int = 16, block_k: int = 16) -> dict:
        """What a block-sparse kernel could skip on the final mask (mask_tools.block_skip)."""
        return mask_tools.block_skip(
            self.final,
            block_q=block_q,
            block_k=block_k,
            num_heads=self.spec.num_query_heads,
            head_dim=self.spec.head_dim,
        )


def _normalize(s: Settings) -> Settings:
    # A sentence is one batch item (as in playground.run).
    if s.mode == "sentence" and (s.batch > 1 or s.item):
        s = replace(s, batch=1, item=0)
    return s


def input_labels(settings: Settings) -> tuple[list[str], list[str]]:
    """The query and key labels (T and S) of the Playground input for ``settings``.

    Raises ValueError above ``limits.MASK_LAB_MAX_LEN`` positions, naming the limit.
    """
    *_, q_labels, k_labels = playground.build_inputs(_normalize(settings), [])
    _check_length(len(q_labels), len(k_labels))
    return q_labels, k_labels


def _check_length(T: int, S: int) -> None:
    if max(T, S) > limits.MASK_LAB_MAX_LEN:
        raise ValueError(
            f"the Mask Lab works on up to {limits.MASK_LAB_MAX_LEN} positions per axis; this input has "
            f"T = {T}, S = {S}. Lower the query length T (and S) in the sidebar; the Playground "
            "shows lengths up to 2048."
        )


def _shape(name: str, dims: str, values) -> str:
    return f"{dims} = [{', '.join(map(str, values))}]"


def keras_parts(
    s: Settings, q_valid: np.ndarray, k_valid: np.ndarray, T: int, S: int, extra=None
) -> list[KerasPart]:
    """The masks Keras ANDs for these settings (and ``extra`` as attention_mask), in its order."""
    B = q_valid.shape[0]
    item = min(s.item, B - 1)
    parts = []
    if not q_valid.all():
        parts.append(
            KerasPart(
                "query_mask",
                _shape("query_mask", "[B, T]", (B, T)),
                "[B, T, 1]",
                "A False query attends to nothing: its whole row is masked.",
                np.broadcast_to(q_valid[item][:, None], (T, S)).copy(),
            )
        )
    if not k_valid.all():
        parts.append(
            KerasPart(
                "value_mask",
                _shape("value_mask", "[B, S]", (B, S)),
                "[B, 1, S]",
                "A False key is hidden from every query: its whole column is masked.",
                np.broadcast_to(k_valid[item][None, :], (T, S)).copy(),
            )
        )
    if s.causal:
        parts.append(
            KerasPart(
                "use_causal_mask",
                "True",
                f"[1, T, S] = [1, {T}, {S}]",
                "Query i sees keys j <= i (aligned top-left, even when T ≠ S).",
                np.asarray(M.materialize(M.causal(), T, S, xp=np))[0],
            )
        )
    if s.window:
        parts.append(
            KerasPart(
                "sliding_window",
                str(s.window),
                f"[1, T, S] = [1, {T}, {S}]",
                f"Query i sees keys j with |i - j| < {s.window}: a symmetric band.",
                np.asarray(M.materialize(M.sliding_window(s.window), T, S, xp=np))[0],
            )
        )
    if extra is not None:
        parts.append(
            KerasPart(
                "attention_mask",
                f"[T, S] = [{T}, {S}]",
                f"[B, T, S] = [{B}, {T}, {S}]",
                "Your components, combined: True = attend.",
                np.asarray(extra, bool),
            )
        )
    return parts


def _uniform_output(trace, params, spec, item: int, rows: np.ndarray) -> np.ndarray:
    """The output Keras' fused path gives rows with no allowed key: the mean of all S values."""
    D = trace.output.shape[-1]
    if rows.size == 0:
        return np.zeros((0, D), np.float32)
    v = np.asarray(trace.value[item], np.float64)  # [S, K, H]
    ctx = v.mean(axis=0)  # [K, H]
    ctx = np.repeat(ctx, spec.groups, axis=0)  # [N, H]
    ctx = np.broadcast_to(ctx, (rows.size, *ctx.shape))  # [R, N, H]
    if trace.gate is not None:
        ctx = ctx * np.asarray(trace.gate[item], np.float64)[rows]
    out_layer = params["attention_output"]
    out = np.einsum("rnh,nhd->rd", ctx, np.asarray(out_layer["kernel"], np.float64))
    if "bias" in out_layer:
        out = out + np.asarray(out_layer["bias"], np.float64)
    return out.astype(np.float32)


def compose(
    settings: Settings, components: tuple[Component, ...] = (), combine: str = "and"
) -> MaskLabResult:
    """Run the Playground's input through the layer with ``components`` as attention_mask.

    ``components`` are combined with ``combine`` ("and": all must allow a pair; "or": one
    is enough), then ANDed (by the core, as Keras does) with the masks the settings imply.
    Raises ValueError, with a message for a person, for components that do not fit the input.
    """
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}.")
    notes: list[str] = []
    s = _normalize(settings)
    spec = s.spec()
    query, value, q_valid, k_valid, q_labels, k_labels = playground.build_inputs(s, notes)
    T, S = len(q_labels), len(k_labels)
    _check_length(T, S)
    comps = [(c.kind, c.label, c.allowed(T, S)) for c in components]
    extra = combine_allowed([a for _, _, a in comps], combine)
    params = playground.make_params(s, spec)
    qm = q_valid if not q_valid.all() else None
    vm = k_valid if not k_valid.all() else None
    trace = buckets.bucketed_trace(
        params,
        query,
        value,
        spec=spec,
        query_mask=qm,
        value_mask=vm,
        attention_mask=extra,
        use_causal_mask=s.causal,
    )
    item = min(s.item, query.shape[0] - 1)
    settings_mask = M.keras_mask(
        query_mask=qm,
        value_mask=vm,
        use_causal_mask=s.causal,
        sliding_window=s.window or None,
    )
    if settings_mask is None:
        keras_mask = np.ones((T, S), bool)
    else:
        m = np.asarray(M.materialize(settings_mask, T, S, query.shape[0], xp=np))
        keras_mask = m[min(item, m.shape[0] - 1)]
    final = (
        np.ones((T, S), bool)
        if trace.mask is None
        else np.asarray(trace.mask)[min(item, trace.mask.shape[0] - 1)]
    )
    counts = final.sum(axis=1)
    fully = np.flatnonzero(counts == 0)
    single = np.flatnonzero(counts == 1)
    params_np = {layer: {k: np.asarray(v) for k, v in ws.items()} for layer, ws in params.items()}
    out_layer = params_np["attention_output"]
    bias = out_layer.get("bias", np.zeros(out_layer["kernel"].shape[-1], np.float32))
    return MaskLabResult(
        settings=s,
        spec=spec,
        q_labels=q_labels,
        k_labels=k_labels,
        components=comps,
        combine=combine,
        extra=extra,
        keras_parts=keras_parts(s, q_valid, k_valid, T, S, extra),
        keras_mask=keras_mask,
        final=final,
        probs=np.asarray(trace.probs[item]),
        logits=np.asarray(trace.logits[item]),
        output=np.asarray(trace.output[item]),
        output_bias=np.asarray(bias),
        fully_masked_rows=fully,
        single_key_rows=single,
        single_keys=np.array([int(np.flatnonzero(final[i])[0]) for i in single], dtype=int),
        uniform_output=_uniform_output(trace, params_np, spec, item, fully),
        query_mask=np.asarray(q_valid),
        value_mask=np.asarray(k_valid),
        notes=notes,
        key=(settings, components, combine),
    )


# ---------------------------------------------------------------------------------------------
# Uploads and their readings.


def accept_upload(previous, filename: str, data: bytes, T: int, S: int):
    """(mask, error): the parsed [T, S] array, or ``previous`` and a message for a person."""
    try:
        caps = {"max_bytes": limits.MAX_UPLOAD_BYTES, "max_elements": limits.MAX_MASK_ELEMENTS}
        return mask_tools.parse_upload(filename, data, T, S, **caps), None
    except mask_tools.MaskUploadError as e:
        return previous, str(e)


@dataclass
class Readings:
    """An uploaded mask read two ways, each run through the layer with the settings' masks."""

    convention: str
    inverted_convention: str
    as_read: MaskLabResult
    inverted: MaskLabResult
    output_change: np.ndarray  # [T] L2 norm of the output difference, per query row
    row_outcomes: object  # mask_tools.row_outcomes(as read)


def compare_readings(settings: Settings, raw: np.ndarray, convention: str) -> Readings:
    """``raw`` read with ``convention`` and with its inverse: masks, outputs, their difference."""
    other = mask_tools.inverted(convention)
    a = mask_tools.to_allowed(raw, convention)
    b = mask_tools.to_allowed(raw, other)
    ra = compose(settings, (Uploaded.from_allowed(a, f"as {convention}"),))
    rb = compose(settings, (Uploaded.from_allowed(b, f"as {other}"),))
    change = np.linalg.norm(ra.output.astype(np.float64) - rb.output, axis=-1)
    return Readings(convention, other, ra, rb, change, mask_tools.row_outcomes(a))


# ---------------------------------------------------------------------------------------------
# Single points the page explains.


def alignment(T: int, S: int) -> dict[str, np.ndarray]:
    """Causal masks [T, S] aligned top-left (Keras) and bottom-right (KV cache, flash kernels)."""
    top = np.asarray(M.materialize(M.causal("top_left"), T, S, xp=np))[0]
    bottom = np.asarray(M.materialize(M.causal("bottom_right"), T, S, xp=np))[0]
    return {"top_left": top, "bottom_right": bottom}


def token_ids(labels: list[str], valid: np.ndarray) -> np.ndarray:
    """[T] ids as a tokenizer with a padding id 0 gives them: 1, 2, ... by first appearance."""
    vocab: dict[str, int] = {}
    ids = []
    for tok, ok in zip(labels, np.asarray(valid, bool)):
        if not ok:
            ids.append(0)
        else:
            ids.append(vocab.setdefault(tok, len(vocab) + 1))
    return np.asarray(ids, np.int32)


@dataclass
class EmbeddingPadding:
    """The masks ``Embedding(mask_zero=True)`` makes Keras derive, for the current input."""

    q_ids: np.ndarray  # [T]
    k_ids: np.ndarray  # [S]
    query_mask: np.ndarray  # [T]
    value_mask: np.ndarray  # [S]
    merged: np.ndarray  # [T, S] query_mask & value_mask
    fully_masked_rows: np.ndarray


def embedding_padding(result: MaskLabResult) -> EmbeddingPadding:
    """Token ids (pad = 0) of the shown item and the query_mask / value_mask Keras derives."""
    item = min(result.settings.item, result.query_mask.shape[0] - 1)
    q_ids = token_ids(result.q_labels, result.query_mask[item])
    k_ids = token_ids(result.k_labels, result.value_mask[item])
    qm, _ = mask_tools.embedding_padding_masks(q_ids[None], pad_id=0)
    _, vm = mask_tools.embedding_padding_masks(k_ids[None], pad_id=0)
    qm, vm = np.asarray(qm, bool).reshape(-1), np.asarray(vm, bool).reshape(-1)
    merged = qm[:, None] & vm[None, :]
    return EmbeddingPadding(q_ids, k_ids, qm, vm, merged, np.flatnonzero(~merged.any(axis=1)))


def keras_code(result: MaskLabResult) -> str:
    """The Keras call that applies the same masks (mask_tools.keras_call_code)."""
    s = result.settings
    return mask_tools.keras_call_code(
        causal=s.causal,
        sliding_window=s.window or None,
        query_mask=None if result.query_mask.all() else result.query_mask,
        value_mask=None if result.value_mask.all() else result.value_mask,
        attention_mask=result.extra,
        num_query_heads=s.n,
        num_key_value_heads=s.k,
        head_dim=s.h,
    )


def npy_bytes(allowed) -> bytes:
    """A bool [T, S] mask as a .npy file (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(allowed, bool), allow_pickle=False)
    return buf.getvalue()


def matrix_csv(allowed) -> bytes:
    """A [T, S] mask as a CSV matrix of 0/1 (row i = query i), which the upload reads back."""
    a = np.asarray(allowed).astype(np.uint8)
    return ("\n".join(",".join(map(str, row)) for row in a.tolist()) + "\n").encode()


# ---------------------------------------------------------------------------------------------
# The page: widgets' keys and defaults, the kept upload, and the prose filled in.

UPLOAD = "ml_upload"  # session_state: {"name", "raw", "id"} of the last good upload
UPLOAD_SEEN = "ml_upload_seen"  # session_state: (file_id, error or None) of the file last read
BLOCK_SIZES = (2, 4, 8, 16, 32, 64, 128)  # tile sides offered by the block-sparse section
KIND_TITLES = {kind: cls.title for kind, cls in KINDS.items()} | {"uploaded": Uploaded.title}
KIND_HELP = {
    **{kind: M.COMPONENTS[kind].capitalize() + "." for kind in KINDS if kind in M.COMPONENTS},
    "uploaded": "Your uploaded mask, read with the convention chosen in *Upload a custom mask*.",
}
KIND_HELP["causal_bottom_right"] += " Turn off use_causal_mask in the sidebar to see it alone."
# The number boxes of each component kind, in column order: (label, widget key, minimum).
KIND_NUMBERS = {
    "prefix_lm": (("prefix length", "ml_prefix", 0),),
    "causal_window": (("window w", "ml_cw_window", 1),),
    "dilated_window": (("window w", "ml_dil_window", 1), ("dilation d", "ml_dil_dilation", 1)),
    "block_sparse": (
        ("block size", "ml_bs_block", 1),
        ("local blocks", "ml_bs_local", 0),
        ("global tokens", "ml_bs_global", 0),
    ),
}
# Every ``ml_*`` widget's value before the person changes it.
WIDGET_DEFAULTS = {
    "ml_components": ["document"],
    "ml_combine": "and",
    "ml_prefix": 3,
    "ml_doc_mode": "every",
    "ml_doc_every": 4,
    "ml_doc_ids": "",
    "ml_cw_window": 3,
    "ml_dil_window": 2,
    "ml_dil_dilation": 2,
    "ml_bs_block": 4,
    "ml_bs_local": 1,
    "ml_bs_global": 1,
    "ml_block": 4,
    "ml_window": 3,
    **{f"ml_neg_{kind}": False for kind in KIND_TITLES},
}
DOCUMENT_MODES = {"every": "split every n", "ids": "ids"}  # how document boundaries are given
COMBINE_NAMES = {"and": "AND (all must allow)", "or": "OR (one is enough)"}
_SHORT = {"query_mask": "padding", "value_mask": "key padding", "use_causal_mask": "causal"}


# --- Widget state -----------------------------------------------------------------------------
# Widget values live in ``state[SAVED]`` (written by each widget's on_change, :func:`remember`)
# and are put back into the widgets' ``ml_*`` keys on every run (:func:`seed_widgets`), so they
# survive page switches: Streamlit drops the state of widgets a page stops rendering.

SAVED = "ml_saved"


def seed_widgets(state: MutableMapping) -> None:
    """Put every ``ml_*`` widget's value from ``state[SAVED]`` (or its default) into its key.

    Done on every run, before the widgets: after a visit to another page Streamlit has
    dropped these widgets' state, or gets a stale value back for them, and ``state[SAVED]``
    is the truth. Each widget's on_change (:func:`remember`) writes a new value into it
    before the run, so this never undoes the person's change.
    """
    saved = state.setdefault(SAVED, {})
    for key, value in WIDGET_DEFAULTS.items():
        state[key] = saved.setdefault(key, value)


def remember(state: MutableMapping, key: str) -> None:
    """A widget's on_change: save its new value."""
    state[SAVED][key] = state[key]


def set_widget(state: MutableMapping, key: str, value) -> None:
    """Change a widget's value from the page (before the widget is drawn)."""
    state[key] = value
    state[SAVED][key] = value


def seed_window(state: MutableMapping, window: int) -> None:
    """On the section's first visit, the window box starts at the sidebar's window (if any)."""
    if window and "ml_window_from" not in state:
        set_widget(state, "ml_window", window)
    state["ml_window_from"] = True


@functools.cache
def text() -> dict[str, str]:
    """The page's prose, ``assets/text/mask_lab.md``, by section (:mod:`gqa_viz.app.prose`)."""
    return prose.sections("mask_lab")


def where(labels: list[str], i: int) -> str:
    """A query or key in Markdown: the token as code (so <pad> shows), then its position."""
    return f"`{labels[i]}`@{i}"


def plain(labels: list[str], i: int) -> str:
    """The same, for a table cell."""
    return f"'{labels[i]}' @{i}"


def rows_text(labels: list[str], rows, limit: int = 12) -> str:
    """The first ``limit`` of ``rows`` (indices into ``labels``) in Markdown, then the count."""
    shown = ", ".join(where(labels, int(i)) for i in list(rows)[:limit])
    return shown + (f", … ({len(rows)} in all)" if len(rows) > limit else "")


def cached_compose(
    settings: Settings, components: tuple[Component, ...] = (), combine: str = "and"
) -> MaskLabResult:
    """:func:`compose` through the server's results cache (shared, bounded; read-only).

    ``settings``: the compute key (:func:`gqa_viz.app.settings.compute_key`). Heavy inputs
    wait for the heavy-work slot, as on the Playground.
    """
    return playground.RESULTS.get(
        ("mask-lab", settings, components, combine),
        lambda: compose(settings, components, combine),
        heavy=playground.is_heavy(settings),
    )


# The page's figures, each drawn once for every session showing that result and view
# (gqa_viz.app.figure_cache): keyed by the result's key and what else the figure follows.
_CELLS = {"max_cells": MAX_DRAWN_CELLS}


def _shared(result: MaskLabResult, name: str, draw: Callable[[], object], *view) -> FrozenFigure:
    if not result.key:  # made outside compose: nothing names it, so nothing may share it
        raise ValueError("This MaskLabResult has no key; make it with compose().")
    return shared(("mask-lab", name, result.key, *view), draw)


def components_figure(result: MaskLabResult) -> FrozenFigure:
    """The components, the sidebar's masks and the final mask, side by side."""
    q, k = result.q_labels, result.k_labels
    draw = functools.partial(
        F.components_figure, result.components, result.final, q, k,
        **components_marks(result), **_CELLS,
    )  # fmt: skip
    return _shared(result, "components", draw)


def block_figure(result: MaskLabResult, block: int) -> FrozenFigure:
    """The final mask in tiles of ``block`` x ``block``: which a block-sparse kernel skips."""
    q, k, tiles = result.q_labels, result.k_labels, limits.MAX_BLOCK_TILES
    draw = functools.partial(
        F.block_figure, result.final, block, block, q, k, max_tiles=tiles, **_CELLS
    )
    return _shared(result, "blocks", draw, block)


def alignment_figure(result: MaskLabResult) -> FrozenFigure:
    """Top-left against bottom-right causal alignment (:func:`alignment_view`'s example)."""
    _, ex, q, k = alignment_view(result)
    draw = functools.partial(F.alignment_figure, ex["top_left"], ex["bottom_right"], q, k, **_CELLS)
    return _shared(result, "alignment", draw)


def window_figure(result: MaskLabResult, window: int) -> FrozenFigure:
    """Each library's band for one ``window`` (:func:`window_view`)."""
    _, sem, counts = window_view(window, result.T, result.S)
    q, k = result.q_labels, result.k_labels
    draw = functools.partial(F.window_figure, sem, counts, int(window), q, k, **_CELLS)
    return _shared(result, "windows", draw, int(window))


def keras_merge_figure(result: MaskLabResult) -> FrozenFigure:
    """How Keras merges the call's masks (only when it has some: ``result.keras_parts``)."""
    q, k = result.q_labels, result.k_labels
    draw = functools.partial(F.keras_merge_figure, result.keras_parts, result.final, q, k, **_CELLS)
    return _shared(result, "keras_merge", draw)


def embedding_figure(result: MaskLabResult) -> FrozenFigure:
    """The query_mask and value_mask Embedding(mask_zero=True) would make (:func:`embedding_padding`)."""
    e = embedding_padding(result)
    q, k = result.q_labels, result.k_labels
    draw = functools.partial(F.embedding_figure, e.query_mask, e.value_mask, q, k, **_CELLS)
    return _shared(result, "embedding_masks", draw)


def scores_figure(result: MaskLabResult, view: str, scale: str, pool: str) -> FrozenFigure:
    """The heads figure of ``result`` under its final mask: ``view`` "probs" or "logits",
    ``scale`` "p99" (saturating) or "max", ``pool`` for maps too big to draw cell by cell."""

    def draw():
        values = result.probs if view == "probs" else result.logits
        what = "probabilities" if view == "probs" else "logits"
        return heads_figure(
            values, result.final, result.q_labels, result.k_labels, result.settings.k,
            kind=view, title=f"Attention {what} with the final mask",
            saturate=99.0 if scale == "p99" else None, pool=pool, max_cells=MAX_DRAWN_CELLS,
            frozen=True,  # assembled without graph objects
        )  # fmt: skip

    return _shared(result, "scores", draw, view, scale, pool)


def component_options(uploaded: bool) -> list[str]:
    """The component kinds offered: every kind, and "uploaded" once a mask fits the input."""
    return list(KINDS) + (["uploaded"] if uploaded else [])


def default_document_ids(T: int) -> str:
    """The document-ids text first shown: a new document every 4 positions."""
    return ",".join(str(i // 4) for i in range(T))


def make_component(kind: str, values: Mapping, negate: bool, uploaded_allowed=None) -> Component:
    """The component ``kind`` from the page's widget ``values`` (``WIDGET_DEFAULTS``' keys).

    Raises ValueError, with a message for a person, for document ids that do not parse.
    """
    if kind == "document":
        if values["ml_doc_mode"] == "every":
            return Document(every=values["ml_doc_every"], negate=negate)
        q_ids, k_ids = parse_document_ids(values["ml_doc_ids"])
        return Document(q_ids, k_ids, negate=negate)
    if kind == "uploaded":
        return Uploaded.from_allowed(uploaded_allowed, negate=negate)
    args = [values[key] for _, key, _ in KIND_NUMBERS.get(kind, ())]
    return KINDS[kind](*args, negate=negate)


def settings_mask_shown(result: MaskLabResult) -> bool:
    """Whether the sidebar's settings mask anything (padding, causal, window)."""
    return any(p.name != "attention_mask" for p in result.keras_parts)


def settings_title(result: MaskLabResult) -> str:
    """``sidebar: causal & window 3``: the settings' masks in the first panel's title."""
    names = [
        _SHORT.get(p.name, f"window {result.settings.window}")
        for p in result.keras_parts
        if p.name != "attention_mask"
    ]
    if "padding" in names and "key padding" in names and not result.settings.cross:
        names.remove("key padding")
    return "sidebar: " + " & ".join(names)


def components_marks(result: MaskLabResult) -> dict:
    """What the components figure draws beside the components (its keyword arguments)."""
    return {
        "combine": result.combine,
        "settings_mask": result.keras_mask if settings_mask_shown(result) else None,
        "settings_title": settings_title(result),
        "fully_masked_rows": result.fully_masked_rows,
        "single_key_rows": result.single_key_rows,
    }


def metrics(result: MaskLabResult) -> list[tuple[str, str | int]]:
    """(label, value) of the numbers above the components figure."""
    return [
        ("allowed pairs", f"{int(result.final.sum())} / {result.T * result.S}"),
        ("fraction allowed", f"{result.allowed_fraction:.1%}"),
        ("fully masked rows", int(result.fully_masked_rows.size)),
        ("single-key rows", int(result.single_key_rows.size)),
    ]


# --- The upload -------------------------------------------------------------------------------


def receive_upload(
    state: MutableMapping, file_id: str, name: str, read: Callable[[], bytes], T: int, S: int
) -> str | None:
    """The uploader holds a file: read it once (kept in ``state`` if good); its error, or None.

    A bad file leaves the previous good upload in place.
    """
    seen = state.get(UPLOAD_SEEN)
    if seen is None or seen[0] != file_id:
        previous = state.get(UPLOAD)
        raw, error = accept_upload(
            None if previous is None else previous["raw"], name, read(), T, S
        )
        if error is None:
            state[UPLOAD] = {"name": name, "raw": raw, "id": file_id}
        state[UPLOAD_SEEN] = (file_id, error)
    return state[UPLOAD_SEEN][1]


def upload_stale(upload: dict, T: int, S: int) -> str | None:
    """The warning for a kept upload whose shape is not this input's [T, S]; None if it fits."""
    rows, cols = np.asarray(upload["raw"]).shape
    if (rows, cols) == (T, S):
        return None
    return text()["upload_stale"].format(name=upload["name"], rows=rows, cols=cols, T=T, S=S)


def convention_choice(raw) -> tuple[list[str], int, str | None, str]:
    """The conventions offered for ``raw``, the one preselected, the detected one and why."""
    detected, reason = mask_tools.detect_convention(raw)
    names = list(mask_tools.CONVENTIONS)
    return names, names.index(detected) if detected in names else 0, detected, reason


def convention_label(convention: str) -> str:
    """``keep_bool: boolean, True = attend (...)``."""
    return f"{convention}: {mask_tools.CONVENTIONS[convention]}"


def uploaded_allowed(uploaded: tuple[np.ndarray, str] | None) -> np.ndarray | None:
    """The allowed pairs of an upload (raw, convention); None without one."""
    return None if uploaded is None else mask_tools.to_allowed(*uploaded)


def readings_text(r: Readings) -> tuple[str, str]:
    """What the two readings change (Markdown), and the line above the frameworks' table."""
    a, b = r.as_read, r.inverted
    allowed, inverted = a.components[0][2], b.components[0][2]
    summary = text()["readings"].format(
        convention=r.convention,
        other=r.inverted_convention,
        allowed=int(allowed.sum()),
        inverted=int(inverted.sum()),
        moved=int((r.output_change > 1e-5).sum()),
        T=a.T,
        largest=float(r.output_change.max()),
    )
    if r.row_outcomes:
        rows = [o["row"] for o in r.row_outcomes]
        return summary, (
            f"Read as **{r.convention}**, your mask leaves {len(rows)} query row(s) with no "
            f"key: {rows_text(a.q_labels, rows)}. What each framework returns there:"
        )
    flipped = np.flatnonzero(~inverted.any(axis=1))
    other = (
        f" Read as {r.inverted_convention}, though, it would leave {flipped.size} row(s) with "
        f"no key ({rows_text(a.q_labels, flipped, 4)})."
        if flipped.size
        else ""
    )
    return summary, (
        f"Read as **{r.convention}**, every query row of your mask keeps a key, so the "
        f"frameworks agree.{other} A row with no key is where they part ways:"
    )


def framework_table() -> dict[str, list[str]]:
    """What each framework makes of a row with no allowed key, as table columns."""
    rules = mask_tools.FRAMEWORK_ROW_RULES
    return {
        "framework": list(rules),
        "a row with no allowed key becomes": list(rules.values()),
        "in short": [mask_tools.ROW_OUTCOME.get(f, "") for f in rules],
    }


# --- The sections -----------------------------------------------------------------------------


def outcome_text(result: MaskLabResult) -> str:
    """The rows to watch, in Markdown: fully masked rows and what each implementation does."""
    rows = result.fully_masked_rows
    if rows.size == 0:
        return "Every query keeps at least one key: **no fully masked rows**."
    bias = result.output_bias
    if not result.settings.bias:
        bias_note = " (zeros here: `use_bias=False`)."
    elif not np.any(bias):
        bias_note = " (zeros here too: a fresh layer's bias starts at 0)."
    else:
        bias_note = "."
    matches = bool(np.allclose(result.output[rows], bias, atol=1e-5))
    return text()["fully_masked"].format(
        count=rows.size,
        rows=rows_text(result.q_labels, rows),
        bias=bias_note,
        checked=" — checked: the rows below equal the bias." if matches else ".",
    )


def outcome_table(result: MaskLabResult) -> dict:
    """Per fully masked row: the output's norm here (= Keras with scores) and Keras fused."""
    rows = result.fully_masked_rows
    out = result.output[rows]
    return {
        "query": [plain(result.q_labels, int(i)) for i in rows],
        "‖output‖ gqa_viz = Keras with scores": np.linalg.norm(out, axis=-1),
        "‖output‖ Keras fused (uniform)": np.linalg.norm(result.uniform_output, axis=-1),
        "‖difference‖": np.linalg.norm(out - result.uniform_output, axis=-1),
    }


def single_key_text(result: MaskLabResult) -> str | None:
    """The rows left with one key, in Markdown; None if there are none."""
    rows = result.single_key_rows
    if not rows.size:
        return None
    q, k = result.q_labels, result.k_labels
    pairs = ", ".join(
        f"{where(q, int(i))} → {where(k, int(j))}"
        for i, j in list(zip(rows, result.single_keys))[:12]
    )
    return text()["single_key"].format(
        count=rows.size, pairs=pairs, more=" …" if rows.size > 12 else ""
    )


def block_options(state: MutableMapping, T: int, S: int) -> list[int]:
    """The tile sides offered for an input of T queries and S keys.

    A tile size no longer offered moves to the largest one (the smallest for T <= 4).
    """
    options = [b for b in BLOCK_SIZES if b <= max(T, S)] or [BLOCK_SIZES[0]]
    if state["ml_block"] not in options:
        set_widget(state, "ml_block", options[-1] if T > 4 else options[0])
    return options


def block_view(result: MaskLabResult, block: int) -> tuple[list[tuple[str, str, str]], str]:
    """The block-sparse section's metrics as shown (label, value, help), and its caption."""
    info = result.block_skip(block, block)
    spec = result.spec
    metrics = [
        (
            "pairs masked",
            f"{1 - result.allowed_fraction:.1%}",
            "Fraction of (query, key) pairs the final mask blocks: the most any kernel could save.",
        ),
        (
            "attention FLOPs skippable",
            f"{info['skippable_fraction']:.1%}",
            f"{info['skippable_flops']:,} of {info['dense_flops']:,} FLOPs for QKᵀ and PV over "
            f"{spec.num_query_heads} heads of dim {spec.head_dim}.",
        ),
    ]
    return metrics, text()["block_caption"].format(**info)


def alignment_view(result: MaskLabResult) -> tuple[str, dict[str, np.ndarray], list, list]:
    """The alignment section: its Markdown, both causal masks, and their query and key labels.

    With T = S the two alignments coincide, so a T = 4, S = 7 example is shown instead.
    """
    T, S = result.T, result.S
    words = text()
    if T == S:
        example = [str(i) for i in range(4)], [str(j) for j in range(7)]
        return (
            words["alignment"] + " " + words["alignment_same"].format(T=T),
            alignment(4, 7),
            *example,
        )
    more = "alignment_more_queries" if T > S else "alignment_more_keys"
    sentence = words[more].format(T=T, S=S, extra=abs(T - S))
    return (
        words["alignment"] + " " + sentence,
        alignment(T, S),
        result.q_labels,
        result.k_labels,
    )


def window_view(window: int, T: int, S: int) -> tuple[str, dict, dict]:
    """Each library's reading of ``window``: the rules (Markdown), the masks, keys per query."""
    rules = "\n".join(f"- **{name}**: {rule}" for name, rule in mask_tools.WINDOW_RULES.items())
    sem = mask_tools.window_semantics(int(window), T, S)
    counts = {name: mask_tools.count_allowed(m) for name, m in sem.items()}
    return rules + "\n\n" + text()["window_porting"], sem, counts


def keras_table(result: MaskLabResult) -> str:
    """The masks Keras merges for this call, as a Markdown table under the section's intro."""
    lines = [
        "| Keras argument | given as | broadcast to | what it masks |",
        "|:--|:--|:--|:--|",
    ]
    lines += [
        f"| `{p.name}` | `{p.given}` | `{p.broadcast}` | {p.rule.replace('|', chr(92) + '|')} |"
        for p in result.keras_parts
    ]
    return text()["keras_merge"] + "\n\n" + "\n".join(lines)


def embedding_tables(result: MaskLabResult, e: EmbeddingPadding) -> list[dict]:
    """The token ids and implicit masks as tables: queries, then keys (cross-attention, T != S)."""
    tables = [
        {
            "query token": [plain(result.q_labels, i) for i in range(result.T)],
            "id": e.q_ids,
            "query_mask": e.query_mask,
        }
    ]
    if result.S != result.T or result.settings.cross:
        tables.append(
            {
                "key token": [plain(result.k_labels, j) for j in range(result.S)],
                "id": e.k_ids,
                "value_mask": e.value_mask,
            }
        )
    return tables


def embedding_text(result: MaskLabResult, e: EmbeddingPadding) -> str | None:
    """What padding does to the rows, in Markdown; None without fully masked rows."""
    if not e.fully_masked_rows.size:
        return None
    return text()["embedding_fully_masked"].format(
        count=e.fully_masked_rows.size, rows=rows_text(result.q_labels, e.fully_masked_rows)
    )


def download_files(result: MaskLabResult) -> list[dict]:
    """The final mask's download buttons: label, data (a callable), file name, type, key, help."""
    name = f"mask_T{result.T}_S{result.S}"
    return [
        {
            "label": "final mask (.npy)",
            "data": lambda: npy_bytes(result.final),
            "file_name": f"{name}.npy",
            "mime": "application/octet-stream",
            "key": "ml_dl_npy",
        },
        {
            "label": "final mask (.csv)",
            "data": lambda: matrix_csv(result.final),
            "file_name": f"{name}.csv",
            "mime": "text/csv",
            "key": "ml_dl_csv",
            "help": "One row per query, one 0/1 column per key; uploads back as keep_bool.",
        },
    ]


def first_visit() -> None:
    """Compute what the page's first visit shows with the default settings and its default
    components (prewarming)."""
    values = WIDGET_DEFAULTS
    components = tuple(
        make_component(kind, values, values[f"ml_neg_{kind}"]) for kind in values["ml_components"]
    )
    result = cached_compose(compute_key(DEFAULTS), components, values["ml_combine"])
    # And its figures, with the widgets' defaults, as the page draws them.
    state: dict = {}
    seed_widgets(state)
    components_figure(result)
    scores_figure(result, DEFAULTS.view, DEFAULTS.scale, DEFAULTS.pool)
    block_options(state, result.T, result.S)
    block_figure(result, state["ml_block"])
    alignment_figure(result)
    seed_window(state, result.settings.window)
    window_figure(result, state["ml_window"])
    if result.keras_parts:
        keras_merge_figure(result)
    e = embedding_padding(result)
    if e.fully_masked_rows.size or not e.value_mask.all():
        embedding_figure(result)
