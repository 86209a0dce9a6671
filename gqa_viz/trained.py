"""The shipped tiny models (``assets/trained/``) as a weight source for every page. No Streamlit.

Axis letters as in :mod:`gqa_viz.tiny`: B batch, L sequence length (T = S = L), N query
heads, K kv heads, H head_dim, D model dim.

A model is named ``<task>-k<K>`` (e.g. ``recall-k8``: the associative-recall model with
K = 8 K/V heads, i.e. multi-head). :func:`layer_view` gives one of its attention layers with
the input that layer really sees on a generated task prompt: the pair the Playground, the
Walkthrough and the KV sharing page show instead of random weights and random vectors.

:func:`experiment` is the uptraining experiment (``experiment.json``): per conversion cell
(task, method, K) several runs, one per uptraining seed. :func:`spread` gives a cell's runs,
:func:`compare` which method is better than which: only where its worst run beats the
other's best.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gqa_viz import core, tasks, tiny

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "trained"


@functools.cache
def names() -> tuple[str, ...]:
    """The shipped models, by task then K from MHA down to MQA: ("copy-k8", ..., "sort-k1")."""
    found = {p.name.removesuffix(".safetensors") for p in ASSETS.glob("*.safetensors")}

    def order(name: str):
        task, k = name.rsplit("-k", 1)
        return (tasks.TASKS.index(task) if task in tasks.TASKS else 99, -int(k))

    return tuple(sorted(found, key=order))


def label(name: str) -> str:
    """``recall-k8`` -> "recall, K = 8 (MHA)"."""
    task, k = task_of(name), name.rsplit("-k", 1)[1]
    cfg = load(name).cfg
    n = cfg.num_query_heads
    kind = "MHA" if int(k) == n else "MQA" if int(k) == 1 else "GQA"
    return f"{task}, K = {k} ({kind})"


def task_of(name: str) -> str:
    """``recall-k8`` -> "recall"."""
    return name.rsplit("-k", 1)[0]


def mha_name(task: str) -> str:
    """The task's multi-head model (K = N), the one the GQA conversions start from."""
    for name in names():
        if task_of(name) == task:
            cfg = load(name).cfg
            if cfg.num_key_value_heads == cfg.num_query_heads:
                return name
    raise ValueError(f"No multi-head model for task {task!r}; shipped: {', '.join(names())}.")


@functools.cache
def load(name: str) -> tiny.Loaded:
    """A shipped model (cached per process; treat it as read-only)."""
    if name not in names():
        raise ValueError(f"No trained model {name!r}; shipped: {', '.join(names())}.")
    return tiny.load(ASSETS / f"{name}.safetensors")


@functools.cache
def experiment() -> dict:
    """``assets/trained/experiment.json``: the uptraining experiment's results."""
    return json.loads((ASSETS / "experiment.json").read_text())


class LayerView(NamedTuple):
    """One trained attention layer and the input it sees on one prompt."""

    params: core.Params  # NumPy arrays, core's layout (use_bias=True, no gate)
    spec: core.GQASpec
    x: np.ndarray  # [1, L, D] the layer's input (query = value) on the prompt
    labels: list[str]  # [L] token names, for the axes
    answer_keys: np.ndarray  # [L] for each answer position the key holding the answer, else -1


def prompt(task: str, seed: int) -> np.ndarray:
    """The task prompt drawn with ``seed``: tokens [L]."""
    return tasks.make_batch(task, seed, 1).tokens[0]


def token_labels(task: str, tokens: np.ndarray) -> list[str]:
    """Axis labels "position:token", unique per position (Plotly merges equal labels)."""
    vocab = tasks.token_names(task)
    return [f"{i}:{vocab[t]}" for i, t in enumerate(np.asarray(tokens).tolist())]


@functools.lru_cache(maxsize=64)
def layer_view(name: str, layer: int, seed: int) -> LayerView:
    """Layer ``layer`` of model ``name`` and its input on the prompt drawn with ``seed``."""
    model = load(name)
    num_layers = model.cfg.num_layers
    if not 0 <= layer < num_layers:
        raise ValueError(f"{name} has layers 0 to {num_layers - 1}; got layer {layer}.")
    tokens = prompt(model.cfg.task, seed)
    t = tiny.trace(model.params, model.cfg, tokens[None])
    params = {
        sub: {w: np.asarray(a) for w, a in ws.items()}
        for sub, ws in model.params["layers"][layer]["attention"].items()
    }
    x = np.asarray(t.layers[layer].input)  # [1, L, D]
    keys = tasks.answer_keys(model.cfg.task, tokens)
    return LayerView(params, model.cfg.spec, x, token_labels(model.cfg.task, tokens), keys)


# ---------------------------------------------------------------------------------------------
# The uptraining experiment: runs per cell, and which method is better.

METHODS = ("mean", "first", "random")  # tiny.convert's methods, in the experiment's order


class Spread(NamedTuple):
    """One cell's runs of one phase and metric (seed order) and their mean, min and max."""

    runs: tuple[float, ...]
    mean: float
    low: float
    high: float


def spread(row: dict, phase: str, metric: str = "token") -> Spread:
    """The runs of an experiment row (``row["runs"]``, one per seed) in ``phase`` ("before":
    right after conversion, "after": after uptraining). A row without runs (the first
    release: one run) is its one number."""
    if phase not in ("before", "after"):
        raise ValueError(f'phase must be "before" or "after", got {phase!r}.')
    if "runs" in row:
        values = tuple(float(r[phase][metric]) for r in row["runs"])
    else:
        values = (float(row[phase][metric]),)
    if not values:
        raise ValueError(f"Row {row.get('task')}/{row.get('method')}/K={row.get('K')} has no runs.")
    return Spread(values, float(np.mean(values)), min(values), max(values))


def beats(a: Spread, b: Spread) -> bool:
    """``a`` is better than ``b`` in every run: a's worst run beats b's best."""
    return a.low > b.high


class Comparison(NamedTuple):
    """The methods of one cell column (task, K, phase), as :func:`compare` ranks them."""

    spreads: dict[str, Spread]  # {method: its runs}
    top: str  # the method with the highest mean (the first such in METHODS order on a tie)
    beaten: tuple[str, ...]  # the others whose best run the top's worst run beats
    overlapping: tuple[str, ...]  # the others: their runs overlap the top's

    @property
    def best(self) -> str | None:
        """The top method if it beats every other in every run, else None (runs overlap)."""
        return None if self.overlapping else self.top


def compare(experiment: dict, task: str, K: int, phase: str = "after") -> Comparison:
    """Which conversion method of ``task`` at ``K`` is better in ``phase``, run by run.

    No method can beat the top one (its mean is the highest), so every other is either
    beaten (the top's worst run above its best) or overlapping.
    """
    rows = {r["method"]: r for r in experiment["rows"] if r["task"] == task and r["K"] == K}
    methods = [m for m in METHODS if m in rows] + sorted(set(rows) - set(METHODS))
    if not methods:
        raise ValueError(f"The experiment has no rows for task {task!r} at K = {K}.")
    spreads = {m: spread(rows[m], phase) for m in methods}
    top = max(methods, key=lambda m: spreads[m].mean)  # max keeps the first on a tie
    others = [m for m in methods if m != top]
    beaten = tuple(m for m in others if beats(spreads[top], spreads[m]))
    overlapping = tuple(m for m in others if m not in beaten)
    return Comparison(spreads, top, beaten, overlapping)
