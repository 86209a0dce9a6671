"""Numeric parity of gqa_viz's GroupedQueryAttention with keras.layers.GroupQueryAttention.

Each seeded case draws one random configuration (shapes, heads, bias, gate, causal, sliding
window, masks of every kind and dtype), builds the Keras layer with random weights, copies
them into ours, and compares outputs and attention scores on both of Keras' paths: the explicit
one (``return_attention_scores=True``) and the fused ``dot_product_attention`` one.

Rows with no allowed key ("fully masked rows") are where the two Keras paths disagree: the
explicit path gives them context 0, the fused one averages all keys. gqa_viz gives 0 on both
(its default ``fully_masked_rows="zero"``) and reproduces the fused answer on request
(``fully_masked_rows="uniform"``); see gqa_viz.masks.keras_mask.

The allowed-key mask is recomputed here in NumPy from Keras' rules, independently of gqa_viz.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402

# float32 matmuls default to TF32 on GPUs; parity at 2e-5 needs full precision.
jax.config.update("jax_default_matmul_precision", "highest")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")  # noqa: E402 -- a GPU check may run without Keras (make gpu-check)

from gqa_viz import GroupedQueryAttention, core  # noqa: E402

ATOL, RTOL = 2e-5, 1e-5
N_SEEDS = 40
LAYER_NAME = "gqa"
MASK_KINDS = ("query_mask", "value_mask", "key_mask", "attention_mask")
MASK_DTYPES = ("bool", "int32", "float32")


def close(actual, desired, **kw):
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), np.asarray(desired, np.float64), atol=ATOL, rtol=RTOL, **kw
    )


# ---------------------------------------------------------------------------------------------
# Random configurations.


def draw_case(seed: int) -> dict:
    """One random configuration; a few features cycle with the seed so all are covered."""
    rng = np.random.default_rng(seed)
    K = int(rng.choice([1, 2, 4]))
    N = K * int(rng.choice([1, 2])) if K < 4 else int(rng.choice([4, 8]))
    H = int(rng.integers(1, 9))
    D = int(rng.integers(1, 17))
    B = int(rng.integers(1, 3))
    T = int(rng.integers(1, 10))
    S = int(rng.integers(1, 10))
    if seed % 2 == 0 and T == S:  # at least half the cases have T != S
        S = T % 9 + 1
    with_key = bool(rng.random() < 0.5)
    Dk = int(rng.integers(1, 17)) if with_key and rng.random() < 0.6 else D
    ctor = dict(
        head_dim=H,
        num_query_heads=N,
        num_key_value_heads=K,
        use_bias=bool(rng.random() < 0.7),
        use_gate=bool(seed % 3 == 1 or rng.random() < 0.2),
        sliding_window=None if rng.random() < 0.6 else int(rng.integers(1, 5)),
        # dropout > 0 in inference mode: Keras then takes its explicit path even without scores.
        dropout=0.25 if seed % 10 == 7 else 0.0,
    )
    use_causal = bool(seed % 4 == 2 or rng.random() < 0.25)

    # Masks: seed % 6 picks none, one of each kind, or all four; the dtype cycles too.
    choice = seed % 6
    kinds = [] if choice == 0 else list(MASK_KINDS) if choice == 5 else [MASK_KINDS[choice - 1]]
    dtype = MASK_DTYPES[(seed // 6) % 3]
    masks = {}
    for kind in kinds:
        if kind == "query_mask":
            m = rng.random((B, T)) < 0.75
        elif kind in ("value_mask", "key_mask"):
            m = rng.random((B, S)) < 0.8
        else:
            m = rng.random((B, T, S)) < 0.7
            if seed % 4 == 1:  # force a fully masked row
                m[0, int(rng.integers(T))] = False
        masks[kind] = m.astype(dtype)

    return dict(
        seed=seed,
        ctor=ctor,
        use_causal_mask=use_causal,
        query=rng.normal(size=(B, T, D)).astype("float32"),
        value=rng.normal(size=(B, S, D)).astype("float32"),
        key=rng.normal(size=(B, S, Dk)).astype("float32") if with_key else None,
        masks=masks,
        weight_scale=float(rng.uniform(0.3, 1.0)),
    )


def allowed_keys(case) -> np.ndarray:
    """[B, T, S] bool: which keys each query may attend to, from Keras' rules (rules 1-6)."""
    B, T, _ = case["query"].shape
    S = case["value"].shape[1]
    allowed = np.ones((B, T, S), bool)
    m = case["masks"]
    if "query_mask" in m:
        allowed &= m["query_mask"].astype(bool)[:, :, None]
    for kind in ("value_mask", "key_mask"):
        if kind in m:
            allowed &= m[kind].astype(bool)[:, None, :]
    t = np.arange(T)[:, None]
    s = np.arange(S)[None, :]
    if case["use_causal_mask"]:
        allowed &= s <= t  # top-left aligned
    w = case["ctor"]["sliding_window"]
    if w is not None:
        allowed &= np.abs(t - s) < w
    if "attention_mask" in m:
        allowed &= m["attention_mask"].astype(bool)
    return allowed


CASES = {seed: draw_case(seed) for seed in range(N_SEEDS)}


def call_kwargs(case, **extra):
    return dict(case["masks"], use_causal_mask=case["use_causal_mask"], **extra)


def keras_layer_for(case, name=LAYER_NAME):
    """A built Keras layer with random (nonzero-bias) weights drawn from the case's seed."""
    # Zeros make the build cheap; every weight is overwritten right after.
    layer = keras.layers.GroupQueryAttention(**case["ctor"], name=name, kernel_initializer="zeros")
    layer.build(
        case["query"].shape,
        case["value"].shape,
        None if case["key"] is None else case["key"].shape,
    )
    rng = np.random.default_rng(1000 + case["seed"])
    scale = case["weight_scale"]
    layer.set_weights(
        [(scale * rng.normal(size=w.shape)).astype("float32") for w in layer.get_weights()]
    )
    return layer


def keras_calls(layer, case):
    """Keras' (output, scores) and plain output for the case, jitted via stateless_call.

    The same Keras call code as eager calls, compiled once instead of op by op (eager Keras
    compiles every primitive for every new shape, which makes a wide sweep slow).
    """

    def fn(trainable, non_trainable, query, value, key, masks):
        def call(**kwargs):
            out, _ = layer.stateless_call(
                trainable,
                non_trainable,
                query,
                value,
                key,
                use_causal_mask=case["use_causal_mask"],
                training=False,
                **masks,
                **kwargs,
            )
            return out

        return call(return_attention_scores=True), call()

    return jax.jit(fn)(
        [w.value for w in layer.trainable_variables],
        [w.value for w in layer.non_trainable_variables],
        case["query"],
        case["value"],
        case["key"],
        case["masks"],
    )


def our_layer_for(case, name=LAYER_NAME):
    """Our layer, built for the case's shapes (zeros: its weights are about to be set)."""
    layer = GroupedQueryAttention(**case["ctor"], name=name, kernel_initializer="zeros")
    layer.build(
        case["query"].shape,
        case["value"].shape,
        None if case["key"] is None else case["key"].shape,
    )
    return layer


def test_sweep_covers_every_feature():
    cases = list(CASES.values())
    assert sum(c["query"].shape[1] != c["value"].shape[1] for c in cases) >= N_SEEDS // 2
    assert any(c["key"] is not None and c["key"].shape[-1] != c["query"].shape[-1] for c in cases)
    assert any(c["key"] is None for c in cases)
    for flag in ("use_bias", "use_gate"):
        assert {c["ctor"][flag] for c in cases} == {True, False}
    assert {c["use_causal_mask"] for c in cases} == {True, False}
    assert {c["ctor"]["sliding_window"] for c in cases} >= {None, 1, 2, 3, 4}
    assert {c["ctor"]["dropout"] for c in cases} == {0.0, 0.25}
    assert {c["ctor"]["num_key_value_heads"] for c in cases} == {1, 2, 4}
    assert any(c["ctor"]["num_query_heads"] > c["ctor"]["num_key_value_heads"] for c in cases)
    for kind in MASK_KINDS:
        dtypes = {str(c["masks"][kind].dtype) for c in cases if kind in c["masks"]}
        assert dtypes == set(MASK_DTYPES), (kind, dtypes)
    fully_masked = [c for c in cases if not allowed_keys(c).any(-1).all()]
    assert len(fully_masked) >= 8
    assert any(c["ctor"]["dropout"] == 0.0 for c in fully_masked)
    assert any(c["ctor"]["dropout"] > 0.0 for c in fully_masked)
    assert all(c["query"].shape[0] <= 2 and c["query"].shape[-1] <= 16 for c in cases)
    assert all(c["ctor"]["num_query_heads"] <= 8 for c in cases)


@pytest.mark.parametrize("seed", range(N_SEEDS))
def test_matches_keras(seed):
    case = CASES[seed]
    q, v, k = case["query"], case["value"], case["key"]
    kl = keras_layer_for(case)
    ours = our_layer_for(case)

    # Same weights, same order, same shapes, same variable paths.
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in kl.get_weights()]
    assert ours.weight_names == [w.path for w in kl.weights]
    ours.set_weights(kl.get_weights())
    for a, b in zip(ours.get_weights(), kl.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    allowed = allowed_keys(case)  # [B, T, S]
    has_key = allowed.any(-1)  # [B, T]

    # Explicit path: equal everywhere, fully masked rows included.
    (k_out, k_scores), k_plain = keras_calls(kl, case)
    k_plain = np.asarray(k_plain)
    o_out, o_scores = ours(q, v, k, **call_kwargs(case, return_attention_scores=True))
    assert o_out.shape == k_out.shape and o_scores.shape == k_scores.shape
    close(o_scores, k_scores)
    close(o_out, k_out)
    # Our independent mask agrees with where Keras puts probability mass.
    hidden = np.broadcast_to(~allowed[:, None], k_scores.shape)  # [B, N, T, S]
    assert not np.asarray(k_scores)[hidden].any()
    assert not np.asarray(o_scores)[hidden].any()
    row_sums = np.asarray(k_scores).sum(-1)  # [B, N, T]
    close(row_sums, np.broadcast_to(has_key[:, None], row_sums.shape).astype(float))

    # Output-only path.
    o_plain = np.asarray(ours(q, v, k, **call_kwargs(case)))
    close(o_plain[has_key], k_plain[has_key])
    close(o_plain, o_out)  # ours does not depend on whether scores were asked for
    if case["ctor"]["dropout"] > 0.0:
        # Keras takes its explicit path here too, so all rows agree.
        close(o_plain, k_plain)
    else:
        if not has_key.all():  # the two Keras paths really do disagree on those rows
            assert not np.allclose(k_plain[~has_key], np.asarray(k_out)[~has_key], atol=1e-3)
        uniform = core.attention(
            ours.params,
            q,
            v,
            k,
            spec=ours.spec,
            fully_masked_rows="uniform",
            **call_kwargs(case),
        )
        close(uniform, k_plain)


@pytest.mark.parametrize("seed", range(0, N_SEEDS, 8))
def test_our_weights_load_into_keras(seed):
    # The other direction: weights set in ours, loaded into Keras, Keras called eagerly.
    case = CASES[seed]
    q, v, k = case["query"], case["value"], case["key"]
    ours = our_layer_for(case)
    rng = np.random.default_rng(2000 + seed)
    ours.set_weights([rng.normal(size=w.shape).astype("float32") for w in ours.get_weights()])
    o_out, o_scores = ours(q, v, k, **call_kwargs(case, return_attention_scores=True))
    kl = keras.layers.GroupQueryAttention(
        **case["ctor"], name=LAYER_NAME, kernel_initializer="zeros"
    )
    kl.build(q.shape, v.shape, None if k is None else k.shape)
    kl.set_weights(ours.get_weights())
    for a, b in zip(kl.get_weights(), ours.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    k_out, k_scores = kl(q, v, k, **call_kwargs(case, return_attention_scores=True))
    close(o_scores, k_scores)
    close(o_out, k_out)


@pytest.mark.parametrize("use_gate", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
def test_weight_names_and_shapes_match_keras(use_bias, use_gate):
    kw = dict(head_dim=3, num_query_heads=4, num_key_value_heads=2, name="layer_x")
    kw.update(use_bias=use_bias, use_gate=use_gate, kernel_initializer="zeros")
    kl = keras.layers.GroupQueryAttention(**kw)
    kl.build((1, 2, 5), (1, 3, 5), (1, 3, 7))
    ours = GroupedQueryAttention(**kw)
    ours.build((1, 2, 5), (1, 3, 5), (1, 3, 7))
    assert ours.weight_names == [w.path for w in kl.weights]
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in kl.get_weights()]
    assert len(ours.weight_names) == (5 if use_gate else 4) * (2 if use_bias else 1)


def make_pair(kw, query_shape, value_shape, key_shape=None, seed=0, name=LAYER_NAME):
    """A Keras layer and ours, built for these shapes, sharing the same random weights."""
    kl = keras.layers.GroupQueryAttention(**kw, name=name, kernel_initializer="zeros")
    kl.build(query_shape, value_shape, key_shape)
    rng = np.random.default_rng(seed)
    kl.set_weights([rng.normal(size=w.shape).astype("float32") for w in kl.get_weights()])
    ours = GroupedQueryAttention(**kw, name=name, kernel_initializer="zeros")
    ours.build(query_shape, value_shape, key_shape)
    ours.set_weights(kl.get_weights())
    return kl, ours


def test_non_binary_float_attention_mask():
    # Keras' explicit path keeps numeric attention_mask entries > 0.5 when attention_mask is
    # the only mask (its Softmax rule), but casts to bool (nonzero) once another mask joins.
    rng = np.random.default_rng(5)
    q = rng.normal(size=(2, 3, 4)).astype("float32")
    v = rng.normal(size=(2, 5, 4)).astype("float32")
    am = rng.choice([0.0, 0.3, 0.7, 1.0, -1.0], size=(2, 3, 5)).astype("float32")
    am[1] = rng.choice([0.0, 0.7, 1.0, 2.0], size=(3, 5))  # batch 1: nonzero iff > 0.5
    am[:, :, 0] = 1.0
    kw = dict(head_dim=2, num_query_heads=2, num_key_value_heads=1)
    kl, ours = make_pair(kw, q.shape, v.shape, seed=5)
    for extra in ({}, {"value_mask": np.ones((2, 5), bool)}):
        k_out, k_scores = kl(q, v, attention_mask=am, return_attention_scores=True, **extra)
        o_out, o_scores = ours(q, v, attention_mask=am, return_attention_scores=True, **extra)
        close(o_scores, k_scores)
        close(o_out, k_out)
        # Without scores ours keeps the same reading of the mask (output independent of
        # return_attention_scores); Keras' fused path casts to bool (nonzero) instead, so the
        # two agree wherever both readings agree, and everywhere once another mask is present.
        o_plain = np.asarray(ours(q, v, attention_mask=am, **extra))
        k_plain = np.asarray(kl(q, v, attention_mask=am, **extra))
        close(o_plain, o_out)
        same_reading = ((am != 0) == (am > 0.5)).all(-1)  # [B, T]
        if extra:
            same_reading[:] = True
        assert same_reading.any() and (extra or not same_reading.all())
        close(o_plain[same_reading], k_plain[same_reading])


# ---------------------------------------------------------------------------------------------
# Dropout in training mode.

DROP_KW = dict(head_dim=4, num_query_heads=4, num_key_value_heads=2, dropout=0.3)


def _inputs(B=2, T=6, S=7, D=8, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(B, T, D)).astype("float32"),
        rng.normal(size=(B, S, D)).astype("float32"),
    )


def test_dropout_reproducible_for_a_seed_and_fresh_each_call():
    q, v = _inputs()
    a = GroupedQueryAttention(**DROP_KW, seed=7)
    b = GroupedQueryAttention(**DROP_KW, seed=7)
    a1 = np.asarray(a(q, v, training=True))
    b1 = np.asarray(b(q, v, training=True))
    np.testing.assert_array_equal(a1, b1)
    a2 = np.asarray(a(q, v, training=True))
    assert not np.allclose(a1, a2)
    b2 = np.asarray(b(q, v, training=True))
    np.testing.assert_array_equal(a2, b2)  # the streams stay in step
    # Inference is deterministic and differs from training.
    i1 = np.asarray(a(q, v, training=False))
    np.testing.assert_array_equal(i1, np.asarray(a(q, v)))
    assert not np.allclose(i1, a1)
    # Another seed drops differently.
    c = GroupedQueryAttention(**DROP_KW, seed=8)
    c.build(q.shape, v.shape)
    c.set_weights(a.get_weights())
    assert not np.allclose(np.asarray(c(q, v, training=True)), a1)


def test_dropout_scores_are_pre_dropout_probabilities_like_keras():
    q, v = _inputs()
    kl, ours = make_pair(dict(DROP_KW, seed=3), q.shape, v.shape, seed=3)
    _, k_scores = kl(q, v, return_attention_scores=True, training=True)
    o_out, o_scores = ours(q, v, return_attention_scores=True, training=True)
    _, o_scores_inf = ours(q, v, return_attention_scores=True, training=False)
    close(o_scores, k_scores)
    np.testing.assert_array_equal(np.asarray(o_scores), np.asarray(o_scores_inf))
    close(np.asarray(o_scores).sum(-1), 1.0)
    # ...while the output itself did get dropout.
    o_out_inf = ours(q, v, training=False)
    assert not np.allclose(np.asarray(o_out), np.asarray(o_out_inf), atol=1e-4)
    # In inference mode Keras and ours agree on the output too (dropout > 0: explicit path).
    close(ours(q, v, training=False), kl(q, v, training=False))


def test_dropout_drops_the_expected_fraction_and_rescales():
    q, v = _inputs(B=2, T=64, S=64, D=8, seed=1)
    ours = GroupedQueryAttention(**DROP_KW, seed=11)
    tr = ours.trace(q, v, training=True)
    probs, dropped = np.asarray(tr.probs), np.asarray(tr.dropped_probs)
    assert probs.shape == dropped.shape == (2, 4, 64, 64)
    positive = probs > 0
    assert positive.sum() > 30_000
    zeroed = (dropped == 0) & positive
    frac = zeroed.sum() / positive.sum()
    assert abs(frac - 0.3) < 0.05, frac
    kept = positive & ~zeroed
    np.testing.assert_allclose(dropped[kept], probs[kept] / 0.7, rtol=1e-6)
    # Without training, nothing is dropped.
    tr_inf = ours.trace(q, v, training=False)
    np.testing.assert_array_equal(np.asarray(tr_inf.dropped_probs), np.asarray(tr_inf.probs))


# ---------------------------------------------------------------------------------------------
# Flash attention.

FLASH_KW = dict(head_dim=4, num_query_heads=2, num_key_value_heads=1)


def test_flash_attention_with_dropout_raises_like_keras():
    with pytest.raises(ValueError) as k_err:
        keras.layers.GroupQueryAttention(**FLASH_KW, flash_attention=True, dropout=0.1)
    with pytest.raises(ValueError) as o_err:
        GroupedQueryAttention(**FLASH_KW, flash_attention=True, dropout=0.1)
    assert str(o_err.value) == str(k_err.value)
    assert "flash attention" in str(o_err.value)


def test_flash_attention_with_scores_raises_like_keras():
    q, v = _inputs(B=1, T=3, S=3, D=8)
    kl = keras.layers.GroupQueryAttention(
        **FLASH_KW, flash_attention=True, kernel_initializer="zeros"
    )
    with pytest.raises(ValueError) as k_err:
        # Keras checks this in _compute_attention, before anything device-specific.
        kl(q, v, return_attention_scores=True)
    ours = GroupedQueryAttention(**FLASH_KW, flash_attention=True)
    with pytest.raises(ValueError) as o_err:
        ours(q, v, return_attention_scores=True)
    assert "flash attention" in str(o_err.value)
    # Keras wraps the message in its call context; the message itself is the same.
    assert str(o_err.value) in str(k_err.value)
    with pytest.raises(ValueError, match="flash attention"):
        ours.trace(q, v, return_attention_scores=True)


def test_flash_attention_output_matches_non_flash():
    # Keras itself needs cuDNN for flash_attention=True; ours runs the fused XLA kernel on CPU
    # (and falls back to it on GPU), so it must give the non-flash numbers, which the sweep
    # above checks against Keras.
    q, v = _inputs(B=2, T=5, S=6, D=8)
    plain = GroupedQueryAttention(**FLASH_KW, name=LAYER_NAME, kernel_initializer="zeros")
    plain.build(q.shape, v.shape)
    plain.set_weights(random_weights_like(plain, seed=2))
    ours = GroupedQueryAttention(**FLASH_KW, name=LAYER_NAME, flash_attention=True)
    ours.build(q.shape, v.shape)
    ours.set_weights(plain.get_weights())
    close(ours(q, v), plain(q, v))
    close(ours(q, v, use_causal_mask=True), plain(q, v, use_causal_mask=True))
    close(ours(q, v, value_mask=np.ones((2, 6), bool)), plain(q, v))


def random_weights_like(layer, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]
