"""The Playground's controls, shared by every page that runs the layer.

The canonical :class:`~gqa_viz.app.settings.Settings` lives in ``st.session_state["settings"]``
(so it survives page switches, which drop widget state) and in the URL (so a copied link
reproduces the view). On a session's first run the URL wins; after that the widgets do, and
the URL is rewritten from them on every run.
"""

from __future__ import annotations

from dataclasses import fields, replace

import streamlit as st

from app_pages import _weight_source as source_controls
from gqa_viz import trained
from gqa_viz.app import limits
from gqa_viz.app import settings as cfg
from gqa_viz.app.settings import VIEW_FIELDS, Settings, compute_key
from gqa_viz.core import divisors, nearest_divisor

__all__ = ["compute_key", "note_page", "settings_controls", "view_controls"]

_KEY = "settings"
_MESSAGES = "settings_messages"
_PAGES = "pages_shown"  # (page of the previous full run, page of this run)
_SEEDED_FOR = "controls_seeded_for"  # the page whose arrival last re-seeded the controls


def _w(name: str) -> str:
    return f"w_{name}"


def _load() -> Settings:
    if _KEY not in st.session_state:
        # Every value of a repeated parameter (to_dict() keeps only the last): one is allowed.
        params = {name: st.query_params.get_all(name) for name in st.query_params}
        settings, messages = cfg.from_query_params(params)
        st.session_state[_KEY] = settings
        st.session_state[_MESSAGES] = messages
    return st.session_state[_KEY]


def note_page(url_path: str) -> None:
    """Record the page of this run (``app.py`` calls it on every full run)."""
    previous = st.session_state.get(_PAGES, (None, None))[1]
    st.session_state[_PAGES] = (previous, url_path)


def _arrived() -> bool:
    """Whether this page's controls still need seeding from the saved settings: the previous
    full run showed another page (or none: a new session), or the run that arrived here was
    cut short by a newer one before it seeded them."""
    previous, current = st.session_state.get(_PAGES, (None, None))
    return previous != current or st.session_state.get(_SEEDED_FOR) != current


def _seed_widgets(s: Settings, force: bool = False) -> None:
    # Widget state is dropped when a page stops rendering a widget, and after a page switch a
    # browser can send back values of the other page's widgets (even empty ones, read as the
    # first option): on arrival, and for any missing widget, the saved Settings win.
    for f in fields(Settings):
        if force or _w(f.name) not in st.session_state:
            st.session_state[_w(f.name)] = getattr(s, f.name)


def _sanitize_widgets(s: Settings) -> list[str]:
    """Give every widget value its field's type and limits before any widget is drawn in this
    run (:func:`gqa_viz.app.settings.sanitize`); return the messages saying what was kept."""
    values = {f.name: st.session_state[_w(f.name)] for f in fields(Settings)}
    changed, messages = cfg.sanitize(values, s)
    for name, value in changed.items():
        st.session_state[_w(name)] = value
    return messages


def _reset() -> None:
    for f in fields(Settings):
        st.session_state[_w(f.name)] = getattr(cfg.DEFAULTS, f.name)


def _options(choices, current):
    return sorted(set(choices) | {current})


def view_controls(pooled: bool) -> Settings:
    """The heatmap's toolbar (values shown, colour scale, downsampling): the current settings.

    Call it inside a fragment: changing these redraws the figure without recomputing, and
    the settings and the URL are brought up to date here, since the sidebar does not rerun.
    """
    ss = st.session_state
    _seed_widgets(ss[_KEY])
    cols = st.columns([1, 1.25, 1.1])
    cols[0].radio(
        "Show",
        cfg.VIEWS,
        key=_w("view"),
        horizontal=True,
        format_func={"probs": "probabilities", "logits": "logits"}.get,
    )
    cols[1].radio(
        "Colour scale",
        cfg.SCALES,
        key=_w("scale"),
        horizontal=True,
        format_func={"p99": "99th percentile", "max": "full range"}.get,
        help="'99th percentile': the darkest colour starts at the 99th percentile of the "
        "shown values, so one dominant cell (query 0 under a causal mask always has p = 1) "
        "does not wash out the rest; the colour bar says where. 'full range': 0 to the "
        "maximum. Hover always shows exact values.",
    )
    if pooled:
        cols[2].radio(
            "Downsampling",
            cfg.POOLS,
            key=_w("pool"),
            horizontal=True,
            format_func={"max": "block max", "mean": "block mean"}.get,
            help="The map has too many cells to draw one by one, so each drawn cell stands "
            "for a block. 'block max' keeps the strongest cell of each block, so a thin band "
            "or one hot key stays visible; 'block mean' shows the average. Zoom in below for "
            "exact values.",
        )
    current = replace(ss[_KEY], **{name: ss[_w(name)] for name in VIEW_FIELDS})
    if current != ss[_KEY]:
        ss[_KEY] = current
        st.query_params.from_dict(cfg.to_query_params(current))
    return current


LENGTHS = {"t": "Query length T", "s": "Key/value length S"}  # sliders a fragment may own


def settings_controls(slots=None) -> Settings:
    """Render the controls in the sidebar and return the validated settings they describe. With
    ``slots`` (:class:`app_pages._lengths.LengthSlots`), the length sliders' places and this
    run's messages go into it instead, for the page's fragment to draw."""
    s = _load()
    _seed_widgets(s, force=_arrived())
    st.session_state[_SEEDED_FOR] = st.session_state.get(_PAGES, (None, None))[1]
    bad_values = _sanitize_widgets(s)
    ss = st.session_state
    sb = st.sidebar

    # A trained or real layer fixes the shape (a real one its input and masks too): its values
    # are shown, read-only.
    source, fixed, layers, real = source_controls.fix(ss)
    trained_layer, real_layer = source == "trained", source == "real"
    chosen_layer = fixed is not None

    with sb.expander("Heads", expanded=True):
        st.selectbox(
            "num_query_heads (N)",
            _options(cfg.HEAD_CHOICES, ss[_w("n")]),
            key=_w("n"),
            help=fixed or f"Query heads, 1 to {limits.MAX_QUERY_HEADS}.",
            disabled=chosen_layer,
        )
        n = ss[_w("n")]
        k = nearest_divisor(n, ss[_w("k")])  # a K that N no longer allows moves to the nearest
        if k != ss[_w("k")]:
            ss[_w("k")] = k
        st.selectbox(
            "num_key_value_heads (K)",
            divisors(n),
            key=_w("k"),
            help=fixed
            or "Shared K/V heads; must divide N. K = N is multi-head, K = 1 multi-query.",
            disabled=chosen_layer,
        )
        st.selectbox(
            "head_dim (H)",
            _options(cfg.HEAD_DIMS, ss[_w("h")]),
            key=_w("h"),
            help=fixed,
            disabled=chosen_layer,
        )
        st.selectbox(
            "model dim (D)",
            _options(cfg.MODEL_DIMS, ss[_w("d")]),
            key=_w("d"),
            help=fixed,
            disabled=chosen_layer,
        )
        source_controls.pickers(source, layers, real)

    with sb.expander("Input", expanded=True):
        st.radio(
            "Attention",
            cfg.ATTENTION_KINDS,
            key=_w("attn"),
            horizontal=True,
            format_func={"self": "self-attention", "cross": "cross-attention"}.get,
            disabled=chosen_layer,
        )
        cross = ss[_w("attn")] == "cross"
        if real_layer:
            source_controls.real_prompt(ss)
        elif trained_layer:  # the prompt is drawn from the seed below
            st.caption(
                f"Input: a prompt of the {trained.task_of(ss[_w('model')])} task, drawn with "
                "the seed below, as the trained layer reads it."
            )
        else:
            st.radio(
                "Inputs",
                cfg.MODES,
                key=_w("mode"),
                horizontal=True,
                format_func={"sentence": "a sentence", "random": "random vectors"}.get,
            )
            if ss[_w("mode")] == "sentence":
                st.text_input(
                    "Query sentence" if cross else "Sentence",
                    key=_w("text"),
                    max_chars=limits.MAX_TEXT_CHARS,
                    help=f"Up to {limits.MAX_TOKENS} tokens. Equal tokens get equal embeddings.",
                )
                if cross:
                    st.text_input(
                        "Key/value sentence", key=_w("source"), max_chars=limits.MAX_TEXT_CHARS
                    )
            else:
                for name in ("t", "s") if cross else ("t",):
                    if slots is None:
                        st.slider(LENGTHS[name], 1, limits.MAX_LEN, key=_w(name))
                    else:
                        slots.places[name] = st.container()
                st.number_input("Batch size B", 1, limits.MAX_BATCH, key=_w("batch"))
                ss[_w("item")] = min(ss[_w("item")], ss[_w("batch")] - 1)
                st.number_input("Batch item shown", 0, limits.MAX_BATCH - 1, key=_w("item"))
        st.number_input(
            "Prompt seed" if trained_layer else "Seed",
            0,
            limits.MAX_SEED,
            key=_w("seed"),
            help="Draws a new prompt of the task."
            if trained_layer
            else ("Draws dropout only (in training)." if real_layer else None),
        )

    with sb.expander("Masks", expanded=True):
        real_fixed = fixed if real_layer else None
        st.toggle("use_causal_mask", key=_w("causal"), disabled=real_layer, help=real_fixed)
        st.number_input(
            "sliding_window (0 = off)",
            0,
            limits.MAX_LEN,
            key=_w("window"),
            help=real_fixed or "Keras' band: query i sees keys j with |i - j| < window.",
            disabled=real_layer,
        )
        pad_help = (
            "Appends <pad> tokens"
            if ss[_w("mode")] == "sentence" and not trained_layer
            else "Marks the last positions"
        )
        st.number_input(
            "Query padding" if cross else "Padding",
            0,
            limits.MAX_LEN,
            key=_w("pad"),
            help=real_fixed or f"{pad_help} as padding (query_mask / value_mask False there).",
            disabled=real_layer,
        )
        if cross:
            st.number_input("Key padding", 0, limits.MAX_LEN, key=_w("kpad"))

    with sb.expander("Layer options"):
        st.slider("dropout", 0.0, limits.MAX_DROPOUT, step=0.05, key=_w("dropout"))
        st.toggle("training (dropout active)", key=_w("training"))
        st.toggle("use_bias", key=_w("bias"), disabled=chosen_layer, help=fixed)
        st.toggle("use_gate", key=_w("gate"), disabled=chosen_layer, help=fixed)
        st.button("Reset all controls", on_click=_reset)

    raw = replace(s, **{f.name: ss[_w(f.name)] for f in fields(Settings)})
    settings, messages = cfg.validate(raw)
    ss[_KEY] = settings
    st.query_params.from_dict(cfg.to_query_params(settings))
    messages = ss.pop(_MESSAGES, []) + bad_values + messages
    if slots is not None:  # shown in the fragment, so that its reruns clear them
        slots.messages, messages = messages, []
    for message in messages:
        st.warning(message, icon="⚠️")
    return settings
