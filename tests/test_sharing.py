"""Tests for gqa_viz.sharing: MHA -> GQA conversions and the drift they cause."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gqa_viz import core, sharing
from gqa_viz.app import settings
from gqa_viz.core import GQASpec

N, H, D, T = 8, 8, 32, 12
SPEC = GQASpec(num_query_heads=N, num_key_value_heads=N, head_dim=H)


@pytest.fixture(scope="module")
def layer():
    params = core.init_params(SPEC, D, seed=3)
    x = np.random.default_rng(0).normal(size=(2, T, D)).astype(np.float32)  # [B, T, D]
    return params, x


def test_divisors_is_the_settings_one():
    assert sharing.divisors is settings.divisors


def test_mean_pool_matches_numpy(layer):
    params, _ = layer
    for K in (4, 2, 1):
        out, spec = sharing.grouped_heads(params, SPEC, K, "mean")
        assert spec.num_key_value_heads == K and spec.groups == N // K
        for name in ("key", "value"):
            kernel = np.asarray(params[name]["kernel"])  # [D, N, H]
            bias = np.asarray(params[name]["bias"])  # [N, H]
            want_k = kernel.reshape(D, K, N // K, H).mean(axis=2)
            want_b = bias.reshape(K, N // K, H).mean(axis=1)
            np.testing.assert_allclose(out[name]["kernel"], want_k, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(out[name]["bias"], want_b, rtol=1e-6, atol=1e-7)
        assert out["query"]["kernel"] is params["query"]["kernel"]


def test_k_equals_n_is_exact(layer):
    params, x = layer
    for method in sharing.METHODS:
        out, spec = sharing.grouped_heads(params, SPEC, N, method)
        assert out is params and spec is SPEC
        r = sharing.drift(params, SPEC, x, x, N, method=method)
        assert r["js"] == 0.0 and r["rel_error"] == 0.0
        assert np.all(r["js_per_head"] == 0.0)
        np.testing.assert_array_equal(r["probs_mha"], r["probs_gqa"])


def test_first_and_random_pick_actual_heads(layer):
    params, _ = layer
    kernel = {n: np.asarray(params[n]["kernel"]) for n in ("key", "value")}  # [D, N, H]
    K, G = 2, N // 2
    first, _ = sharing.grouped_heads(params, SPEC, K, "first")
    for k in range(K):
        for n in ("key", "value"):
            np.testing.assert_array_equal(first[n]["kernel"][:, k], kernel[n][:, k * G])
    picked = set()
    for seed in range(6):
        rnd, _ = sharing.grouped_heads(params, SPEC, K, "random", seed=seed)
        for k in range(K):
            got = np.asarray(rnd["key"]["kernel"][:, k])
            hits = [g for g in range(G) if np.array_equal(got, kernel["key"][:, k * G + g])]
            assert len(hits) == 1
            g = hits[0]
            np.testing.assert_array_equal(
                rnd["value"]["kernel"][:, k], kernel["value"][:, k * G + g]
            )
            picked.add(g)
    assert len(picked) > 1  # not always the first head
    again, _ = sharing.grouped_heads(params, SPEC, K, "random", seed=5)
    np.testing.assert_array_equal(again["key"]["kernel"], rnd["key"]["kernel"])


def test_bad_arguments(layer):
    params, x = layer
    with pytest.raises(ValueError, match="method"):
        sharing.grouped_heads(params, SPEC, 2, "median")
    with pytest.raises(ValueError, match="divisible"):
        sharing.grouped_heads(params, SPEC, 3)
    gqa = GQASpec(num_query_heads=N, num_key_value_heads=2, head_dim=H)
    with pytest.raises(ValueError, match="multi-head"):
        sharing.grouped_heads(params, gqa, 1)
    with pytest.raises(ValueError, match="groups_of"):
        sharing.controlled_mha(SPEC, D, groups_of=3, eps=0.0)
    with pytest.raises(ValueError, match="setting"):
        sharing.explain([], "pretrained")


def test_js_divergence_hand_computed():
    p = np.array([1.0, 0.0])
    q = np.array([0.5, 0.5])
    # m = [0.75, 0.25]; KL(p||m) = ln(4/3); KL(q||m) = 0.5 ln(2/3) + 0.5 ln 2
    want = 0.5 * (math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    assert float(sharing.js_divergence(p, q)) == pytest.approx(want, rel=1e-6)
    assert float(sharing.js_divergence(q, p)) == pytest.approx(want, rel=1e-6)
    assert float(sharing.js_divergence(q, q)) == 0.0
    disjoint = sharing.js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert float(disjoint) == pytest.approx(math.log(2), rel=1e-6)
    rng = np.random.default_rng(1)
    a, b = rng.dirichlet(np.ones(5), size=50), rng.dirichlet(np.ones(5), size=50)
    js = np.asarray(sharing.js_divergence(a, b))
    np.testing.assert_allclose(js, np.asarray(sharing.js_divergence(b, a)), rtol=1e-6)
    assert np.all(js >= 0) and np.all(js <= math.log(2) + 1e-7)


def test_controlled_zero_at_eps_zero_and_grows():
    groups_of = 4
    K0 = N // groups_of
    x = np.random.default_rng(2).normal(size=(1, T, D)).astype(np.float32)
    params = sharing.controlled_mha(SPEC, D, groups_of=groups_of, eps=0.0, seed=7)
    for K in settings.divisors(N):
        r = sharing.drift(params, SPEC, x, x, K)
        if K % K0 == 0:  # groups inside the controlled groups: nothing is lost
            assert r["js"] < 1e-6 and r["rel_error"] < 1e-6, (K, r["js"])
        else:
            assert r["js"] > 1e-4
    js = [
        sharing.drift(
            sharing.controlled_mha(SPEC, D, groups_of=groups_of, eps=eps, seed=7), SPEC, x, x, K0
        )["js"]
        for eps in (0.0, 0.1, 0.3, 1.0)
    ]
    assert js[0] < 1e-6
    assert all(a < b for a, b in zip(js, js[1:])), js


def test_pooled_random_heads_shrink_by_sqrt_g():
    spec = GQASpec(num_query_heads=16, num_key_value_heads=16, head_dim=16)
    params = core.init_params(spec, 64, seed=11)
    single = np.linalg.norm(np.asarray(params["key"]["kernel"]), axis=(0, 2)).mean()  # per head
    for K in (4, 1):
        G = 16 // K
        pooled, _ = sharing.grouped_heads(params, spec, K)
        norm = np.linalg.norm(np.asarray(pooled["key"]["kernel"]), axis=(0, 2)).mean()
        assert norm / single == pytest.approx(1 / math.sqrt(G), rel=0.1)


def test_drift_curve_and_explain(layer):
    params, x = layer
    curve = sharing.drift_curve(params, SPEC, x, x, causal=False)
    assert [r["K"] for r in curve] == sorted(settings.divisors(N), reverse=True)
    assert curve[0]["js"] == 0.0 and all(r["js"] > 0 for r in curve[1:])
    r = curve[-1]
    assert r["js_per_head"].shape == (N,) and r["probs_mha"].shape == (2, N, T, T)
    assert 0 < r["js"] <= math.log(2) and r["rel_error"] > 0
    text = sharing.explain(curve, "random")
    assert "K = 8" in text and "sqrt(G)" in text and "starts at" in text
    controlled = sharing.controlled_mha(SPEC, D, groups_of=2, eps=0.0, seed=1)
    text = sharing.explain(sharing.drift_curve(controlled, SPEC, x, x), "controlled", eps=0.0)
    assert "eps" in text and "drift starts at K = 2" in text


def test_drift_with_sliding_window(layer):
    params, x = layer
    spec = GQASpec(num_query_heads=N, num_key_value_heads=N, head_dim=H, sliding_window=2)
    r = sharing.drift(params, spec, x, x, 1)
    assert np.isfinite(r["js"]) and r["js"] > 0
    assert np.isfinite(r["js_per_head"]).all()


def test_explain_knows_the_method(layer):
    params, x = layer
    curve = sharing.drift_curve(params, SPEC, x, x, method="first")
    assert all(r["method"] == "first" for r in curve)
    text = sharing.explain(curve, "random")
    assert "sqrt(G)" not in text and "no shrink" in text
