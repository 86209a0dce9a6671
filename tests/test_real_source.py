"""A real model's layer as the weight source of the Playground, Walkthrough and KV sharing page.

Against a temporary Hugging Face cache (``HF_HUB_CACHE``) holding two small random checkpoints
with tokenizers that fit (:mod:`tests.real_fixtures`): Qwen3 (RoPE, QK-norm) and Gemma 2
(sliding window, softmax scale, soft-cap). What the pages show is checked against the
checkpoint's own forward pass, ``checkpoints.load(dir).forward(ids)``, computed here.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from gqa_viz import checkpoints, core, sharing
from gqa_viz.app import codegen, kv_sharing, playground, real_sources
from gqa_viz.app.settings import DEFAULT_SENTENCE, from_query_params
from gqa_viz.checkpoints import convert
from gqa_viz.figures import steps as steps_figures
from gqa_viz.figures.heads import head_maps
from tests import real_fixtures

QWEN, GEMMA = real_fixtures.QWEN3, real_fixtures.GEMMA2
TIMEOUT = 120


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The cache's snapshot directories by repo id, with HF_HUB_CACHE pointing at it."""
    hub_dir, snapshots = real_fixtures.hub_cache(
        tmp_path_factory.mktemp("real"), repos=(QWEN, GEMMA)
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(hub_dir))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv(real_sources.MODEL_DIRS_ENV, raising=False)
        real_sources.models(refresh=True)
        yield snapshots
    real_sources.models(refresh=True)


def _forward(snapshot, text: str = DEFAULT_SENTENCE):
    """(token strings, every layer's probabilities [N, T, T]) by the checkpoint's own pass."""
    ckpt = checkpoints.load(snapshot)
    ids = ckpt.tokenizer.encode(text)
    _, probs = ckpt.forward(np.asarray([ids]))
    return ckpt.tokenizer.token_strings(ids), [p[0] for p in probs]


def _settings(**params):
    settings, messages = from_query_params({"weights": "real", **params})
    return settings, messages


# ---------------------------------------------------------------------------------------------
# Settings and the computation.


def test_a_real_layer_fixes_shape_input_and_masks(hub):
    s, messages = _settings(model=GEMMA, layer="0")
    assert messages == []
    arch = checkpoints.load(hub[GEMMA]).arch
    assert (s.n, s.k, s.h, s.d) == (
        arch.num_query_heads, arch.num_kv_heads, arch.head_dim, arch.model_dim,
    )  # fmt: skip
    assert (s.causal, s.window, s.attn, s.mode, s.gate) == (True, 16, "self", "sentence", False)
    spec = s.spec()
    assert spec.rope is not None and spec.logit_softcap == 5.0 and spec.sliding_window == 16
    assert s.spec(k=s.n).num_key_value_heads == s.n
    # Layer 1 of Gemma 2 is global: no window.
    assert _settings(model=GEMMA, layer="1")[0].window == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": "no/such-model"}, "There is no model called `no/such-model` on this server"),
        ({"model": QWEN, "layer": "9"}, f"layer must be between 0 and 1 for {QWEN}; got 9"),
        ({"model": QWEN, "n": "32", "window": "3"}, "n=32, window=3 ignored"),
    ],
)
def test_url_values_a_real_layer_cannot_take(hub, params, message):
    s, messages = _settings(text="kept text", **params)
    assert any(message in m for m in messages), messages
    assert s.weights == "real" and s.model in hub and s.text == "kept text"


@pytest.mark.parametrize(("model", "layer"), [(QWEN, 0), (QWEN, 1), (GEMMA, 0), (GEMMA, 2)])
def test_the_layer_computes_what_the_checkpoint_computes(hub, model, layer):
    s, _ = _settings(model=model, layer=str(layer))
    result = playground.run(s)
    tokens, probs = _forward(hub[model])
    assert result.q_labels == tokens
    np.testing.assert_allclose(result.trace.probs[0], probs[layer], atol=2e-6)
    assert any("the hidden state that layer really receives" in n for n in result.notes)


def test_a_long_prompt_is_cut_to_the_limit_with_a_note(hub):
    text = "abc def ghi " * 50  # about 500 tokens of this tokenizer
    s, _ = _settings(model=QWEN, text=text)
    result = playground.run(s)
    cap = real_sources.max_tokens(checkpoints.load(hub[QWEN]).arch)
    assert len(result.q_labels) == cap
    assert any(f"only the first {cap} are used (the limit)" in n for n in result.notes)
    _, probs = _forward(hub[QWEN], text)
    np.testing.assert_allclose(result.trace.probs[0], probs[1][:, :cap, :cap], atol=2e-6)


def test_code_snippets_say_when_they_are_not_equivalent(hub):
    qwen = playground.run(_settings(model=QWEN, layer="1")[0])
    keras = codegen.keras_snippet(qwen.settings)
    assert "NOT EQUIVALENT for this layer" in keras and "RoPE" in keras and "QK-norm" in keras
    # JAX reads q and k after the QK-norm and RoPE: without a soft-cap it is the layer.
    jax_code = codegen.jax_snippet(qwen.settings)
    assert "NOT EQUIVALENT" not in jax_code and "after this layer's QK-norm and RoPE" in jax_code
    ns = codegen.snippet_inputs(qwen)
    exec(compile(jax_code, "<jax snippet>", "exec"), ns)
    np.testing.assert_allclose(ns["out"], qwen.trace.context, atol=3e-5, rtol=3e-4)
    gemma = _settings(model=GEMMA, layer="0")[0]
    assert "soft-cap of 5" in codegen.jax_snippet(gemma)
    assert "this layer's softmax scale" in codegen.torch_snippet(gemma)


def test_kv_sharing_groups_the_layers_own_heads(hub):
    """The grouped layer is convert.group_kv_heads's, on the hidden states the layer sees."""
    s, _ = _settings(model=GEMMA, layer="0")
    d = kv_sharing.drift(s, "real", 0.0, "mean", target=1)
    assert [r["K"] for r in d.curve] == [4, 2, 1]
    assert d.curve[0]["js"] < 1e-6 and d.curve[1]["js"] < 1e-6 and d.row["js"] > 1e-3
    _, probs = _forward(hub[GEMMA])
    np.testing.assert_allclose(d.probs_mha, probs[0], atol=2e-6)
    ckpt = checkpoints.load(hub[GEMMA])
    params, spec = convert.group_kv_heads(ckpt, 1, "mean").layer(0)
    x = ckpt.attention_inputs(np.asarray([ckpt.tokenizer.encode(DEFAULT_SENTENCE)]))[0]
    _, want = core.attention(
        params, x, x, spec=dataclasses.replace(spec, sliding_window=16),
        use_causal_mask=True, return_scores=True,
    )  # fmt: skip
    np.testing.assert_allclose(d.probs_gqa, np.asarray(want)[0], atol=2e-6)
    assert "real model's layer with K = 2" in d.explanation
    assert sharing.explain(d.curve, "real", kv_heads=2) == d.explanation


# ---------------------------------------------------------------------------------------------
# Pages.


def _app(page: str, **params) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    for name, value in params.items():
        at.query_params[name] = value
    at.run()  # registers the pages
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _heads(at: AppTest) -> np.ndarray:
    """The Playground's heads figure as [N, T, S] (NaN where masked)."""
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    return np.stack([panel.z for panel in head_maps(fig).values()])


def test_playground_shows_the_checkpoints_own_attention(hub):
    at = _app("app_pages/playground.py", weights="real", model=QWEN, layer="1")
    assert not at.error and not at.warning
    tokens, probs = _forward(hub[QWEN])
    shown = _heads(at)
    causal = np.tril(np.ones(probs[1].shape[1:], bool))
    assert np.isnan(shown[:, ~causal]).all()
    np.testing.assert_allclose(shown[:, causal], probs[1][:, causal], atol=1e-4)  # 4 decimals
    fixed = {s.label: s for s in at.selectbox}
    assert fixed["num_query_heads (N)"].disabled and fixed["num_query_heads (N)"].value == 4
    assert fixed["Real model"].value == QWEN and fixed["Layer"].value == 1
    assert at.toggle(key="w_causal").disabled and at.number_input(key="w_window").disabled
    # Another layer, then another model: the URL follows; the prompt stays.
    at.selectbox(key="w_layer").set_value(0).run()
    np.testing.assert_allclose(_heads(at)[:, causal], probs[0][:, causal], atol=1e-4)
    at.selectbox(key="w_model").set_value(GEMMA).run()
    assert not at.exception and at.query_params["model"] == GEMMA
    assert at.number_input(key="w_window").value == 16
    at.text_input(key="w_text").input("a new prompt").run()
    url = dict(at.query_params)
    assert url["weights"] == "real" and url["model"] == GEMMA and url["text"] == "a new prompt"
    # The URL alone brings the same view back.
    again = _app("app_pages/playground.py", **url)
    assert not again.warning and dict(again.query_params) == url
    np.testing.assert_array_equal(_heads(again), _heads(at))
    # Back to random weights: the controls are free again.
    at.radio(key="w_weights").set_value("pooled").run()
    assert not at.exception and not at.selectbox(key="w_n").disabled


def test_unknown_model_and_long_prompt_keep_the_rest_of_the_view(hub):
    at = _app(
        "app_pages/playground.py", weights="real", model="gone/model", layer="0", text="x" * 1200
    )
    warnings = " ".join(w.value for w in at.warning)
    assert "There is no model called `gone/model` on this server" in warnings
    assert "text is limited to 1000 characters; it was cut" in warnings
    assert not at.error
    assert at.query_params["layer"] == "0" and at.query_params["weights"] == "real"
    assert at.query_params["model"] == real_sources.usable_names()[0]
    notes = " ".join(i.value for i in at.info)
    assert "are used (the limit)" in notes


def test_walkthrough_shows_the_steps_keras_does_not_have(hub, monkeypatch):
    drawn = []
    draw = steps_figures.before_after_figure
    monkeypatch.setattr(
        steps_figures, "before_after_figure", lambda *a, **k: drawn.append(1) or draw(*a, **k)
    )
    at = _app("app_pages/walkthrough.py", weights="real", model=QWEN, layer="0")
    assert not at.error
    heads = [h.value for h in at.subheader]
    assert heads[2].startswith("3. QK-norm") and heads[3].startswith("4. RoPE"), heads
    assert not any("Soft-cap" in h for h in heads)
    keras = next(c.value for c in at.code if c.value.startswith("# Keras"))
    assert "NOT EQUIVALENT for this layer" in keras
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    for title in (
        "QK-norm: Q of query head 0",
        "QK-norm: K of K/V head 0",
        "RoPE: Q of query head 0",
    ):
        assert title in titles, titles
    count = len(drawn)
    at.run()  # another rerun of the same view: these steps' figures are shared, not redrawn
    assert not at.error and len(drawn) == count
    at = _app("app_pages/walkthrough.py", weights="real", model=GEMMA, layer="0")
    heads = [h.value for h in at.subheader]
    assert "Logits: Q·Kᵀ × s" in heads[4] and heads[5].startswith("6. Soft-cap"), heads
    assert any(r"|t - s| < 16" in x.value for x in at.latex)


def test_kv_sharing_page_groups_the_real_layer(hub):
    at = _app("app_pages/kv_sharing.py", weights="real", model=QWEN, layer="1")
    assert not at.error
    assert at.radio(key="kv_setting").options == [kv_sharing.SETTING_NAMES["real"]]
    assert at.selectbox(key="kv_real_k").options == ["K' = 1 (G' = 4)"]
    metrics = {m.label: m.value for m in at.metric}
    d = kv_sharing.drift(_settings(model=QWEN, layer="1")[0], "real", 0.0, "mean", target=1)
    assert metrics["mean JS divergence at K' = 1"] == f"{d.row['js']:.3g} nats"


def test_mask_lab_takes_a_real_layer_too(hub):
    at = _app("app_pages/mask_lab.py", weights="real", model=QWEN)
    assert not at.error


def test_without_a_model_the_option_is_absent_and_explained(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    at = _app("app_pages/playground.py", weights="real", model=QWEN, seed="3")
    warnings = " ".join(w.value for w in at.warning)
    assert "weights=real needs a model on this server and none is there" in warnings
    assert str(tmp_path) in warnings
    assert "real" not in at.radio(key="w_weights").options
    assert any("no model is on this server" in c.value for c in at.caption)
    assert not at.error and at.query_params["seed"] == "3"
    assert os.environ["HF_HUB_CACHE"] == str(tmp_path)


def test_a_tokenizer_beyond_the_models_vocabulary_is_a_message_not_a_crash(hub, monkeypatch):
    arch = real_sources.architecture(QWEN)
    small = dataclasses.replace(arch, vocab_size=3)
    monkeypatch.setattr(real_sources, "architecture", lambda name: small)
    with pytest.raises(checkpoints.CheckpointError, match="beyond .* vocabulary of 3"):
        real_sources.tokenize(QWEN, DEFAULT_SENTENCE)


def test_a_cached_run_does_not_load_the_model_again(hub, monkeypatch):
    ids = real_sources.tokenize(QWEN, DEFAULT_SENTENCE).ids
    first = real_sources.run(QWEN, ids)

    def refuse(name):
        raise AssertionError("a cached run loaded the model")

    monkeypatch.setattr(real_sources, "checkpoint", refuse)
    assert real_sources.run(QWEN, ids) is first
    assert real_sources.tokenize(QWEN, DEFAULT_SENTENCE).ids == ids  # tokens without the weights
