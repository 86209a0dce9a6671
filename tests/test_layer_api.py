"""The Keras API surface of gqa_viz.GroupedQueryAttention, checked against Keras 3.15.1.

Config (get_config/from_config in both directions), weights (files, set/get, counts),
losses (regularizers), constraints, initializers, output shapes, dtypes, and the error
messages for every way a call can be wrong.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")  # noqa: E402 -- a GPU check may run without Keras (make gpu-check)

from gqa_viz import GroupedQueryAttention, GroupQueryAttention  # noqa: E402

NAME = "gqa_api"
KW = dict(head_dim=3, num_query_heads=4, num_key_value_heads=2)
B, T, S, D = 2, 3, 4, 6


def inputs(seed=0, b=B, t=T, s=S, d=D):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(b, t, d)).astype("float32"),
        rng.normal(size=(b, s, d)).astype("float32"),
    )


def random_weights(layer, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.normal(size=w.shape)).astype("float32") for w in layer.get_weights()]


def keras_and_ours(seed=0, q_shape=(B, T, D), v_shape=(B, S, D), **kw):
    """Built Keras and gqa_viz layers (same name and arguments) with the same random weights."""
    args = dict(KW, name=NAME)
    args.update(kw)
    kl = keras.layers.GroupQueryAttention(**args)
    kl.build(q_shape, v_shape)
    kl.set_weights(random_weights(kl, seed))
    ours = GroupedQueryAttention(**args)
    ours.build(q_shape, v_shape)
    ours.set_weights(kl.get_weights())
    return kl, ours


def test_public_names_are_one_class():
    assert GroupQueryAttention is GroupedQueryAttention
    import gqa_viz

    assert "GroupQueryAttention" in gqa_viz.__all__
    assert "GroupedQueryAttention" in gqa_viz.__all__


# ---------------------------------------------------------------------------------------------
# Config.

CONFIG_CASES = [
    {},
    dict(kernel_regularizer="l1", bias_regularizer="l2", activity_regularizer="l2"),
    dict(kernel_regularizer="L2", activity_regularizer="l1"),
    dict(kernel_constraint="max_norm", bias_constraint="non_neg"),
    dict(kernel_constraint="unit_norm", bias_constraint="max_norm"),
    dict(kernel_constraint="non_neg"),
    dict(kernel_initializer="he_normal", bias_initializer="random_normal"),
    dict(kernel_initializer="random_normal"),
    dict(kernel_initializer="orthogonal", bias_initializer="ones"),
    dict(kernel_initializer="glorot_normal", bias_initializer="zeros"),
    dict(kernel_initializer="lecun_uniform", bias_initializer="random_uniform"),
    dict(kernel_initializer="he_uniform", bias_initializer="truncated_normal"),
    dict(kernel_initializer="variance_scaling"),
    dict(kernel_initializer={"class_name": "Constant", "config": {"value": 0.5}}),
    dict(
        kernel_initializer={
            "class_name": "VarianceScaling",
            "config": {"scale": 2.0, "mode": "fan_out", "distribution": "uniform", "seed": 3},
        }
    ),
    dict(kernel_regularizer={"class_name": "L1L2", "config": {"l1": 0.1, "l2": 0.2}}),
    dict(kernel_constraint={"class_name": "MinMaxNorm", "config": {"min_value": 0.5}}),
    dict(sliding_window=3),
    dict(sliding_window=1, use_gate=True),
    dict(use_gate=True, use_bias=False),
    dict(seed=1234),
    dict(dropout=0.25, seed=5),
    dict(dtype="mixed_bfloat16"),
    dict(dtype="bfloat16"),
    dict(dtype="float16"),
    dict(dtype="mixed_float16"),
    dict(dtype="float32"),
    dict(trainable=False),
    dict(
        kernel_regularizer="l2",
        bias_regularizer="l1",
        kernel_constraint="max_norm",
        kernel_initializer="he_normal",
        sliding_window=2,
        use_gate=True,
        seed=9,
        dtype="mixed_bfloat16",
    ),
]


def _case_id(case):
    return (
        "-".join(
            f"{k}={v if not isinstance(v, dict) else v['class_name']}" for k, v in case.items()
        )
        or "defaults"
    )


@pytest.mark.parametrize("case", CONFIG_CASES, ids=_case_id)
def test_get_config_equals_keras(case):
    args = dict(KW, name=NAME, **case)
    keras_config = keras.layers.GroupQueryAttention(**args).get_config()
    ours = GroupedQueryAttention(**args)
    assert ours.get_config() == keras_config

    # Both directions of from_config, and a round trip each.
    from_keras = GroupedQueryAttention.from_config(keras_config)
    assert from_keras.get_config() == keras_config
    assert not from_keras.built
    into_keras = keras.layers.GroupQueryAttention.from_config(ours.get_config())
    assert into_keras.get_config() == ours.get_config()
    again = GroupedQueryAttention.from_config(into_keras.get_config())
    assert again.get_config() == keras_config


def test_from_config_gives_a_working_equal_layer():
    q, v = inputs()
    kl, ours = keras_and_ours(use_gate=True, sliding_window=2)
    clone = GroupedQueryAttention.from_config(ours.get_config())
    clone.build(q.shape, v.shape)
    clone.set_weights(ours.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(q, v)), np.asarray(ours(q, v)))
    keras_clone = keras.layers.GroupQueryAttention.from_config(ours.get_config())
    keras_clone.build(q.shape, v.shape)
    keras_clone.set_weights(ours.get_weights())
    np.testing.assert_allclose(keras_clone(q, v), ours(q, v), atol=2e-5, rtol=1e-5)


def test_config_accepts_keras_dtype_policy_object():
    policy = keras.DTypePolicy("mixed_bfloat16")
    ours = GroupedQueryAttention(**KW, name=NAME, dtype=policy)
    kl = keras.layers.GroupQueryAttention(**KW, name=NAME, dtype=policy)
    assert ours.get_config() == kl.get_config()


# ---------------------------------------------------------------------------------------------
# Weight files.


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_weights_file_round_trip(tmp_path, suffix):
    q, v = inputs()
    key = np.random.default_rng(1).normal(size=(B, S, 5)).astype("float32")
    ours = GroupedQueryAttention(**KW, use_gate=True, seed=3, bias_initializer="random_normal")
    out = np.asarray(ours(q, v, key))
    path = tmp_path / f"w{suffix}"
    ours.save_weights(path)

    fresh = GroupedQueryAttention(**KW, use_gate=True, seed=99)
    assert not fresh.built
    fresh.load_weights(path)  # builds from the file's shapes
    assert fresh.built
    for a, b in zip(fresh.get_weights(), ours.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(fresh(q, v, key)), out)

    built = GroupedQueryAttention(**KW, use_gate=True, seed=100)
    built.build(q.shape, v.shape, key.shape)
    built.load_weights(str(path))  # str paths too
    np.testing.assert_array_equal(np.asarray(built(q, v, key)), out)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_weights_file_is_named_by_keras_sublayer_paths(tmp_path, suffix):
    ours = GroupedQueryAttention(**KW, name=NAME, seed=0)
    ours.build((B, T, D), (B, S, D))
    path = tmp_path / f"w{suffix}"
    ours.save_weights(path)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            names = list(f.files)
    else:
        from safetensors.numpy import load_file

        names = list(load_file(str(path)))
    expected = [n.removeprefix(f"{NAME}/") for n in ours.weight_names]
    assert sorted(names) == sorted(expected)


def _save_raw(path, tensors):
    if str(path).endswith(".npz"):
        np.savez(path, **tensors)
    else:
        from safetensors.numpy import save_file

        save_file(tensors, str(path))


def _tensors(layer):
    return {n.split("/", 1)[1]: w for n, w in zip(layer.weight_names, layer.get_weights())}


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("drop", ["value/kernel", "attention_output/bias", "query/kernel"])
def test_load_missing_tensor_raises_naming_it(tmp_path, suffix, drop):
    src = GroupedQueryAttention(**KW, seed=0)
    src.build((B, T, D), (B, S, D))
    tensors = _tensors(src)
    del tensors[drop]
    path = tmp_path / f"w{suffix}"
    _save_raw(path, tensors)
    for target_built in (False, True):
        target = GroupedQueryAttention(**KW, seed=1)
        if target_built:
            target.build((B, T, D), (B, S, D))
        with pytest.raises(ValueError, match=drop):
            target.load_weights(path)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize(
    "name, shape",
    [("key/bias", (2, 4)), ("query/kernel", (D, 5, 3)), ("attention_output/kernel", (4, 3, 7))],
)
def test_load_wrongly_shaped_tensor_raises_naming_it(tmp_path, suffix, name, shape):
    src = GroupedQueryAttention(**KW, seed=0)
    src.build((B, T, D), (B, S, D))
    tensors = _tensors(src)
    tensors[name] = np.zeros(shape, "float32")
    path = tmp_path / f"w{suffix}"
    _save_raw(path, tensors)
    for target_built in (False, True):
        target = GroupedQueryAttention(**KW, seed=1)
        if target_built:
            target.build((B, T, D), (B, S, D))
        with pytest.raises(ValueError, match=name) as err:
            target.load_weights(path)
        assert str(shape) in str(err.value)


def test_load_unexpected_tensor_raises_naming_it(tmp_path):
    src = GroupedQueryAttention(**KW, seed=0)
    src.build((B, T, D), (B, S, D))
    tensors = _tensors(src)
    tensors["gate/kernel"] = np.zeros((D, 4, 3), "float32")
    path = tmp_path / "w.npz"
    _save_raw(path, tensors)
    target = GroupedQueryAttention(**KW)
    with pytest.raises(ValueError, match="gate/kernel"):
        target.load_weights(path)


def test_load_weights_rejects_unknown_suffix(tmp_path):
    ours = GroupedQueryAttention(**KW, seed=0)
    ours.build((B, T, D), (B, S, D))
    with pytest.raises(ValueError, match=r"\.npz or \.safetensors"):
        ours.save_weights(tmp_path / "w.pkl")
    with pytest.raises(ValueError, match=r"\.npz or \.safetensors"):
        ours.load_weights(tmp_path / "w.h5")


UNPICKLED: list[str] = []


def _tripwire(tag):
    UNPICKLED.append(tag)
    return tag


class _Payload:
    def __reduce__(self):
        return (_tripwire, ("unpickled!",))


def test_npz_load_never_unpickles(tmp_path):
    src = GroupedQueryAttention(**KW, seed=0)
    src.build((B, T, D), (B, S, D))
    tensors = _tensors(src)
    tensors["query/kernel"] = np.array([_Payload()], dtype=object)
    path = tmp_path / "evil.npz"
    np.savez(path, allow_pickle=True, **tensors)
    UNPICKLED.clear()
    for target_built in (False, True):
        target = GroupedQueryAttention(**KW, seed=1)
        if target_built:
            target.build((B, T, D), (B, S, D))
        with pytest.raises(ValueError):
            target.load_weights(path)
    assert UNPICKLED == []


# ---------------------------------------------------------------------------------------------
# Losses.

LOSS_CASES = [
    dict(kernel_regularizer="l2"),
    dict(bias_regularizer="l1"),
    dict(kernel_regularizer="l1", bias_regularizer="l2"),
    dict(activity_regularizer="l2"),
    dict(activity_regularizer="l1", use_gate=True),
    dict(kernel_regularizer="l1", bias_regularizer="l2", activity_regularizer="l2", use_gate=True),
    dict(kernel_regularizer="l2", activity_regularizer="l1", use_bias=False),
    dict(
        kernel_regularizer={"class_name": "L1L2", "config": {"l1": 0.1, "l2": 0.3}},
        activity_regularizer={"class_name": "L2", "config": {"l2": 0.5}},
        use_gate=True,
    ),
]


@pytest.mark.parametrize("with_scores", [False, True])
@pytest.mark.parametrize("case", LOSS_CASES, ids=_case_id)
def test_losses_equal_keras(case, with_scores):
    q, v = inputs(3)
    kl, ours = keras_and_ours(seed=4, **case)
    # Before any call: weight penalties only.
    np.testing.assert_allclose(
        [float(x) for x in ours.losses], [float(x) for x in kl.losses], rtol=1e-5
    )
    for _ in range(2):  # activity losses are replaced on each call, not accumulated
        kl(q, v, return_attention_scores=with_scores)
        ours(q, v, return_attention_scores=with_scores)
        k_losses = [float(x) for x in kl.losses]
        o_losses = [float(x) for x in ours.losses]
        assert len(o_losses) == len(k_losses)
        np.testing.assert_allclose(o_losses, k_losses, rtol=1e-5)


def test_losses_empty_without_regularizers():
    q, v = inputs()
    kl, ours = keras_and_ours()
    kl(q, v)
    ours(q, v)
    assert ours.losses == [] == kl.losses


# ---------------------------------------------------------------------------------------------
# Constraints.


@pytest.mark.parametrize(
    "kernel_constraint, bias_constraint",
    [("max_norm", "non_neg"), ("unit_norm", None), ("non_neg", "unit_norm"), (None, "max_norm")],
)
@pytest.mark.parametrize("use_gate", [False, True])
def test_apply_constraints_equals_keras(kernel_constraint, bias_constraint, use_gate):
    kw = dict(
        kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, use_gate=use_gate
    )
    kl, ours = keras_and_ours(seed=6, **kw)
    kl.set_weights(random_weights(kl, 7, scale=3.0))  # big enough for max_norm to bite
    ours.set_weights(kl.get_weights())
    # set_weights never applies constraints (neither does Keras').
    for a, b in zip(ours.get_weights(), kl.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    before = ours.get_weights()

    ours.apply_constraints()
    kc = keras.constraints.get(kernel_constraint)
    bc = keras.constraints.get(bias_constraint)
    for name, w0, w in zip(ours.weight_names, before, ours.get_weights(), strict=True):
        c = kc if name.endswith("kernel") else bc
        expected = w0 if c is None else np.asarray(c(w0))
        np.testing.assert_allclose(w, expected, rtol=1e-6, atol=1e-7, err_msg=name)

    # Keras applies the constraints after an optimizer update; a zero step shows what it does.
    opt = keras.optimizers.SGD(learning_rate=0.0)
    opt.apply(
        [np.zeros(w.shape, "float32") for w in kl.trainable_variables], kl.trainable_variables
    )
    for name, a, b in zip(ours.weight_names, ours.get_weights(), kl.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)


def test_non_neg_constraint_not_applied_by_set_weights():
    ours = GroupedQueryAttention(**KW, kernel_constraint="non_neg", seed=0)
    ours.build((B, T, D), (B, S, D))
    ws = [-np.abs(w) - 1.0 for w in ours.get_weights()]
    ours.set_weights(ws)
    assert all((w < 0).all() for w in ours.get_weights())
    ours.apply_constraints()
    kernels = [w for n, w in zip(ours.weight_names, ours.get_weights()) if n.endswith("kernel")]
    biases = [w for n, w in zip(ours.weight_names, ours.get_weights()) if n.endswith("bias")]
    assert all((k == 0).all() for k in kernels)
    assert all((b < 0).all() for b in biases)  # no bias constraint


def test_apply_constraints_before_build_raises():
    with pytest.raises(ValueError, match="build"):
        GroupedQueryAttention(**KW, kernel_constraint="non_neg").apply_constraints()


# ---------------------------------------------------------------------------------------------
# Initializers.


def test_seeded_layers_are_reproducible():
    def weights(seed, **kw):
        layer = GroupedQueryAttention(**KW, seed=seed, bias_initializer="random_normal", **kw)
        layer.build((B, T, D), (B, S, D))
        return layer.get_weights()

    a, b, c = weights(1), weights(1), weights(2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, z in zip(a, c, strict=True):
        assert not np.array_equal(x, z)
    # Within one layer, weights of the same shape still differ (key vs value kernel).
    assert not np.array_equal(a[2], a[4])
    # Unseeded layers differ.
    d, e = weights(None), weights(None)
    assert not np.array_equal(d[0], e[0])


def test_initializer_with_its_own_seed_repeats_like_keras():
    init = {"class_name": "GlorotUniform", "config": {"seed": 3}}
    kl = keras.layers.GroupQueryAttention(**KW, kernel_initializer=init)
    kl.build((B, T, D), (B, S, D))
    ours = GroupedQueryAttention(**KW, kernel_initializer=init)
    ours.build((B, T, D), (B, S, D))
    kw_, ow = kl.get_weights(), ours.get_weights()
    # key and value kernels have the same shape: a seeded initializer gives them equal values.
    np.testing.assert_array_equal(kw_[2], kw_[4])
    np.testing.assert_array_equal(ow[2], ow[4])
    other = GroupedQueryAttention(**KW, kernel_initializer=init, seed=77)
    other.build((B, T, D), (B, S, D))
    np.testing.assert_array_equal(other.get_weights()[0], ow[0])  # the layer seed does not win


# Big kernels for sample statistics: D=64, N=8, K=2, H=32.
BIG = dict(head_dim=32, num_query_heads=8, num_key_value_heads=2)
BIG_D, BIG_DK = 64, 48


def keras_fans():
    """Keras 3.15.1's fans for each kernel: EinsumDense passes its input/output axes."""
    N, K, H, D, Dk = 8, 2, 32, BIG_D, BIG_DK
    return {
        "query/kernel": (D, N * H),  # [D, N, H]: input axis m, output axes u, h
        "key/kernel": (Dk, K * H),
        "value/kernel": (D, K * H),
        "attention_output/kernel": (N * H, D),  # [N, H, D]
    }


def _big_layers(init):
    keras.utils.set_random_seed(0)  # Keras' draws are unseeded otherwise
    kl = keras.layers.GroupQueryAttention(**BIG, name=NAME, kernel_initializer=init)
    kl.build((1, 1, BIG_D), (1, 1, BIG_D), (1, 1, BIG_DK))
    ours = GroupedQueryAttention(**BIG, name=NAME, kernel_initializer=init, seed=0)
    ours.build((1, 1, BIG_D), (1, 1, BIG_D), (1, 1, BIG_DK))
    kernels = lambda layer, ws: {
        n.split("/", 1)[1]: w for n, w in zip(layer, ws) if n.endswith("kernel")
    }
    return (
        kernels([w.path for w in kl.weights], kl.get_weights()),
        kernels(ours.weight_names, ours.get_weights()),
    )


VS = {  # name: (scale, mode, distribution)
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "normal"),
    "variance_scaling": (1.0, "fan_in", "normal"),
}


@pytest.mark.parametrize("init", list(VS))
def test_variance_scaling_initializer_statistics(init):
    scale, mode, dist = VS[init]
    keras_kernels, our_kernels = _big_layers(init)
    # Keras first (it pins down the fans), then ours.
    for who, kernels in (("keras", keras_kernels), ("ours", our_kernels)):
        for name, (fan_in, fan_out) in keras_fans().items():
            fan = {"fan_in": fan_in, "fan_avg": (fan_in + fan_out) / 2}[mode]
            std = math.sqrt(scale / fan)
            w = kernels[name]
            msg = f"{who} {name} {w.shape}"
            assert abs(w.mean()) < 0.1 * std, msg
            np.testing.assert_allclose(w.std(), std, rtol=0.06, err_msg=msg)
            if dist == "uniform":
                bound = math.sqrt(3.0) * std  # e.g. glorot: sqrt(6 / (fan_in + fan_out))
                assert np.abs(w).max() <= bound * (1 + 1e-6), msg
                assert np.abs(w).max() > 0.99 * bound, msg
            else:  # truncated at 2 pre-truncation stddevs
                assert np.abs(w).max() <= 2 * std / 0.87962566103423978 * (1 + 1e-6), msg


def test_glorot_uniform_bound_for_query_kernel():
    # The brief's headline case, spelled out: query kernel [D, N, H] = [64, 8, 32].
    _, our_kernels = _big_layers("glorot_uniform")
    w = our_kernels["query/kernel"]
    bound = math.sqrt(6.0 / (BIG_D + 8 * 32))
    assert np.abs(w).max() <= bound
    np.testing.assert_allclose(w.std(), bound / math.sqrt(3.0), rtol=0.05)


@pytest.mark.parametrize(
    "init, std",
    [
        ("random_normal", 0.05),
        ("random_uniform", 0.1 / math.sqrt(12.0)),
        ("truncated_normal", 0.05 * 0.87962566103423978),
    ],
)
def test_fixed_scale_initializer_statistics(init, std):
    keras_kernels, our_kernels = _big_layers(init)
    for name in keras_fans():
        for who, w in (("keras", keras_kernels[name]), ("ours", our_kernels[name])):
            msg = f"{who} {name}"
            np.testing.assert_allclose(w.std(), std, rtol=0.06, err_msg=msg)
            assert abs(w.mean()) < 0.1 * std, msg
            if init == "random_uniform":
                assert np.abs(w).max() <= 0.05, msg
            if init == "truncated_normal":
                assert np.abs(w).max() <= 0.1 * (1 + 1e-6), msg


def test_orthogonal_initializer():
    keras_kernels, our_kernels = _big_layers("orthogonal")
    for name in keras_fans():
        for who, w in (("keras", keras_kernels[name]), ("ours", our_kernels[name])):
            flat = w.reshape(-1, w.shape[-1])  # Keras flattens all leading axes
            small = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
            np.testing.assert_allclose(
                small, np.eye(len(small)), atol=1e-4, err_msg=f"{who} {name}"
            )


@pytest.mark.parametrize(
    "init, value",
    [
        ("zeros", 0.0),
        ("ones", 1.0),
        ({"class_name": "Constant", "config": {"value": -0.75}}, -0.75),
    ],
)
def test_constant_initializers(init, value):
    kl = keras.layers.GroupQueryAttention(**KW, kernel_initializer=init, bias_initializer=init)
    kl.build((B, T, D), (B, S, D))
    ours = GroupedQueryAttention(**KW, kernel_initializer=init, bias_initializer=init)
    ours.build((B, T, D), (B, S, D))
    for a, b in zip(ours.get_weights(), kl.get_weights(), strict=True):
        np.testing.assert_array_equal(a, np.full(b.shape, value, "float32"))
        np.testing.assert_array_equal(a, b)


def test_callable_initializer():
    calls = []

    def init(shape, dtype=None):
        calls.append(tuple(shape))
        return np.full(shape, 0.25, "float32")

    ours = GroupedQueryAttention(**KW, kernel_initializer=init)
    ours.build((B, T, D), (B, S, D))
    kernels = [w for n, w in zip(ours.weight_names, ours.get_weights()) if n.endswith("kernel")]
    assert all((k == 0.25).all() for k in kernels)
    assert sorted(calls) == sorted(w.shape for w in kernels)
    with pytest.raises(ValueError, match="serialize"):
        ours.get_config()


@pytest.mark.parametrize(
    "arg, bad, known",
    [
        ("kernel_initializer", "glorot_unicorn", "glorot_uniform"),
        ("bias_initializer", "zeroes", "zeros"),
        ("kernel_regularizer", "l3", "l2"),
        ("kernel_constraint", "max_normal", "max_norm"),
        ("bias_constraint", "positive", "non_neg"),
    ],
)
def test_unknown_names_list_known_ones(arg, bad, known):
    with pytest.raises(ValueError) as err:
        GroupedQueryAttention(**KW, **{arg: bad})
    assert bad in str(err.value)
    assert known in str(err.value)


# ---------------------------------------------------------------------------------------------
# Shapes, counts, dtypes.


@pytest.mark.parametrize(
    "shapes",
    [
        ((2, 3, 6), (2, 4, 6), None),
        ((2, 3, 6), (2, 4, 6), (2, 4, 9)),
        ((None, None, 6), (None, 5, 6), None),
        ((1, 7, 16), (1, 7, 16), (1, 7, 16)),
    ],
)
def test_compute_output_shape_matches_keras(shapes):
    kl = keras.layers.GroupQueryAttention(**KW)
    ours = GroupedQueryAttention(**KW)
    assert ours.compute_output_shape(*shapes) == kl.compute_output_shape(*shapes)
    assert tuple(ours.compute_output_shape(*shapes)) == shapes[0]


@pytest.mark.parametrize(
    "shapes",
    [
        ((2, 3, 6), (2, 4, 7), None),
        ((2, 3, 6), (2, 4, 6), (2, 5, 6)),
        ((2, 3, 6), (2, 4, 6), (2, 5, 9)),
    ],
)
def test_compute_output_shape_errors_match_keras(shapes):
    kl = keras.layers.GroupQueryAttention(**KW)
    ours = GroupedQueryAttention(**KW)
    with pytest.raises(ValueError) as k_err:
        kl.compute_output_shape(*shapes)
    with pytest.raises(ValueError) as o_err:
        ours.compute_output_shape(*shapes)
    assert str(o_err.value) == str(k_err.value)


@pytest.mark.parametrize(
    "kw", [{}, dict(use_gate=True), dict(use_bias=False), dict(use_gate=True, use_bias=False)]
)
def test_count_params_equals_keras(kw):
    kl = keras.layers.GroupQueryAttention(**KW, **kw)
    kl.build((B, T, D), (B, S, D), (B, S, 9))
    ours = GroupedQueryAttention(**KW, **kw)
    ours.build((B, T, D), (B, S, D), (B, S, 9))
    assert ours.count_params() == kl.count_params()


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_bfloat16"])
@pytest.mark.parametrize("with_scores", [False, True])
def test_low_precision_dtype_like_keras(dtype, with_scores):
    q, v = inputs(8)
    kl = keras.layers.GroupQueryAttention(**KW, name=NAME, dtype=dtype)
    kl.build(q.shape, v.shape)
    kl.set_weights(random_weights(kl, 8, scale=0.5))
    ours = GroupedQueryAttention(**KW, name=NAME, dtype=dtype)
    ours.build(q.shape, v.shape)
    ours.set_weights(kl.get_weights())
    assert [w.dtype for w in ours.get_weights()] == [w.dtype for w in kl.get_weights()]
    mask = np.random.default_rng(0).random((B, T, S)) < 0.7
    mask[:, :, 0] = True
    k_res = kl(q, v, attention_mask=mask, return_attention_scores=with_scores)
    o_res = ours(q, v, attention_mask=mask, return_attention_scores=with_scores)
    k_res = k_res if with_scores else (k_res,)
    o_res = o_res if with_scores else (o_res,)
    for k, o in zip(k_res, o_res, strict=True):
        assert o.dtype == k.dtype == np.dtype(jax.numpy.bfloat16)
        np.testing.assert_allclose(
            np.asarray(o, np.float32), np.asarray(k, np.float32), atol=3e-2, rtol=3e-2
        )


# ---------------------------------------------------------------------------------------------
# Errors.


def test_heads_not_divisible_raises():
    with pytest.raises(ValueError) as err:
        GroupedQueryAttention(head_dim=4, num_query_heads=6, num_key_value_heads=4)
    assert "6" in str(err.value) and "4" in str(err.value) and "divisible" in str(err.value)
    with pytest.raises(ValueError, match="divisible"):
        keras.layers.GroupQueryAttention(head_dim=4, num_query_heads=6, num_key_value_heads=4)


@pytest.mark.parametrize(
    "arg, value",
    [
        ("num_query_heads", 0),
        ("num_query_heads", -2),
        ("num_key_value_heads", 0),
        ("num_key_value_heads", -1),
        ("head_dim", 0),
        ("head_dim", -3),
    ],
)
def test_nonpositive_sizes_raise(arg, value):
    kw = dict(head_dim=4, num_query_heads=4, num_key_value_heads=2)
    kw[arg] = value
    with pytest.raises(ValueError) as err:
        GroupedQueryAttention(**kw)
    assert arg in str(err.value)
    assert str(value) in str(err.value)


@pytest.mark.parametrize("window", [0, -1, 1.5, True, "3"])
def test_bad_sliding_window_raises(window):
    with pytest.raises(ValueError) as err:
        GroupedQueryAttention(**KW, sliding_window=window)
    assert "sliding_window" in str(err.value)
    assert str(window) in str(err.value)


def test_bad_sliding_window_raises_in_keras_too():
    for window in (0, 1.5):
        with pytest.raises(ValueError, match="sliding_window"):
            keras.layers.GroupQueryAttention(**KW, sliding_window=window)


def _built(**kw):
    layer = GroupedQueryAttention(**KW, seed=0, **kw)
    layer.build((B, T, D), (B, S, D))
    return layer


@pytest.mark.parametrize("when", ["unbuilt", "built"])
def test_query_value_feature_mismatch_raises(when):
    layer = _built() if when == "built" else GroupedQueryAttention(**KW, seed=0)
    q = np.zeros((B, T, D), "float32")
    v = np.zeros((B, S, D + 1), "float32")
    with pytest.raises(ValueError) as err:
        layer(q, v)
    assert str((B, T, D)) in str(err.value) and str((B, S, D + 1)) in str(err.value)


@pytest.mark.parametrize("when", ["unbuilt", "built"])
def test_key_value_length_mismatch_raises(when):
    layer = _built() if when == "built" else GroupedQueryAttention(**KW, seed=0)
    q, v = inputs()
    key = np.zeros((B, S + 2, D), "float32")
    with pytest.raises(ValueError) as err:
        layer(q, v, key)
    assert str((B, S + 2, D)) in str(err.value) and str((B, S, D)) in str(err.value)


@pytest.mark.parametrize("when", ["unbuilt", "built"])
def test_batch_mismatch_raises(when):
    layer = _built() if when == "built" else GroupedQueryAttention(**KW, seed=0)
    q = np.zeros((2, T, D), "float32")
    v = np.zeros((3, S, D), "float32")
    with pytest.raises(ValueError) as err:
        layer(q, v)
    assert "batch" in str(err.value) and "2" in str(err.value) and "3" in str(err.value)


def test_input_feature_size_differs_from_built_raises():
    layer = _built()
    q, v = inputs(d=D + 2)
    with pytest.raises(ValueError) as err:
        layer(q, v)
    assert str(D + 2) in str(err.value)


@pytest.mark.parametrize(
    "mask_name, shape, expected",
    [
        ("query_mask", (B, T + 1), (B, T)),
        ("value_mask", (B, S + 1), (B, S)),
        ("key_mask", (B, S - 1), (B, S)),
        ("attention_mask", (B, T, S + 1), (B, T, S)),
        ("attention_mask", (B, T + 1, S), (B, T, S)),
    ],
)
@pytest.mark.parametrize("with_scores", [False, True])
def test_mask_of_wrong_shape_raises(mask_name, shape, expected, with_scores):
    layer = _built()
    q, v = inputs()
    with pytest.raises(ValueError) as err:
        layer(q, v, **{mask_name: np.ones(shape, bool)}, return_attention_scores=with_scores)
    msg = str(err.value)
    assert mask_name in msg and str(shape) in msg and str(expected) in msg


@pytest.mark.parametrize(
    "mask_name, shape",
    [("query_mask", (B, T)), ("value_mask", (B, S)), ("attention_mask", (B, T, S))],
)
def test_mask_of_wrong_dtype_raises(mask_name, shape):
    layer = _built()
    q, v = inputs()
    mask = np.full(shape, "yes")
    with pytest.raises(ValueError) as err:
        layer(q, v, **{mask_name: mask})
    assert mask_name in str(err.value) and str(mask.dtype) in str(err.value)


def test_wrong_rank_input_raises():
    layer = _built()
    with pytest.raises(ValueError, match=r"query.*\(2, 6\)"):
        layer(np.zeros((2, D), "float32"), np.zeros((B, S, D), "float32"))


def test_set_weights_errors():
    layer = _built()
    ws = layer.get_weights()
    with pytest.raises(ValueError) as err:
        layer.set_weights(ws[:-1])
    assert str(len(ws)) in str(err.value) and str(len(ws) - 1) in str(err.value)
    with pytest.raises(ValueError) as err:
        layer.set_weights(ws + [ws[0]])
    assert str(len(ws) + 1) in str(err.value)
    bad = list(ws)
    bad[2] = np.zeros((D, 3, 3), "float32")  # key/kernel should be (D, 2, 3)
    with pytest.raises(ValueError) as err:
        layer.set_weights(bad)
    msg = str(err.value)
    assert "key/kernel" in msg and str((D, 2, 3)) in msg and str((D, 3, 3)) in msg
    # A failed set_weights leaves the weights as they were.
    for a, b in zip(layer.get_weights(), ws, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "method, args",
    [
        ("get_weights", ()),
        ("set_weights", ([],)),
        ("count_params", ()),
        ("save_weights", ("w.npz",)),
    ],
)
def test_weights_before_build_raise(method, args):
    layer = GroupedQueryAttention(**KW, name=NAME)
    with pytest.raises(ValueError) as err:
        getattr(layer, method)(*args)
    assert NAME in str(err.value) and "build" in str(err.value)
    with pytest.raises(ValueError):
        layer.weight_names  # noqa: B018


# ---------------------------------------------------------------------------------------------
# Arguments in the forms Keras users pass them.


def test_keras_objects_as_constructor_arguments():
    # Keras takes initializer/regularizer/constraint instances as well as names and configs.
    args = dict(
        KW,
        name=NAME,
        kernel_initializer=keras.initializers.HeNormal(seed=1),
        kernel_regularizer=keras.regularizers.L2(0.1),
        bias_constraint=keras.constraints.NonNeg(),
    )
    keras_config = keras.layers.GroupQueryAttention(**args).get_config()
    ours = GroupedQueryAttention(**args)
    ours.build((B, T, D), (B, S, D))
    assert ours.get_config() == keras_config


@pytest.mark.parametrize("mask_name, n", [("query_mask", T), ("value_mask", S), ("key_mask", S)])
def test_masks_as_python_lists(mask_name, n):
    q, v = inputs(2)
    kl, ours = keras_and_ours(seed=2)
    mask = (np.arange(B * n).reshape(B, n) % 3 != 1).tolist()
    expected = ours(q, v, **{mask_name: np.asarray(mask)}, return_attention_scores=True)
    got = ours(q, v, **{mask_name: mask}, return_attention_scores=True)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    k_out = kl(q, v, **{mask_name: mask}, return_attention_scores=True)[0]
    np.testing.assert_allclose(got[0], k_out, atol=2e-5, rtol=1e-5)
