"""The Decode page under Streamlit's AppTest, run through app.py's st.navigation.

What a student checks: the step shown is the step the URL names, stepping changes the query row
and the bytes (equal to :func:`gqa_viz.decode.step_bytes`), Play moves on and stops at the end,
a rolling or sink cache keeps and drops what :class:`gqa_viz.decode.CachePolicy` says, the URL
reproduces the view, and two visitors with the same URL share one computation.

Axis letters: C new tokens of a step, S_max cache slots, N query heads, K kv heads.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from gqa_viz import decode, trained
from gqa_viz.app import decode as dec
from gqa_viz.app.playground import RESULTS
from gqa_viz.figures.shipping import trace_meta
from tests.apptest_pages import assert_ok, open_page

PAGE = "app_pages/decode.py"
TIMEOUT = 120
MODEL = "copy-k2"  # N = 8 query heads, K = 2; 24 learned positions
PROMPT = 13  # the copy task's question: 12 symbols and '|'
STEPS = 12  # one prefill step, then 11 decode steps (the 12th new token is not fed back)


def _app(**query) -> AppTest:
    return open_page(PAGE, TIMEOUT, **query)


_ok = assert_ok


def _charts(at: AppTest) -> dict[str, dict]:
    """The page's figures by their key's name (the key ends with the chart's name)."""
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        title = spec["layout"]["title"]["text"]
        out[title] = spec
    return out


def _rows_chart(at: AppTest) -> dict:
    (spec,) = [s for t, s in _charts(at).items() if "the new query row" in t]
    return spec


def _query_rows(at: AppTest) -> list[str]:
    """The y categories (queries) of the new-query-row figure: "'token' @position"."""
    spec = _rows_chart(at)
    return spec["data"][-1]["y"]


def _metrics(at: AppTest) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.delta) for m in at.metric}


def _settings(at: AppTest) -> dec.DecodeSettings:
    return at.session_state["dec_settings"]


def _bytes_shown_equal_the_library(at: AppTest, step: int, policy=None, bw=3350.0) -> None:
    """The three metrics, the time bound and the formula are decode.step_bytes of the cache
    before the step, at the bandwidth ``bw`` GB/s."""
    cfg = trained.load(_settings(at).model).cfg
    view = dec.step_view(dec.run(dec.plan(_settings(at))[0]), step, _settings(at).layer)
    expected = decode.step_bytes(cfg, view.offset, policy=policy, bandwidth_bytes_per_s=bw * 1e9)
    m = _metrics(at)
    for name, label in dec.VARIANTS.items():
        b = expected[name]
        value, delta = m[f"{label}, K = {b['kv_heads']}: step {step} reads"]
        assert value == f"{b['total']:,} B"
        assert delta.startswith(f"cache {b['cache']:,} B")
    seconds = expected["configured"]["seconds"]
    assert seconds == decode.kv_cache.decode_time_lower_bound(
        decode.model_config(cfg, policy), view.offset, dtype="fp32", weights_dtype="fp32",
        bandwidth_bytes_per_s=bw * 1e9,
    )  # fmt: skip
    caption = "\n".join(c.value for c in at.caption)
    assert f"Time bound at {bw:,g} GB/s: a step takes at least" in caption
    assert f"{decode.kv_cache.duration(seconds)} (this model)" in caption
    # The caption and the formula below it give the time in the same unit.
    assert expected["configured"]["formula"].endswith(f"= {decode.kv_cache.duration(seconds)}")
    assert at.code[0].value == expected["configured"]["formula"]


def test_default_opens_on_the_first_decode_step():
    at = _app()
    assert at.title[0].value.startswith("Decode")
    assert at.selectbox(key="dec_model").value == MODEL
    assert at.query_params.get("step") == "2" and dict(at.query_params) == {"step": "2"}
    assert at.slider(key="dec_step").value == 2 and at.slider(key="dec_step").max == STEPS
    # The prompt is the copy question; the model copies it (the copy model is 100% accurate).
    tokens = trained.prompt("copy", 0)
    names = trained.tasks.token_names("copy")
    prompt = " ".join(names[t] for t in tokens[:PROMPT])
    text = "\n".join(m.value for m in at.markdown)
    assert f"Prompt ({PROMPT} tokens): `{prompt}`" in text
    assert f"Generated: `{' '.join(names[t] for t in tokens[:12])}`" in text
    # Step 2 feeds the first generated token at position 13 and reads 13 cached tokens.
    assert "**Step 2 of 12**: a decode step" in text and "at position 13 (offset 13" in text
    assert _query_rows(at) == [f"'{names[tokens[0]]}' @13"]
    # Eight query heads in two groups of four, one row each.
    scores = [t for t in _rows_chart(at)["data"] if trace_meta(t)["role"] == "scores"]
    assert [(trace_meta(t)["kv_head"], trace_meta(t)["heads"]) for t in scores] == [
        (0, [0, 1, 2, 3]),
        (1, [4, 5, 6, 7]),
    ]
    assert len(_charts(at)) == 4
    _bytes_shown_equal_the_library(at, 2)
    # Numbers a reader can check: the formula with this model's numbers.
    assert "2 (K and V) × 2 layers × 2 kv heads × 8 head_dim × 4 B (fp32) × 13 tokens" in (
        at.code[0].value
    )
    assert "step >= (156,740 + 3,328) B / 3,350 GB/s = 47.78 ns" in at.code[0].value


def test_step_forward_and_back_changes_the_row_and_the_bytes():
    at = _app()
    before = _metrics(at)
    at.button(key="dec_next").click().run()
    _ok(at)
    assert at.slider(key="dec_step").value == 3 and at.query_params["step"] == "3"
    assert _query_rows(at)[0].endswith("@14")
    assert _metrics(at) != before
    _bytes_shown_equal_the_library(at, 3)
    # The running total is the sum of the steps so far.
    table = dec.bytes_table(dec.run(dec.plan(_settings(at))[0]), 3350.0)
    total = sum(row["configured"]["total"] for row in table[:3])
    assert _metrics(at)["this model, K = 2: step 3 reads"][1].endswith(f"steps 1–3: {total:,} B")
    at.button(key="dec_back").click().run()
    at.button(key="dec_back").click().run()
    _ok(at)
    assert at.slider(key="dec_step").value == 1 and at.query_params["step"] == "1"
    # Step 1 is the whole prompt: 13 query rows at offset 0, an empty cache read.
    assert len(_query_rows(at)) == PROMPT and _query_rows(at)[0].endswith("@0")
    _bytes_shown_equal_the_library(at, 1)
    assert at.button(key="dec_back").disabled
    at.slider(key="dec_step").set_value(7).run()
    assert _query_rows(at)[0].endswith("@18") and at.query_params["step"] == "7"


def test_play_moves_on_and_stops_at_the_last_step():
    at = _app(step="9")
    at.button(key="dec_play").click().run()
    _ok(at)
    assert at.slider(key="dec_step").value == 10
    assert at.session_state["dec_playing"] is True
    assert at.button(key="dec_play").label == "⏸ Pause"
    at.button(key="dec_play").click().run()  # pause
    assert at.session_state["dec_playing"] is False and at.slider(key="dec_step").value == 10
    at.button(key="dec_play").click().run()
    at.button(key="dec_play").click().run()  # pause, play again: 11, then 12
    at.button(key="dec_play").click().run()
    _ok(at)
    assert at.slider(key="dec_step").value == STEPS and at.query_params["step"] == str(STEPS)
    assert at.session_state["dec_playing"] is False  # stopped at the last step
    assert at.button(key="dec_play").label == "▶ Play" and at.button(key="dec_next").disabled
    # Play at the end starts again from step 1.
    at.button(key="dec_play").click().run()
    assert at.slider(key="dec_step").value == 1


@pytest.mark.parametrize(
    ("kind", "window", "sinks"), [("rolling", 6, 2), ("sink", 6, 2), ("sink", 5, 3)]
)
def test_a_bounded_cache_keeps_and_drops_what_the_policy_says(kind, window, sinks):
    at = _app()
    at.radio(key="dec_policy").set_value(kind).run()
    at.number_input(key="dec_window").set_value(window)
    if kind == "sink":
        at.number_input(key="dec_sinks").set_value(sinks)
    at.run()
    _ok(at)
    policy = decode.CachePolicy.of(kind, window=window, sinks=sinks if kind == "sink" else 0)
    text = "\n".join(m.value for m in at.markdown)
    assert policy.describe() in text
    for step in (2, 6, STEPS):
        at.slider(key="dec_step").set_value(step).run()
        _ok(at)
        length = PROMPT + step - 1  # tokens seen after the step
        text = "\n".join(m.value for m in at.markdown)
        kept, dropped = policy.kept(length), policy.dropped(length)
        assert f"kept {dec._ranges(kept)}; dropped {dec._ranges(dropped)}." in text
        # The cache figure: the slots hold exactly the kept positions after this step.
        (cache,) = [s for t, s in _charts(at).items() if "slots per K/V head" in t]
        slots = next(t for t in cache["data"] if trace_meta(t)["role"] == "slots")
        held = sorted(int(x) for x in np.asarray(slots["text"])[:, step - 1] if x != "")
        assert held == kept
        # The step's row attends to kept keys only, and to every one its rule allows.
        view = dec.step_view(dec.run(dec.plan(_settings(at))[0]), step, 1)
        q = view.offset
        rule = [p for p in range(q + 1) if p < policy.sinks or q - p < window]
        assert np.flatnonzero(view.mask[0]).tolist() == rule
        assert set(np.flatnonzero(view.codes[0] == dec.DROPPED)) == set(policy.dropped(q))
    _bytes_shown_equal_the_library(at, STEPS, policy)
    # Where the bounded cache parts from the unbounded model is said, with s + w.
    assert f"Before position {policy.capacity} every earlier key is still held" in text
    assert "With a full cache:" in text


def test_the_url_reproduces_the_view():
    query = {
        "model": "sort-k4", "seed": "7", "chunk": "3", "policy": "sink", "window": "5",
        "sinks": "1", "layer": "0", "step": "4", "bw": "2039",
    }  # fmt: skip
    at = _app(**query)
    s = _settings(at)
    assert (s.model, s.seed, s.chunk, s.policy, s.window, s.sinks, s.layer, s.step, s.bw) == (
        "sort-k4", 7, 3, "sink", 5, 1, 0, 4, 2039.0,
    )  # fmt: skip
    assert dict(at.query_params) == query
    assert at.selectbox(key="dec_model").value == "sort-k4"
    assert at.radio(key="dec_layer").value == 0 and at.slider(key="dec_step").value == 4
    # sort's question is 11 tokens; in chunks of 3 that is 4 prefill steps: step 4 is the last.
    text = "\n".join(m.value for m in at.markdown)
    assert "**Step 4 of" in text and "a prefill chunk of C = 2 prompt tokens" in text
    assert "at positions 9–10 (offset 9" in text
    assert "at least" in [m.help for m in at.metric][0] and "2,039 GB/s" in at.metric[0].help
    policy = decode.CachePolicy.of("sink", window=5, sinks=1)
    _bytes_shown_equal_the_library(at, 4, policy, bw=2039.0)
    # The same URL in a new session: the same settings, the same figures.
    again = _app(**query)
    assert _settings(again) == s
    assert _query_rows(again) == _query_rows(at)


def test_bad_url_values_are_named_and_the_rest_kept():
    at = _app(model="gpt-5", window="999", step="999", policy="sink", seed="7", sinks="2")
    warnings = "\n".join(w.value for w in at.warning)
    assert "URL parameter model='gpt-5' ignored (expected a shipped model: copy-k8" in warnings
    assert "window w (window) must be between 1 and 128; got 999, using 128." in warnings
    assert "a sink cache holds sinks + window = 2 + 128 = 130 slots, more than 128" in warnings
    assert "step must be between 1 and 128; got 999, using 128." in warnings
    assert f"step must be between 1 and {STEPS} for this run" in warnings
    s = _settings(at)
    assert (s.model, s.policy, s.seed, s.sinks, s.window) == (MODEL, "sink", 7, 2, 126)
    assert s.step == STEPS and at.query_params["seed"] == "7"
    # The warnings are for the URL of the first visit only.
    at.button(key="dec_back").click().run()
    _ok(at)
    assert not at.warning and at.query_params["step"] == str(STEPS - 1)


def test_two_sessions_with_the_same_url_compute_once():
    query = {"seed": "4242", "policy": "rolling", "window": "7"}  # a run no other test makes
    key = dec.plan(dec.from_query_params(query)[0])[0].key
    assert not any(k == key for k in RESULTS._items)
    misses = RESULTS.misses
    first = _app(**query)
    assert RESULTS.misses == misses + 1
    run = RESULTS.get(key, lambda: pytest.fail("the run was not kept"))
    second = _app(**query)
    assert RESULTS.misses == misses + 1  # the second session read the first one's run
    assert _query_rows(second) == _query_rows(first)
    # Stepping reads the same run: no new computation.
    second.button(key="dec_next").click().run()
    first.slider(key="dec_step").set_value(9).run()
    assert RESULTS.misses == misses + 1
    assert RESULTS.get(key, lambda: None) is run
