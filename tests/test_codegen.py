"""gqa_viz.app.codegen: every snippet is executed and its numbers compared with the playground's trace.

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
G = N // K, H head_dim, D model dim.

The tests also pin the conventions the snippets' comments state (rows with no allowed key:
Keras' fused path and JAX average all values, Keras' scores path gives 0, torch 2.13's SDPA
on CPU gives 0), so a library upgrade that changes one fails here.
"""

from __future__ import annotations

import ast
import functools
import os
from dataclasses import replace

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gqa_viz.app import codegen, playground  # noqa: E402
from gqa_viz.app.settings import Settings  # noqa: E402

SMALL = Settings(h=8, d=16)

SWEEP = {
    "self_causal_sentence": SMALL,
    "self_no_mask_random_batch2": replace(SMALL, mode="random", t=9, batch=2, item=1, causal=False),
    "self_window_pad_gate": replace(SMALL, window=3, pad=2, gate=True),
    "cross_sentence_padding": replace(SMALL, attn="cross", causal=False, pad=1, kpad=2),
    "cross_random_causal_window_empty_rows": replace(
        SMALL, mode="random", attn="cross", t=10, s=4, window=2, causal=True
    ),
    "mqa_k1_no_bias": replace(SMALL, n=4, k=1, bias=False, mode="random", t=7),
    "mha_k_eq_n_gate_pad": replace(SMALL, n=4, k=4, gate=True, pad=1, causal=False),
    "independent_weights_dropout_eval": replace(
        SMALL, weights="independent", dropout=0.2, pad=1, n=6, k=3
    ),
    "training_dropout": replace(SMALL, dropout=0.3, training=True, pad=1),
}

ATOL, RTOL = 3e-5, 3e-4


@functools.cache
def run(name: str):
    return playground.run(SWEEP[name])


@pytest.fixture(scope="module", params=list(SWEEP), ids=list(SWEEP))
def case(request):
    result = run(request.param)
    return result.settings, result, codegen.snippet_inputs(result)


def _exec(src: str, ns: dict) -> dict:
    g = {k: (list(v) if isinstance(v, list) else v) for k, v in ns.items()}
    exec(compile(src, "<snippet>", "exec"), g)
    return g


def _allowed_rows(result) -> np.ndarray:
    """[B, T] True where the query row has at least one allowed key."""
    m = result.trace.mask
    B, T = result.trace.output.shape[:2]
    if m is None:
        return np.ones((B, T), bool)
    return np.broadcast_to(np.asarray(m).any(axis=-1), (B, T))


def _repeat_kv(x, G):
    return np.repeat(np.asarray(x, np.float64), G, axis=2)  # [B, S, N, H]


def _expected_context(result) -> np.ndarray:
    """Per-head context [B, T, N, H] from our probabilities before dropout and before the gate."""
    G = result.spec.groups
    return np.einsum("bnts,bsnh->btnh", result.trace.probs, _repeat_kv(result.trace.value, G))


def _uniform_context(result) -> np.ndarray:
    """What a row with no allowed key gets from a fused kernel: the mean of all S values."""
    G = result.spec.groups
    T = result.trace.output.shape[1]
    mean = _repeat_kv(result.trace.value, G).mean(axis=1, keepdims=True)  # [B, 1, N, H]
    return np.broadcast_to(mean, (mean.shape[0], T) + mean.shape[2:])


def _project(result, context) -> np.ndarray:
    """Gate (if any) and output projection of a per-head context [B, T, N, H]."""
    if result.trace.gate is not None:
        context = context * result.trace.gate
    out_layer = result.params["attention_output"]
    out = np.einsum("btnh,nhd->btd", context, out_layer["kernel"])
    return out + out_layer["bias"] if "bias" in out_layer else out


def test_sweep_has_rows_with_no_allowed_key_somewhere():
    # The "uniform vs 0" conventions are only tested if the sweep produces such rows.
    empty = [name for name in SWEEP if not _allowed_rows(run(name)).all()]
    assert "cross_random_causal_window_empty_rows" in empty
    assert "self_window_pad_gate" in empty


def test_snippets_are_valid_python_with_the_settings_in_them(case):
    s, _, _ = case
    for fn in (codegen.keras_snippet, codegen.jax_snippet, codegen.torch_snippet):
        src = fn(s)
        ast.parse(src)
        assert max(len(line) for line in src.splitlines()) <= 100
    k = codegen.keras_snippet(s)
    assert "keras.layers.GroupQueryAttention(" in k
    assert f"num_query_heads={s.n}," in k
    assert f"num_key_value_heads={s.k}," in k
    assert f"head_dim={s.h}," in k
    assert f"use_causal_mask={s.causal}," in k
    assert f"sliding_window={s.window or None}," in k
    assert ("query_mask=query_mask" in k) == (s.pad > 0)
    assert "jax.nn.dot_product_attention(" in codegen.jax_snippet(s)
    t = codegen.torch_snippet(s)
    assert "scaled_dot_product_attention(" in t and "enable_gqa=True" in t
    assert ("attn_mask=" in t) == codegen.has_mask(s)


def test_snippet_inputs_namespace(case):
    s, result, ns = case
    assert set(ns) == {"query", "value", "query_mask", "value_mask", "weights", "q", "k", "v"}
    B, T, N, H = result.trace.query.shape
    S, K, D = result.trace.key.shape[1], result.spec.num_key_value_heads, s.d
    assert ns["query"].shape == (B, T, D)
    assert ns["value"].shape == (B, S, D)
    assert ns["query_mask"].shape == (B, T) and ns["query_mask"].dtype == bool
    assert ns["value_mask"].shape == (B, S) and ns["value_mask"].dtype == bool
    assert ns["q"].shape == (B, T, N, H)
    assert ns["k"].shape == ns["v"].shape == (B, S, K, H)
    if not s.cross:
        np.testing.assert_array_equal(ns["value"], ns["query"])
    assert all(a.flags.writeable for a in ns.values() if isinstance(a, np.ndarray))


def test_keras_snippet_matches_trace(case):
    s, result, ns = case
    g = _exec(codegen.keras_snippet(s), ns)
    tr = result.trace
    B, T, D = tr.output.shape
    assert g["out"].shape == (B, T, D)
    # Keras' returned scores are the probabilities before dropout, on every path.
    np.testing.assert_allclose(g["scores"], tr.probs, atol=ATOL, rtol=RTOL)
    if s.training and s.dropout > 0:
        return  # Keras draws its own dropout mask: only the scores are comparable.
    rows = _allowed_rows(result)
    # The explicit path (scores) zeroes rows with no allowed key, as gqa_viz does: all rows.
    np.testing.assert_allclose(g["out_explicit"], tr.output, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(g["out"][rows], tr.output[rows], atol=ATOL, rtol=RTOL)
    if not rows.all():
        if s.dropout > 0:
            # dropout > 0 keeps Keras on its explicit path even without scores: 0 there.
            np.testing.assert_allclose(g["out"], tr.output, atol=ATOL, rtol=RTOL)
        else:
            # The fused path averages all S values on a row with no allowed key.
            uniform = _project(result, _uniform_context(result))
            np.testing.assert_allclose(g["out"][~rows], uniform[~rows], atol=ATOL, rtol=RTOL)
            assert not np.allclose(g["out"][~rows], tr.output[~rows], atol=1e-3)


def test_keras_weights_list_is_get_weights_order(case):
    import keras

    s, _, ns = case
    layer = keras.layers.GroupQueryAttention(
        head_dim=s.h,
        num_query_heads=s.n,
        num_key_value_heads=s.k,
        use_bias=s.bias,
        use_gate=s.gate,
    )
    layer.build(ns["query"].shape, ns["value"].shape)
    assert [tuple(w.shape) for w in layer.get_weights()] == [w.shape for w in ns["weights"]]


def test_jax_snippet_matches_trace_context(case):
    s, result, ns = case
    g = _exec(codegen.jax_snippet(s), ns)
    expected = _expected_context(result)
    assert g["out"].shape == expected.shape
    rows = _allowed_rows(result)
    np.testing.assert_allclose(g["out"][rows], expected[rows], atol=ATOL, rtol=RTOL)
    if not rows.all():
        # Stated in the snippet: a row with no allowed key averages all S values.
        uniform = _uniform_context(result)
        np.testing.assert_allclose(g["out"][~rows], uniform[~rows], atol=ATOL, rtol=RTOL)
    if not (s.training and s.dropout > 0):
        # Gate and output projection of the snippet's context give our output (allowed rows).
        out = _project(result, g["out"])
        np.testing.assert_allclose(out[rows], result.trace.output[rows], atol=ATOL, rtol=RTOL)


def test_torch_snippet_matches_trace_context(case):
    pytest.importorskip("torch")
    s, result, ns = case
    g = _exec(codegen.torch_snippet(s), ns)
    expected = _expected_context(result)
    assert g["out"].shape == expected.shape
    rows = _allowed_rows(result)
    np.testing.assert_allclose(g["out"][rows], expected[rows], atol=ATOL, rtol=RTOL)
    if not rows.all():
        # Stated in the snippet: torch 2.13's SDPA on CPU returns 0 on such rows (not NaN).
        np.testing.assert_array_equal(g["out"][~rows], 0.0)


# ---------------------------------------------------------------------------------------------
# The conventions the snippets' comments state, checked directly.


def test_torch_bool_masks_sdpa_true_attends_mha_true_blocks():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 3, 4, generator=g)
    kv = torch.randn(1, 1, 3, 4, generator=g)
    keep = torch.tensor([[True, False, False], [True, True, False], [False, False, False]])
    out = F.scaled_dot_product_attention(q, kv, kv, attn_mask=keep, enable_gqa=True)
    np.testing.assert_allclose(out[0, :, 0].numpy(), kv[0, :, 0].expand(2, 4).numpy(), 1e-6)
    assert torch.all(out[0, :, 2] == 0)  # row with no allowed key: 0, not NaN (torch 2.13)
    # A hand-written softmax over -inf logits gives NaN on that row.
    logits = (q @ kv.transpose(-1, -2)).masked_fill(~keep, float("-inf"))
    assert torch.isnan(torch.softmax(logits, -1)[0, :, 2]).all()
    # nn.MultiheadAttention reads a bool mask the other way round: True = blocked.
    mha = torch.nn.MultiheadAttention(4, 1, batch_first=True)
    x = torch.randn(1, 3, 4, generator=g)
    _, w = mha(x, x, x, attn_mask=~keep)
    assert torch.all(w[0, :2][~keep[:2]] == 0)  # blocked where keep is False
    assert torch.isnan(w[0, 2]).all()  # and its fully masked row is NaN


def test_keras_fused_path_averages_and_scores_path_zeroes_a_fully_masked_row():
    import keras

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 8)).astype(np.float32)
    qmask = np.array([[True, True, False, True]])
    layer = keras.layers.GroupQueryAttention(head_dim=4, num_query_heads=2, num_key_value_heads=1)
    fused = np.asarray(layer(x, x, query_mask=qmask))
    explicit, scores = layer(x, x, query_mask=qmask, return_attention_scores=True)
    np.testing.assert_array_equal(np.asarray(scores)[0, :, 2], 0.0)
    out_bias = np.asarray(layer.get_weights()[-1])
    np.testing.assert_allclose(np.asarray(explicit)[0, 2], out_bias, atol=1e-6)
    assert not np.allclose(fused[0, 2], out_bias, atol=1e-3)
    np.testing.assert_allclose(fused[0, [0, 1, 3]], np.asarray(explicit)[0, [0, 1, 3]], atol=1e-5)
