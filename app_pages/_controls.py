"""The Playground's controls, shared by the Playground and Walkthrough pages.

The canonical :class:`~gqa_viz.settings.Settings` lives in ``st.session_state["settings"]``
(so it survives page switches, which drop widget state) and in the URL (so a copied link
reproduces the view). On a session's first run the URL wins; after that the widgets do, and
the URL is rewritten from them on every run.
"""

from __future__ import annotations

from dataclasses import fields, replace

import streamlit as st

from gqa_viz import settings as cfg
from gqa_viz import trained
from gqa_viz.settings import Settings

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
    """Give every widget value its field's type before any widget is drawn in this run.

    Values come from the browser, which can send anything; one that cannot be read as its
    type, or is outside its limits, falls back to the current setting, with a message that
    says why. (Streamlit would silently put an out-of-range number back to the widget's
    lowest value.)
    """
    messages = []
    for f in fields(Settings):
        key = _w(f.name)
        value = st.session_state[key]
        kept = getattr(s, f.name)
        shown = repr(kept) if len(repr(kept)) <= 40 else "the previous value"
        try:
            fixed = cfg.coerce(f.name, value)
        except (ValueError, OverflowError) as e:
            fixed = kept
            messages.append(f"{f.name}: {str(value)[:40]!r} is not valid; kept {shown} ({e}).")
        else:
            why = cfg.out_of_limits(f.name, fixed)
            if why is not None:
                fixed = kept
                messages.append(f"{why}; kept {shown}.")
        if type(fixed) is not type(value) or fixed != value:
            st.session_state[key] = fixed
    return messages


def _reset() -> None:
    for f in fields(Settings):
        st.session_state[_w(f.name)] = getattr(cfg.DEFAULTS, f.name)


def _options(choices, current):
    return sorted(set(choices) | {current})


# Fields that change only how a result is drawn, not what is computed.
VIEW_FIELDS = ("view", "scale", "pool")


def compute_key(s: Settings) -> Settings:
    """``s`` with the drawing-only fields at their defaults: the key of a computed result."""
    return replace(s, **{name: getattr(cfg.DEFAULTS, name) for name in VIEW_FIELDS})


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


def settings_controls() -> Settings:
    """Render the controls in the sidebar and return the validated settings they describe."""
    s = _load()
    _seed_widgets(s, force=_arrived())
    ss_pages = st.session_state.get(_PAGES, (None, None))
    st.session_state[_SEEDED_FOR] = ss_pages[1]
    bad_values = _sanitize_widgets(s)
    ss = st.session_state
    sb = st.sidebar

    trained_layer = ss[_w("weights")] == "trained"
    if trained_layer:  # the shipped model fixes the shape: show its values, read-only
        if ss[_w("model")] not in trained.names():
            ss[_w("model")] = cfg.DEFAULT_MODEL
        model = trained.load(ss[_w("model")]).cfg
        ss[_w("n")], ss[_w("k")] = model.num_query_heads, model.num_key_value_heads
        ss[_w("h")], ss[_w("d")] = model.head_dim, model.d_model
        ss[_w("layer")] = min(max(ss[_w("layer")], 0), model.num_layers - 1)
        ss[_w("attn")], ss[_w("bias")], ss[_w("gate")] = "self", True, False
    fixed = "Fixed by the trained model." if trained_layer else None

    with sb.expander("Heads", expanded=True):
        st.selectbox(
            "num_query_heads (N)",
            _options(cfg.HEAD_CHOICES, ss[_w("n")]),
            key=_w("n"),
            help=fixed or f"Query heads, 1 to {cfg.MAX_QUERY_HEADS}.",
            disabled=trained_layer,
        )
        n = ss[_w("n")]
        if n % ss[_w("k")]:
            ss[_w("k")] = cfg.nearest_divisor(n, ss[_w("k")])
        st.selectbox(
            "num_key_value_heads (K)",
            cfg.divisors(n),
            key=_w("k"),
            help=fixed
            or "Shared K/V heads; must divide N. K = N is multi-head, K = 1 multi-query.",
            disabled=trained_layer,
        )
        st.selectbox(
            "head_dim (H)",
            _options(cfg.HEAD_DIMS, ss[_w("h")]),
            key=_w("h"),
            help=fixed,
            disabled=trained_layer,
        )
        st.selectbox(
            "model dim (D)",
            _options(cfg.MODEL_DIMS, ss[_w("d")]),
            key=_w("d"),
            help=fixed,
            disabled=trained_layer,
        )
        st.radio(
            "Weights",
            cfg.WEIGHT_SOURCES,
            key=_w("weights"),
            format_func={
                "pooled": "one MHA layer, pooled",
                "independent": "fresh GQA layer",
                "trained": "a trained layer",
            }.get,
            help="'pooled': one seeded multi-head layer whose K/V heads are mean-pooled per "
            "group, so changing K changes only the sharing. 'fresh': a new GQA layer per K. "
            "'trained': an attention layer of a tiny transformer trained on a synthetic task "
            "(Trained heads page), with the input it really sees on a prompt of that task.",
        )
        if trained_layer:
            st.selectbox(
                "Trained model",
                trained.names(),
                key=_w("model"),
                format_func=trained.label,
                help="Task and K/V heads of a shipped model; K = 8 is multi-head.",
            )
            st.radio(
                "Layer",
                list(range(model.num_layers)),
                key=_w("layer"),
                horizontal=True,
                help="Which attention layer of the model (0 is the first).",
            )

    with sb.expander("Input", expanded=True):
        st.radio(
            "Attention",
            cfg.ATTENTION_KINDS,
            key=_w("attn"),
            horizontal=True,
            format_func={"self": "self-attention", "cross": "cross-attention"}.get,
            disabled=trained_layer,
        )
        cross = ss[_w("attn")] == "cross"
        if trained_layer:
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
        if trained_layer:
            pass  # the prompt is drawn from the seed below
        elif ss[_w("mode")] == "sentence":
            st.text_input(
                "Query sentence" if cross else "Sentence",
                key=_w("text"),
                max_chars=cfg.MAX_TEXT_CHARS,
                help=f"Up to {cfg.MAX_TOKENS} tokens. Equal tokens get equal embeddings.",
            )
            if cross:
                st.text_input("Key/value sentence", key=_w("source"), max_chars=cfg.MAX_TEXT_CHARS)
        else:
            st.slider("Query length T", 1, cfg.MAX_LEN, key=_w("t"))
            if cross:
                st.slider("Key/value length S", 1, cfg.MAX_LEN, key=_w("s"))
            st.number_input("Batch size B", 1, cfg.MAX_BATCH, key=_w("batch"))
            ss[_w("item")] = min(ss[_w("item")], ss[_w("batch")] - 1)
            st.number_input("Batch item shown", 0, cfg.MAX_BATCH - 1, key=_w("item"))
        st.number_input(
            "Prompt seed" if trained_layer else "Seed",
            0,
            cfg.MAX_SEED,
            key=_w("seed"),
            help="Draws a new prompt of the task." if trained_layer else None,
        )

    with sb.expander("Masks", expanded=True):
        st.toggle("use_causal_mask", key=_w("causal"))
        st.number_input(
            "sliding_window (0 = off)",
            0,
            cfg.MAX_LEN,
            key=_w("window"),
            help="Keras' band: query i sees keys j with |i - j| < window.",
        )
        pad_help = (
            "Appends <pad> tokens"
            if ss[_w("mode")] == "sentence" and not trained_layer
            else "Marks the last positions"
        )
        st.number_input(
            "Query padding" if cross else "Padding",
            0,
            cfg.MAX_LEN,
            key=_w("pad"),
            help=f"{pad_help} as padding (query_mask / value_mask False there).",
        )
        if cross:
            st.number_input("Key padding", 0, cfg.MAX_LEN, key=_w("kpad"))

    with sb.expander("Layer options"):
        st.slider("dropout", 0.0, cfg.MAX_DROPOUT, step=0.05, key=_w("dropout"))
        st.toggle("training (dropout active)", key=_w("training"))
        st.toggle("use_bias", key=_w("bias"), disabled=trained_layer, help=fixed)
        st.toggle("use_gate", key=_w("gate"), disabled=trained_layer, help=fixed)
        st.button("Reset all controls", on_click=_reset)

    raw = replace(s, **{f.name: ss[_w(f.name)] for f in fields(Settings)})
    settings, messages = cfg.validate(raw)
    ss[_KEY] = settings
    st.query_params.from_dict(cfg.to_query_params(settings))
    for message in ss.pop(_MESSAGES, []) + bad_values + messages:
        st.warning(message, icon="⚠️")
    return settings
