"""Synthetic next-token tasks whose attention has a known right answer. NumPy only.

Axis letters: B batch, L sequence length (the model's input length).

Each task draws a sequence of L + 1 tokens; the model reads ``tokens = seq[:L]`` and is
scored on ``targets = seq[1:]``, but only at the answer positions (``loss_mask``): the
positions whose next token follows from the sequence so far. Everything else (the random
symbols the task is made of) is unpredictable and carries no loss.

* ``copy``:      ``x1 .. xn | x1 .. xn``                   (symbols with repetition)
* ``recall``:    ``k1 v1 k2 v2 .. kn vn = q1 a1 q2 a2 ..``  (distinct keys; each answer a is
  the value paired with the query q before it: associative recall with several queries)
* ``induction``: random distinct symbols with one segment of ``INDUCTION_SEGMENT`` symbols
  appearing twice; the answers are the second copy's tokens after its first
* ``sort``:      ``x1 .. xn > sorted(x)``                  (distinct numbers)

:func:`answer_keys` gives, for each answer position, the earlier position whose token is the
answer: where a lookup (copy, recall, sort) or induction head should look.
"""

from __future__ import annotations

import string
from typing import NamedTuple

import numpy as np

TASKS = ("copy", "recall", "induction", "sort")

COPY_LEN = 12  # n symbols copied
RECALL_PAIRS = 8  # n key-value pairs before the queries
# Several queries per sequence: with a single one the 2-layer models sat on a loss plateau
# for 1000-2000+ steps (longer than a whole training run here), depending on the seed.
RECALL_QUERIES = 3
INDUCTION_SEGMENT = 6  # length of the repeated segment
SORT_LEN = 10  # n numbers sorted

_LETTERS = list(string.ascii_lowercase)
_VOCAB = {
    "copy": _LETTERS[:16] + ["|"],
    "recall": _LETTERS[:16] + [str(d) for d in range(10)] + ["="],
    "induction": _LETTERS[:20],
    "sort": [str(d) for d in range(16)] + [">"],
}
_SEQ_LEN = {  # L = drawn length - 1
    "copy": 2 * COPY_LEN,
    "recall": 2 * RECALL_PAIRS + 2 * RECALL_QUERIES,
    "induction": 24,
    "sort": 2 * SORT_LEN,
}

_DESCRIPTIONS = {
    "copy": (
        f"Copy: {COPY_LEN} random symbols (a-p, repeats allowed), a separator '|', then the "
        f"same symbols again. From the '|' on, each position t predicts the next symbol of the "
        f"copy, which is held by key t - {COPY_LEN}: the right attention is a diagonal band "
        f"{COPY_LEN} positions below the main diagonal. Content cannot find it, since symbols "
        f"repeat; position must."
    ),
    "recall": (
        f"Associative recall: {RECALL_PAIRS} pairs 'key value' (distinct keys a-p, values "
        f"0-9), '=', then {RECALL_QUERIES} of the keys, each followed by its value. At each "
        f"queried key the model must write that key's value: a head should look at the "
        f"position right after the key's earlier occurrence, which holds its value. Getting "
        f"there takes two steps: each value must first learn which key precedes it (a "
        f"previous-token head in layer 0) so that the query can find it by content (layer 1)."
    ),
    "induction": (
        f"Induction: a sequence of distinct random symbols in which one segment of "
        f"{INDUCTION_SEGMENT} symbols appears twice, at random places. Once the segment's "
        f"first symbol appears the second time, each next symbol is predictable: it is the one "
        f"that followed the current symbol at its earlier occurrence. The right attention is "
        f"the induction pattern: from the current token, look at the position right after the "
        f"same token's earlier occurrence (an off-diagonal stripe), which needs a "
        f"previous-token head in the layer below."
    ),
    "sort": (
        f"Sort: {SORT_LEN} distinct numbers 0-15, '>', then the same numbers in increasing "
        f"order. After '>' the model writes the smallest number, then at each step the "
        f"smallest input number larger than the one it just wrote. A lookup would attend to "
        f"the input position holding that number (what answer_keys marks), but the task is "
        f"also solvable from a bag of the inputs (which numbers are present, and which was "
        f"just written), and small trained models tend to do that: attention spread over the "
        f"inputs and the numbers written so far, with the answer getting only a larger share."
    ),
}


class Batch(NamedTuple):
    """A batch of one task: inputs, next-token targets, and where the loss counts."""

    tokens: np.ndarray  # [B, L] int32
    targets: np.ndarray  # [B, L] int32: tokens shifted by one (targets[:, t] = seq[t + 1])
    loss_mask: np.ndarray  # [B, L] bool: True at answer positions


def _check(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")


def token_names(task: str) -> list[str]:
    """Readable names of the task's V tokens, index = token id (for axis labels)."""
    _check(task)
    return list(_VOCAB[task])


def vocab_size(task: str) -> int:
    """V: the number of token ids the task uses."""
    return len(token_names(task))


def seq_len(task: str) -> int:
    """L: the length of the task's inputs (and of the targets)."""
    _check(task)
    return _SEQ_LEN[task]


def describe(task: str) -> str:
    """One paragraph: the task, and what the right attention is."""
    _check(task)
    return _DESCRIPTIONS[task]


def _rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def _distinct(rng: np.random.Generator, batch: int, pool: int, n: int) -> np.ndarray:
    """[batch, n] rows of n distinct ints from range(pool), in random order."""
    return np.argsort(rng.random((batch, pool)), axis=1)[:, :n]


def make_batch(task: str, rng_or_seed, batch: int) -> Batch:
    """``batch`` sequences of ``task`` from a NumPy generator or a seed (same seed, same batch)."""
    _check(task)
    if not isinstance(batch, int | np.integer) or batch <= 0:
        raise ValueError(f"batch must be a positive integer, got {batch!r}.")
    rng = _rng(rng_or_seed)
    L = seq_len(task)
    mask = np.zeros((batch, L), bool)  # [B, L]
    if task == "copy":
        n, sep = COPY_LEN, vocab_size(task) - 1
        x = rng.integers(0, 16, size=(batch, n))  # [B, n]
        seq = np.concatenate([x, np.full((batch, 1), sep), x], axis=1)  # [B, L + 1]
        mask[:, n:] = True
    elif task == "recall":
        n, q, eq = RECALL_PAIRS, RECALL_QUERIES, vocab_size(task) - 1
        keys = _distinct(rng, batch, 16, n)  # [B, n]
        values = 16 + rng.integers(0, 10, size=(batch, n))  # [B, n]
        pick = _distinct(rng, batch, n, q)  # [B, q] which pairs are queried, distinct
        rows = np.arange(batch)[:, None]
        seq = np.empty((batch, L + 1), np.int64)  # [B, L + 1]
        seq[:, 0 : 2 * n : 2], seq[:, 1 : 2 * n : 2] = keys, values
        seq[:, 2 * n] = eq
        seq[:, 2 * n + 1 :: 2] = keys[rows, pick]
        seq[:, 2 * n + 2 :: 2] = values[rows, pick]
        mask[:, 2 * n + 1 :: 2] = True  # at each queried key: its value comes next
    elif task == "induction":
        m = INDUCTION_SEGMENT
        n_fill = L + 1 - 2 * m
        # Every symbol distinct except the segment's two copies, so the earlier occurrence of
        # the current token, and so the right key, is unique.
        symbols = _distinct(rng, batch, vocab_size(task), m + n_fill)  # [B, m + n_fill]
        segment, filler = symbols[:, :m], symbols[:, m:]
        # The copies go in before filler symbols a <= b (a == b: back to back).
        a, b = np.sort(rng.integers(0, n_fill + 1, size=(batch, 2)), axis=1).T  # [B], [B]
        seq = np.empty((batch, L + 1), np.int64)  # [B, L + 1]
        for i in range(batch):
            f = filler[i]
            seq[i] = np.concatenate([f[: a[i]], segment[i], f[a[i] : b[i]], segment[i], f[b[i] :]])
        second = b + m  # [B] where the second copy starts
        cols = second[:, None] + np.arange(m - 1)  # [B, m - 1]
        mask[np.arange(batch)[:, None], cols] = True
    else:  # sort
        n, gt = SORT_LEN, vocab_size(task) - 1
        x = _distinct(rng, batch, 16, n)  # [B, n]
        seq = np.concatenate([x, np.full((batch, 1), gt), np.sort(x, axis=1)], axis=1)
        mask[:, n:] = True
    seq = seq.astype(np.int32)
    return Batch(tokens=seq[:, :L], targets=seq[:, 1:], loss_mask=mask)


def answer_positions(task: str, tokens) -> np.ndarray:
    """[L] or [B, L] bool: the answer positions of ``tokens`` (the batch's ``loss_mask``)."""
    return answer_keys(task, tokens) >= 0


def answer_keys(task: str, tokens) -> np.ndarray:
    """For tokens [L] (or [B, L]): at each answer position, the key position holding the answer.

    -1 where the position is no answer. Derived from the tokens alone, so it works for any
    sequence of the task's form, e.g. one typed in by hand; ``tokens[answer_keys[t]]`` is the
    answer at t.
    """
    _check(task)
    tokens = np.asarray(tokens)
    if tokens.ndim == 2:
        return np.stack([answer_keys(task, row) for row in tokens])  # [B, L]
    L = seq_len(task)
    if tokens.shape != (L,):
        raise ValueError(f"{task} tokens must have shape ({L},) or (B, {L}), got {tokens.shape}.")
    keys = np.full(L, -1, np.int64)  # [L]
    if task == "copy":
        n = COPY_LEN
        keys[n:] = np.arange(n)  # query n + j writes x_{j+1}, held at key j
    elif task == "recall":
        n = RECALL_PAIRS
        pairs = tokens[0 : 2 * n : 2].tolist()  # the keys, in order
        for t in range(2 * n + 1, L, 2):
            if tokens[t] in pairs:
                keys[t] = 2 * pairs.index(tokens[t]) + 1  # the value right after the key
    elif task == "induction":
        seen: dict[int, int] = {}
        for t, tok in enumerate(tokens.tolist()):
            if tok in seen:  # the second copy starts here
                start, first = t, seen[tok]
                for j in range(INDUCTION_SEGMENT - 1):
                    if start + j < L:
                        keys[start + j] = first + j + 1
                break
            seen[tok] = t
    else:  # sort: the input position of the i-th smallest number
        n = SORT_LEN
        keys[n:] = np.argsort(tokens[:n], kind="stable")
    return keys
