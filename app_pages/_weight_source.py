"""The sidebar's weight source, part of :mod:`app_pages._controls`.

Random weights ("pooled", "independent"), a layer of a shipped trained model, or a layer of a
real checkpoint on this server (:mod:`gqa_viz.app.real_sources`). A chosen layer fixes the
layer's shape, and a real one also its input (the prompt's hidden states) and masks: those
widgets show its values, read-only (:func:`gqa_viz.app.settings.fixed_by_trained`,
:func:`~gqa_viz.app.settings.fixed_by_real`). With no real model on this server the option is
left out and a caption says why (the app never downloads one).
"""

from __future__ import annotations

from collections.abc import MutableMapping

import streamlit as st

from gqa_viz import trained
from gqa_viz.app import limits, real_sources
from gqa_viz.app import settings as cfg

NAMES = {
    "pooled": "one MHA layer, pooled",
    "independent": "fresh GQA layer",
    "trained": "a trained layer",
    "real": "a real model's layer",
}
HELP = (
    "'pooled': one seeded multi-head layer whose K/V heads are mean-pooled per group, so "
    "changing K changes only the sharing. 'fresh': a new GQA layer per K. 'trained': an "
    "attention layer of a tiny transformer trained on a synthetic task (Trained heads page), "
    "with the input it really sees on a prompt of that task. 'real': an attention layer of a "
    "checkpoint on this server (Real models page), on the hidden states it really receives "
    "for your sentence, with its RoPE, QK-norm, soft-cap and window."
)


def _w(name: str) -> str:
    return f"w_{name}"


# The visitor's own values of what a chosen layer fixes (heads, dims, masks...), kept while a
# trained or real layer is shown and put back when they return to random weights.
_OWN = "own_layer_settings"


def fix(ss: MutableMapping) -> tuple[str, str | None, int, list[str]]:
    """Write what the chosen layer fixes into the widgets' state, before they are drawn; on the
    way back to random weights, put back the values the visitor had before.

    Returns (the weight source, the help of the fixed widgets or None when nothing is fixed,
    the chosen model's number of layers, the real models on this server).
    """
    real = cfg.real_models()
    source = ss[_w("weights")]
    if source == "real" and not real:  # the models left the server since this was chosen
        ss[_w("weights")] = source = "pooled"
        st.warning("No real model is on this server any more: back to 'pooled' weights.")
    if source == "trained":
        fixed = cfg.fixed_by_trained(ss[_w("model")], ss[_w("layer")])
        layers = trained.load(fixed["model"]).cfg.num_layers
    elif source == "real":
        fixed = cfg.fixed_by_real(ss[_w("model")], ss[_w("layer")])
        layers = real_sources.architecture(fixed["model"]).num_layers
    else:
        for name, value in ss.pop(_OWN, {}).items():
            ss[_w(name)] = value
        return source, None, 0, real
    own = {name: ss[_w(name)] for name in fixed if name not in ("model", "layer")}
    ss.setdefault(_OWN, own)  # kept from the first chosen layer: trained -> real -> back
    for name, value in fixed.items():
        ss[_w(name)] = value
    return source, f"Fixed by the {source} layer.", layers, real


def pickers(source: str, layers: int, real: list[str]) -> None:
    """The weight-source radio, then the model and layer of a trained or real layer."""
    st.radio(
        "Weights",
        [name for name in cfg.WEIGHT_SOURCES if name != "real" or real],
        key=_w("weights"),
        format_func=NAMES.get,
        help=HELP,
    )
    if not real:
        st.caption(
            "A real model's layers: no model is on this server (the app never downloads one). "
            "The Real models page says how to add one."
        )
    if source == "trained":
        st.selectbox(
            "Trained model",
            trained.names(),
            key=_w("model"),
            format_func=trained.label,
            help="Task and K/V heads of a shipped model; K = 8 is multi-head.",
        )
        st.radio(
            "Layer",
            list(range(layers)),
            key=_w("layer"),
            horizontal=True,
            help="Which attention layer of the model (0 is the first).",
        )
    elif source == "real":
        st.selectbox(
            "Real model",
            real,
            key=_w("model"),
            help="The models on this server, by the name they are listed under "
            f"({real_sources.where_text()}).",
        )
        st.selectbox(
            "Layer",
            list(range(layers)),
            key=_w("layer"),
            help=f"Which of its {layers} attention layers (0 is the first).",
        )


def real_prompt(ss: MutableMapping) -> None:
    """The prompt box of a real layer: the sentence, split by the model's own tokenizer."""
    cap = real_sources.max_tokens(real_sources.architecture(ss[_w("model")]))
    st.text_input(
        "Prompt",
        key=_w("text"),
        max_chars=limits.MAX_TEXT_CHARS,
        help=f"Split by the model's own tokenizer; up to {cap} tokens (a longer prompt is cut).",
    )
    st.caption(
        "Input: the hidden states the chosen layer receives for this prompt (after the layers "
        "before it and its input norm), causal, with the layer's own window."
    )
