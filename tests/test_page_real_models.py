"""The Real models page under Streamlit's AppTest, against a temporary Hugging Face cache.

The cache (tests/real_fixtures.py) holds random checkpoints written by ``transformers``: a
Llama with N = 8 query heads sharing K = 2 kv heads, a multi-head GPT-2 (N = K = 4), both with a
trained ``tokenizers`` tokenizer, and a pickled checkpoint the list shows as unusable.

What a visitor or an operator checks: the list is the cache's, a path typed into the URL is
refused and never opened, the prompt is split as the tokenizer splits it and every number the
page draws (head statistics, probabilities, top-5, losses, drift, KV bytes) is what the library
computes directly, the loss at K' = K is the unconverted model's, the grouped model's logits are
those of a ``transformers`` model built with ``num_key_value_heads = K'`` and the same pooled
weights, the URL reproduces the view, and with no model the page says how to add one.

Axis letters: L layers, N query heads, K kv heads, K' after grouping, T tokens, H head_dim,
V vocabulary.
"""

from __future__ import annotations

import html
import json
import math
import os
import re

import numpy as np
import pytest
import torch
import transformers
from streamlit.testing.v1 import AppTest

from gqa_viz import checkpoints
from gqa_viz.app import checkpoint_cache, limits, real_sources
from gqa_viz.app import real_models as rm
from gqa_viz.checkpoints import convert
from gqa_viz.figures.heads import head_maps
from gqa_viz.figures.shipping import array_of as _array
from gqa_viz.figures.shipping import trace_meta
from gqa_viz.figures.theme import CHIP_SPACE
from gqa_viz.sharing import js_divergence
from tests.apptest_pages import assert_ok, open_page
from tests.real_fixtures import GPT2, LLAMA, PICKLED, hub_cache

PAGE = "app_pages/real_models.py"
TIMEOUT = 120
PROMPT = "Hello world, this is a small test of grouped-query attention."


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return hub_cache(tmp_path_factory.mktemp("real_models"))[0]


@pytest.fixture(autouse=True)
def server_env(hub, monkeypatch):
    """The server's environment: this cache, no model directories, a fresh listing."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.delenv("GQA_VIZ_MODEL_DIRS", raising=False)
    monkeypatch.setattr(real_sources, "_listing", None)


def _snapshot(hub, repo: str):
    return next((hub / f"models--{repo.replace('/', '--')}" / "snapshots").iterdir())


def _app(**query) -> AppTest:
    return open_page(PAGE, TIMEOUT, **query)


_ok = assert_ok


def _view(at: AppTest) -> rm.View:
    return at.session_state["rm_view"]


def _charts(at: AppTest) -> dict[str, dict]:
    """The page's figures by chart key ("rm_chart_layer", ...)."""
    return {c.proto.id.split("-")[-1]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def _trace(spec: dict, role: str) -> dict:
    return next(t for t in spec["data"] if trace_meta(t).get("role") == role)


def _direct(hub, repo: str, text: str, k: int | None = None, method: str = "mean"):
    """The library on its own: (checkpoint, ids [1, T], logits [1, T, V], probs L x [1, N, T, T])."""
    ckpt = checkpoints.load(_snapshot(hub, repo))
    ids = np.asarray([ckpt.tokenizer.encode(text)])
    model = ckpt if k is None else convert.group_kv_heads(ckpt, k, method)
    logits, probs = model.forward(ids)
    return ckpt, ids, logits, probs


def _chips(at: AppTest) -> str:
    """The HTML of the prompt's token chips."""
    (html_,) = at.get("html")
    return html_.proto.body


def _url(at: AppTest) -> dict[str, str]:
    """The page's URL parameters (one value each)."""
    return {k: v if isinstance(v, str) else v[-1] for k, v in at.query_params.items()}


def _warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


# ---------------------------------------------------------------------------------------------
# Where models come from.


def test_the_list_is_the_cache_with_reasons_and_the_first_usable_model_is_shown():
    at = _app()
    box = at.selectbox(key="rm_model")
    labels = dict(zip([PICKLED, GPT2, LLAMA], box.options, strict=True))
    assert all(label.startswith(name + " (") for name, label in labels.items())
    assert "pickle" in labels[PICKLED]
    assert labels[LLAMA].startswith(f"{LLAMA} (llama,")
    assert _view(at).model == GPT2 and _url(at)["model"] == GPT2
    assert not box.proto.accept_new_options  # no free text: a name from the list or nothing


def test_an_unusable_model_is_refused_and_the_view_kept(hub):
    at = _app(model=LLAMA, prompt=PROMPT)
    before = _charts(at)["rm_chart_overview"]
    at.selectbox(key="rm_model").set_value(PICKLED).run()
    _ok(at)
    assert any(PICKLED in w and "cannot be opened" in w for w in _warnings(at)), _warnings(at)
    # The whole reason, not the list's label cut at 120 characters.
    (entry,) = [e for e in real_sources.models() if e.name == PICKLED]
    assert len(entry.reason) > 120 and entry.problem.endswith("...")
    assert any(entry.reason.rstrip(".") in w for w in _warnings(at)), _warnings(at)
    assert _view(at).model == LLAMA and at.selectbox(key="rm_model").value == LLAMA
    assert _charts(at)["rm_chart_overview"]["data"] == before["data"]


@pytest.mark.parametrize(
    "name", ["/etc", "../../../../etc/passwd", "test-org/tiny-llama/../tiny-gpt2", "snapshot"]
)
def test_a_path_in_the_url_is_refused_and_never_opened(hub, monkeypatch, name):
    """Only listed models are loaded: a path, even a listed model's own snapshot, is a name
    that is not in the list."""
    if name == "snapshot":
        name = str(_snapshot(hub, LLAMA))
    opened = []
    real_get = checkpoint_cache.CheckpointCache.get

    def spy(self, directory, root=None):
        opened.append(str(directory))
        return real_get(self, directory, root)

    monkeypatch.setattr(checkpoint_cache.CheckpointCache, "get", spy)
    at = _app(model=name, layer="1", metric="sink")
    shown = name[:60]  # echoed as code, at most 60 characters
    assert any(f"no model called `{shown}`" in w for w in _warnings(at)), _warnings(at)
    view = _view(at)
    assert view.model == GPT2 and view.layer == 1 and view.metric == "sink"  # the rest kept
    listed = {str(e.path) for e in real_sources.models()}
    assert set(opened) <= listed  # (nothing at all when the run was cached)


# ---------------------------------------------------------------------------------------------
# Prompt -> tokens -> heads, every number the library's.


def test_prompt_tokens_heads_and_top5_are_the_librarys(hub):
    at = _app(model=LLAMA, prompt=PROMPT, layer="1", pos="4")
    ckpt, ids, logits, probs = _direct(hub, LLAMA, PROMPT)
    view = _view(at)
    assert view.ids == tuple(ids[0].tolist())
    # Tokens as the tokenizer splits them: one chip each, spaces shown as a dot.
    chips = _chips(at)
    assert chips.count('title="position') == ids.shape[1]
    tokens = ckpt.tokenizer.token_strings(ids[0])
    text = chips.replace(f'<span style="color:{CHIP_SPACE}">·</span>', "·")
    shown = re.findall(r'title="position (\d+) · id (\d+)"[^>]*>(.*?)</span>', text)
    assert [int(i) for _, i, _ in shown] == ids[0].tolist()
    assert [body for _, _, body in shown] == [html.escape(t).replace(" ", "·") for t in tokens]
    assert any(t.startswith(" ") for t in tokens)  # spaces shown: "·wor" for " wor"
    charts = _charts(at)
    # Overview: one heatmap, L rows, N heads plus a gap column between the K groups.
    over = _trace(charts["rm_chart_overview"], "heads")
    z = _array(over["z"]).reshape(2, 8 + 1)
    stats = np.stack([convert.head_stats(p)["entropy"] for p in probs])  # [L, N]
    np.testing.assert_allclose(np.delete(z, 4, axis=1), stats, atol=1e-5)
    assert np.isnan(z[:, 4]).all()
    # The layer in full: 8 query heads, tokens on the axes, the layer's probabilities.
    layer = charts["rm_chart_layer"]
    panels = head_maps(layer)
    assert len(panels) == 8 and len(panels[0].y) == ids.shape[1]
    assert panels[0].y[2] == f"'{tokens[2]}' @2"
    got = panels[3].z
    want = np.where(np.tril(np.ones_like(got, bool)), probs[1][0, 3], np.nan)
    np.testing.assert_allclose(got, want, atol=1e-4)
    # Top-5 after position 4.
    p = np.exp(logits[0, 4] - logits[0, 4].max())
    p /= p.sum()
    top = _trace(charts["rm_chart_top"], "top")
    np.testing.assert_allclose(_array(top["x"]), np.sort(p)[::-1][:5], atol=1e-6)


def test_an_over_long_prompt_gets_a_message_and_the_view_is_kept(hub):
    at = _app(model=GPT2, prompt=PROMPT)
    before = _view(at)
    at.text_area(key="rm_prompt").set_value("attention " * 80).run()
    _ok(at)
    cap = real_sources.max_tokens(before.arch)
    assert any(f"the limit is {cap} tokens" in w and "previous prompt" in w for w in _warnings(at))
    assert _view(at).ids == before.ids and _url(at)["prompt"] == PROMPT
    # Over the character limit in the URL: a message, the default prompt (cut to the model).
    at = _app(model=LLAMA, prompt="x" * (limits.MAX_REAL_PROMPT_CHARS + 1), layer="0")
    assert any("characters; the limit is" in w for w in _warnings(at))
    assert _view(at).prompt == rm.DEFAULT_PROMPT and _view(at).layer == 0


def test_a_hostile_prompt_is_shown_as_text():
    at = _app(model=LLAMA, prompt='<script>alert(1)</script> <img src=x onerror="x()">')
    chips = _chips(at)
    assert "<script" not in chips and "<img" not in chips
    assert "&lt;" in chips  # the tokens are there, as text
    assert not any(m.proto.allow_html for m in at.markdown)


def test_bad_indices_in_the_url_get_messages():
    at = _app(model=LLAMA, prompt=PROMPT, layer="7", pos="500", kv="3", method="nope")
    warnings = " | ".join(_warnings(at))
    assert "layer must be between 0 and 1; got 7" in warnings
    assert "position (for this" in warnings and "got 500" in warnings
    assert "K' must divide" in warnings and "got 3" in warnings
    assert "method='nope' ignored" in warnings
    view = _view(at)
    assert (view.layer, view.pos, view.kv, view.method) == (1, len(view.ids) - 1, 2, "mean")


# ---------------------------------------------------------------------------------------------
# Grouping the K/V heads.


def _passage_loss(ckpt, k: int) -> float:
    ids = np.asarray([ckpt.tokenizer.encode(rm.passage())[: ckpt.arch.max_positions]])
    model = convert.group_kv_heads(ckpt, k)
    return convert.next_token_loss(model.forward(ids, probs=False)[0], ids)


def test_conversion_numbers_equal_a_direct_library_computation(hub):
    at = _app(model=LLAMA, prompt=PROMPT, kv="1", layer="1", pos="3")
    ckpt, ids, logits, probs = _direct(hub, LLAMA, PROMPT)
    _, _, logits1, probs1 = _direct(hub, LLAMA, PROMPT, k=1)
    curve = _charts(at)["rm_chart_curve"]
    a = ckpt.arch
    # x: K' = 2 (K) then 1. Losses on the prompt and the passage, KV bytes per token in fp32.
    np.testing.assert_allclose(
        _array(_trace(curve, "prompt")["y"]),
        [convert.next_token_loss(logits, ids), convert.next_token_loss(logits1, ids)],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        _array(_trace(curve, "passage")["y"]),
        [_passage_loss(ckpt, 2), _passage_loss(ckpt, 1)],
        rtol=1e-5,
    )
    assert _array(_trace(curve, "kv_bytes")["y"]).tolist() == [
        2 * a.num_layers * k * a.head_dim * 4 for k in (2, 1)
    ]
    # Per-head drift at K' = 1: JS divergence of every row, averaged over the prompt.
    drift = _array(_trace(_charts(at)["rm_chart_drift"], "heads")["z"]).reshape(2, 8)
    want = np.stack([js_divergence(p[0], q[0]).mean(-1) for p, q in zip(probs, probs1)])
    np.testing.assert_allclose(drift, want, atol=1e-6)
    metrics = {m.label: m.value for m in at.metric}
    ppl = math.exp(convert.next_token_loss(logits1, ids))
    assert metrics["Perplexity on the prompt"] == f"{ppl:,.1f}"
    assert metrics["KV cache per token"] == f"{2 * a.num_layers * a.head_dim * 4:,} B"


def test_loss_at_k_equals_the_unconverted_models(hub):
    at = _app(model=LLAMA, prompt=PROMPT, kv="2")
    ckpt, ids, logits, _ = _direct(hub, LLAMA, PROMPT)
    curve = _charts(at)["rm_chart_curve"]
    assert _array(_trace(curve, "prompt")["y"])[0] == pytest.approx(
        convert.next_token_loss(logits, ids), rel=1e-6
    )
    assert "rm_chart_drift" not in _charts(at)  # nothing grouped, nothing drifted
    assert "as trained: nothing is grouped" in " ".join(m.value for m in at.markdown)


def _pooled_transformers_model(snapshot, k: int):
    """A transformers Llama with num_key_value_heads = k whose k/v projections are the
    original's, each run of K / k consecutive heads averaged (NumPy)."""
    original = transformers.AutoModelForCausalLM.from_pretrained(
        snapshot, attn_implementation="eager", dtype=torch.float32
    )
    config = original.config
    K, H = config.num_key_value_heads, config.head_dim
    state = {}
    for name, w in original.state_dict().items():
        w = w.numpy()
        if name.endswith(("k_proj.weight", "v_proj.weight")):  # [K * H, D]
            w = w.reshape(k, K // k, H, -1).mean(axis=1).reshape(k * H, -1)
        elif name.endswith(("k_proj.bias", "v_proj.bias")):
            w = w.reshape(k, K // k, H).mean(axis=1).reshape(k * H)
        state[name] = torch.from_numpy(np.ascontiguousarray(w))
    config.num_key_value_heads = k
    model = transformers.LlamaForCausalLM(config).eval()
    model.load_state_dict(state)
    return model


@torch.no_grad()
def test_grouped_logits_equal_a_transformers_model_with_k_prime_kv_heads(hub):
    at = _app(model=LLAMA, prompt=PROMPT, kv="1", pos="5")
    view = _view(at)
    model = _pooled_transformers_model(_snapshot(hub, LLAMA), 1)
    logits = model(torch.tensor([view.ids])).logits.double().numpy()  # [1, T, V]
    charts = _charts(at)
    loss = convert.next_token_loss(logits, np.asarray([view.ids]))
    assert _array(_trace(charts["rm_chart_curve"], "prompt")["y"])[1] == pytest.approx(
        loss, rel=1e-4
    )
    p = np.exp(logits[0, 5] - logits[0, 5].max())
    p /= p.sum()
    after = _trace(charts["rm_chart_top_after"], "top")
    np.testing.assert_allclose(_array(after["x"]), np.sort(p)[::-1][:5], atol=1e-5)
    ours = real_sources.run(LLAMA, view.ids, 1)  # the run the page drew, every position
    np.testing.assert_array_equal(ours["top_ids"], np.argsort(-logits[0], axis=-1)[:, :5])


# ---------------------------------------------------------------------------------------------
# The URL, and the server without models.


def test_the_url_reproduces_the_view(hub):
    at = _app()
    at.selectbox(key="rm_model").set_value(LLAMA).run()
    at.text_area(key="rm_prompt").set_value(PROMPT).run()
    at.slider(key="rm_layer").set_value(0).run()
    at.select_slider(key="rm_pos").set_value(3).run()
    at.segmented_control(key="rm_metric").set_value("distance").run()
    at.session_state["rm_group"] = True
    at.run()
    at.segmented_control(key="rm_kv").set_value(1).run()
    at.radio(key="rm_method").set_value("first").run()
    _ok(at)
    url = _url(at)
    assert url == {"model": LLAMA, "prompt": PROMPT, "layer": "0", "pos": "3",
                   "metric": "distance", "kv": "1", "method": "first"}  # fmt: skip
    again = _app(**url)
    assert _view(again) == _view(at)
    assert _charts(again).keys() == _charts(at).keys()
    for key in ("rm_chart_overview", "rm_chart_drift", "rm_chart_curve"):
        assert _charts(again)[key]["data"] == _charts(at)[key]["data"]


def test_a_new_model_resets_what_belongs_to_the_old_one():
    at = _app(model=LLAMA, prompt=PROMPT, layer="0", pos="2", kv="1")
    at.selectbox(key="rm_model").set_value(GPT2).run()
    _ok(at)
    view = _view(at)
    assert (view.model, view.layer, view.pos, view.kv) == (GPT2, 1, len(view.ids) - 1, 4)
    assert not _warnings(at)
    # GPT-2 is multi-head: every divisor of N = 4 is a choice, MHA first.
    assert at.segmented_control(key="rm_kv").options == ["4 (MHA)", "2", "1 (MQA)"]


def test_no_models_says_where_it_looks_and_how_to_add_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    at = _app(model=LLAMA)
    text = " ".join(i.value for i in at.info) + " ".join(m.value for m in at.markdown)
    assert "No model is available on this server" in text
    assert str(tmp_path / "empty") in text and "GQA_VIZ_MODEL_DIRS" in text
    assert "hf download HuggingFaceTB/SmolLM2-135M" in text
    assert "never downloads" in text
    assert not at.get("plotly_chart")
    links = [el.proto.page for el in at.get("page_link")]
    assert links == ["trained"]  # the Trained heads page's shipped tiny models
    assert not _warnings(at)  # no "choose one from the list" when the list is empty


def test_model_directories_are_listed_by_folder_name(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv(
        "GQA_VIZ_MODEL_DIRS",
        f"{tmp_path / 'missing'}:{hub.parent / 'src' / 'test-org--tiny-llama'}",
    )
    at = _app(prompt=PROMPT)
    (label,) = at.selectbox(key="rm_model").options
    name = "test-org--tiny-llama"  # the folder's name
    assert label.startswith(f"{name} (llama,") and _view(at).model == name
    assert os.sep not in _url(at)["model"]  # the URL names the model, never its path
