"""Real models: a checkpoint's heads grouped by K/V head, and its K/V heads grouped further.

Thin on purpose: which models exist and their runs come from :mod:`gqa_viz.app.real_sources`,
what the page resolves and computes from :mod:`gqa_viz.app.real_models`, the figures from
:mod:`gqa_viz.figures.real_models` and :mod:`gqa_viz.figures.heads`, the prose from
``assets/text/real_models.md``.

State: every setting is a field of :class:`~gqa_viz.app.real_models.RealSettings`, read from
the URL on a session's first run; after that the widgets hold it. Each run resolves the
widgets' values against the server's models (:func:`~gqa_viz.app.real_models.resolve`): a
refused model or prompt gets a message and the previous view is kept; the widgets are then set
to the view (before they are drawn) and the URL to its settings. The grouping section is a lazy
expander: nothing of it is computed until it is opened.
"""

from __future__ import annotations

import streamlit as st

from app_pages import _url_settings as url_settings
from app_pages._chart import chart
from gqa_viz.app import real_models as rm
from gqa_viz.app import real_sources
from gqa_viz.app.limits import MAX_DRAWN_CELLS, MAX_REAL_PROMPT_CHARS
from gqa_viz.figures import real_models as F
from gqa_viz.figures.heads import heads_figure
from gqa_viz.figures.theme import DRIFT_COLORSCALE, HEAD_STAT_COLORSCALES

TEXT = rm.text()
SETTINGS, MESSAGES, VIEW, GROUP = "rm_settings", "rm_messages", "rm_view", "rm_group"
WIDGETS = {name: f"rm_{name}" for name in rm.RealSettings.__dataclass_fields__}
ss = st.session_state


def _requested(settings: rm.RealSettings) -> rm.RealSettings:
    """The widgets' values (the URL's settings where a widget is not there yet)."""
    values = {name: ss.get(key, getattr(settings, name)) for name, key in WIDGETS.items()}
    values["kv"] = (values["kv"] or -1) if ss[GROUP] else 0
    return rm.RealSettings(**values)


def _set_widgets(view: rm.View) -> None:
    """Every widget shows the view (the prompt box keeps what the visitor typed)."""
    for name, key in WIDGETS.items():
        if name != "prompt":
            ss[key] = getattr(view, name)
    ss.setdefault(WIDGETS["prompt"], view.prompt)
    if not view.kv:
        ss[WIDGETS["kv"]] = view.arch.num_kv_heads


def _no_models(messages: list[str]) -> None:
    for message in messages:
        st.warning(message, icon="⚠️")
    st.info(TEXT["no_models"].format(where=real_sources.where_text()), icon="ℹ️")
    st.markdown(TEXT["how_to_add"])
    broken = [e for e in real_sources.models() if not e.usable]
    if broken:
        st.markdown("Found, but cannot be opened:\n" + "\n".join(f"- {e.label}" for e in broken))
    st.page_link(
        "app_pages/trained.py",
        label="Trained heads: the tiny models shipped with this app",
        icon=":material/model_training:",
    )


def _choose(view: rm.View) -> None:
    entries = {e.name: e for e in real_sources.models()}
    c1, c2 = st.columns([1.6, 2], gap="medium", vertical_alignment="bottom")
    c1.selectbox(
        "Model",
        list(entries),
        key=WIDGETS["model"],
        format_func=lambda n: entries[n].label if n in entries else n,
        help=TEXT["model_help"],
    )
    summary = real_sources.entry(view.model).summary
    c2.caption(f"{view.arch.describe()}; {summary.params:,} parameters stored as {summary.dtype}.")
    st.text_area(
        f"Prompt (at most {view.cap} tokens for this model)",
        key=WIDGETS["prompt"],
        max_chars=MAX_REAL_PROMPT_CHARS,
        height=80,
        help=TEXT["prompt_help"].format(cap=view.cap),
    )


def _overview(view: rm.View, run: dict) -> None:
    st.header("Every head at a glance", divider="gray")
    st.segmented_control(
        "Colour by",
        list(rm.METRICS),
        key=WIDGETS["metric"],
        required=True,
        format_func=lambda m: rm.METRICS[m][0],
        help=TEXT["metric_help"],
    )
    name, meaning, fmt = rm.METRICS[view.metric]
    a = view.arch
    fig = F.overview_figure(
        run["stats"][view.metric],
        a.num_kv_heads,
        name=name,
        fmt=fmt,
        layer=view.layer,
        colorscale=HEAD_STAT_COLORSCALES[view.metric],
        zmax=1.0 if view.metric != "distance" else None,
        title=f"{view.model}: {a.num_layers} layers × {a.num_query_heads} query heads, "
        f"grouped by their {a.num_kv_heads} K/V heads",
        subtitle=f"Colour: {name}, {meaning}; on the {len(view.ids)}-token prompt.",
    )
    chart(fig, key="rm_chart_overview")
    st.caption(TEXT["overview"])


def _heads(view: rm.View, probs, K: int, title: str, key: str) -> None:
    """One layer's query heads [N, T, T], in rows by the K K/V heads they read."""
    tokens = list(view.tokens)
    fig = heads_figure(probs, rm.layer_mask(view), tokens, tokens, K, title=title, saturate=99.0,
                       max_cells=MAX_DRAWN_CELLS, frozen=True)  # fmt: skip
    chart(fig, key=key)


def _layer(view: rm.View, run: dict) -> None:
    st.header("One layer in full", divider="gray")
    a = view.arch
    if a.num_layers > 1:
        st.slider("Layer", 0, a.num_layers - 1, key=WIDGETS["layer"])
    window = a.windows[view.layer]
    where = f"sliding window of {window}" if window else "causal"
    title = f"Layer {view.layer} of {a.num_layers}: {a.num_query_heads} query heads ({where})"
    _heads(view, run["probs"][view.layer], a.num_kv_heads, title, "rm_chart_layer")
    st.caption(TEXT["layer"])


def _next_tokens(view: rm.View, run: dict, key: str, title: str, slider: bool = True) -> None:
    if slider and len(view.ids) > 1:
        st.select_slider("Position", list(range(len(view.ids))), key=WIDGETS["pos"],
                         format_func=lambda i: f"{i}: {view.tokens[i]!r}")  # fmt: skip
    tokens, probs = rm.top_tokens(view, run)
    actual, subtitle = rm.next_token(view)
    chart(
        F.top_tokens_figure(tokens, probs, title=title, subtitle=subtitle, actual=actual), key=key
    )


def _group_controls(view: rm.View) -> None:
    a = view.arch
    mha = TEXT["mha"] if a.num_kv_heads == a.num_query_heads else ""
    st.markdown(TEXT["grouping"].format(k=a.num_kv_heads, mha=mha))
    c1, c2 = st.columns([1, 1.6], gap="medium")
    c1.segmented_control(
        "K' (K/V heads after grouping)",
        list(view.kv_choices),
        required=True,
        key=WIDGETS["kv"],
        format_func=lambda k: F.k_label(k, a.num_query_heads),
    )
    c2.radio(
        "Grouping method",
        list(rm.METHOD_NAMES),
        key=WIDGETS["method"],
        horizontal=True,
        format_func=rm.METHOD_NAMES.get,
        help="Mean: the GQA paper's choice. "
        "First or random: one head of each group kept, the others dropped.",
    )


def _grouping(view: rm.View, run: dict) -> None:
    _group_controls(view)
    bar = st.progress(0.0, text="Grouping the K/V heads for every K'…")
    g = rm.grouping(view, lambda i, n, text: bar.progress(i / n, text=text))
    bar.empty()
    a, K = view.arch, view.arch.num_kv_heads
    for col, (label, value, delta, colour, tip) in zip(st.columns(4), rm.metrics(view, g)):
        col.metric(label, value, delta, delta_color=colour, delta_arrow="off" if colour == "off"
                   else "auto", help=tip)  # fmt: skip
    st.markdown(rm.describe_grouping(view, g))
    fig = F.conversion_figure(
        g.rows,
        num_query_heads=a.num_query_heads,
        current=view.kv,
        dtype=view.dtype,
        passage_tokens=g.passage_tokens,
        prompt_tokens=len(view.ids),
    )
    chart(fig, key="rm_chart_curve")
    st.caption(rm.curve_note(view, g))
    if view.kv == K:
        return
    fig = F.overview_figure(
        g.drift,
        view.kv,
        name="JS divergence",
        fmt=".3f",
        colorscale=DRIFT_COLORSCALE,
        layer=view.layer,
        title=f"Drift of every head at K' = {view.kv} ({view.method})",
        subtitle="JS divergence of each query's attention row, before vs after, averaged.",
    )
    chart(fig, key="rm_chart_drift")
    st.caption(TEXT["drift"])
    grouped = rm.run(view, view.kv)
    title = f"Layer {view.layer} grouped to K' = {view.kv} ({view.method}), not uptrained"
    _heads(view, grouped["probs"][view.layer], view.kv, title, "rm_chart_layer_grouped")
    left, right = st.columns(2)
    with left:
        _next_tokens(view, run, "rm_chart_top_before", f"Before: K = {K}", slider=False)
    with right:
        _next_tokens(view, grouped, "rm_chart_top_after", f"After: K' = {view.kv}", slider=False)


# ---------------------------------------------------------------------------------------------

settings = url_settings.load(SETTINGS, MESSAGES, rm.from_query_params)
url_messages = ss.pop(MESSAGES, None) or []
ss.setdefault(GROUP, settings.kv != 0)
st.title("Real models")
st.markdown(TEXT["intro"])
with st.spinner("Loading the model…", show_time=True):
    view, messages = rm.resolve(_requested(settings), ss.get(VIEW))
if view is None:
    _no_models(url_messages + messages)
    st.stop()
ss[VIEW] = view
_set_widgets(view)
st.query_params.from_dict(rm.to_query_params(view))
for message in url_messages + messages:
    st.warning(message, icon="⚠️")
_choose(view)
st.html(F.token_chips_html(view.tokens, view.pos, view.ids))  # sanitized; tokens escaped
st.caption(
    f"{len(view.ids)} tokens as {view.model}'s tokenizer splits them (hover a chip for "
    "its position and id; the outlined one is the position of the next-token chart)."
)
with st.spinner(f"Running {view.model} on the prompt…", show_time=True):
    run = rm.run(view)
_overview(view, run)
_layer(view, run)
st.header("What comes next", divider="gray")
st.caption(TEXT["top"])
_next_tokens(view, run, "rm_chart_top", f"{view.model}: top-5 next tokens")
st.header("Group its K/V heads", divider="gray")
section = st.expander(
    "Group the K/V heads further: drift, loss and KV cache for every K'",
    key=GROUP,
    on_change="rerun",
    icon=":material/call_merge:",
)
with section:
    if section.open:  # lazy: computed only while open
        _grouping(view, run)
