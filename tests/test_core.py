"""The functional core against the float64 NumPy reference: every intermediate, every path."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from gqa_viz import core
from tests.reference import reference_gqa, reference_mask

jax.config.update("jax_default_matmul_precision", "highest")  # GPU would default to TF32


def _draw(seed: int):
    """A random configuration, inputs and masks (small shapes: B<=2, T,S<=9)."""
    r = np.random.default_rng(seed)
    K = int(r.choice([1, 2, 3]))
    N = K * int(r.choice([1, 2, 3]))
    H = int(r.choice([2, 4, 8]))
    D, Dk = int(r.choice([4, 8])), int(r.choice([4, 6]))
    B, T, S = int(r.integers(1, 3)), int(r.integers(1, 9)), int(r.integers(1, 9))
    spec = core.GQASpec(
        N,
        K,
        H,
        use_bias=bool(r.integers(2)),
        use_gate=bool(r.integers(2)),
        sliding_window=None if r.integers(2) else int(r.integers(1, 4)),
    )
    with_key = bool(r.integers(2))
    params = core.init_params(spec, D, D, Dk if with_key else D, seed=seed)
    if spec.use_bias:  # zero biases would hide a missing bias add
        params = jax.tree.map(
            lambda w: w + 0.1 * r.standard_normal(w.shape).astype(w.dtype), params
        )
    query = r.standard_normal((B, T, D)).astype(np.float32)
    value = r.standard_normal((B, S, D)).astype(np.float32)
    key = r.standard_normal((B, S, Dk)).astype(np.float32) if with_key else None
    masks = {}
    if r.integers(2):
        masks["query_mask"] = r.random((B, T)) > 0.3
    if r.integers(2):
        masks["value_mask"] = r.random((B, S)) > 0.2
    if r.integers(3) == 0:
        masks["attention_mask"] = r.random((B, T, S)) > 0.2
    causal = bool(r.integers(2))
    return spec, params, query, value, key, masks, causal


def _reference(spec, params, query, value, key, masks, causal, fully_masked_rows="zero"):
    T, S = query.shape[1], value.shape[1]
    mask = reference_mask(T, S, use_causal_mask=causal, sliding_window=spec.sliding_window, **masks)
    np_params = jax.tree.map(np.asarray, params)
    return reference_gqa(
        np_params,
        query,
        value,
        key,
        num_query_heads=spec.num_query_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        mask=mask,
        use_gate=spec.use_gate,
        fully_masked_rows=fully_masked_rows,
    )


TOL = dict(rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("seed", range(24))
def test_trace_matches_reference(seed):
    spec, params, query, value, key, masks, causal = _draw(seed)
    ref = _reference(spec, params, query, value, key, masks, causal)
    tr = core.attention_trace(params, query, value, key, spec=spec, use_causal_mask=causal, **masks)
    B, T, D = query.shape
    S, N, K, H = value.shape[1], spec.num_query_heads, spec.num_key_value_heads, spec.head_dim
    assert tr.query.shape == (B, T, N, H) and tr.key.shape == (B, S, K, H)
    assert tr.value.shape == (B, S, K, H) and tr.logits.shape == (B, N, T, S)
    assert tr.probs.shape == tr.dropped_probs.shape == (B, N, T, S)
    assert tr.context.shape == (B, T, N, H) and tr.output.shape == (B, T, D)
    assert (tr.gate is None) == (not spec.use_gate)
    for name in ("query", "key", "value", "logits", "probs", "context", "output"):
        np.testing.assert_allclose(getattr(tr, name), ref[name], **TOL, err_msg=name)
    if spec.use_gate:
        np.testing.assert_allclose(tr.gate, ref["gate"], **TOL)
    np.testing.assert_array_equal(tr.dropped_probs, tr.probs)  # inference: no dropout
    # The mask the core used is the reference's merged mask.
    ref_mask = reference_mask(
        T, S, use_causal_mask=causal, sliding_window=spec.sliding_window, **masks
    )
    if ref_mask is None:
        assert tr.mask is None
    else:
        np.testing.assert_array_equal(
            np.broadcast_to(tr.mask, (B, T, S)), np.broadcast_to(ref_mask, (B, T, S))
        )


@pytest.mark.parametrize("seed", range(24))
def test_both_paths_agree_on_every_row(seed):
    """Output with and without scores is the same, fully masked rows included."""
    spec, params, query, value, key, masks, causal = _draw(seed)
    kw = dict(spec=spec, use_causal_mask=causal, **masks)
    fused = core.attention(params, query, value, key, **kw)
    explicit, scores = core.attention(params, query, value, key, return_scores=True, **kw)
    np.testing.assert_allclose(fused, explicit, **TOL)
    ref = _reference(spec, params, query, value, key, masks, causal)
    np.testing.assert_allclose(scores, ref["probs"], **TOL)
    np.testing.assert_allclose(fused, ref["output"], **TOL)


@pytest.mark.parametrize("seed", range(12))
def test_uniform_rows_reproduce_the_fused_keras_path(seed):
    spec, params, query, value, key, masks, causal = _draw(seed)
    masks["query_mask"] = np.ones(query.shape[:2], bool)
    masks["query_mask"][0, 0] = False  # at least one fully masked row
    kw = dict(spec=spec, use_causal_mask=causal, fully_masked_rows="uniform", **masks)
    ref = _reference(spec, params, query, value, key, masks, causal, fully_masked_rows="uniform")
    np.testing.assert_allclose(
        core.attention(params, query, value, key, **kw), ref["output"], **TOL
    )
    _, scores = core.attention(params, query, value, key, return_scores=True, **kw)
    np.testing.assert_allclose(scores, ref["probs"], **TOL)
    np.testing.assert_allclose(scores[0, :, 0], 1.0 / value.shape[1], rtol=1e-6)


def test_fully_masked_row_gives_output_bias():
    spec = core.GQASpec(4, 2, 4)
    params = core.init_params(spec, 8, seed=0)
    params["attention_output"]["bias"] = np.arange(8, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((1, 5, 8)).astype(np.float32)
    qm = np.array([[True, False, True, True, True]])
    out, scores = core.attention(params, x, x, spec=spec, query_mask=qm, return_scores=True)
    np.testing.assert_array_equal(scores[0, :, 1], 0.0)
    np.testing.assert_allclose(out[0, 1], np.arange(8), atol=1e-6)
    np.testing.assert_allclose(
        core.attention(params, x, x, spec=spec, query_mask=qm)[0, 1], np.arange(8), atol=1e-6
    )


def test_dropout_is_seeded_and_rescales():
    spec = core.GQASpec(4, 1, 8, dropout=0.25)
    params = core.init_params(spec, 16, seed=1)
    x = np.random.default_rng(1).standard_normal((2, 32, 16)).astype(np.float32)
    kw = dict(spec=spec, training=True, use_causal_mask=True)
    a = core.attention_trace(params, x, x, dropout_rng=jax.random.key(3), **kw)
    b = core.attention_trace(params, x, x, dropout_rng=jax.random.key(3), **kw)
    c = core.attention_trace(params, x, x, dropout_rng=jax.random.key(4), **kw)
    np.testing.assert_array_equal(a.dropped_probs, b.dropped_probs)
    assert not np.array_equal(a.dropped_probs, c.dropped_probs)
    kept = np.asarray(a.dropped_probs) > 0
    positive = np.asarray(a.probs) > 0
    assert abs(1 - kept[positive].mean() - 0.25) < 0.03
    np.testing.assert_allclose(
        np.asarray(a.dropped_probs)[kept], np.asarray(a.probs)[kept] / 0.75, rtol=1e-6
    )
    # The context uses the dropped probabilities; the float64 reference agrees given the keep mask.
    keep = np.where(kept, 1 / 0.75, 0.0)
    ref = reference_gqa(
        jax.tree.map(np.asarray, params),
        x,
        x,
        num_query_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        mask=reference_mask(32, 32, use_causal_mask=True),
        dropout_keep=keep,
    )
    np.testing.assert_allclose(a.output, ref["output"], **TOL)
    with pytest.raises(ValueError, match="dropout_rng"):
        core.attention(params, x, x, **kw)


def test_asking_for_scores_does_not_recompile_the_plain_path():
    spec = core.GQASpec(2, 1, 4)
    params = core.init_params(spec, 4, seed=0)
    x = np.ones((1, 3, 4), np.float32)
    core.attention(params, x, x, spec=spec)
    before = core._forward_jit._cache_size()
    core.attention(params, x, x, spec=spec)
    core.attention_trace(params, x, x, spec=spec)
    core.attention(params, x, x, spec=spec)
    assert core._forward_jit._cache_size() == before + 1  # only the trace variant was added


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (
            dict(query=np.ones((1, 3, 8)), value=np.ones((1, 4, 6))),
            "last dimension of query and value",
        ),
        (
            dict(query=np.ones((1, 3, 8)), value=np.ones((1, 4, 8)), key=np.ones((1, 5, 8))),
            "same length",
        ),
        (dict(query=np.ones((2, 3, 8)), value=np.ones((1, 4, 8))), "same batch size"),
        (dict(query=np.ones((3, 8)), value=np.ones((1, 4, 8))), "shape [batch, length, features]"),
        (dict(query_mask=np.ones((1, 4), bool)), "query_mask must have shape (1, 3)"),
        (dict(value_mask=np.ones((1, 5), bool)), "value_mask must have shape (1, 4)"),
        (dict(attention_mask=np.ones((1, 3, 5), bool)), "(1, 3, 4)"),
        (dict(attention_mask=np.array([[["a"] * 4] * 3])), "boolean or numeric"),
    ],
)
def test_input_errors_name_the_values(kwargs, needle):
    spec = core.GQASpec(2, 1, 4)
    args = dict(query=np.ones((1, 3, 8), np.float32), value=np.ones((1, 4, 8), np.float32))
    args.update(kwargs)
    params = core.init_params(
        spec, args["query"].shape[-1] if np.ndim(args["query"]) == 3 else 8, seed=0
    )
    with pytest.raises(ValueError) as e:
        core.attention(params, spec=spec, **args)
    assert needle in str(e.value)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((6, 4, 8), "num_query_heads (6) must be divisible by num_key_value_heads (4)"),
        ((0, 1, 8), "num_query_heads must be a positive integer, got 0"),
        ((4, -2, 8), "num_key_value_heads must be a positive integer, got -2"),
        ((4, 2, 0), "head_dim must be a positive integer, got 0"),
    ],
)
def test_spec_errors(args, needle):
    with pytest.raises(ValueError) as e:
        core.GQASpec(*args)
    assert needle in str(e.value)


def test_mha_to_gqa_pools_heads_and_is_exact_at_k_equals_n():
    mha = core.GQASpec(8, 8, 4)
    params = core.init_params(mha, 16, seed=2)
    same, spec8 = core.mha_to_gqa(params, mha, 8)
    assert spec8 == mha
    for layer in params:
        for name in params[layer]:
            np.testing.assert_array_equal(same[layer][name], params[layer][name])
    pooled, spec2 = core.mha_to_gqa(params, mha, 2)
    kernel = np.asarray(params["key"]["kernel"])  # [D, N, H]
    expected = np.stack([kernel[:, 4 * j : 4 * j + 4].mean(axis=1) for j in range(2)], axis=1)
    np.testing.assert_allclose(pooled["key"]["kernel"], expected, rtol=1e-6)
    assert spec2.num_key_value_heads == 2
    np.testing.assert_array_equal(pooled["query"]["kernel"], params["query"]["kernel"])


def test_optional_weights_do_not_reseed_the_others():
    """Turning use_bias or use_gate on or off keeps every other weight exactly as it was."""
    base = core.init_params(core.GQASpec(4, 2, 8), 16, seed=3)
    for spec in (core.GQASpec(4, 2, 8, use_bias=False), core.GQASpec(4, 2, 8, use_gate=True)):
        other = core.init_params(spec, 16, seed=3)
        for layer in base:
            np.testing.assert_array_equal(other[layer]["kernel"], base[layer]["kernel"])


def test_weights_must_fit_the_spec():
    spec = core.GQASpec(2, 1, 4, use_gate=True)
    params = core.init_params(core.GQASpec(2, 1, 4), 8, seed=0)  # no gate weights
    x = np.ones((1, 3, 8), np.float32)
    with pytest.raises(ValueError, match=r"use_gate=True: missing \['gate/bias', 'gate/kernel'\]"):
        core.attention(params, x, x, spec=spec)
    nobias = core.GQASpec(2, 1, 4, use_bias=False)
    with pytest.raises(ValueError, match="unexpected"):
        core.attention(core.init_params(core.GQASpec(2, 1, 4), 8, seed=0), x, x, spec=nobias)
