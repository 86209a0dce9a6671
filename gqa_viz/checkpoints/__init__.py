"""Real checkpoints: Hugging Face Llama, Mistral, Qwen, Gemma and GPT-2 run through our GQA core.

Axis letters: B batch, T tokens, L layers, N query heads, K kv heads, H head_dim, D model dim,
V vocabulary.

:func:`load` reads a checkpoint directory as Hugging Face writes it (``config.json``,
``model.safetensors`` or its shards with ``model.safetensors.index.json``, and
``tokenizer.json`` when present) and returns a :class:`Checkpoint`, whose
:meth:`Checkpoint.forward` maps token ids to logits and every layer's attention
probabilities. Only safetensors are read (a pickled ``.bin``/``.pt`` is refused with the
reason), a symlink is followed only inside the checkpoint's root (the HF cache's
``models--ORG--NAME`` folder), and each limit (parameters, layers, tokens) is an argument.
Everything a user can get wrong raises :class:`CheckpointError` with a message naming the
file, tensor or limit.

The pieces: :mod:`.files` (which files may be opened), :mod:`.store` (safetensors headers and
bytes), :mod:`.config` (``config.json`` in both dialects -> :class:`Architecture`),
:mod:`.weights` (tensors -> Keras-layout attention weights stacked by layer), :mod:`.model`
(the forward pass) and :mod:`.tokenizer` (``tokenizer.json`` via the ``tokenizers`` library).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gqa_viz.checkpoints import config as _config
from gqa_viz.checkpoints import model as _model
from gqa_viz.checkpoints import store as _store
from gqa_viz.checkpoints import weights as _weights
from gqa_viz.checkpoints.config import FAMILIES, Architecture
from gqa_viz.checkpoints.files import CheckpointDir, CheckpointError

__all__ = ["FAMILIES", "Architecture", "Checkpoint", "CheckpointError", "load", "inspect"]

DEFAULT_PARAM_LIMIT = 2_000_000_000
CONFIG_BYTE_LIMIT = 1_000_000
TOKENIZER_BYTE_LIMIT = 50_000_000


@dataclass(frozen=True)
class Summary:
    """What a checkpoint is, from its config and headers alone (nothing loaded)."""

    arch: Architecture
    params: int  # elements of every tensor stored
    stored_bytes: int
    dtype: str  # the dtype most parameters are stored in


def inspect(path, *, root=None, max_layers: int | None = None) -> Summary:
    """Architecture, parameter count and size of a checkpoint, reading only config and headers."""
    return _inspect(CheckpointDir(path, root), max_layers)[0]


def _inspect(cdir: CheckpointDir, max_layers: int | None):
    """(:class:`Summary`, every tensor's place in the files), from config and headers alone."""
    if not cdir.has("config.json"):
        raise CheckpointError(
            f"{str(cdir.directory)!r} has no config.json: not a Hugging Face checkpoint."
        )
    arch = _config.parse(
        cdir.read_json("config.json", max_bytes=CONFIG_BYTE_LIMIT), max_layers=max_layers
    )
    tensors = _store.index(cdir)
    by_dtype: dict[str, int] = {}
    for info in tensors.values():
        by_dtype[str(info.dtype)] = by_dtype.get(str(info.dtype), 0) + info.size
    summary = Summary(
        arch,
        sum(info.size for info in tensors.values()),
        sum(info.nbytes for info in tensors.values()),
        max(by_dtype, key=by_dtype.get) if by_dtype else "float32",
    )
    return summary, tensors


class Checkpoint:
    """A loaded checkpoint: its :class:`Architecture`, weights, tokenizer and forward pass."""

    def __init__(self, directory: Path, summary: Summary, weights: dict, tokenizer):
        self.directory = directory
        self.summary = summary
        self.arch = summary.arch
        self.weights = weights
        self.tokenizer = tokenizer

    @property
    def params(self) -> int:
        return self.summary.params

    def forward(
        self,
        ids,
        *,
        probs: bool = True,
        layers=None,
        max_tokens: int | None = None,
    ):
        """Token ids [B, T] -> (logits [B, T, V], probabilities per chosen layer or None).

        The probabilities are a list of [B, N, T, T] float32 arrays, one per layer in
        ``layers`` (all L when None), in layer order; query head n reads kv head n // G.
        ``probs=False`` skips them (and their cost). ``max_tokens`` caps T (GPT-2's learned
        position table caps it anyway; RoPE models have no cap of their own).
        """
        ids = self._check_ids(ids, max_tokens)
        chosen = ()
        if probs:
            chosen = (
                tuple(range(self.arch.num_layers)) if layers is None else _layers(layers, self.arch)
            )
        logits, stacked, _ = _model.forward(self.weights, self.arch, ids, chosen)
        return logits, None if stacked is None else list(stacked)

    def _check_ids(self, ids, max_tokens: int | None) -> np.ndarray:
        """ids as int32 [B, T], or a CheckpointError saying what is wrong with them."""
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None]
        arch = self.arch
        if ids.ndim != 2 or ids.shape[1] == 0 or ids.shape[0] == 0:
            raise CheckpointError(
                f"Token ids must be [batch, tokens] with both > 0, got {ids.shape}."
            )
        if ids.dtype.kind not in "iu":
            raise CheckpointError(f"Token ids must be integers, got {ids.dtype}.")
        # GPT-2's learned position table ends at P; RoPE models run on (dynamic RoPE is even
        # made for it), so only the caller's cap applies to them.
        limit = arch.max_positions if arch.learned_positions else None
        if max_tokens is not None:
            limit = max_tokens if limit is None else min(limit, max_tokens)
        if limit is not None and ids.shape[1] > limit:
            why = " (the model's position table)" if limit == arch.max_positions else ""
            raise CheckpointError(f"{ids.shape[1]} tokens; the limit is {limit}{why}.")
        if ids.min() < 0 or ids.max() >= arch.vocab_size:
            raise CheckpointError(
                f"Token ids must lie in 0 .. {arch.vocab_size - 1} (the vocabulary), got "
                f"{int(ids.min())} .. {int(ids.max())}."
            )
        return ids.astype(np.int32)

    def attention_inputs(self, ids) -> np.ndarray:
        """What every attention layer receives for ``ids`` [B, T]: [L, B, T, D] (after its norm).

        With :meth:`layer`, one real layer can be rerun alone through :mod:`gqa_viz.core`.
        """
        ids = self._check_ids(ids, None)
        return _model.forward(self.weights, self.arch, ids, inputs=True)[2]

    def layer(self, index: int):
        """(params, spec) of attention layer ``index``: Keras-layout weights in float32 and the
        :class:`~gqa_viz.core.GQASpec` with the family's RoPE, QK norm, scale, soft-cap and the
        layer's window (``sliding_window``). Run it with ``use_causal_mask=True``.
        """
        (index,) = _layers([index], self.arch)
        params = {
            part: {name: np.asarray(w, np.float32) for name, w in leaves.items()}
            for part, leaves in self.weights["layers"][index]["attention"].items()
        }
        return params, _model.attention_spec(self.arch, index)


def _layers(layers, arch: Architecture) -> tuple[int, ...]:
    chosen = sorted({int(i) for i in layers})
    bad = [i for i in chosen if not 0 <= i < arch.num_layers]
    if bad:
        raise CheckpointError(
            f"Layer {bad[0]} does not exist; the model has {arch.num_layers} (0 .. {arch.num_layers - 1})."
        )
    return tuple(chosen)


def load(
    path,
    *,
    root=None,
    max_params: int = DEFAULT_PARAM_LIMIT,
    max_layers: int | None = None,
) -> Checkpoint:
    """Load the checkpoint in directory ``path`` (see the module docstring for what is read).

    ``root``: the folder symlinks may lead into (default: the enclosing ``models--*`` folder of
    a Hugging Face cache, else ``path`` itself). ``max_params`` and ``max_layers`` are checked
    from the headers, before any weight is read.
    """
    from gqa_viz.checkpoints import tokenizer as _tokenizer

    cdir = CheckpointDir(path, root)
    summary, tensors = _inspect(cdir, max_layers)
    if summary.params > max_params:
        raise CheckpointError(
            f"The checkpoint has {summary.params:,} parameters; the limit is {max_params:,}."
        )
    weights = _weights.load(summary.arch, tensors)
    tok = _tokenizer.load(cdir, max_bytes=TOKENIZER_BYTE_LIMIT)
    return Checkpoint(cdir.directory, summary, weights, tok)
