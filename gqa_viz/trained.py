"""The shipped tiny models (``assets/trained/``) as a weight source for every page. No Streamlit.

Axis letters as in :mod:`gqa_viz.tiny`: B batch, L sequence length (T = S = L), N query
heads, K kv heads, H head_dim, D model dim.

A model is named ``<task>-k<K>`` (e.g. ``recall-k8``: the associative-recall model with
K = 8 K/V heads, i.e. multi-head). :func:`layer_view` gives one of its attention layers with
the input that layer really sees on a generated task prompt: the pair the Playground, the
Walkthrough and the KV sharing page show instead of random weights and random vectors.
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
