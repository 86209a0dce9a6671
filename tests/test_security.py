"""The defences SECURITY.md promises: code rules, server settings, and a hostile client.

The hostile client speaks Streamlit's websocket protocol directly (the light client of
``bench/load.py``), so it can send what no browser would: bytes that are not a message, text
frames, and widget values of the wrong type or out of range.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import tomllib
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from bench.load import LightSession, Tally
from gqa_viz.app.settings import from_query_params

ROOT = Path(__file__).resolve().parent.parent
CODE = sorted(p for folder in ("gqa_viz", "app_pages") for p in (ROOT / folder).rglob("*.py")) + [
    ROOT / "app.py"
]
CONFIG = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())

# Reviewed: each builds its HTML from numbers and constants only, never from visitor text.
UNSAFE_HTML_ALLOWED = {"app_pages/walkthrough.py": 2}


def _called(node: ast.Call) -> str:
    """``np.load`` for ``np.load(...)``, ``eval`` for ``eval(...)``: the dotted name called."""
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


FORBIDDEN_CALLS = {"eval", "exec", "pickle.load", "pickle.loads", "torch.load", "joblib.load"}


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_never_unpickles_or_evaluates(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = _called(node)
        assert name not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {name}"
        if name in ("np.load", "numpy.load"):
            flags = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
            assert flags.get("allow_pickle") is False, f"{path.name}:{node.lineno}"
        for keyword in node.keywords:
            if keyword.arg == "allow_pickle":
                assert getattr(keyword.value, "value", None) is False, f"{path.name}:{node.lineno}"


def test_visitor_text_is_never_rendered_as_html():
    found = {}
    for path in CODE:
        count = path.read_text().count("unsafe_allow_html=True")
        if count:
            found[str(path.relative_to(ROOT))] = count
    assert found == UNSAFE_HTML_ALLOWED
    assert "components.html" not in "".join(p.read_text() for p in CODE)


def test_server_settings():
    server, client = CONFIG["server"], CONFIG["client"]
    assert server["enableXsrfProtection"] is True
    assert 0 < server["maxUploadSize"] <= 2  # MB
    assert server["fileWatcherType"] == "none"
    assert client["showErrorDetails"] in ("type", "none")  # no tracebacks in the browser
    assert client["toolbarMode"] == "viewer"
    assert CONFIG["browser"]["gatherUsageStats"] is False


# ---------------------------------------------------------------------------------------------
# A hostile client against a real server.

LINK = "mode=random&n=16&h=32&t=48&causal=0"


def _sync(coroutine):
    """Run ``coroutine`` to completion in a thread of its own: Playwright's sync API (the
    browser tests of this session) keeps an event loop running in the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as r:
        return r.read().strip() == b"ok"


async def _raw(url: str, payload) -> int | None:
    """Send one frame on a fresh connection; the close code the server answers with."""
    import websockets

    host = url.removeprefix("http://")
    async with websockets.connect(
        f"ws://{host}/_stcore/stream", subprotocols=["streamlit"], origin=url
    ) as ws:
        await ws.send(payload)
        try:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
        except websockets.ConnectionClosed:
            return ws.close_code


@pytest.mark.parametrize(
    ("name", "payload", "codes"),
    [
        ("bytes that are not a message", b"\x00\xff" * 64, {1002}),
        ("a text frame", "hello", {1000, 1003, 1006, 1011}),
    ],
)
def test_malformed_frames_close_only_that_connection(streamlit_server, name, payload, codes):
    assert _sync(_raw(streamlit_server, payload)) in codes
    assert _healthy(streamlit_server)


SHOWN_EXCEPTIONS: list[tuple[str, list[str]]] = []  # (message, stack) of the last session


async def _session_with(url: str, key: str, value: dict):
    """Open the Playground from LINK, send one widget value; (alerts, errors, widgets)."""
    tally, alerts = Tally(), []
    shown = SHOWN_EXCEPTIONS
    shown.clear()
    session = LightSession(url, "hostile", tally)
    read = session._read_delta

    def spy(delta, action):
        element = delta.new_element
        if delta.WhichOneof("type") == "new_element" and element.WhichOneof("type") == "alert":
            alerts.append(element.alert.body)
        if delta.WhichOneof("type") == "new_element" and element.WhichOneof("type") == "exception":
            shown.append((element.exception.message, list(element.exception.stack_trace)))
        read(delta, action)

    session._read_delta = spy
    await session.connect()
    try:
        await session.rerun("open", LINK)
        alerts.clear()
        session._set(key, **value)
        await session.rerun("hostile value")
        return alerts, tally.errors, session.query_string
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("w_n", {"string_value": "abc"}, "n: 'abc' is not valid; kept 16"),
        ("w_n", {"string_value": "7"}, None),  # not an option: Streamlit keeps a valid one
        ("w_k", {"string_value": "3"}, None),
        ("w_t", {"double_array_value": [1e12]}, None),
        ("w_t", {"double_array_value": [float("nan")]}, None),
        ("w_seed", {"double_value": -5}, None),
        # Streamlit 1.67 raised in int(inf) inside its own deserializer, before the app ran;
        # app_pages/_number_inputs.py makes a whole-number box fall back to its default.
        ("w_seed", {"double_value": float("inf")}, None),
        ("w_seed", {"double_value": float("nan")}, None),
        ("w_causal", {"string_value": "yes"}, None),
        ("w_mode", {"string_value": "evil"}, None),
        ("w_dropout", {"double_array_value": [5.0]}, None),
        ("w_text", {"string_value": "<script>alert(1)</script>" * 200}, None),
    ],
    ids=lambda v: str(v)[:30],
)
def test_wrong_widget_values_from_a_modified_client(streamlit_server, key, value, message):
    """No exception; settings stay valid and in their limits; a message where one is due."""
    alerts, errors, query = _sync(_session_with(streamlit_server, key, value))
    assert errors == [] and SHOWN_EXCEPTIONS == []  # no exception element reached the page
    if message:
        assert any(message in a for a in alerts), alerts
    settings, problems = from_query_params(parse_qs(query))
    assert problems == []  # what the app now shows is valid, within every limit
    kept = {"n": 16, "h": 32, "causal": False, "t": 48}  # from LINK
    for name, expected in kept.items():
        if key != f"w_{name}":  # the other settings are kept
            assert getattr(settings, name) == expected, name
    assert _healthy(streamlit_server)
