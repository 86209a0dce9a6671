"""app.py and the Home page, through streamlit.testing.v1.AppTest (no browser)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import pytest
from streamlit.testing.v1 import AppTest

from gqa_viz.app import runtime
from gqa_viz.core import divisors

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60
_CACHE_OPTIONS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture(autouse=True, scope="module")
def _restore_jax_cache_config():
    """app.py enables the persistent compilation cache; keep that out of other test modules."""
    saved = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


def _app() -> AppTest:
    # from_file resolves a relative path against this test file, not the working directory.
    return AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()


def _figure(at: AppTest) -> dict:
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def _boxes(at: AppTest) -> tuple[int, int]:
    """(query boxes, K/V boxes) of the diagram on the page."""
    names = [s.get("name", "") for s in _figure(at)["layout"]["shapes"]]
    q = sum(bool(re.fullmatch(r"q\d+", x)) for x in names)
    kv = sum(bool(re.fullmatch(r"kv\d+", x)) for x in names)
    return q, kv


def _nk(at: AppTest) -> tuple[int, int]:
    return at.selectbox(key="home_n").value, at.selectbox(key="home_k").value


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def test_home_page_renders():
    at = _app()
    _no_exception(at)
    assert at.title[0].value == "Grouped-query attention"
    assert _nk(at) == (8, 2)
    assert _boxes(at) == (8, 2)
    assert "G = 8/2 = 4 per group" in _figure(at)["layout"]["title"]["text"]
    text = " ".join(m.value for m in at.markdown)
    assert "Ainslie et al." in text and "keras.layers.GroupQueryAttention" in text
    assert "**4× smaller** than MHA" in text
    assert [s.value for s in at.subheader][-1] == "Where to go next"


def test_n_choices_and_k_offers_only_divisors():
    at = _app()
    assert at.selectbox(key="home_n").options == ["1", "2", "4", "8", "12", "16", "32", "64"]
    assert len(at.selectbox(key="home_k").options) == len(divisors(8))
    at.selectbox(key="home_n").set_value(12).run()
    _no_exception(at)
    assert [int(o.split()[0]) for o in at.selectbox(key="home_k").options] == divisors(12)


@pytest.mark.parametrize(("n", "k"), [(32, 8), (64, 1), (16, 16), (1, 1)])
def test_changing_n_and_k_redraws_the_diagram(n, k):
    at = _app()
    at.selectbox(key="home_n").set_value(n).run()
    at.selectbox(key="home_k").set_value(k).run()
    _no_exception(at)
    assert _nk(at) == (n, k)
    assert _boxes(at) == (n, k)
    assert f"G = {n}/{k} = {n // k} per group" in _figure(at)["layout"]["title"]["text"]


def test_n_where_k_is_no_longer_a_divisor_does_not_crash():
    at = _app()
    at.selectbox(key="home_n").set_value(12).run()
    at.selectbox(key="home_k").set_value(3).run()
    assert _nk(at) == (12, 3)
    at.selectbox(key="home_n").set_value(8).run()  # 3 does not divide 8
    _no_exception(at)
    n, k = _nk(at)
    assert n == 8 and 8 % k == 0
    assert _boxes(at) == (8, k)
    at.selectbox(key="home_n").set_value(1).run()
    _no_exception(at)
    assert _nk(at) == (1, 1) and _boxes(at) == (1, 1)


def test_presets():
    at = _app()
    at.selectbox(key="home_n").set_value(32).run()
    at.button(key="home_preset_MHA").click().run()
    _no_exception(at)
    assert _nk(at) == (32, 32) and _boxes(at) == (32, 32)
    assert any("**multi-head attention (MHA)**, the baseline" in m.value for m in at.markdown)
    at.button(key="home_preset_MQA").click().run()
    assert _nk(at) == (32, 1) and _boxes(at) == (32, 1)
    at.button(key="home_preset_GQA").click().run()
    assert _nk(at) == (32, 8)  # G = 4, as in many real models
    assert at.button(key="home_preset_GQA").proto.type == "primary"  # the current kind
    at.selectbox(key="home_n").set_value(2).run()
    assert at.button(key="home_preset_GQA").disabled  # no K strictly between 1 and 2


def test_sidebar_shows_the_backend():
    at = _app()
    captions = [c.value for c in at.sidebar.caption]
    assert runtime.backend_label() in captions
    assert any(c.startswith(f"JAX {jax.__version__} · {jax.default_backend()}") for c in captions)


def test_page_links_to_playground_walkthrough_and_real_models():
    at = _app()
    links = [link.proto.page for link in at.get("page_link")]
    assert links == ["playground", "walkthrough", "real-models"]  # the url paths app.py gives


def test_enable_compilation_cache(tmp_path):
    target = tmp_path / "cache" / "jax"
    got = runtime.enable_compilation_cache(target)
    assert got == target.resolve() and target.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(target.resolve())
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    assert jax.config.jax_persistent_cache_min_entry_size_bytes == -1
    assert runtime.enable_compilation_cache(target) == got  # idempotent


def test_backend_label():
    label = runtime.backend_label()
    n = len(jax.devices())
    assert label.startswith(f"JAX {jax.__version__} · {jax.default_backend()}")
    assert label.endswith(f"({n} device{'' if n == 1 else 's'})")
