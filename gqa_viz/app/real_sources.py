"""Real checkpoints for the app: the operator's list, one shared loaded model, cached runs.

Axis letters: L layers, N query heads, K kv heads, T prompt tokens, D model dim, V vocabulary.

Where models come from is the operator's decision, made in the environment of the server:

* the local Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``), read offline;
* ``GQA_VIZ_MODEL_DIRS``: directories (separated by ``:``) holding a checkpoint or folders
  of checkpoints.

Visitors choose a model by the name in that list (:func:`models`); a name that is not in it
is refused (:func:`entry`), so nothing a visitor types reaches the file system. The list is
read again at most every :data:`LIST_SECONDS`. One loaded model is shared by all sessions
(:class:`~gqa_viz.app.checkpoint_cache.CheckpointCache`), and a prompt's run is cached in the
server's results cache like every other page's.

:func:`layer_source` serves one layer as the weight source of the Playground, Walkthrough and
KV sharing pages (weights "real" in :mod:`gqa_viz.app.settings`): its weights and spec, and
the hidden states it receives for a prompt. :func:`architecture` and :func:`layer_spec` read
the config alone, so settings can be checked without loading a model. No Streamlit here.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from gqa_viz import checkpoints, core
from gqa_viz.app import limits
from gqa_viz.app.cache import RESULTS
from gqa_viz.app.checkpoint_cache import CheckpointCache
from gqa_viz.checkpoints import convert, discover
from gqa_viz.checkpoints.model import attention_spec

MODEL_DIRS_ENV = "GQA_VIZ_MODEL_DIRS"
LIST_SECONDS = 30.0
TOP_K = 5

CHECKPOINTS = CheckpointCache()
_listing: tuple[float, tuple, list[discover.Entry]] | None = None
_listing_lock = threading.Lock()


def _where(environ=os.environ) -> tuple:
    dirs = tuple(d for d in environ.get(MODEL_DIRS_ENV, "").split(os.pathsep) if d.strip())
    return discover.hub_cache_dir(environ), dirs


def models(*, refresh: bool = False) -> list[discover.Entry]:
    """The operator's models (see the module docstring), usable or with the reason they are not."""
    global _listing
    where = _where()
    with _listing_lock:
        fresh = _listing is not None and _listing[1] == where
        if refresh or not fresh or time.monotonic() - _listing[0] > LIST_SECONDS:
            cache_dir, dirs = where
            found = discover.find(
                cache_dir=cache_dir,
                directories=dirs,
                max_params=limits.MAX_CHECKPOINT_PARAMS,
                max_layers=limits.MAX_CHECKPOINT_LAYERS,
            )
            _listing = (time.monotonic(), where, found)
        return list(_listing[2])


def where_text() -> str:
    """Where this server looks for models, for the page's "how to add one" note."""
    cache_dir, dirs = _where()
    if not dirs:
        return f"the Hugging Face cache `{cache_dir}` (and no directories: `{MODEL_DIRS_ENV}` is unset)"
    listed = ", ".join(f"`{d}`" for d in dirs)
    return f"the Hugging Face cache `{cache_dir}` and `{MODEL_DIRS_ENV}`: {listed}"


def entry(name: str) -> discover.Entry:
    """The listed model called ``name``; a CheckpointError for any other name or an unusable one."""
    for e in models():
        if e.name == name:
            if e.problem is not None:
                why = (e.reason or e.problem).rstrip(".")  # whole, not the list's short label
                raise checkpoints.CheckpointError(f"{e.name} cannot be opened: {why}.")
            return e
    shown = str(name)[:60].replace("`", "'")  # echoed in Markdown: kept short, as code
    raise checkpoints.CheckpointError(
        f"There is no model called `{shown}` on this server; choose one from the list."
    )


def checkpoint(name: str) -> checkpoints.Checkpoint:
    """The loaded model called ``name`` (shared by every session; loads it if needed).

    Only a computation that is not cached yet should call this: with one resident model, two
    visitors on two models would otherwise evict each other's on every rerun. Tokens and the
    architecture come without loading (:func:`tokenizer`, :func:`architecture`).
    """
    e = entry(name)
    return CHECKPOINTS.get(e.path, e.root)


_loaded_once: set[str] = set()


def check_loads(name: str) -> None:
    """Load model ``name`` once to find out whether it can be (a CheckpointError if not).

    After a first success this does nothing, so a page can check on every rerun without
    reloading a model another visitor's pick has evicted.
    """
    path = str(entry(name).path)
    if path not in _loaded_once:
        checkpoint(name)
        _loaded_once.add(path)


_tokenizers: dict[tuple[str, str], object] = {}
_tokenizers_lock = threading.Lock()


def tokenizer(name: str):
    """Model ``name``'s tokenizer (from its tokenizer files alone; the weights stay on disk),
    or None when it has none. Kept per directory for the server's life (a few MB each)."""
    from gqa_viz.checkpoints import tokenizer as tokenizer_lib
    from gqa_viz.checkpoints.files import CheckpointDir

    e = entry(name)
    key = (str(e.path), str(e.root))
    with _tokenizers_lock:
        if key not in _tokenizers:
            cdir = CheckpointDir(e.path, e.root)
            _tokenizers[key] = tokenizer_lib.load(cdir, max_bytes=checkpoints.TOKENIZER_BYTE_LIMIT)
        return _tokenizers[key]


def max_tokens(arch: checkpoints.Architecture) -> int:
    """How many prompt tokens this model may run: the prompt limit, the score limit
    (L x N x T x T probabilities kept) and the model's own position table, whichever is least."""
    by_scores = int((limits.MAX_REAL_SCORE_CELLS / (arch.num_layers * arch.num_query_heads)) ** 0.5)
    return max(2, min(limits.MAX_REAL_PROMPT_TOKENS, by_scores, arch.max_positions))


@dataclass(frozen=True)
class Prompt:
    """A prompt as the model's tokenizer splits it."""

    ids: tuple[int, ...]
    tokens: tuple[str, ...]  # one readable string per id
    cut_from: int | None = None  # with tokenize(cut=True): the length before the cut


def tokenize(name: str, text: str, *, cut: bool = False) -> Prompt:
    """``text`` in model ``name``'s tokens, or a CheckpointError naming the limit it breaks.

    ``cut``: a prompt over the token limit is cut to it (``cut_from`` says from what) instead
    of refused, as the Playground cuts a long sentence.
    """
    tok, arch = tokenizer(name), architecture(name)
    if tok is None:
        raise checkpoints.CheckpointError(
            f"{name} has no tokenizer.json, so text cannot be turned into its tokens."
        )
    if len(text) > limits.MAX_REAL_PROMPT_CHARS:
        raise checkpoints.CheckpointError(
            f"The prompt has {len(text):,} characters; the limit is "
            f"{limits.MAX_REAL_PROMPT_CHARS:,}."
        )
    ids = tok.encode(text)
    beyond = [i for i in ids if not 0 <= i < arch.vocab_size]
    if beyond:
        raise checkpoints.CheckpointError(
            f"The tokenizer gives id {beyond[0]}, beyond {name}'s vocabulary of "
            f"{arch.vocab_size:,} (its tokenizer.json and weights disagree)."
        )
    cap = max_tokens(arch)
    cut_from = None
    if len(ids) > cap and cut:
        ids, cut_from = ids[:cap], len(ids)
    if len(ids) > cap:
        raise checkpoints.CheckpointError(
            f"The prompt is {len(ids)} tokens for {name}; the limit is {cap} tokens."
        )
    if len(ids) < 2:
        raise checkpoints.CheckpointError(
            "The prompt needs at least 2 tokens (attention has nothing to show with one)."
        )
    return Prompt(tuple(int(i) for i in ids), tuple(tok.token_strings(ids)), cut_from)


def _top(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k next-token ids and probabilities per position, best first: ([T, k], [T, k]).

    A partial sort: a full argsort of [T, V] takes seconds for a 150k vocabulary.
    """
    ids = np.argpartition(-logits, k - 1, axis=-1)[:, :k]  # [T, k] in no order
    top = np.take_along_axis(logits, ids, -1)  # [T, k]
    order = np.argsort(-top, axis=-1, kind="stable")
    ids, top = np.take_along_axis(ids, order, -1), np.take_along_axis(top, order, -1)
    peak = logits.max(-1, keepdims=True)  # [T, 1]
    log_z = peak + np.log(np.exp(logits - peak).sum(-1, keepdims=True))  # [T, 1]
    return ids, np.exp(top - log_z)


def _run(ckpt: checkpoints.Checkpoint, ids: tuple[int, ...]) -> dict:
    logits, probs = ckpt.forward(np.asarray([ids]))
    top_ids, top_p = _top(logits[0].astype(np.float64), TOP_K)
    stats = [convert.head_stats(p, w) for p, w in zip(probs, ckpt.arch.windows, strict=True)]
    return {
        "probs": [p[0] for p in probs],  # L x [N, T, T]
        "top_ids": top_ids,  # [T, k]
        "top_p": top_p,  # [T, k]
        "loss": convert.next_token_loss(logits, np.asarray([ids])),
        "stats": {m: np.stack([s[m] for s in stats]) for m in stats[0]},  # each [L, N]
    }


def run(name: str, ids: tuple[int, ...], kv_heads: int | None = None, method: str = "mean") -> dict:
    """Model ``name`` on ``ids``, optionally with its kv heads grouped to ``kv_heads``: every
    layer's probabilities, top-5 next tokens per position, the prompt's loss and head stats.

    Shared by all sessions through the results cache.
    """
    key = ("real", name, str(entry(name).path), ids, kv_heads, method)
    return RESULTS.get(key, lambda: run_uncached(name, ids, kv_heads, method), heavy=True)


def run_uncached(
    name: str, ids: tuple[int, ...], kv_heads: int | None = None, method: str = "mean"
) -> dict:
    """What :func:`run` returns, computed now and kept nowhere (for a summary of it that is
    cached instead, such as a K' the page only plots as a point)."""
    ckpt = checkpoint(name)  # loaded only when a run is not cached
    model = ckpt if kv_heads is None else convert.group_kv_heads(ckpt, kv_heads, method)
    return _run(model, ids)


# ---------------------------------------------------------------------------------------------
# One real attention layer as the weight source of the Playground, Walkthrough and KV sharing.


def usable_names() -> list[str]:
    """The listed models that can be opened, in the list's order."""
    return [e.name for e in models() if e.usable]


def architecture(name: str) -> checkpoints.Architecture:
    """Model ``name``'s architecture, from its config alone (nothing is loaded)."""
    return entry(name).summary.arch


def layer_spec(name: str, layer: int) -> core.GQASpec:
    """The :class:`~gqa_viz.core.GQASpec` of attention layer ``layer`` of model ``name``: its
    RoPE, QK norm, scale, soft-cap and sliding window (from the config; nothing is loaded)."""
    return attention_spec(architecture(name), layer)


@dataclass(frozen=True)
class LayerSource:
    """One attention layer of a real model and what it receives for one prompt."""

    params: dict  # Keras-layout float32 NumPy weights (with query_norm/key_norm for QK norm)
    spec: core.GQASpec  # :func:`layer_spec`
    x: np.ndarray  # [1, T, D] the layer's input: the hidden states after its input norm
    prompt: Prompt  # the prompt's ids and token strings (cut to the token limit)
    arch: checkpoints.Architecture


def layer_source(name: str, text: str, layer: int) -> LayerSource:
    """Layer ``layer`` of model ``name`` and the hidden states it really sees for ``text``.

    ``text`` is cut to :func:`max_tokens` tokens (see :func:`tokenize`). What every layer
    receives is computed in one forward pass and kept in the shared results cache, so
    another layer of the same prompt costs nothing more. CheckpointError (a ValueError) for
    an unknown model, a missing tokenizer, a prompt under 2 tokens or a layer out of range.
    """
    prompt = tokenize(name, text, cut=True)
    where = (name, str(entry(name).path), prompt.ids)
    # Light, not heavy: the KV sharing page calls this inside its own heavy computation, and
    # the cache's one heavy-work slot is not reentrant (a nested heavy request would wait for
    # the slot its own thread holds, and every heavy request of the server behind it).
    inputs = RESULTS.get(  # [L, 1, T, D]
        ("real-inputs", *where),
        lambda: checkpoint(name).attention_inputs(np.asarray([prompt.ids])),
        heavy=False,
    )

    def compute() -> LayerSource:
        ckpt = checkpoint(name)
        params, spec = ckpt.layer(layer)  # spec carries the layer's window
        return LayerSource(params, spec, np.asarray(inputs[layer]), prompt, ckpt.arch)

    return RESULTS.get(("real-layer", *where, layer), compute, heavy=False)
