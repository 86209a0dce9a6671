"""A trained layer as the weight source of the Playground, Walkthrough and KV sharing page:
the pages show exactly what the trained model computes, with its real input."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from gqa_viz import sharing, tasks, tiny, trained
from gqa_viz.app import playground
from gqa_viz.app.settings import Settings, from_query_params


def _settings(**params) -> Settings:
    settings, messages = from_query_params({"weights": "trained", **params})
    assert messages == [], messages
    return settings


def test_names_and_mha_models():
    names = trained.names()
    assert {trained.task_of(n) for n in names} == set(tasks.TASKS)
    for task in tasks.TASKS:
        cfg = trained.load(trained.mha_name(task)).cfg
        assert cfg.num_key_value_heads == cfg.num_query_heads == 8


@pytest.mark.parametrize(
    ("model", "layer"), [("recall-k8", 1), ("induction-k2", 0), ("copy-k1", 1)]
)
def test_playground_shows_what_the_model_computes(model, layer):
    s = _settings(model=model, layer=str(layer), seed="5")
    cfg = trained.load(model).cfg
    assert (s.n, s.k, s.h, s.d, s.bias, s.gate) == (
        cfg.num_query_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.d_model, True, False,
    )  # fmt: skip
    result = playground.run(s)
    tokens = trained.prompt(cfg.task, 5)
    want = tiny.trace(trained.load(model).params, cfg, tokens[None]).layers[layer].probs
    np.testing.assert_allclose(result.trace.probs, np.asarray(want), atol=1e-6)
    names = tasks.token_names(cfg.task)
    assert result.q_labels == [f"{i}:{names[t]}" for i, t in enumerate(tokens)]
    assert any("what that layer really reads" in note for note in result.notes)


def test_trained_input_can_be_padded():
    s = _settings(model="sort-k8", pad="3")
    result = playground.run(s)
    L = len(result.q_labels)
    assert not result.mask[:, L - 3 :].any()  # padded keys get no attention
    assert result.mask[: L - 3, : L - 3].any()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": "gpt-5"}, "model must be one of"),
        ({"layer": "7"}, "layer must be between 0 and 1"),
        ({"n": "32"}, "fixes N = 8"),
        ({"gate": "1"}, "gate=True ignored"),
        ({"attn": "cross"}, "in self-attention; attn=cross ignored"),
    ],
)
def test_url_values_a_trained_model_cannot_take(params, message):
    settings, messages = from_query_params({"weights": "trained", **params})
    assert any(message in m for m in messages), messages
    assert settings.n == 8 and settings.model in trained.names() and not settings.gate


def test_kv_sharing_explains_trained_heads():
    view = trained.layer_view(trained.mha_name("recall"), 1, 0)
    curve = sharing.drift_curve(view.params, view.spec, view.x, view.x)
    assert [r["K"] for r in curve] == [8, 4, 2, 1] and curve[0]["js"] < 1e-6
    text = sharing.explain(curve, "trained")
    assert "trained on a task" in text and "K = 1" in text


# ---------------------------------------------------------------------------------------------
# Pages.


def _app(page: str, **params) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=120)
    for name, value in params.items():
        at.query_params[name] = value
    at.run()  # registers the pages: "kv-sharing" is not the file's name
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_playground_page_with_a_trained_layer():
    at = _app("app_pages/playground.py", weights="trained", model="recall-k4", seed="2")
    heads = {s.label: s for s in at.selectbox}
    assert heads["num_query_heads (N)"].disabled and heads["num_query_heads (N)"].value == 8
    assert heads["num_key_value_heads (K)"].value == 4
    assert heads["Trained model"].value == "recall-k4"
    assert not at.error and not at.warning
    heads["Trained model"].set_value("recall-k1").run()
    assert not at.exception
    assert at.selectbox(key="w_k").value == 1
    assert at.query_params["model"] == "recall-k1"
    at.radio(key="w_layer").set_value(0).run()
    assert at.query_params["layer"] == "0"
    # Back to random weights: the controls are free again, nothing else lost.
    at.radio(key="w_weights").set_value("pooled").run()
    assert not at.exception and not at.selectbox(key="w_n").disabled
    assert at.query_params["seed"] == "2"


def test_walkthrough_with_a_trained_layer():
    at = _app("app_pages/walkthrough.py", weights="trained", model="induction-k8", layer="1")
    assert not at.error
    text = " ".join(m.value for m in at.markdown)
    assert "query head" in text


def test_kv_sharing_page_with_a_trained_layer():
    at = _app("app_pages/kv_sharing.py", weights="trained", model="copy-k2")
    at.radio(key="kv_setting").set_value("trained").run()
    assert not at.exception and not at.error
    text = " ".join(m.value for m in at.markdown)
    assert "trained on a task" in text and "copy" in text
