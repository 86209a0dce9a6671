"""Decode: a tiny trained model generating its task's answer step by step with a KV cache.

Thin on purpose: the run, its words and its figures come from :mod:`gqa_viz.app.decode` (over
:mod:`gqa_viz.decode`, through the server's shared results cache; the figures drawn by
:mod:`gqa_viz.figures.decode`, once for every session), the longer prose from
``assets/text/decode.md``.

State: every setting is a field of :class:`~gqa_viz.app.decode.DecodeSettings`, kept in
``st.session_state`` (it survives page switches) and in the URL (on the session's first visit
the URL wins; after that the widgets do). The session keeps no cache: each view is read from
the shared run of its URL state. The step controls and the figures are one fragment, so a step
redraws only them; ▶ Play reruns that fragment on a timer until the last step.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from app_pages import _url_settings as url_settings
from app_pages._chart import chart
from gqa_viz import trained
from gqa_viz.app import decode as dec
from gqa_viz.app.limits import (
    KV_CALCULATOR_MAX_BANDWIDTH_GB_S,
    MAX_DECODE_CAPACITY,
    MAX_DECODE_NEW_TOKENS,
    MAX_DECODE_PROMPT_TOKENS,
    MAX_SEED,
)
from gqa_viz.app.prose import sections
from gqa_viz.kv_cache import duration

TEXT = sections("decode")
SETTINGS, MESSAGES = "dec_settings", "dec_messages"
WIDGETS = {name: f"dec_{name}" for name in dec.DecodeSettings.__dataclass_fields__}
STEP, PLAYING, TIMER, FULL = WIDGETS["step"], "dec_playing", "dec_timer", "dec_full_run"
PLAY_S = 1.2  # seconds between steps while playing
ss = st.session_state


# ---------------------------------------------------------------------------------------------
# State.


def _stop() -> None:
    ss[PLAYING] = False


def _move(by: int, last: int) -> None:
    ss[PLAYING] = False
    ss[STEP] = min(max(ss[STEP] + by, 1), last)


def _play(last: int) -> None:
    """Start (from step 1 when at the end) or pause; starting shows the next step at once."""
    if ss.get(PLAYING):
        ss[PLAYING] = False
        return
    ss[STEP] = 1 if ss[STEP] >= last else ss[STEP] + 1
    ss[PLAYING] = ss[STEP] < last


# ---------------------------------------------------------------------------------------------
# Controls.


def _sidebar() -> dec.DecodeSettings:
    w = WIDGETS
    with st.sidebar:
        st.subheader("Model and prompt")
        st.selectbox("Tiny trained model", trained.names(), key=w["model"],
                     format_func=trained.label, on_change=_stop)  # fmt: skip
        c = st.columns(2)
        c[0].number_input("prompt seed", 0, MAX_SEED, key=w["seed"], on_change=_stop,
                          help="Draws the task's sequence the prompt is cut from.")  # fmt: skip
        c[1].number_input(
            "prompt length", 0, MAX_DECODE_PROMPT_TOKENS, key=w["prompt"], on_change=_stop,
            help="Tokens of the drawn sequence fed as the prompt. 0: the task's question.",
        )  # fmt: skip
        c = st.columns(2)
        c[0].number_input(
            "new tokens", 0, MAX_DECODE_NEW_TOKENS, key=w["new"], on_change=_stop,
            help="0: as many as the model's learned positions allow.",
        )  # fmt: skip
        c[1].number_input(
            "prefill chunk C", 0, MAX_DECODE_PROMPT_TOKENS, key=w["chunk"], on_change=_stop,
            help="The prompt is fed C tokens per step (chunked prefill). 0: all at once.",
        )  # fmt: skip
        st.subheader("KV cache")
        st.radio("Cache policy", list(dec.POLICY_NAMES), key=w["policy"],
                 format_func=dec.POLICY_NAMES.get, on_change=_stop)  # fmt: skip
        policy = ss[w["policy"]]
        c = st.columns(2)
        c[0].number_input(
            "window w", 1, MAX_DECODE_CAPACITY, key=w["window"], on_change=_stop,
            disabled=policy == "full", help="Rolling and sink caches: the last w tokens.",
        )  # fmt: skip
        c[1].number_input(
            "sinks s", 1, MAX_DECODE_CAPACITY - 1, key=w["sinks"], on_change=_stop,
            disabled=policy != "sink", help="Sink cache: the first s tokens, kept for good.",
        )  # fmt: skip
        st.number_input(
            "memory bandwidth (GB/s)", 1.0, KV_CALCULATOR_MAX_BANDWIDTH_GB_S, step=100.0,
            format="%g", key=w["bw"], help="Sets the time bound. H100 SXM: 3350 GB/s.",
        )  # fmt: skip
    values = {name: ss[key] for name, key in WIDGETS.items() if name != "step"}
    return dec.DecodeSettings(**values, step=ss.get(STEP, ss[SETTINGS].step))


# ---------------------------------------------------------------------------------------------
# One step.


def _bytes(p: dec.Plan, run: dec.DecodeRun, v: dec.StepView, bw: float) -> None:
    st.subheader("Bytes read", divider="gray")
    table = dec.bytes_table(run, bw)
    row = table[v.index - 1]
    cfg = trained.load(p.model).cfg
    st.markdown(TEXT["saves"].format(n=cfg.num_query_heads, k=cfg.num_key_value_heads,
                                     g=cfg.num_query_heads // cfg.num_key_value_heads))  # fmt: skip
    cols = st.columns(3)
    for col, (name, label) in zip(cols, dec.VARIANTS.items(), strict=True):
        b = row[name]
        col.metric(
            f"{label}, K = {b['kv_heads']}: step {v.index} reads",
            f"{b['total']:,} B",
            f"cache {b['cache']:,} B · steps 1–{v.index}: {row['cumulative'][name]:,} B",
            delta_color="off",
            delta_arrow="off",
            help=f"Weights {b['weights']:,} B + KV cache {b['cache']:,} B; at least "
            f"{duration(b['seconds'])} at {bw:,g} GB/s. The smaller number: the cache "
            f"alone, and the bytes of steps 1 to {v.index} together.",
        )
    times = ", ".join(f"{duration(row[n]['seconds'])} ({label})" for n, label in
                      dec.VARIANTS.items())  # fmt: skip
    st.caption(f"Time bound at {bw:,g} GB/s: a step takes at least {times}.")
    st.code(row["configured"]["formula"], language=None, wrap_lines=True)
    with st.expander("The same step with MHA and with MQA"):
        st.code(row["mha"]["formula"] + "\n\n" + row["mqa"]["formula"], language=None,
                wrap_lines=True)  # fmt: skip
    weights = row["configured"]["weights"]
    cache_max = max(r["configured"]["cache"] for r in table)
    chart(dec.bytes_chart(p, run, v, bw), key="dec_bytes_chart")
    st.caption(TEXT["tiny"].format(weights=f"{weights:,} B", cache_max=f"{cache_max:,} B"))
    st.caption(TEXT["bytes"])


def _step_section(s: dec.DecodeSettings, p: dec.Plan, run: dec.DecodeRun) -> None:
    full = ss.pop(FULL, False)
    if bool(ss.get(PLAYING)) != bool(ss.get(TIMER)):
        st.rerun()  # start or stop the timer: it is set when the page runs in full
    if ss.get(PLAYING) and not full:  # a tick of the timer
        ss[STEP] = min(ss[STEP] + 1, p.steps)
        ss[PLAYING] = ss[STEP] < p.steps
    last = p.steps
    c = st.columns([1, 1, 1.1, 4.4, 1.5], vertical_alignment="bottom")
    c[0].button("◀ Back", on_click=_move, args=(-1, last), disabled=ss[STEP] <= 1,
                key="dec_back", use_container_width=True)  # fmt: skip
    c[1].button("Next ▶", on_click=_move, args=(1, last), disabled=ss[STEP] >= last,
                key="dec_next", use_container_width=True)  # fmt: skip
    c[2].button("⏸ Pause" if ss.get(PLAYING) else "▶ Play", on_click=_play, args=(last,),
                key="dec_play", use_container_width=True)  # fmt: skip
    if last > 1:
        c[3].slider("step", 1, last, key=STEP, on_change=_stop,
                    help=f"{p.prefill_steps} prefill step(s), then the decode steps.")  # fmt: skip
    layers = list(range(trained.load(p.model).cfg.num_layers))
    c[4].radio("layer", layers, key=WIDGETS["layer"], horizontal=True)
    layer = ss[WIDGETS["layer"]]
    view = dec.step_view(run, ss[STEP], layer)
    ss[SETTINGS] = replace(s, step=view.index, layer=layer)
    st.query_params.from_dict(dec.to_query_params(ss[SETTINGS]))

    st.markdown(dec.step_text(view))
    chart(dec.rows_chart(p, view, layer), key="dec_rows_chart")

    st.subheader("The mask: aligned bottom-right", divider="gray")
    left, right = st.columns([3, 2], gap="large")
    with left:
        chart(dec.mask_chart(p, run, view), key="dec_mask_chart")
    right.markdown(TEXT["alignment"].format(offset=view.offset))

    st.subheader("The cache, slot by slot", divider="gray")
    policy = run.generation.policy
    st.markdown(dec.cache_text(view, policy))
    chart(dec.cache_chart(p, run, view, layer), key="dec_cache_chart")
    st.markdown(TEXT["policies"])
    if policy.bounded:
        formula = f"s + w = {policy.sinks} + {policy.window}" if policy.sinks else "w"
        st.markdown(TEXT["differs"].format(capacity=policy.capacity, formula=formula))
    _bytes(p, run, view, s.bw)


# ---------------------------------------------------------------------------------------------

settings = url_settings.load(SETTINGS, MESSAGES, dec.from_query_params)
# The step is checked against its run (plan), not here.
bad_values = url_settings.seed(WIDGETS, settings, dec.sanitize, skip=["step"])
st.title("Decode: generating with a KV cache")
st.markdown(TEXT["intro"])
url_messages = ss.pop(MESSAGES, None)
settings = _sidebar()
plan, notes = dec.plan(settings, quiet_step=url_messages is None)
for message in (url_messages or []) + bad_values + notes:
    st.warning(message, icon="⚠️")
with st.spinner("Generating…", show_time=True):
    run = dec.run(plan)
st.markdown(dec.tokens_text(run, plan))
with st.expander(
    f"The models, their {plan.positions} positions, the prompt, and why no real checkpoint yet"
):
    st.markdown(TEXT["models"].format(positions=plan.positions, prompt=plan.prompt_len,
                                      room=plan.positions - plan.prompt_len + 1))  # fmt: skip
ss[STEP], ss[WIDGETS["layer"]] = plan.step, plan.layer
ss[TIMER] = bool(ss.get(PLAYING))
ss[FULL] = True
st.fragment(run_every=PLAY_S if ss[TIMER] else None)(_step_section)(settings, plan, run)
