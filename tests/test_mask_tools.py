"""gqa_viz.mask_tools: uploads, conventions, and the framework facts it states, run for real.

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
H head_dim, D model dim.

The framework facts (what a row with no allowed key becomes, what "window w" means) are
checked against Keras 3.15.1, jax 0.10.2 and torch 2.13.0 themselves, so an upgrade that
changes one fails here. torch parts skip where torch is not installed.
"""

from __future__ import annotations

import ast
import functools
import io
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gqa_viz import mask_tools as MT  # noqa: E402
from gqa_viz.app.limits import MAX_MASK_ELEMENTS, MAX_UPLOAD_BYTES  # noqa: E402

T, S = 11, 11
CAPS = {"max_bytes": MAX_UPLOAD_BYTES, "max_elements": MAX_MASK_ELEMENTS}  # the app's
CAUSAL = np.tril(np.ones((T, S), bool))


def _npy(arr, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _csv(rows) -> bytes:
    return ("\n".join(",".join(str(x) for x in row) for row in rows) + "\n").encode()


# ---------------------------------------------------------------------------------------------
# Upload errors.

UNPICKLED: list[str] = []


def _record_unpickling():
    UNPICKLED.append("unpickled!")
    return 1


class _Trap:
    """Unpickling this runs _record_unpickling: proof that a pickle was loaded."""

    def __reduce__(self):
        return (_record_unpickling, ())


def _error(filename, data, T=T, S=S, max_elements=MAX_MASK_ELEMENTS) -> str:
    with pytest.raises(MT.MaskUploadError) as e:
        MT.parse_upload(filename, data, T, S, max_bytes=MAX_UPLOAD_BYTES, max_elements=max_elements)
    assert isinstance(e.value, ValueError)
    return str(e.value)


def test_pickled_object_npy_is_never_loaded():
    arr = np.empty((T, S), dtype=object)
    arr[...] = _Trap()
    data = _npy(arr, allow_pickle=True)
    # The trap works: loading with pickles allowed runs it.
    np.load(io.BytesIO(data), allow_pickle=True)
    assert UNPICKLED == ["unpickled!"]
    UNPICKLED.clear()
    msg = _error("mask.npy", data)
    assert "Python objects (pickled data), which is never loaded" in msg
    assert UNPICKLED == []


def test_object_array_rejected_on_the_np_load_path_too(monkeypatch):
    # Even if the header check were skipped, np.load(allow_pickle=False) refuses, re-raised.
    monkeypatch.setattr(
        np.lib.format, "read_array_header_1_0", lambda fp: ((2,), False, np.dtype(bool))
    )
    msg = _error("mask.npy", _npy(np.array([_Trap(), 1], dtype=object), allow_pickle=True))
    assert "pickled data" in msg
    assert UNPICKLED == []


def test_structured_and_string_dtypes_rejected():
    rec = np.zeros((T, S), dtype=[("a", "i4"), ("b", "f4")])
    assert "must be boolean, integer or float" in _error("mask.npy", _npy(rec))
    assert "must be boolean, integer or float" in _error("mask.npy", _npy(np.full((T, S), "1")))
    assert "must be boolean, integer or float" in _error("m.npy", _npy(np.zeros((T, S), complex)))


def test_wrong_shape():
    msg = _error("mask.npy", _npy(np.ones((11, 12), bool)))
    assert msg == "expected shape (T, S) = (11, 11), (B, T, S) or (B, 1, T, S) — got (11, 12)."
    assert "got (2, 3, 11, 11)" in _error("hf.npy", _npy(np.zeros((2, 3, T, S), np.float32)))
    assert "got (11,)" in _error("flat.npy", _npy(np.ones(T, bool)))
    assert "got (3, 4)" in _error("m.csv", _csv(np.ones((3, 4), int)))


def test_values_other_than_01_or_additive():
    a = CAUSAL.astype(np.float32)
    a[2, 3] = 0.5
    assert _error("mask.npy", _npy(a)) == (
        "values must be 0/1 (boolean masks) or 0 and a negative number / -inf (additive masks); "
        "found 0.5."
    )
    b = CAUSAL.astype(np.int64) * 2
    assert "found 2." in _error("mask.npy", _npy(b))
    c = np.where(CAUSAL, 1.0, -np.inf)  # 1 and -inf: neither convention
    assert "found both 1 and -inf" in _error("mask.npy", _npy(c))


def test_nan_and_plus_inf():
    a = np.zeros((T, S), np.float32)
    a[4, 5] = np.nan
    assert "NaN (first at index (4, 5))" in _error("mask.npy", _npy(a))
    a[4, 5] = np.inf
    assert "+inf (first at index (4, 5))" in _error("mask.npy", _npy(a))
    rows = np.zeros((T, S), int).astype(str)
    rows[0, 0] = "nan"
    assert "NaN" in _error("mask.csv", _csv(rows))
    rows[0, 0] = "inf"
    assert "+inf" in _error("mask.csv", _csv(rows))


def test_csv_errors():
    rows = np.ones((T, S), int).astype(object)
    rows[2, 1] = "abc"
    assert _error("mask.csv", _csv(rows)) == "CSV row 3, column 2: 'abc' is not a number."
    header = b"k0,k1,k2\n" + _csv(np.ones((T, S), int))
    msg = _error("mask.csv", header)
    assert "CSV row 1 looks like a header" in msg and "remove it" in msg
    ragged = _csv(np.ones((3, 3), int)) + b"1,1\n"
    assert "CSV row 4 has 2 values but row 1 has 3" in _error("mask.csv", ragged, 4, 3)
    assert "not UTF-8" in _error("mask.csv", b"\xff\xfe\x00\x01")
    assert "holds no values" in _error("mask.csv", b"\n\n  \n")


def test_oversize_bytes():
    data = b"0" * (MAX_UPLOAD_BYTES + 1)
    msg = _error("mask.npy", data)
    assert msg == ("mask.npy is 2 MB (2,097,153 bytes); the limit is 2 MB (2,097,152 bytes).")
    assert _error("big.csv", b"0," * 1_700_000).startswith("big.csv is 3.24 MB")
    assert MAX_UPLOAD_BYTES == 2 * 1024 * 1024  # = .streamlit/config.toml maxUploadSize


def test_too_many_elements_checked_from_the_header():
    # A header that claims 9 million values and no data: rejected before any data is read.
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|b1", "fortran_order": False, "shape": (3000, 3000)}
    )
    msg = _error("huge.npy", buf.getvalue())
    assert msg == "huge.npy holds 9,000,000 values (shape (3000, 3000)); the limit is 2,097,152."
    assert MAX_MASK_ELEMENTS == 512 * 512 * 8


def test_too_many_elements_csv_and_npy():
    assert "the limit is 100" in _error("mask.csv", _csv(np.ones((T, S), int)), max_elements=100)
    assert "holds 121 values" in _error("mask.npy", _npy(np.ones((T, S), bool)), max_elements=100)


def test_unknown_extension_empty_file_and_garbage():
    assert "files of type '.txt' are not read; upload a .npy or .csv" in _error("m.txt", b"1")
    assert "'(no extension)'" in _error("mask", b"1")
    assert "'.pkl'" in _error("mask.pkl", _npy(CAUSAL))
    assert _error("mask.npy", b"") == "mask.npy is empty."
    assert _error("mask.csv", b"") == "mask.csv is empty."
    assert "is not a valid .npy file" in _error("mask.npy", b"not an npy file at all")
    truncated = _npy(np.ones((T, S), np.float64))[:-50]
    assert "is not a valid .npy file" in _error("mask.npy", truncated)
    assert "holds no values" in _error("mask.npy", _npy(np.zeros((0, S), bool)))


def test_filename_path_is_not_echoed():
    assert _error("/tmp/secret/dir/m.txt", b"1").startswith("m.txt:")


# ---------------------------------------------------------------------------------------------
# Good uploads.


def test_bool_npy():
    got = MT.parse_upload("mask.npy", _npy(CAUSAL), T, S, **CAPS)
    assert got.dtype == bool and got.shape == (T, S)
    np.testing.assert_array_equal(got, CAUSAL)


def test_01_int_csv_and_words():
    got = MT.parse_upload("mask.CSV", _csv(CAUSAL.astype(int)), T, S, **CAPS)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, CAUSAL)
    words = MT.parse_upload("m.csv", _csv(np.where(CAUSAL, "True", "false")), T, S, **CAPS)
    assert words.dtype == bool
    np.testing.assert_array_equal(words, CAUSAL)
    crlf = _csv(CAUSAL.astype(int)).replace(b"\n", b"\r\n")
    np.testing.assert_array_equal(
        MT.parse_upload("m.csv", b"\xef\xbb\xbf" + crlf, T, S, **CAPS), CAUSAL
    )
    spaced = b"\n".join(b" , ".join(b"%d" % x for x in row) for row in CAUSAL.astype(int))
    np.testing.assert_array_equal(MT.parse_upload("m.csv", spaced, T, S, **CAPS), CAUSAL)


@pytest.mark.parametrize("neg", [-np.inf, -1e9, np.finfo(np.float32).min])
def test_hugging_face_4d_additive(neg):
    hf = np.where(CAUSAL, 0.0, neg).astype(np.float32)[None, None]  # [1, 1, T, S]
    got = MT.parse_upload("hf_mask.npy", _npy(hf), T, S, **CAPS)
    assert got.shape == (T, S) and got.dtype == np.float64
    convention, reason = MT.detect_convention(got)
    assert convention == "additive", reason
    np.testing.assert_array_equal(MT.to_allowed(got, convention), CAUSAL)


def test_additive_csv_with_minus_inf():
    rows = np.where(CAUSAL, "0", "-inf")
    got = MT.parse_upload("m.csv", _csv(rows), T, S, **CAPS)
    assert np.isneginf(got).sum() == (~CAUSAL).sum()
    assert MT.detect_convention(got)[0] == "additive"


def test_batched_uploads_take_item_0():
    r = np.random.default_rng(0)
    batch = r.random((3, T, S)) > 0.5
    np.testing.assert_array_equal(MT.parse_upload("b.npy", _npy(batch), T, S, **CAPS), batch[0])
    hf = np.where(batch, 0.0, -np.inf)[:, None]  # [B, 1, T, S]
    np.testing.assert_array_equal(MT.parse_upload("b.npy", _npy(hf), T, S, **CAPS), hf[0, 0])
    one = MT.parse_upload("b.npy", _npy(batch[:1].astype(np.int8)), T, S, **CAPS)
    np.testing.assert_array_equal(one, batch[0])


def test_non_square_shape():
    a = np.tril(np.ones((3, 5), bool), k=2)
    np.testing.assert_array_equal(MT.parse_upload("m.npy", _npy(a), 3, 5, **CAPS), a)


# ---------------------------------------------------------------------------------------------
# Conventions.

IGNORE_CAUSAL = np.triu(np.ones((T, S), bool), k=1)  # torch: True = ignore
ADDITIVE_CAUSAL = np.where(CAUSAL, 0.0, -np.inf)


def test_detect_causal_examples():
    assert MT.detect_convention(CAUSAL)[0] == "keep_bool"
    assert MT.detect_convention(CAUSAL.astype(np.float64))[0] == "keep_bool"
    convention, reason = MT.detect_convention(IGNORE_CAUSAL)
    assert convention == "ignore_bool" and "diagonal" in reason
    assert MT.detect_convention(IGNORE_CAUSAL.astype(int))[0] == "ignore_bool"
    convention, reason = MT.detect_convention(ADDITIVE_CAUSAL)
    assert convention == "additive" and "0 = attend" in reason
    assert MT.detect_convention(np.where(CAUSAL, 0.0, -1e9))[0] == "additive"


def test_detect_majority_and_undecidable():
    pad_keep = np.ones((3, 5), bool)
    pad_keep[:, 4] = False  # non-square: the majority (1) means attend
    assert MT.detect_convention(pad_keep) == (
        "keep_bool",
        "80% of the entries are 1; masks usually allow more than they block.",
    )
    assert MT.detect_convention(~pad_keep)[0] == "ignore_bool"
    half = np.zeros((2, 4), bool)
    half[:, :2] = True
    assert MT.detect_convention(half)[0] is None
    mixed_diag = np.array([[1, 1, 0], [0, 0, 1], [1, 1, 1]], bool)  # diagonal 1, 0, 1
    assert MT.detect_convention(mixed_diag)[0] == "keep_bool"  # 6 of 9 are 1
    assert MT.detect_convention(np.ones((3, 3)))[0] == "keep_bool"
    assert MT.detect_convention(np.zeros((3, 3), bool))[0] == "ignore_bool"
    assert MT.detect_convention(np.zeros((3, 3)))[0] == "additive"
    assert MT.detect_convention(np.array([[0.5, 1.0]]))[0] is None
    convention, reason = MT.detect_convention(np.array([[0.0, -1.0]]))
    assert convention == "additive" and "soft bias" in reason


def test_to_allowed_and_inverted():
    np.testing.assert_array_equal(MT.to_allowed(CAUSAL, "keep_bool"), CAUSAL)
    np.testing.assert_array_equal(MT.to_allowed(IGNORE_CAUSAL, "ignore_bool"), CAUSAL)
    np.testing.assert_array_equal(MT.to_allowed(ADDITIVE_CAUSAL, "additive"), CAUSAL)
    np.testing.assert_array_equal(MT.to_allowed(np.where(CAUSAL, 0, -1e9), "additive"), CAUSAL)
    for arr, conv in (
        (CAUSAL, "keep_bool"),
        (IGNORE_CAUSAL, "ignore_bool"),
        (ADDITIVE_CAUSAL, "additive"),
    ):
        np.testing.assert_array_equal(MT.to_allowed(arr, MT.inverted(conv)), ~CAUSAL)
    assert MT.inverted("keep_bool") == "ignore_bool"
    assert MT.inverted("ignore_bool") == "keep_bool"
    assert MT.inverted("additive") == "keep_bool"
    assert MT.to_allowed(CAUSAL, "keep_bool").dtype == bool
    with pytest.raises(ValueError, match="got 'nope'"):
        MT.to_allowed(CAUSAL, "nope")
    with pytest.raises(ValueError, match="got 'nope'"):
        MT.inverted("nope")
    assert set(MT.CONVENTIONS) == {"keep_bool", "ignore_bool", "additive"}


# ---------------------------------------------------------------------------------------------
# Rows with no allowed key, in each framework. Query row 1 has no allowed key; row 0 one.

ROW_MASK = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]], bool)  # [T=3, S=4]


def _outcome(row, uniform, bias=None) -> str:
    """The short outcome that a computed row matches, in ROW_OUTCOME's words."""
    row = np.asarray(row, np.float64)
    if np.isnan(row).all():
        return "NaN"
    if uniform is not None and np.allclose(row, uniform, atol=1e-5):
        return "mean of all values"
    if bias is not None and np.allclose(row, bias, atol=1e-6) and np.abs(bias).max() > 0:
        return "0 (output = bias)"
    if np.allclose(row, 0.0, atol=1e-7):
        return "0"
    return f"something else: {row}"


@functools.cache
def _keras_layer():
    import keras

    layer = keras.layers.GroupQueryAttention(head_dim=4, num_query_heads=2, num_key_value_heads=1)
    r = np.random.default_rng(0)
    query = r.normal(size=(1, 3, 6)).astype(np.float32)
    value = r.normal(size=(1, 4, 6)).astype(np.float32)
    layer(query, value)  # build
    w = layer.get_weights()
    w[-1] = r.normal(size=w[-1].shape).astype(np.float32)  # a visible output bias
    w[5] = r.normal(size=w[5].shape).astype(np.float32)  # value bias
    layer.set_weights(w)
    return layer, query, value


def _keras_uniform_output(layer, value):
    """What averaging every value (masked ones too) gives at the layer's output: [D]."""
    wq, bq, wk, bk, wv, bv, wo, bo = layer.get_weights()
    v = np.einsum("sd,dkh->skh", value[0], wv) + bv  # [S, K, H]
    v = np.repeat(v.mean(axis=0), 2 // v.shape[1], axis=0)  # [N, H]
    return np.einsum("nh,nhd->d", v, wo) + bo


def test_row_rules_keras():
    layer, query, value = _keras_layer()
    am = ROW_MASK[None]
    out, scores = layer(query, value, attention_mask=am, return_attention_scores=True)
    out, scores = np.asarray(out), np.asarray(scores)
    np.testing.assert_array_equal(scores[0, :, 1], 0.0)  # probabilities 0 on the empty row
    bias = layer.get_weights()[-1]
    uniform = _keras_uniform_output(layer, value)
    seen = {
        "Keras, return_attention_scores=True": _outcome(out[0, 1], uniform, bias),
        "Keras, no scores (fused path)": _outcome(
            np.asarray(layer(query, value, attention_mask=am))[0, 1], uniform, bias
        ),
    }
    for label, got in seen.items():
        assert got == MT.ROW_OUTCOME[label], label


def test_row_rules_gqa_viz_follows_keras_with_scores():
    from gqa_viz import GroupedQueryAttention

    layer, query, value = _keras_layer()
    ours = GroupedQueryAttention(head_dim=4, num_query_heads=2, num_key_value_heads=1)
    ours.build(query.shape, value.shape)
    ours.set_weights(layer.get_weights())
    bias = layer.get_weights()[-1]
    for scores in (True, False):
        out = ours(query, value, attention_mask=ROW_MASK[None], return_attention_scores=scores)
        out = np.asarray(out[0] if scores else out)
        np.testing.assert_allclose(out[0, 1], bias, atol=1e-6)


def _qkv(seed=0, T=3, S=4, H=4):
    r = np.random.default_rng(seed)
    return (
        r.normal(size=(1, T, 1, H)).astype(np.float32),
        r.normal(size=(1, S, 1, H)).astype(np.float32),
        r.normal(size=(1, S, 1, H)).astype(np.float32),
    )  # [B, T|S, N, H]


def test_row_rules_jax():
    q, k, v = _qkv()
    out = jax.nn.dot_product_attention(q, k, v, mask=ROW_MASK[None, None])  # [B, T, N, H]
    got = _outcome(np.asarray(out)[0, 1, 0], v[0, :, 0].mean(axis=0))
    assert got == MT.ROW_OUTCOME["jax.nn.dot_product_attention"]


def test_row_rules_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    q, k, v = (torch.from_numpy(x.transpose(0, 2, 1, 3).copy()) for x in _qkv())  # [B, N, T, H]
    uniform = v[0, 0].mean(dim=0).numpy()
    allowed = torch.from_numpy(ROW_MASK)
    minus_inf = torch.zeros(ROW_MASK.shape).masked_fill(~allowed, float("-inf"))
    minus_1e9 = torch.zeros(ROW_MASK.shape).masked_fill(~allowed, -1e9)
    logits = q @ k.transpose(-1, -2) / 2.0
    seen = {
        "torch SDPA, bool attn_mask": F.scaled_dot_product_attention(q, k, v, attn_mask=allowed),
        "torch SDPA, float attn_mask with -inf": F.scaled_dot_product_attention(
            q, k, v, attn_mask=minus_inf
        ),
        "hand-written softmax(scores + mask) with -inf": torch.softmax(logits + minus_inf, -1) @ v,
        "Hugging Face-style additive -1e9 mask + softmax": torch.softmax(logits + minus_1e9, -1)
        @ v,
    }
    for label, out in seen.items():
        assert _outcome(out[0, 0, 1].numpy(), uniform) == MT.ROW_OUTCOME[label], label

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True, dropout=0.0)
    with torch.no_grad():
        mha.out_proj.bias.copy_(torch.linspace(0.1, 0.8, 8))
    bias = mha.out_proj.bias.detach().numpy()
    x, k4, v4 = torch.randn(1, 3, 8), torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    ignore = ~allowed  # nn.MultiheadAttention: True = ignore
    square = torch.tensor([[False, True, True], [True, True, True], [False, False, False]])
    default = "torch nn.MultiheadAttention (need_weights=True, the default)"
    sdpa = "torch nn.MultiheadAttention (need_weights=False)"
    fast = "torch nn.MultiheadAttention (need_weights=False, inference fast path)"
    for mode in ("train", "eval"):
        getattr(mha, mode)()
        with torch.no_grad():
            out, w = mha(x, k4, v4, attn_mask=ignore)  # need_weights=True
            assert torch.isnan(w[0, 1]).all()
            assert _outcome(out[0, 1].numpy(), None) == MT.ROW_OUTCOME[default]
            out, _ = mha(x, k4, v4, attn_mask=ignore, need_weights=False)  # cross: no fast path
            assert _outcome(out[0, 1].numpy(), None, bias) == MT.ROW_OUTCOME[sdpa]
        # Self-attention in eval mode: with autograd no fast path, without it the fast path.
        out, _ = mha(x, x, x, attn_mask=square, need_weights=False)
        assert _outcome(out[0, 1].detach().numpy(), None, bias) == MT.ROW_OUTCOME[sdpa]
        with torch.no_grad():
            out, _ = mha(x, x, x, attn_mask=square, need_weights=False)
        label = fast if mode == "eval" else sdpa
        assert _outcome(out[0, 1].numpy(), None, bias) == MT.ROW_OUTCOME[label], mode


def test_every_rule_has_an_outcome_and_row_outcomes():
    assert set(MT.FRAMEWORK_ROW_RULES) == set(MT.ROW_OUTCOME)
    rows = MT.row_outcomes(ROW_MASK)
    assert [r["row"] for r in rows] == [1]
    assert rows[0] == {"row": 1, **MT.ROW_OUTCOME}
    assert MT.row_outcomes(CAUSAL) == []
    np.testing.assert_array_equal(MT.count_allowed(ROW_MASK), [1, 0, 3])
    padded = CAUSAL.copy()
    padded[7:] = False  # padding queries
    assert [r["row"] for r in MT.row_outcomes(padded)] == [7, 8, 9, 10]


# ---------------------------------------------------------------------------------------------
# "Window w": read which keys contribute from the libraries' own outputs.


def _contributors(out) -> np.ndarray:
    """With q = k = 0 and one-hot values (value j = e_j), output row i is row i's probabilities."""
    return np.asarray(out) > 1e-6


WINDOW_CASES = [(1, 6, 6), (3, 5, 8), (2, 8, 5)]


@pytest.mark.parametrize(("w", "T", "S"), WINDOW_CASES)
def test_window_semantics_match_jax(w, T, S):
    sem = MT.window_semantics(w, T, S)
    q = jnp.zeros((1, T, 1, S))
    k = jnp.zeros((1, S, 1, S))
    v = jnp.eye(S)[None, :, None, :]  # [1, S, 1, S]
    for key, kwargs in (
        ("jax local_window_size=(w, w)", dict(local_window_size=(w, w))),
        ("jax local_window_size=(w, w)", dict(local_window_size=w)),  # an int means (w, w)
        (
            "jax local_window_size=(w, 0) + is_causal",
            dict(local_window_size=(w, 0), is_causal=True),
        ),
    ):
        out = jax.nn.dot_product_attention(q, k, v, **kwargs)[0, :, 0]  # [T, S]
        expected = sem[key].copy()
        expected[~expected.any(axis=1)] = True  # an empty row averages all keys (jax's rule)
        np.testing.assert_array_equal(_contributors(out), expected, err_msg=key)


@pytest.mark.parametrize(("w", "T", "S"), [(3, 5, 8)])
def test_window_semantics_match_keras(w, T, S):
    import keras

    r = np.random.default_rng(1)
    query = r.normal(size=(1, T, 4)).astype(np.float32)
    value = r.normal(size=(1, S, 4)).astype(np.float32)
    sem = MT.window_semantics(w, T, S)
    layer = keras.layers.GroupQueryAttention(
        head_dim=4, num_query_heads=1, num_key_value_heads=1, sliding_window=w
    )
    for key, causal in (
        ("Keras sliding_window=w", False),
        ("Keras sliding_window=w + causal", True),
    ):
        _, scores = layer(query, value, use_causal_mask=causal, return_attention_scores=True)
        np.testing.assert_array_equal(np.asarray(scores)[0, 0] > 0, sem[key], err_msg=key)


@pytest.mark.parametrize(("w", "T", "S"), [(2, 6, 6), (1, 5, 8)])
def test_window_semantics_match_flex_attention(w, T, S):
    torch = pytest.importorskip("torch")
    flex = pytest.importorskip("torch.nn.attention.flex_attention")

    def sliding_window_causal(b, h, q_idx, kv_idx):  # attention-gym's definition
        causal_mask = q_idx >= kv_idx
        window_mask = q_idx - kv_idx <= w
        return causal_mask & window_mask

    block_mask = flex.create_block_mask(
        sliding_window_causal, B=None, H=None, Q_LEN=T, KV_LEN=S, device="cpu"
    )
    q, k = torch.zeros(1, 1, T, 8), torch.zeros(1, 1, S, 8)
    v = torch.nn.functional.pad(torch.eye(S), (0, 8 - S % 8 if S % 8 else 0))[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = flex.flex_attention(q, k, v, block_mask=block_mask)[0, 0, :, :S]
    key = "FlexAttention sliding_window (q - kv <= w, causal)"
    np.testing.assert_array_equal(_contributors(out.numpy()), MT.window_semantics(w, T, S)[key])


def test_keys_per_query_counts_differ_for_the_same_w():
    w, n = 3, 10
    sem = MT.window_semantics(w, n, n)
    middle = {key: int(MT.keys_per_query(m)[5]) for key, m in sem.items()}
    assert middle == {
        "Keras sliding_window=w": 2 * w - 1,
        "Keras sliding_window=w + causal": w,
        "jax local_window_size=(w, w)": 2 * w + 1,
        "jax local_window_size=(w, 0) + is_causal": w + 1,
        "FlexAttention sliding_window (q - kv <= w, causal)": w + 1,
    }
    assert set(sem) == set(MT.WINDOW_RULES)
    for m in sem.values():
        assert m.shape == (n, n) and m.dtype == bool
    with pytest.raises(ValueError, match="got 0"):
        MT.window_semantics(0, 4, 4)


# ---------------------------------------------------------------------------------------------
# Cost.


def test_sparsity_and_block_skip_causal_32():
    causal = np.tril(np.ones((32, 32), bool))
    assert MT.sparsity(causal) == 528 / 1024  # 32 * 33 / 2 allowed pairs
    got = MT.block_skip(causal, 16, 16, num_heads=1, head_dim=64)
    # Tiles: (0, 0) diagonal -> partial, (0, 1) above it -> empty, (1, 0) full, (1, 1) partial.
    assert {k: v for k, v in got.items() if k != "state"} == {
        "blocks": 4,
        "empty_blocks": 1,
        "full_blocks": 1,
        "partial_blocks": 2,
        "dense_flops": 4 * 32 * 32 * 64,
        "skippable_flops": 4 * 16 * 16 * 64,
        "skippable_fraction": 0.25,
    }
    np.testing.assert_array_equal(got["state"], [[1, 0], [2, 1]])


def test_block_skip_edge_tiles_and_heads():
    causal = np.tril(np.ones((20, 20), bool))
    got = MT.block_skip(causal, 16, 16, num_heads=8, head_dim=32)
    # Rows 0-15 x keys 16-19 is the only empty tile: 16 x 4 pairs.
    assert got["blocks"] == 4 and got["empty_blocks"] == 1
    assert got["full_blocks"] == 1 and got["partial_blocks"] == 2
    assert got["dense_flops"] == 4 * 20 * 20 * 32 * 8
    assert got["skippable_flops"] == 4 * 16 * 4 * 32 * 8
    assert got["skippable_fraction"] == pytest.approx(64 / 400)
    none = MT.block_skip(np.zeros((5, 7), bool), 4, 4)
    assert none["empty_blocks"] == 4 and none["skippable_fraction"] == 1.0
    full = MT.block_skip(np.ones((5, 7), bool), 4, 4)
    assert full["full_blocks"] == 4 and full["skippable_flops"] == 0
    assert MT.sparsity(np.zeros((0, 3), bool)) == 0.0
    with pytest.raises(ValueError, match="block_q must be a positive integer, got 0"):
        MT.block_skip(causal, 0)
    with pytest.raises(ValueError, match=r"\[T, S\]"):
        MT.block_skip(causal[None])


# ---------------------------------------------------------------------------------------------
# Keras' implicit masks from Embedding(mask_zero=True).


def test_embedding_padding_masks_match_keras():
    import keras

    ids = np.array([[5, 3, 9, 0, 0], [2, 0, 7, 4, 0]], np.int32)  # 0 = padding
    query_mask, value_mask = MT.embedding_padding_masks(ids, pad_id=0)
    np.testing.assert_array_equal(query_mask, ids != 0)
    np.testing.assert_array_equal(value_mask, ids != 0)

    keras.utils.set_random_seed(0)
    x = keras.layers.Embedding(10, 8, mask_zero=True)(ids)
    layer = keras.layers.GroupQueryAttention(head_dim=4, num_query_heads=2, num_key_value_heads=1)
    with warnings.catch_warnings():  # "EinsumDense ... will destroy the mask information"
        warnings.simplefilter("ignore", UserWarning)
        _, scores = layer(x, x, return_attention_scores=True)
    scores = np.asarray(scores)  # [B, N, T, S]
    allowed = query_mask[:, None, :, None] & value_mask[:, None, None, :]
    allowed = np.broadcast_to(allowed, scores.shape)
    np.testing.assert_array_equal(scores == 0, ~allowed)  # zero exactly where masked
    np.testing.assert_allclose(
        scores.sum(-1), np.broadcast_to(query_mask[:, None], (2, 2, 5)), atol=1e-6
    )
    # A padding query's row is all zero: its output is the output bias.
    assert (scores[0, :, 3:] == 0).all() and (scores[1, :, [1, 4]] == 0).all()

    with pytest.raises(ValueError, match="integers"):
        MT.embedding_padding_masks(np.zeros((1, 3)))
    qm, _ = MT.embedding_padding_masks(np.array([[1, 2, 9, 9]]), pad_id=9)
    np.testing.assert_array_equal(qm, [[True, True, False, False]])


# ---------------------------------------------------------------------------------------------
# The Keras call code.

CODE_CASES = {
    "causal_only": dict(causal=True, sliding_window=None, qm=False, vm=False, am=False),
    "all_masks_window": dict(causal=True, sliding_window=2, qm=True, vm=True, am=True),
    "padding_empty_rows": dict(causal=False, sliding_window=None, qm=True, vm=True, am=False),
    "attention_mask_2d": dict(causal=False, sliding_window=3, qm=False, vm=False, am="2d"),
}


@pytest.mark.parametrize("name", list(CODE_CASES))
def test_keras_call_code_runs_and_matches_gqa_viz(name):
    from gqa_viz import GroupedQueryAttention

    c = CODE_CASES[name]
    B, T_, S_, D, N, K, H = 2, 5, 6, 8, 4, 2, 4
    r = np.random.default_rng(3)
    ns = {
        "query": r.normal(size=(B, T_, D)).astype(np.float32),
        "value": r.normal(size=(B, S_, D)).astype(np.float32),
        "query_mask": np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], bool),
        "value_mask": np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], bool),
        "attention_mask": r.random((B, T_, S_)) > 0.3,
    }
    if c["am"] == "2d":
        ns["attention_mask"] = ns["attention_mask"][0]
    masks = {
        "query_mask": ns["query_mask"] if c["qm"] else None,
        "value_mask": ns["value_mask"] if c["vm"] else None,
        "attention_mask": ns["attention_mask"] if c["am"] else None,
    }
    # The page passes arrays (or None) for the mask flags; True / False work as well.
    flags = {k: (v if name == "all_masks_window" else v is not None) for k, v in masks.items()}
    code = MT.keras_call_code(
        causal=c["causal"],
        sliding_window=c["sliding_window"],
        num_query_heads=N,
        num_key_value_heads=K,
        head_dim=H,
        **flags,
    )
    ast.parse(code)
    assert max(len(line) for line in code.splitlines()) <= 100
    for arg, m in masks.items():
        assert (f"{arg}={arg}" in code) == (m is not None)
    assert ("use_causal_mask=True" in code) == c["causal"]
    assert ("sliding_window=" in code) == (c["sliding_window"] is not None)
    exec(compile(code, "<keras_call_code>", "exec"), ns)

    ours = GroupedQueryAttention(
        head_dim=H, num_query_heads=N, num_key_value_heads=K, sliding_window=c["sliding_window"]
    )
    ours.build(ns["query"].shape, ns["value"].shape)
    ours.set_weights(ns["layer"].get_weights())
    out, scores = ours(
        ns["query"],
        ns["value"],
        use_causal_mask=c["causal"],
        return_attention_scores=True,
        **masks,
    )
    np.testing.assert_allclose(np.asarray(ns["output"]), np.asarray(out), atol=3e-5, rtol=3e-4)
    np.testing.assert_allclose(np.asarray(ns["scores"]), np.asarray(scores), atol=3e-6)
    if name == "padding_empty_rows":  # padding queries: rows with no allowed key, zero in both
        assert (np.asarray(ns["scores"])[1, :, 2:] == 0).all()
