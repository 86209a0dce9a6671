"""Tests for tests.reference: hand-computed numbers, mask shapes, and parity with Keras."""

import math
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")  # noqa: E402 -- a GPU check may run without Keras (make gpu-check)

from tests.reference import (  # noqa: E402
    params_from_keras_weights,
    reference_gqa,
    reference_mask,
)

# ----------------------------------------------------------------------------------------------
# Hand-computed tiny case: B=1, T=S=2, N=2, K=1 (G=2), H=1 (so the scale is 1), D=1.
#
#   x = [1, 2] is both query and value.
#   query kernel [1, -1], bias 0        -> head 0 q = [1, 2],  head 1 q = [-1, -2]
#   key kernel ln3, bias -ln3           -> k = [0, ln3] (shared by both heads)
#   value kernel 1, bias 0              -> v = [1, 2]
#   output kernel [1, 2] (per head), bias 0.5
#
#   head 0: t=0 logits [0, ln3]   -> exp [1, 3]   -> probs [1/4, 3/4]   -> context 7/4
#           t=1 logits [0, 2ln3]  -> exp [1, 9]   -> probs [1/10, 9/10] -> context 19/10
#   head 1: t=0 logits [0, -ln3]  -> exp [1, 1/3] -> probs [3/4, 1/4]   -> context 5/4
#           t=1 logits [0, -2ln3] -> exp [1, 1/9] -> probs [9/10, 1/10] -> context 11/10
#   output: t=0 7/4 + 2 * 5/4 + 1/2 = 19/4;  t=1 19/10 + 2 * 11/10 + 1/2 = 46/10
# ----------------------------------------------------------------------------------------------

LN3 = math.log(3.0)
TINY_X = np.array([[[1.0], [2.0]]])  # [B=1, T=2, D=1]
TINY_HEADS = dict(num_query_heads=2, num_key_value_heads=1, head_dim=1)


def tiny_params(with_gate=False):
    params = {
        "query": {"kernel": np.array([[[1.0], [-1.0]]]), "bias": np.zeros((2, 1))},
        "key": {"kernel": np.array([[[LN3]]]), "bias": np.array([[-LN3]])},
        "value": {"kernel": np.array([[[1.0]]]), "bias": np.zeros((1, 1))},
        "attention_output": {"kernel": np.array([[[1.0]], [[2.0]]]), "bias": np.array([0.5])},
    }
    if with_gate:
        # sigmoid(0) = 1/2 for head 0, sigmoid(ln3) = 3/4 for head 1.
        params["gate"] = {"kernel": np.zeros((1, 2, 1)), "bias": np.array([[0.0], [LN3]])}
    return params


def test_tiny_hand_computed():
    r = reference_gqa(tiny_params(), TINY_X, TINY_X, **TINY_HEADS)
    np.testing.assert_allclose(r["query"][0, :, :, 0], [[1, -1], [2, -2]])
    np.testing.assert_allclose(r["key"][0, :, 0, 0], [0, LN3], atol=1e-15)
    np.testing.assert_allclose(r["value"][0, :, 0, 0], [1, 2])
    np.testing.assert_allclose(
        r["logits"][0, :, :, :],
        [[[0, LN3], [0, 2 * LN3]], [[0, -LN3], [0, -2 * LN3]]],
        atol=1e-15,
    )
    expected_probs = [[[1 / 4, 3 / 4], [1 / 10, 9 / 10]], [[3 / 4, 1 / 4], [9 / 10, 1 / 10]]]
    np.testing.assert_allclose(r["probs"][0], expected_probs, rtol=1e-14)
    np.testing.assert_allclose(r["dropped_probs"], r["probs"])
    assert r["gate"] is None
    np.testing.assert_allclose(r["context"][0, :, :, 0], [[7 / 4, 5 / 4], [19 / 10, 11 / 10]])
    np.testing.assert_allclose(r["output"][0, :, 0], [19 / 4, 46 / 10], rtol=1e-14)
    for name, shape in [("query", (1, 2, 2, 1)), ("key", (1, 2, 1, 1)), ("logits", (1, 2, 2, 2))]:
        assert r[name].shape == shape and r[name].dtype == np.float64


def test_tiny_hand_computed_causal():
    # Query 0 only sees key 0: probs [1, 0] in both heads, context 1 -> output 1 + 2 + 1/2.
    mask = reference_mask(2, 2, use_causal_mask=True)
    r = reference_gqa(tiny_params(), TINY_X, TINY_X, mask=mask, **TINY_HEADS)
    np.testing.assert_allclose(r["probs"][0, :, 0], [[1, 0], [1, 0]])
    # Logits are reported before masking.
    np.testing.assert_allclose(r["logits"][0, 0, 0], [0, LN3], atol=1e-15)
    np.testing.assert_allclose(r["output"][0, :, 0], [3.5, 4.6], rtol=1e-14)


def test_tiny_hand_computed_gate():
    # Contexts scaled by 1/2 (head 0) and 3/4 (head 1):
    # t=0: 7/8 + 2 * 15/16 + 1/2 = 26/8;  t=1: 19/20 + 2 * 33/40 + 1/2 = 62/20.
    r = reference_gqa(tiny_params(with_gate=True), TINY_X, TINY_X, use_gate=True, **TINY_HEADS)
    np.testing.assert_allclose(r["gate"][0, :, :, 0], [[0.5, 0.75], [0.5, 0.75]])
    np.testing.assert_allclose(r["output"][0, :, 0], [26 / 8, 62 / 20], rtol=1e-14)


def test_tiny_fully_masked_row_zero_and_uniform():
    mask = np.array([[[False, False], [True, True]]])  # query 0 may attend to nothing
    zero = reference_gqa(tiny_params(), TINY_X, TINY_X, mask=mask, **TINY_HEADS)
    np.testing.assert_array_equal(zero["probs"][0, :, 0], 0.0)
    np.testing.assert_allclose(zero["output"][0, :, 0], [0.5, 4.6], rtol=1e-14)
    # Uniform: probs 1/2 on both keys, context (1 + 2) / 2 = 3/2 -> output 3/2 + 3 + 1/2 = 5.
    uni = reference_gqa(
        tiny_params(), TINY_X, TINY_X, mask=mask, fully_masked_rows="uniform", **TINY_HEADS
    )
    np.testing.assert_allclose(uni["probs"][0, :, 0], 0.5)
    np.testing.assert_allclose(uni["output"][0, :, 0], [5.0, 4.6], rtol=1e-14)
    # Rows with an allowed key are the same in both modes.
    np.testing.assert_allclose(uni["probs"][0, :, 1], zero["probs"][0, :, 1])


def test_tiny_dropout_keep():
    # rate 1/2: keep only key 0 for every row (scaled by 2). Probs stay the pre-dropout ones.
    keep = np.zeros((1, 2, 2, 2))
    keep[..., 0] = 2.0
    r = reference_gqa(tiny_params(), TINY_X, TINY_X, dropout_keep=keep, **TINY_HEADS)
    np.testing.assert_allclose(r["probs"][0, 0, 0], [1 / 4, 3 / 4])
    np.testing.assert_allclose(r["dropped_probs"][0, 0, 0], [1 / 2, 0])
    # Context = 2 * p(key 0) * v0 = [[1/2, 3/2], [1/5, 9/5]] (t, n).
    np.testing.assert_allclose(r["context"][0, :, :, 0], [[1 / 2, 3 / 2], [1 / 5, 9 / 5]])


def test_bad_arguments():
    with pytest.raises(ValueError):
        reference_gqa(tiny_params(), TINY_X, TINY_X, fully_masked_rows="nan", **TINY_HEADS)
    with pytest.raises(ValueError):
        reference_gqa(
            tiny_params(), TINY_X, TINY_X, num_query_heads=3, num_key_value_heads=2, head_dim=1
        )
    with pytest.raises(ValueError):
        params_from_keras_weights([np.zeros(1)] * 3, use_bias=True, use_gate=False)


# ----------------------------------------------------------------------------------------------
# reference_mask against explicit arrays.
# ----------------------------------------------------------------------------------------------


def test_mask_none_when_nothing_masks():
    assert reference_mask(3, 4) is None
    assert reference_mask(3, 4, batch=2) is None


def test_mask_causal_t_less_than_s():
    # Top-left aligned: query t sees keys 0..t, even though S > T.
    expected = np.array([[[1, 0, 0, 0], [1, 1, 0, 0]]], dtype=bool)
    got = reference_mask(2, 4, use_causal_mask=True)
    assert got.dtype == bool and got.shape == (1, 2, 4)
    np.testing.assert_array_equal(got, expected)


def test_mask_causal_t_greater_than_s():
    expected = np.array([[[1, 0], [1, 1], [1, 1], [1, 1]]], dtype=bool)
    np.testing.assert_array_equal(reference_mask(4, 2, use_causal_mask=True), expected)


def test_mask_sliding_window():
    # |t - s| < 2: a band of width 3, symmetric (not causal).
    expected = np.array(
        [[[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0]]],
        dtype=bool,
    )
    np.testing.assert_array_equal(reference_mask(3, 5, sliding_window=2), expected)
    # Window 1 is the diagonal only.
    np.testing.assert_array_equal(
        reference_mask(3, 3, sliding_window=1), np.eye(3, dtype=bool)[None]
    )


def test_mask_causal_and_sliding_window():
    expected = np.array(
        [[[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]],
        dtype=bool,
    )
    got = reference_mask(4, 4, use_causal_mask=True, sliding_window=2)
    np.testing.assert_array_equal(got, expected)


def test_mask_merge_with_batch():
    query_mask = np.array([[1, 1], [1, 0]])  # ints, cast to bool
    value_mask = np.array([[True, True, False], [True, True, True]])
    key_mask = np.array([[True, True, True], [False, True, True]])
    attention_mask = np.ones((2, 2, 3), dtype=np.float32)
    attention_mask[0, 0, 1] = 0.0
    got = reference_mask(
        2,
        3,
        query_mask=query_mask,
        value_mask=value_mask,
        key_mask=key_mask,
        attention_mask=attention_mask,
        use_causal_mask=True,
    )
    expected = np.array(
        [
            [[1, 0, 0], [1, 1, 0]],  # b=0: causal, attention_mask drops (0, 1), value drops s=2
            [[0, 0, 0], [0, 0, 0]],  # b=1: key 0 dropped; query 1 dropped; query 0 sees only s=0
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(got, expected)
    # Batch-free masks broadcast to `batch` when it is given.
    got = reference_mask(2, 2, batch=3, use_causal_mask=True)
    assert got.shape == (3, 2, 2)
    np.testing.assert_array_equal(got[2], [[1, 0], [1, 1]])


# ----------------------------------------------------------------------------------------------
# Parity with keras.layers.GroupQueryAttention.
# ----------------------------------------------------------------------------------------------

BASE = dict(B=2, T=4, S=4, D=8, Dk=None, N=4, K=2, H=3, use_bias=True, use_gate=False)

# Each config overrides BASE; "masks" names which masks to pass. Seeded per config index.
CONFIGS = [
    dict(name="plain_T_ne_S", T=3, S=5),
    dict(name="key_given_no_bias", Dk=6, T=5, S=3, use_bias=False),
    dict(name="gate_key_given", Dk=5, use_gate=True),
    dict(name="gate_no_bias", use_gate=True, use_bias=False, N=6, K=3, H=2),
    dict(name="mqa_causal_T_gt_S", N=3, K=1, T=5, S=3, causal=True),
    dict(name="mha_causal_T_lt_S", N=2, K=2, T=3, S=6, causal=True),
    dict(name="sliding_window", T=6, S=6, window=2),
    dict(name="causal_window_gate", T=6, S=7, causal=True, window=3, use_gate=True),
    dict(name="query_value_masks", T=5, S=6, masks=("query", "value")),
    dict(name="key_attention_masks", Dk=7, T=4, S=5, masks=("key", "attention")),
    dict(name="all_masks_causal", T=5, S=5, causal=True, masks=("query", "value", "key")),
    dict(name="fully_masked_query_row", T=4, S=5, masks=("query",), dead_row=True),
]


def _config(overrides):
    cfg = dict(BASE, causal=False, window=None, masks=(), dead_row=False)
    cfg.update(overrides)
    return cfg


def _random_case(cfg, seed):
    """Float32 inputs and masks for one config; masks as keyword arguments of the Keras call."""
    rng = np.random.default_rng(seed)
    B, T, S, D = cfg["B"], cfg["T"], cfg["S"], cfg["D"]
    query = rng.standard_normal((B, T, D)).astype(np.float32)
    value = rng.standard_normal((B, S, D)).astype(np.float32)
    key = None
    if cfg["Dk"] is not None:
        key = rng.standard_normal((B, S, cfg["Dk"])).astype(np.float32)
    masks = {}
    if "query" in cfg["masks"]:
        masks["query_mask"] = rng.random((B, T)) > 0.3
    if "value" in cfg["masks"]:
        masks["value_mask"] = rng.random((B, S)) > 0.3
    if "key" in cfg["masks"]:
        masks["key_mask"] = rng.random((B, S)) > 0.3
    if "attention" in cfg["masks"]:
        masks["attention_mask"] = rng.random((B, T, S)) > 0.4
    if cfg["dead_row"]:
        masks["query_mask"][0, 1] = False
    return rng, query, value, key, masks


def _keras_layer(cfg, rng, query, value, key):
    """A built Keras layer with random weights (biases nonzero) set from `rng`."""
    layer = keras.layers.GroupQueryAttention(
        head_dim=cfg["H"],
        num_query_heads=cfg["N"],
        num_key_value_heads=cfg["K"],
        use_bias=cfg["use_bias"],
        use_gate=cfg["use_gate"],
        sliding_window=cfg["window"],
    )
    layer.build(query.shape, value.shape, None if key is None else key.shape)
    weights = [(0.5 * rng.standard_normal(w.shape)).astype(np.float32) for w in layer.get_weights()]
    layer.set_weights(weights)
    return layer


def _reference_for(cfg, layer, query, value, key, masks, fully_masked_rows="zero"):
    params = params_from_keras_weights(layer.get_weights(), cfg["use_bias"], cfg["use_gate"])
    mask = reference_mask(
        cfg["T"],
        cfg["S"],
        batch=cfg["B"],
        use_causal_mask=cfg["causal"],
        sliding_window=cfg["window"],
        **masks,
    )
    return reference_gqa(
        params,
        query,
        value,
        key,
        num_query_heads=cfg["N"],
        num_key_value_heads=cfg["K"],
        head_dim=cfg["H"],
        mask=mask,
        use_gate=cfg["use_gate"],
        fully_masked_rows=fully_masked_rows,
    )


def _call_keras(layer, cfg, query, value, key, masks, return_attention_scores):
    # Full float32 matmuls on every platform (GPUs may otherwise use TF32).
    # One jit-compiled call is much faster than eagerly dispatching (and compiling) each op.
    def forward(query, value, key, masks):
        return layer(
            query,
            value,
            key,
            use_causal_mask=cfg["causal"],
            return_attention_scores=return_attention_scores,
            **masks,
        )

    with jax.default_matmul_precision("highest"):
        return jax.jit(forward)(query, value, key, masks)


@pytest.mark.parametrize("index", range(len(CONFIGS)), ids=[c["name"] for c in CONFIGS])
def test_parity_with_keras_scores(index):
    cfg = _config(CONFIGS[index])
    rng, query, value, key, masks = _random_case(cfg, seed=1000 + index)
    layer = _keras_layer(cfg, rng, query, value, key)
    out, scores = _call_keras(layer, cfg, query, value, key, masks, return_attention_scores=True)
    out, scores = np.asarray(out), np.asarray(scores)
    ref = _reference_for(cfg, layer, query, value, key, masks)

    assert scores.shape == ref["probs"].shape == (cfg["B"], cfg["N"], cfg["T"], cfg["S"])
    np.testing.assert_allclose(scores, ref["probs"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, ref["output"], rtol=1e-5, atol=1e-5)

    # Projections against Keras' own sub-layers.
    key_in = value if key is None else key
    np.testing.assert_allclose(layer._query_dense(query), ref["query"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer._key_dense(key_in), ref["key"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer._value_dense(value), ref["value"], rtol=1e-5, atol=1e-5)
    if cfg["use_gate"]:
        np.testing.assert_allclose(layer._gate_dense(query), ref["gate"], rtol=1e-5, atol=1e-5)

    if cfg["dead_row"]:
        # Keras zeroes the scores of a query with no allowed key; its output is the output bias.
        np.testing.assert_array_equal(scores[0, :, 1, :], 0.0)
        bias = layer.get_weights()[-1]
        np.testing.assert_allclose(out[0, 1], bias, rtol=1e-6, atol=1e-6)


FUSED_CONFIGS = [
    dict(name="fused_fully_masked_row", T=4, S=5, masks=("query", "value"), dead_row=True),
    dict(name="fused_causal_only_T_lt_S", T=3, S=5, causal=True, use_gate=True),
    dict(name="fused_causal_only_T_gt_S", T=5, S=3, causal=True, Dk=6),
]


@pytest.mark.parametrize("index", range(len(FUSED_CONFIGS)), ids=[c["name"] for c in FUSED_CONFIGS])
def test_parity_with_keras_fused_path(index):
    """Without return_attention_scores Keras uses jax.nn.dot_product_attention: fully masked
    rows get uniform probabilities there, and causal-only masking uses its is_causal flag."""
    cfg = _config(FUSED_CONFIGS[index])
    rng, query, value, key, masks = _random_case(cfg, seed=2000 + index)
    layer = _keras_layer(cfg, rng, query, value, key)
    out = np.asarray(
        _call_keras(layer, cfg, query, value, key, masks, return_attention_scores=False)
    )
    ref = _reference_for(cfg, layer, query, value, key, masks, fully_masked_rows="uniform")
    np.testing.assert_allclose(out, ref["output"], rtol=1e-5, atol=1e-5)
    if cfg["dead_row"]:
        zero = _reference_for(cfg, layer, query, value, key, masks, fully_masked_rows="zero")
        bias = layer.get_weights()[-1]
        np.testing.assert_allclose(zero["output"][0, 1], bias)
        # The two conventions really differ on the dead row, so the check above means something.
        assert not np.allclose(out[0, 1], bias, rtol=1e-3, atol=1e-3)
