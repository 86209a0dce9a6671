"""Hostile or mistaken input at every entry point of the app, as one table (CASES).

Entry points: URL parameters (read on a session's first run), widget values (typed ones the
page does not offer, or values arriving in session state), Mask Lab's mask upload, and the KV
calculator's pasted or uploaded config.json (its own table, CALCULATOR_CASES: that page has its
own settings), and the Decode page's settings (DECODE_CASES, its own too). Each row opens a page with the visitor's own settings (BASE: 16 query heads,
head_dim 32, causal off; CALCULATOR_BASE), sends one bad input and checks what the visitor
would:

1. a message that names the limit or the rule (a fragment of its text);
2. no exception, and a normal rerun afterwards (a new seed) works;
3. the visitor's other settings are unchanged, in the settings and in the URL.

Every row also checks that no markdown rendered as HTML carries visitor text.
"""

from __future__ import annotations

import io
import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from gqa_viz.app import decode as dec
from gqa_viz.app import kv_calculator as kvc
from gqa_viz.app import limits
from gqa_viz.app.limits import (
    KV_CALCULATOR_MAX_BANDWIDTH_GB_S,
    KV_CALCULATOR_MAX_BATCH,
    KV_CALCULATOR_MAX_TOKENS,
    KV_SHARING_MAX_SCORE_CELLS,
    MASK_LAB_MAX_LEN,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_LAYERS,
    MAX_DROPOUT,
    MAX_LEN,
    MAX_QUERY_HEADS,
    MAX_SCORE_CELLS,
    MAX_SEED,
    MAX_TEXT_CHARS,
    MAX_TOKENS,
    WALKTHROUGH_MAX_LEN,
)
from gqa_viz.app.settings import DEFAULT_SOURCE, from_query_params

TIMEOUT = 120
ROOT = Path(__file__).resolve().parent.parent
BASE = {"n": "16", "h": "32", "causal": "0"}  # the visitor's own settings, as URL parameters
SCRIPT = "<script>alert(1)</script>"
T = 11  # tokens of the default sentence: the Mask Lab's [T, S]


# ---------------------------------------------------------------------------------------------
# Bad inputs sent after the first run.

Send = Callable[[AppTest], None]


def _state(key: str, value) -> Send:
    """A widget value arriving in session state (a stale value, or one a client sent)."""

    def send(at: AppTest) -> None:
        at.session_state[key] = value

    return send


def _option(key: str, value: str) -> Send:
    """A selectbox value the page does not offer, as a modified client sends it (the text of
    an option). AppTest only sends offered options, so the option is added on the test side."""

    def send(at: AppTest) -> None:
        box = at.selectbox(key=key)
        box.options.append(value)
        box.set_value(value)

    return send


def _npy(array, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


GOOD = np.triu(np.ones((T, T), bool), 1)  # torch's causal mask: True = ignore


def _upload(name: str, data: bytes) -> Send:
    """A good mask first (so there is one to keep), then the bad file."""

    def send(at: AppTest) -> None:
        uploader = at.file_uploader(key="ml_file")
        uploader.set_value(("good.npy", _npy(GOOD), "application/octet-stream")).run()
        assert not at.error and at.session_state["ml_upload"]["name"] == "good.npy"
        at.file_uploader(key="ml_file").set_value((name, data, "application/octet-stream"))

    return send


def _steps(*steps: Callable[[AppTest], object]) -> Send:
    """Widget changes, one rerun each except the last (the test runs it)."""

    def send(at: AppTest) -> None:
        for i, step in enumerate(steps):
            step(at)
            if i < len(steps) - 1:
                at.run()

    return send


# A pickled object array whose unpickling would call _tripwire: nothing may ever call it.
UNPICKLED: list[str] = []


def _tripwire(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class _Tripwire:
    def __reduce__(self):
        return (_tripwire, ("unpickled",))


def _pickled() -> bytes:
    array = np.empty((T, T), dtype=object)
    array[...] = _Tripwire()
    return _npy(array, allow_pickle=True)


def _huge_header() -> bytes:
    """A valid .npy header announcing 10^10 values, followed by a few bytes."""
    data = _npy(np.zeros((2, 2), bool))
    return data.replace(b"(2, 2)", b"(99999, 99999)")


def _csv(rows: list[str]) -> bytes:
    return "\n".join(rows).encode()


ONES_ROW = ",".join(["1"] * T)


# ---------------------------------------------------------------------------------------------
# Extra checks of single rows.


def _settings(at: AppTest):
    return at.session_state["settings"]


def _value(name: str, expected) -> Callable[[AppTest], None]:
    def check(at: AppTest) -> None:
        assert getattr(_settings(at), name) == expected, (name, getattr(_settings(at), name))

    return check


def _heads_chart_escapes(at: AppTest) -> None:
    """The sentence's tokens are axis labels of the heads figure, escaped: '<' as '&lt;'."""
    assert at.text_input(key="w_text").value == SCRIPT  # shown as typed, as text
    spec = at.get("plotly_chart")[0].proto.spec
    labels = json.loads(spec)["data"][0]["y"]
    assert labels[:3] == ["'&lt;' @0", "'script' @1", "'&gt;' @2"], labels[:3]
    assert "<script" not in spec


def _text_shown(at: AppTest) -> None:
    assert at.text_input(key="w_text").value == SCRIPT


def _nothing_unpickled(at: AppTest) -> None:
    assert UNPICKLED == []


def _upload_limit_is_the_servers(at: AppTest) -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    # Streamlit's maxUploadSize counts MB of 2**20 bytes: the app's limit is the same.
    assert limits.MAX_UPLOAD_BYTES == config["server"]["maxUploadSize"] * 2**20


def _rows_explained(at: AppTest) -> None:
    """The all-masked upload as a component: the layer's answer on such rows is explained."""
    at.multiselect(key="ml_components").set_value(["uploaded"]).run()
    assert not at.exception, [e.value for e in at.exception]
    text = "\n".join(m.value for m in at.markdown)
    assert f"**{T} fully masked row(s)**" in text and "uniform average over all S keys" in text
    assert {m.label: m.value for m in at.metric}["fully masked rows"] == str(T)


def _calculator_still_shown(at: AppTest) -> None:
    assert [h.value for h in at.header][-1] == "KV-cache and decoding calculator"
    assert any(m.value.endswith(" GB") for m in at.metric)


# ---------------------------------------------------------------------------------------------
# The table.


@dataclass(frozen=True)
class Case:
    id: str
    page: str  # the file in app_pages/, without .py
    expect: tuple[str, ...]  # fragments of the message (all in elements of kind `where`)
    where: str = "warning"  # warning, error, info or markdown
    url: dict = field(default_factory=dict)  # bad URL parameters, on the first run
    send: Send | None = None  # a bad input after the first run
    touches: tuple[str, ...] = ()  # settings the bad input is about: not checked as kept
    base: dict = field(default_factory=dict)  # changes to BASE for this row
    check: Callable[[AppTest], None] | None = None


P, ML, KV, WT = "playground", "mask_lab", "kv_sharing", "walkthrough"
DIVISIBLE = "must be divisible by num_key_value_heads"
SIZE = f"the limit is {MAX_SCORE_CELLS:,}"

CASES = [
    # URL parameters: out of range, malformed, repeated, unknown, hostile text.
    Case(
        "url-n8-k3-not-divisible",
        P,
        ("num_query_heads (8) " + DIVISIBLE + " (3)", "valid choices are 1, 2, 4, 8"),
        url={"n": "8", "k": "3"},
        touches=("n", "k"),
        check=_value("k", 2),
    ),
    Case(
        "url-t-zero",
        P,
        (f"query length T (t) must be between 1 and {MAX_LEN}; got 0",),
        url={"t": "0"},
    ),
    Case("url-t-negative", P, (f"between 1 and {MAX_LEN}; got -5",), url={"t": "-5"}),
    Case(
        "url-t-huge",
        P,
        (f"between 1 and {MAX_LEN}; got 99999999, using {MAX_LEN}",),
        url={"t": "99999999"},
    ),
    Case(
        "url-n-1000",
        P,
        (f"num_query_heads (n) must be between 1 and {MAX_QUERY_HEADS}; got 1000",),
        url={"n": "1000"},
        touches=("n",),
        check=_value("n", MAX_QUERY_HEADS),
    ),
    Case(
        "url-h-3",
        P,
        ("head_dim (h) must be between 4 and 256; got 3, using 4",),
        url={"h": "3"},
        touches=("h",),
    ),
    Case("url-d-zero", P, ("model dim (d) must be between 1 and 4096; got 0",), url={"d": "0"}),
    Case(
        "url-batch-100",
        P,
        ("batch size (batch) must be between 1 and 8; got 100",),
        url={"batch": "100"},
    ),
    Case(
        "url-window-negative",
        P,
        (f"sliding_window (window, 0 = off) must be between 0 and {MAX_LEN}; got -1",),
        url={"window": "-1"},
    ),
    Case(
        "url-seed-2**40",
        P,
        (f"seed must be between 0 and {MAX_SEED}; got {2**40}, using {MAX_SEED}",),
        url={"seed": str(2**40)},
        check=_value("seed", MAX_SEED),
    ),
    Case(
        "url-dropout-nan",
        P,
        ("dropout='nan' ignored (expected a finite number)",),
        url={"dropout": "nan"},
    ),
    Case(
        "url-dropout-inf",
        P,
        ("dropout='inf' ignored (expected a finite number)",),
        url={"dropout": "inf"},
    ),
    Case(
        "url-dropout-1.5",
        P,
        ("dropout must be between 0.0 and 0.9; got 1.5, using 0.9",),
        url={"dropout": "1.5"},
    ),
    Case(
        "url-n-abc",
        P,
        ("n='abc' ignored (expected a whole number); using 8",),
        url={"n": "abc"},
        touches=("n",),
    ),
    Case(
        "url-causal-maybe",
        P,
        ("causal='maybe' ignored (expected 1/0 or true/false)",),
        url={"causal": "maybe"},
        touches=("causal",),
    ),
    Case("url-t-1e3", P, ("t='1e3' ignored (expected a whole number)",), url={"t": "1e3"}),
    Case("url-t-empty", P, ("t='' ignored (expected a whole number)",), url={"t": ""}),
    Case(
        "url-n-repeated",
        P,
        ("URL parameter n is given 2 times; only one is allowed, using the last, '16'",),
        url={"n": ["8", "16"]},
    ),
    Case(
        "url-unknown-parameters",
        P,
        ("Unknown URL parameter(s) ignored: wat, zzz",),
        url={"wat": "1", "zzz": "2"},
    ),
    Case(
        "url-300-unknown-parameters",  # whole names only, the rest counted
        P,
        ("Unknown URL parameter(s) ignored: p000, p001, p002", ", p032 and 267 more."),
        url={f"p{i:03d}": "1" for i in range(300)},
    ),
    Case(
        "url-mode-evil",
        P,
        ("mode must be one of sentence, random; got 'evil'",),
        url={"mode": "evil"},
    ),
    Case(
        "url-mode-script",  # shown as text in the message
        P,
        (f"mode must be one of sentence, random; got {SCRIPT!r}",),
        url={"mode": SCRIPT},
    ),
    Case(
        "url-script-as-parameter-name",
        P,
        (f"Unknown URL parameter(s) ignored: {SCRIPT}",),
        url={SCRIPT: "1"},
    ),
    Case(
        "url-text-100kB",
        P,
        (f"text is limited to {MAX_TEXT_CHARS} characters; it was cut",),
        url={"text": "word " * 20_000},
        check=lambda at: len(_settings(at).text) == MAX_TEXT_CHARS,
    ),
    Case(
        "url-text-script",  # valid text: no message, but shown as text, never as HTML
        P,
        (),
        url={"text": SCRIPT},
        check=_heads_chart_escapes,
    ),
    Case(
        "url-scores-over-limit",
        P,
        (SIZE, "8 x 64 x 2048 x 2048"),
        where="error",
        url={"mode": "random", "t": "2048", "n": "64", "batch": "8"},
        touches=("n",),
    ),
    Case(
        "url-sentence-too-many-tokens",
        P,
        (f"The query sentence has 100 tokens; only the first {MAX_TOKENS} are used",),
        where="info",
        url={"text": "a " * 100},
    ),
    Case(
        "url-sentence-empty",
        P,
        ("The query sentence has no words",),
        where="info",
        url={"text": ""},
    ),
    Case(
        "url-cross-empty-source",
        P,
        ("The source sentence has no words",),
        where="info",
        url={"attn": "cross", "source": ""},
    ),
    # Widget values: of the wrong type, not offered, out of range, not finite.
    Case(
        "state-k-'12'-is-12",  # read as the number: no message
        P,
        (),
        base={"n": "24"},
        send=_state("w_k", "12"),
        check=lambda at: (_settings(at).k, at.query_params["k"]) == (12, "12"),
    ),
    Case(
        "widget-k-'abc'",
        P,
        ("k: 'abc' is not valid; kept 2 (expected a whole number)",),
        send=_option("w_k", "abc"),
        check=_value("k", 2),
    ),
    Case(
        "widget-n-'1000'",
        P,
        (f"num_query_heads (n) must be between 1 and {MAX_QUERY_HEADS}; got 1000; kept 16",),
        send=_option("w_n", "1000"),
    ),
    Case(
        "state-t-99999",
        P,
        (f"query length T (t) must be between 1 and {MAX_LEN}; got 99999; kept 64",),
        send=_state("w_t", 99999),
        check=_value("t", 64),
    ),
    Case(
        "state-batch-100",
        P,
        ("batch size (batch) must be between 1 and 8; got 100; kept 1",),
        send=_state("w_batch", 100),
    ),
    Case(
        "state-s-2**40",  # widgets not drawn in this run (self-attention, sentence mode)
        P,
        (f"key/value length S (s) must be between 1 and {MAX_LEN}; got {2**40}; kept 64",),
        send=_state("w_s", 2**40),
        check=_value("s", 64),
    ),
    Case(
        "state-t-nan",
        P,
        ("t: 'nan' is not valid; kept 64 (expected a whole number)",),
        send=_state("w_t", float("nan")),
        check=_value("t", 64),
    ),
    Case(
        "state-source-5000-chars",
        P,
        (f"source is limited to {MAX_TEXT_CHARS} characters; kept {DEFAULT_SOURCE!r}",),
        send=_state("w_source", "x" * 5000),
        check=_value("source", DEFAULT_SOURCE),
    ),
    # A value a drawn widget cannot hold never reaches the app: Streamlit puts a number back
    # to the widget's lowest value, and cuts text at max_chars, before the script runs and
    # without a message. A browser never sends one (only a modified client does); the setting
    # stays within its limits and the others are kept.
    Case(
        "drawn-seed-2**40",
        P,
        (),
        send=_state("w_seed", 2**40),
        touches=("seed",),
        check=lambda at: 0 <= _settings(at).seed <= MAX_SEED,
    ),
    Case(
        "drawn-dropout-nan",
        P,
        (),
        send=_state("w_dropout", float("nan")),
        check=lambda at: 0.0 <= _settings(at).dropout <= MAX_DROPOUT,
    ),
    Case(
        "drawn-text-5000-chars",
        P,
        (),
        send=_state("w_text", "x" * 5000),
        check=lambda at: len(_settings(at).text) <= MAX_TEXT_CHARS,
    ),
    # Mask Lab uploads: each keeps the previous good mask.
    Case(
        "upload-wrong-shape",
        ML,
        (f"expected shape (T, S) = ({T}, {T})", f"got ({T}, {T + 1})"),
        where="error",
        send=_upload("bad.npy", _npy(np.ones((T, T + 1), bool))),
    ),
    Case(
        "upload-complex-dtype",
        ML,
        ("complex128 values; a mask must be boolean, integer or float",),
        where="error",
        send=_upload("bad.npy", _npy(np.zeros((T, T), complex))),
    ),
    Case(
        "upload-string-dtype",
        ML,
        ("<U1 values; a mask must be boolean, integer or float",),
        where="error",
        send=_upload("bad.npy", _npy(np.full((T, T), "a"))),
    ),
    Case(
        "upload-pickled-object-array",
        ML,
        ("holds Python objects (pickled data), which is never loaded",),
        where="error",
        send=_upload("evil.npy", _pickled()),
        check=_nothing_unpickled,
    ),
    Case(
        "upload-npy-name-garbage-bytes",
        ML,
        ("bad.npy is not a valid .npy file",),
        where="error",
        send=_upload("bad.npy", b"this is not numpy data\n" * 20),
    ),
    Case(
        "upload-npy-truncated",
        ML,
        ("bad.npy is not a valid .npy file",),
        where="error",
        send=_upload("bad.npy", _npy(np.ones((T, T)))[:-40]),
    ),
    Case(
        "upload-oversized",
        ML,
        (f"the limit is 2 MB ({limits.MAX_UPLOAD_BYTES:,} bytes)",),
        where="error",
        send=_upload("big.npy", b"\x93NUMPY" + bytes(limits.MAX_UPLOAD_BYTES)),
        check=_upload_limit_is_the_servers,
    ),
    Case(
        "upload-header-announces-1e10-values",
        ML,
        (
            f"holds 9,999,800,001 values (shape (99999, 99999)); the limit is "
            f"{limits.MAX_MASK_ELEMENTS:,}",
        ),  # fmt: skip
        where="error",
        send=_upload("huge.npy", _huge_header()),
    ),
    Case(
        "upload-empty-file",
        ML,
        ("empty.csv is empty",),
        where="error",
        send=_upload("empty.csv", b""),
    ),
    Case(
        "upload-csv-non-numeric",
        ML,
        (f"CSV row 2, column {T}: 'x' is not a number",),
        where="error",
        send=_upload("bad.csv", _csv([ONES_ROW, ONES_ROW[:-1] + "x"] + [ONES_ROW] * (T - 2))),
    ),
    Case(
        "upload-csv-ragged-rows",
        ML,
        (f"CSV row 3 has {T - 1} values but row 1 has {T}: every row needs one value per key",),
        where="error",
        send=_upload("bad.csv", _csv([ONES_ROW, ONES_ROW, ONES_ROW[2:]] + [ONES_ROW] * (T - 3))),
    ),
    Case(
        "upload-csv-header-row",
        ML,
        ("CSV row 1 looks like a header", "must hold only the numbers"),
        where="error",
        send=_upload("bad.csv", _csv([",".join(f"k{j}" for j in range(T))] + [ONES_ROW] * T)),
    ),
    Case(
        "upload-csv-not-utf8",
        ML,
        ("bad.csv is not UTF-8 text",),
        where="error",
        send=_upload("bad.csv", "1,0,\xe9\n".encode("latin-1")),
    ),
    Case(
        "upload-nan",
        ML,
        ("the mask holds NaN (first at index (0, 0))", "0/1 or 0 and negative numbers / -inf"),
        where="error",
        send=_upload("nan.npy", _npy(np.where(np.eye(T, dtype=bool), np.nan, 1.0))),
    ),
    Case(
        "upload-inf-csv",
        ML,
        ("the mask holds +inf", "0/1 or 0 and negative numbers / -inf"),
        where="error",
        send=_upload("inf.csv", _csv(["inf," + ",".join(["0"] * (T - 1))] * T)),
    ),
    Case(
        "upload-all-rows-masked",  # accepted: the page explains rows with no key
        ML,
        (f"your mask leaves {T} query row(s) with no key",),
        where="markdown",
        send=_upload("all_masked.npy", _npy(np.full((T, T), -np.inf))),
        check=_rows_explained,
    ),
    # The pages' own limits and inputs.
    Case(
        "mask-lab-too-long",
        ML,
        (f"the Mask Lab works on up to {MASK_LAB_MAX_LEN} positions per axis", "T = 600"),
        where="error",
        url={"mode": "random", "t": "600"},
    ),
    Case(
        "mask-lab-document-ids-not-numbers",
        ML,
        ("Document ids must be non-negative whole numbers; 'x' is not",),
        where="error",
        send=_steps(
            lambda at: at.multiselect(key="ml_components").set_value(["document"]),
            lambda at: at.radio(key="ml_doc_mode").set_value("ids"),
            lambda at: at.text_input(key="ml_doc_ids").input("0,0,x"),
        ),
    ),
    Case(
        "walkthrough-too-long",
        WT,
        (f"for up to {WALKTHROUGH_MAX_LEN} positions per axis; this input has T = 300",),
        where="error",
        url={"mode": "random", "t": "300"},
    ),
    Case("walkthrough-text-script", WT, (), url={"text": SCRIPT}, check=_text_shown),
    Case(
        "kv-sharing-too-many-scores",
        KV,
        (f"the limit is {KV_SHARING_MAX_SCORE_CELLS:,} (on this page", "8 x 64 x 2048 x 2048"),
        where="error",
        url={"mode": "random", "t": "2048", "n": "64", "batch": "8"},
        touches=("n",),
        check=_calculator_still_shown,
    ),
    Case(
        "kv-sharing-custom-k-not-dividing-n",
        KV,
        ("K = 3 must divide N = 32",),
        where="error",
        send=_steps(
            lambda at: at.selectbox(key="kv_preset").set_value("custom"),
            lambda at: at.number_input(key="kv_c_k").set_value(3),
        ),
    ),
    Case(
        "kv-sharing-cross-empty-source",
        KV,
        ("The source sentence has no words",),
        where="info",
        url={"attn": "cross", "source": ""},
    ),
]


# ---------------------------------------------------------------------------------------------


def _open(page: str, query: dict) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    for name, value in query.items():
        at.query_params[name] = value
    at.run()  # register the pages (their url paths differ from their file names)
    at.switch_page(f"app_pages/{page}.py")
    return at.run()


def _messages(at: AppTest, where: str) -> str:
    return "\n".join(e.value for e in getattr(at, where))


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _no_visitor_html(at: AppTest) -> None:
    for m in at.markdown:
        if m.proto.allow_html:
            assert "<script" not in m.value and "alert(" not in m.value, m.value


def _kept(at: AppTest, base: dict, touches: tuple[str, ...]) -> None:
    expected, problems = from_query_params(base)
    assert problems == []
    settings = _settings(at)
    for name, raw in base.items():
        if name in touches:
            continue
        assert getattr(settings, name) == getattr(expected, name), name
        assert at.query_params.get(name) == raw, (name, at.query_params.get(name))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, monkeypatch):
    loads: list[dict] = []
    load = np.load

    def spy(*args, **kwargs):
        loads.append(kwargs)
        return load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    base = {**BASE, **case.base}
    at = _open(case.page, {**base, **case.url})
    if case.send is not None:
        case.send(at)
        at.run()
    _no_exception(at)
    message = _messages(at, case.where)
    for fragment in case.expect:
        assert fragment in message, (fragment, message)
    if case.where != "error":
        assert not at.error, [e.value for e in at.error]
    _kept(at, base, case.touches)
    if case.check is not None:
        assert case.check(at) is not False
    _no_visitor_html(at)
    assert all(kw.get("allow_pickle") is False for kw in loads), loads

    # The app keeps running: a normal change afterwards works, and nothing else moved.
    at.number_input(key="w_seed").set_value(5).run()
    _no_exception(at)
    assert _settings(at).seed == 5 and at.query_params["seed"] == "5"
    _kept(at, base, case.touches)


# ---------------------------------------------------------------------------------------------
# The KV calculator: its own settings (gqa_viz/app/kv_calculator.py) and a visitor's config.

CALCULATOR_BASE = {"preset": "gemma-2-9b", "batch": "2", "dtype": "fp8"}
# Falcon-7B's fields that size its cache: 8,192 B per token. The good config read before a bad
# one, which must then stay shown.
GOOD_CONFIG = {
    "model_type": "RefinedWebModel", "n_layer": 32, "n_head": 71, "hidden_size": 4544,
    "multi_query": True, "vocab_size": 65024, "_name_or_path": "tiiuae/falcon-7b",
}  # fmt: skip
IMAGE = "![x](http://example.com/x.png)"


def _paste(text: str) -> Send:
    """A good config pasted first (so there is one to keep), then ``text``."""

    def send(at: AppTest) -> None:
        at.radio(key="kvc_source").set_value("your config.json").run()
        at.text_area(key="kvc_paste").input(json.dumps(GOOD_CONFIG)).run()
        assert not at.error and at.session_state["kvc_config"].name == "tiiuae/falcon-7b"
        at.text_area(key="kvc_paste").input(text)

    return send


def _config_upload(name: str, data: bytes) -> Send:
    def send(at: AppTest) -> None:
        _paste("")(at)
        at.run()
        at.file_uploader(key="kvc_file").set_value((name, data, "application/json"))

    return send


def _good_config_kept(at: AppTest) -> None:
    # 32 layers x 2 (K and V) x 1 kv head x 64 x 1 B (CALCULATOR_BASE's fp8)
    assert {m.label: m.value for m in at.metric}["KV cache per token"] == "4,096 B"
    assert any("Still showing tiiuae/falcon-7b" in e.value for e in at.error)


def _no_image(at: AppTest) -> None:
    """Visitor text quoted in a message is escaped: no link or image reaches the markdown."""
    for e in [*at.error, *at.markdown, *at.caption]:
        assert "](http" not in e.value, e.value


CALCULATOR_CASES = [
    Case(
        "url-tokens-zero",
        "kv_calculator",
        (
            f"context length (tokens) must be between 1 and {KV_CALCULATOR_MAX_TOKENS:,}; got 0, "
            f"using 1",
        ),
        url={"tokens": "0"},
    ),  # fmt: skip
    Case(
        "url-tokens-huge",
        "kv_calculator",
        (f"got 99,999,999,999, using {KV_CALCULATOR_MAX_TOKENS:,}",),
        url={"tokens": "99999999999"},
    ),
    Case(
        "url-tokens-1e3",
        "kv_calculator",
        ("URL parameter tokens='1e3' ignored (expected a whole number); using 8192",),
        url={"tokens": "1e3"},
    ),
    Case(
        "url-tokens-repeated",
        "kv_calculator",
        ("URL parameter tokens is given 2 times; only one is allowed, using the last, '4096'",),
        url={"tokens": ["1024", "4096"]},
    ),
    Case(
        "url-batch-negative",
        "kv_calculator",
        (f"batch must be between 1 and {KV_CALCULATOR_MAX_BATCH:,}; got -3, using 1",),
        url={"batch": "-3"},
        touches=("batch",),
    ),
    Case(
        "url-preset-unknown",
        "kv_calculator",
        ("URL parameter preset='gpt-5' ignored (expected a preset's name, such as",),
        url={"preset": "gpt-5"},
        touches=("preset",),
    ),
    Case(
        "url-preset-script",  # shown as text in the message
        "kv_calculator",
        (f"URL parameter preset={SCRIPT!r} ignored",),
        url={"preset": SCRIPT},
        touches=("preset",),
    ),
    Case(
        "url-dtype-fp9",
        "kv_calculator",
        ("URL parameter dtype='fp9' ignored (expected one of fp32, bf16, fp16, fp8, int4)",),
        url={"dtype": "fp9"},
        touches=("dtype",),
    ),
    Case(
        "url-gpu-unknown",
        "kv_calculator",
        ("URL parameter gpu='tpu' ignored (expected one of l4, rtx4090",),
        url={"gpu": "tpu"},
    ),
    Case(
        "url-gpu-gb-nan",
        "kv_calculator",
        ("URL parameter gpu_gb='nan' ignored (expected a finite number); using 80.0",),
        url={"gpu": "custom", "gpu_gb": "nan"},
    ),
    Case(
        "url-bw-inf",
        "kv_calculator",
        ("URL parameter bw='inf' ignored (expected a finite number)",),
        url={"bw": "inf"},
    ),
    Case(
        "url-bw-zero",
        "kv_calculator",
        (
            f"memory bandwidth in GB/s (bw) must be between 1 and "
            f"{KV_CALCULATOR_MAX_BANDWIDTH_GB_S:,.0f}; got 0, using 1",
        ),
        url={"bw": "0"},
    ),  # fmt: skip
    Case(
        "drawn-tokens-negative",  # put back within the number input's limits by Streamlit
        "kv_calculator",
        (),
        send=_state("kvc_tokens", -5),
        check=lambda at: 1 <= at.session_state["kvc_settings"].tokens <= KV_CALCULATOR_MAX_TOKENS,
    ),
    Case(
        "state-gpu-gb-nan",
        "kv_calculator",
        ("gpu_gb: 'nan' is not valid (expected a finite number); kept 80.0",),
        send=_state("kvc_gpu_gb", float("nan")),
    ),
    Case(
        "widget-dtype-not-offered",
        "kv_calculator",
        ("dtype: 'fp9' is not valid (expected one of fp32, bf16, fp16, fp8, int4); kept 'fp8'",),
        send=_option("kvc_dtype", "fp9"),
    ),
    # A visitor's config.json: each keeps the config read before it.
    Case(
        "paste-not-json",
        "kv_calculator",
        ("The pasted text is not valid JSON: Expecting value at line 1, column 1",),
        where="error",
        send=_paste("model_type: llama"),
        check=_good_config_kept,
    ),
    Case(
        "paste-nan",
        "kv_calculator",
        ("The pasted text has NaN; a config's numbers must be finite",),
        where="error",
        send=_paste('{"num_hidden_layers": NaN}'),
        check=_good_config_kept,
    ),
    Case(
        "paste-over-256-KiB",
        "kv_calculator",
        (f"a config.json may be at most {MAX_CONFIG_BYTES:,} bytes (256 KiB)",),
        where="error",
        send=_paste("{" + " " * (MAX_CONFIG_BYTES - 1) + "}"),  # what the text box takes
        check=_good_config_kept,
    ),
    Case(
        "paste-too-many-layers",
        "kv_calculator",
        (f"num_hidden_layers is 100,000; at most {MAX_CONFIG_LAYERS:,} layers are read",),
        where="error",
        send=_paste('{"num_hidden_layers": 100000}'),
        check=_good_config_kept,
    ),
    Case(
        "paste-layer-types-length",
        "kv_calculator",
        ("layer_types lists 3 layers but num_hidden_layers is 4: they must be equal",),
        where="error",
        send=_paste(
            json.dumps(
                {
                    "model_type": "gemma2",
                    "num_hidden_layers": 4,
                    "num_attention_heads": 8,
                    "num_key_value_heads": 4,
                    "head_dim": 2,
                    "hidden_size": 16,
                    "layer_types": ["full_attention"] * 3,
                }
            )
        ),
        check=_good_config_kept,
    ),  # fmt: skip
    Case(
        "paste-no-attention-heads",
        "kv_calculator",
        ("The config has no num_attention_heads", "is never guessed"),
        where="error",
        send=_paste('{"num_hidden_layers": 2, "hidden_size": 8}'),
        check=_good_config_kept,
    ),
    Case(
        "paste-a-list",
        "kv_calculator",
        ("A config.json is a JSON object ({...}); this file holds a list",),
        where="error",
        send=_paste("[1, 2, 3]"),
        check=_good_config_kept,
    ),
    Case(
        "paste-image-in-a-value",  # quoted in the message as text
        "kv_calculator",
        ("num_hidden_layers must be an integer >= 1, got",),
        where="error",
        send=_paste(
            json.dumps({"num_hidden_layers": IMAGE, "num_attention_heads": 2, "hidden_size": 8})
        ),
        check=_no_image,
    ),  # fmt: skip
    Case(
        "paste-integer-over-2**53",  # passed, then overflowed a float in the parameter count
        "kv_calculator",
        (
            "The pasted text has hidden_size = an integer of 401 digits; a config's integers "
            "may be at most 9,007,199,254,740,992",
        ),
        where="error",
        send=_paste(
            json.dumps(
                {
                    "model_type": "llama",
                    "num_hidden_layers": 2,
                    "num_attention_heads": 1,
                    "hidden_size": 10**400,
                    "vocab_size": 10,
                }
            )
        ),
        check=_good_config_kept,
    ),
    Case(
        "paste-model-type-markdown",  # shown back in notes: a family's name only
        "kv_calculator",
        ("model_type must be a string of 1 to 64 letters, digits",),
        where="error",
        send=_paste(json.dumps({**GOOD_CONFIG, "model_type": f"x` {IMAGE} `"})),
        check=lambda at: _good_config_kept(at) or _no_image(at),
    ),
    Case(
        "paste-script-as-name",  # read: the name keeps a repository id's characters only
        "kv_calculator",
        (),
        send=_paste(json.dumps({**GOOD_CONFIG, "_name_or_path": SCRIPT + IMAGE})),
        check=lambda at: "<" not in at.session_state["kvc_config"].name and _no_image(at) is None,
    ),
    Case(
        "upload-not-json",
        "kv_calculator",
        ("The file bad.json is not valid JSON",),
        where="error",
        send=_config_upload("bad.json", b"\x00\x01 not json"),
        check=_good_config_kept,
    ),
    Case(
        "upload-over-256-KiB",
        "kv_calculator",
        (
            f"The file big.json is {MAX_CONFIG_BYTES + 2:,} bytes; a config may be at most "
            f"{MAX_CONFIG_BYTES:,} bytes (256 KiB)",
        ),
        where="error",
        send=_config_upload("big.json", b"{" + b" " * MAX_CONFIG_BYTES + b"}"),
        check=_good_config_kept,
    ),  # fmt: skip
]


def _kept_calculator(at: AppTest, base: dict, touches: tuple[str, ...]) -> None:
    expected, problems = kvc.from_query_params(base)
    assert problems == []
    settings = at.session_state["kvc_settings"]
    for name, raw in base.items():
        if name in touches:
            continue
        assert getattr(settings, name) == getattr(expected, name), name
        assert at.query_params.get(name) == raw, (name, at.query_params.get(name))


@pytest.mark.parametrize("case", CALCULATOR_CASES, ids=[c.id for c in CALCULATOR_CASES])
def test_bad_calculator_input(case: Case):
    at = _open(case.page, {**CALCULATOR_BASE, **case.url})
    if case.send is not None:
        case.send(at)
        at.run()
    _no_exception(at)
    message = _messages(at, case.where).replace("\\", "")  # as read: markdown escapes hidden
    for fragment in case.expect:
        assert fragment in message, (fragment, message)
    if case.where != "error":
        assert not at.error, [e.value for e in at.error]
    _kept_calculator(at, CALCULATOR_BASE, case.touches)
    if case.check is not None:
        assert case.check(at) is not False
    _no_visitor_html(at)

    # The page keeps running: a normal change afterwards works, and nothing else moved.
    at.number_input(key="kvc_tokens").set_value(16384).run()
    _no_exception(at)
    assert at.session_state["kvc_settings"].tokens == 16384
    assert at.query_params["tokens"] == "16384"
    _kept_calculator(at, CALCULATOR_BASE, case.touches)


# ---------------------------------------------------------------------------------------------
# The Decode page: its own settings (gqa_viz/app/decode.py), bounded by its model's positions.

DECODE_BASE = {"model": "sort-k4", "seed": "7", "policy": "sink"}  # sort: 20 positions
D = "decode"

DECODE_CASES = [
    Case(
        "url-model-unknown",
        D,
        ("URL parameter model='gpt-5' ignored (expected a shipped model: copy-k8",),
        url={"model": "gpt-5"},
        touches=("model",),
    ),
    Case(
        "url-model-script",  # shown as text in the message
        D,
        (f"URL parameter model={SCRIPT!r} ignored",),
        url={"model": SCRIPT},
        touches=("model",),
    ),
    Case(
        "url-step-999",
        D,
        (
            f"step must be between 1 and {limits.MAX_DECODE_PROMPT_TOKENS + limits.MAX_DECODE_NEW_TOKENS}"
            "; got 999",
            "step must be between 1 and 10 for this run (1 prefill and 9 decode steps)",
        ),
        url={"step": "999"},
    ),  # fmt: skip
    Case(
        "url-step-zero", D, ("step must be between 1 and 128; got 0, using 1.",), url={"step": "0"}
    ),
    # An ignored value falls back to a default that means "automatic": the message says what.
    Case(
        "url-step-empty",
        D,
        ("URL parameter step='' ignored (", "); using the first decode step."),
        url={"step": ""},
    ),
    Case(
        "url-new-1e308",
        D,
        (
            "URL parameter new='1e308' ignored (",
            "using 0 (as many as the model's positions allow).",
        ),
        url={"new": "1e308"},
    ),
    Case(
        "url-step-repeated",
        D,
        ("URL parameter step is given 2 times; only one is allowed, using the last, '3'",),
        url={"step": ["5", "3"]},
    ),
    Case(
        "url-policy-lru",
        D,
        ("URL parameter policy='lru' ignored (expected one of full, rolling, sink); using 'full'",),
        url={"policy": "lru"},
        touches=("policy",),
    ),
    Case(
        "url-window-zero",
        D,
        (f"window w (window) must be between 1 and {limits.MAX_DECODE_CAPACITY}; got 0, using 1.",),
        url={"window": "0"},
    ),
    Case(
        "url-sinks-over-capacity",
        D,
        (
            f"sinks s (sinks) must be between 1 and {limits.MAX_DECODE_CAPACITY - 1}; got 500",
            "a sink cache holds sinks + window = 127 + 8 = 135 slots, more than 128; using "
            "window 1",
        ),
        url={"sinks": "500"},
    ),  # fmt: skip
    Case(
        "url-sinks-plus-window",
        D,
        (
            "a sink cache holds sinks + window = 100 + 100 = 200 slots, more than 128; using window 28",
        ),
        url={"sinks": "100", "window": "100"},
    ),
    Case(
        "url-new-past-the-positions",
        D,
        ("new tokens must be between 1 and 10 after a 11-token prompt: sort-k4 learned 20",),
        url={"new": "64"},
    ),
    Case(
        "url-new-over-the-limit",
        D,
        (f"new tokens (new) must be between 0 and {limits.MAX_DECODE_NEW_TOKENS}; got 65",),
        url={"new": "65"},
    ),
    Case(
        "url-prompt-past-the-positions",
        D,
        ("prompt length must be between 1 and 20 for sort-k4 (it learned 20 positions); got 50",),
        url={"prompt": "50"},
    ),
    Case(
        "url-layer-5",
        D,
        ("layer must be between 0 and 1 for sort-k4; got 5, using 1.",),
        url={"layer": "5"},
    ),  # fmt: skip
    Case(
        "url-bw-nan",
        D,
        ("URL parameter bw='nan' ignored (expected a finite number); using 3350.0",),
        url={"bw": "nan"},
    ),
    Case(
        "drawn-window-999",  # put back within the number input's limits by Streamlit
        D,
        (),
        send=_state("dec_window", 999),
        check=lambda at: 1 <= at.session_state["dec_settings"].window <= limits.MAX_DECODE_CAPACITY,
    ),
]


def _kept_decode(at: AppTest, base: dict, touches: tuple[str, ...]) -> None:
    expected, problems = dec.from_query_params(base)
    assert problems == []
    settings = at.session_state["dec_settings"]
    for name, raw in base.items():
        if name in touches:
            continue
        assert getattr(settings, name) == getattr(expected, name), name
        assert at.query_params.get(name) == raw, (name, at.query_params.get(name))


@pytest.mark.parametrize("case", DECODE_CASES, ids=[c.id for c in DECODE_CASES])
def test_bad_decode_input(case: Case):
    at = _open(case.page, {**DECODE_BASE, **case.url})
    if case.send is not None:
        case.send(at)
        at.run()
    _no_exception(at)
    message = _messages(at, case.where)
    for fragment in case.expect:
        assert fragment in message, (fragment, message)
    assert not at.error, [e.value for e in at.error]
    _kept_decode(at, DECODE_BASE, case.touches)
    if case.check is not None:
        assert case.check(at) is not False
    _no_visitor_html(at)

    # The page keeps running: a normal change afterwards works, and nothing else moved.
    at.radio(key="dec_layer").set_value(0).run()
    _no_exception(at)
    assert at.session_state["dec_settings"].layer == 0 and at.query_params["layer"] == "0"
    _kept_decode(at, DECODE_BASE, case.touches)


# ---------------------------------------------------------------------------------------------
# Integer number inputs sent a value that is not finite (a modified client's double): Streamlit
# 1.67 would raise in int(value) inside the widget call; app_pages/_number_inputs.py makes the
# input fall back to its default, as Streamlit does for a float input.

NON_FINITE = [
    ("playground", "w_seed", {}, math.nan),
    ("playground", "w_seed", {}, math.inf),
    ("playground", "w_window", {}, math.nan),
    ("playground", "w_batch", {"mode": "random"}, -math.inf),
    ("mask_lab", "ml_doc_every", {}, math.nan),
    ("mask_lab", "ml_window", {}, math.inf),
    ("kv_calculator", "kvc_tokens", {}, math.nan),
    ("decode", "dec_seed", {}, math.nan),
    ("decode", "dec_window", {"policy": "rolling"}, math.inf),
    ("trained", "tr_seed", {}, math.nan),
]


@pytest.mark.parametrize(
    ("page", "key", "url", "value"), NON_FINITE, ids=[f"{p}-{k}-{v}" for p, k, _, v in NON_FINITE]
)
def test_a_non_finite_integer_input_falls_back_to_its_default(page, key, url, value):
    at = _open(page, {**BASE, **url})
    proto = at.number_input(key=key).proto
    low, high = proto.min, proto.max
    at.session_state[key] = value
    at.run()
    _no_exception(at)
    kept = at.number_input(key=key).value
    assert isinstance(kept, int) and low <= kept <= high, kept
