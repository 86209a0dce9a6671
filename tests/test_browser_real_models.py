"""The Real models page in a real browser, on a server whose Hugging Face cache holds models.

The server is started with ``HF_HUB_CACHE`` pointing at the temporary cache of
tests/real_fixtures.py (a Llama with 8 query heads sharing 2 K/V heads, a GPT-2, a pickled
checkpoint), so the page renders a real forward pass: the prompt's tokens, every head at a
glance, one layer in full, the top-5 next tokens, and, once the grouping section is opened, the
loss and KV-cache curve over K'.
"""

from __future__ import annotations

import urllib.parse

import pytest

from tests.conftest import running_streamlit
from tests.real_fixtures import LLAMA, hub_cache

pytestmark = pytest.mark.browser

LOAD_MS = 120_000
RERUN_DONE_JS = "() => !document.querySelector(\"[data-testid='stStatusWidget']\")"


@pytest.fixture(scope="module")
def server_with_models(tmp_path_factory):
    hub = hub_cache(tmp_path_factory.mktemp("browser_hub"))[0]
    env = {
        "HF_HUB_CACHE": str(hub),
        "GQA_VIZ_PREWARM": "0",
        "HF_HUB_OFFLINE": "1",
        "GQA_VIZ_MODEL_DIRS": "",
    }
    log = tmp_path_factory.mktemp("real_models_server") / "streamlit.log"
    with running_streamlit(log, env) as url:
        yield url


def _plots(page) -> int:
    return page.evaluate("() => document.querySelectorAll('.js-plotly-plot').length")


def test_the_page_renders_a_model_and_its_grouping(server_with_models, page, tmp_path):
    query = urllib.parse.urlencode({"model": LLAMA, "prompt": "Hello world, keys and values."})
    page.goto(f"{server_with_models}/real-models?{query}", timeout=LOAD_MS)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 3",
                           timeout=LOAD_MS)  # fmt: skip
    page.wait_for_function(RERUN_DONE_JS, timeout=LOAD_MS)
    assert page.locator("h1").first.inner_text().startswith("Real models")
    # The tokens as chips, the model in the URL by its listed name.
    assert page.locator("span[title^='position 0']").count() == 1
    url = urllib.parse.parse_qs(page.evaluate("() => location.search.slice(1)"))
    assert url["model"] == [LLAMA]
    # The overview is one heatmap trace: 2 layers x (8 heads + 1 gap column), x its 10 edges.
    shape = page.evaluate(
        "() => { const p = [...document.querySelectorAll('.js-plotly-plot')]"
        ".find(e => e.data && e.data.length === 1 && e.data[0].type === 'heatmap');"
        " return p ? [p.data[0].y.length, p.data[0].x.length] : null; }"
    )
    assert shape == [2, 10]
    # Opening the grouping section computes it (lazily) and draws the curve over K'.
    page.locator("[data-testid='stExpander'] summary").last.click()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4",
                           timeout=LOAD_MS)  # fmt: skip
    page.wait_for_function(RERUN_DONE_JS, timeout=LOAD_MS)
    page.locator("[data-testid='stButtonGroup'] button", has_text="1 (MQA)").first.click()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 8",
                           timeout=LOAD_MS)  # fmt: skip
    page.wait_for_function(RERUN_DONE_JS, timeout=LOAD_MS)
    assert "kv=1" in page.evaluate("() => location.search")
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(tmp_path / "real-models.png"), full_page=True)
