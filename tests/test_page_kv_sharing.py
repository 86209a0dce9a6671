"""The KV sharing page under Streamlit's AppTest, run through app.py's st.navigation."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from gqa_viz.models import PRESETS

PAGE = "app_pages/kv_sharing.py"
TIMEOUT = 60


def _app(**query) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    for name, value in query.items():
        at.query_params[name] = value
    at.run()  # the url_path "kv-sharing" differs from the file name: register the pages first
    at.switch_page(PAGE)
    at.run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _drift(at: AppTest) -> dict:
    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        if any(d.get("meta", {}).get("role") == "js" for d in spec["data"]):
            return spec
    raise AssertionError("no drift chart")


def _array(a) -> np.ndarray:
    if isinstance(a, dict):
        return np.frombuffer(base64.b64decode(a["bdata"]), dtype=a["dtype"])
    return np.asarray(a, dtype=float)


def _js(at: AppTest) -> dict[str, float]:
    trace = next(d for d in _drift(at)["data"] if d.get("meta", {}).get("role") == "js")
    return dict(zip(trace["x"], _array(trace["y"]).tolist(), strict=True))


def test_defaults_render():
    at = _app()
    assert [h.value for h in at.header] == [
        "Effect of sharing on attention",
        "KV-cache and decoding calculator",
    ]
    assert len(at.get("plotly_chart")) == 5
    js = _js(at)
    assert list(js) == ["8 (MHA)", "4", "2", "1 (MQA)"] and js["8 (MHA)"] == 0
    assert any(m.value.endswith(" GB") and m.delta.endswith(" GiB") for m in at.metric)


def test_every_preset_and_mla_warning():
    at = _app()
    for name in PRESETS:
        at.selectbox(key="kv_preset").set_value(name).run()
        _ok(at)
        warned = any("latent attention" in w.value for w in at.warning)
        assert warned == (PRESETS[name].attention == "mla"), name
        if PRESETS[name].sliding_window is not None:  # Mistral-7B v0.1, Gemma 2, ...
            assert any("capped" in i.value for i in at.info), name
        if PRESETS[name].attention == "mla":  # computed from the latent, no MHA/MQA variant
            labels = [m.label for m in at.metric]
            assert "KV cache (MLA latent)" in labels, name
            assert not any("as MHA" in label for label in labels), name
            assert any("MLA layers × (512 kv_lora_rank + 64" in c.value for c in at.code)
    at.selectbox(key="kv_preset").set_value("custom").run()
    _ok(at)


def test_controlled_eps_zero_has_no_drift_at_k():
    at = _app(n="8", k="2")
    at.radio(key="kv_setting").set_value("controlled").run()
    at.slider(key="kv_eps").set_value(0.0).run()
    _ok(at)
    js = _js(at)
    assert js["2"] == pytest.approx(0, abs=1e-6)  # K = N // groups_of
    assert js["4"] == pytest.approx(0, abs=1e-6)  # finer groups are copies too
    assert js["1 (MQA)"] > 1e-4  # merges different shared heads
    assert any("controlled" in m.value for m in at.markdown)


def test_url_sets_n_and_k():
    at = _app(n="4", k="1")
    assert list(_js(at)) == ["4 (MHA)", "2", "1 (MQA)"]
    assert any("K = 1" in m.label for m in at.metric)
