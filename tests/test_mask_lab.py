"""gqa_viz.app.mask_lab: composing masks on the Playground input, without Streamlit."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest

from gqa_viz import core, mask_tools
from gqa_viz import masks as M
from gqa_viz.app import limits, playground
from gqa_viz.app import mask_lab as L
from gqa_viz.app.settings import DEFAULTS

SMALL = replace(DEFAULTS, n=4, k=2, h=8, d=16)  # 11 tokens, causal
T = 11


def _np(mask, T, S):
    return np.asarray(M.materialize(mask, T, S, xp=np))[0]


def _npy(array, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def test_no_components_is_the_playground():
    r = L.compose(SMALL)
    ref = playground.run(SMALL)
    assert r.q_labels == ref.q_labels and r.T == r.S == T
    assert r.extra is None and r.components == []
    np.testing.assert_array_equal(r.final, ref.mask)
    np.testing.assert_array_equal(r.keras_mask, ref.mask)
    np.testing.assert_allclose(r.probs, ref.item("probs"), atol=1e-6)
    np.testing.assert_allclose(r.output, ref.item("output"), atol=1e-5)
    assert [p.name for p in r.keras_parts] == ["use_causal_mask"]
    # Causal: query 0 sees only key 0.
    assert r.fully_masked_rows.tolist() == []
    assert r.single_key_rows.tolist() == [0] and r.single_keys.tolist() == [0]
    assert r.allowed_fraction == pytest.approx(66 / 121)


COMPONENTS = [
    (L.PrefixLM(3), M.prefix_lm(3)),
    (L.Document(every=4), M.document(np.arange(T) // 4)),
    (
        L.Document((0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2)),
        M.document(np.array([0] * 3 + [1] * 4 + [2] * 4)),
    ),
    (L.CausalWindow(3), M.causal_window(3)),
    (L.DilatedWindow(2, 2), M.dilated_window(2, 2)),
    (L.BlockSparse(4, 1, 1), M.block_sparse(4, 1, 1)),
    (L.BottomRightCausal(), M.causal("bottom_right")),
]


@pytest.mark.parametrize(("component", "mask"), COMPONENTS, ids=lambda c: getattr(c, "kind", ""))
def test_each_component_is_anded_with_the_settings(component, mask):
    r = L.compose(SMALL, (component,))
    want = _np(mask, T, T)
    causal = np.tril(np.ones((T, T), bool))
    ((kind, label, allowed),) = r.components
    assert kind == component.kind and label == component.label
    np.testing.assert_array_equal(allowed, want)
    np.testing.assert_array_equal(r.extra, want)
    np.testing.assert_array_equal(r.final, causal & want)
    assert [p.name for p in r.keras_parts] == ["use_causal_mask", "attention_mask"]
    # Masked pairs get probability 0; every row with a key sums to 1.
    assert np.all(r.probs[:, ~r.final] == 0)
    has_key = r.final.any(axis=1)
    np.testing.assert_allclose(r.probs.sum(-1)[:, has_key], 1.0, atol=1e-5)


def test_negate_and_or():
    a, b = L.PrefixLM(2), L.DilatedWindow(2, 3, negate=True)
    assert b.label == "~dilated_window(2, 3)"
    A, B = _np(M.prefix_lm(2), T, T), ~_np(M.dilated_window(2, 3), T, T)
    settings = replace(SMALL, causal=False)
    r_and = L.compose(settings, (a, b), "and")
    r_or = L.compose(settings, (a, b), "or")
    np.testing.assert_array_equal(r_and.final, A & B)
    np.testing.assert_array_equal(r_or.final, A | B)
    assert r_or.combine == "or"
    # Nothing from the settings: the final mask is the components alone.
    assert r_or.keras_mask.all() and [p.name for p in r_or.keras_parts] == ["attention_mask"]
    with pytest.raises(ValueError, match="combine"):
        L.compose(settings, (a,), "xor")


def test_specs_are_hashable_and_equal_by_value():
    assert hash(L.Document(every=3)) == hash(L.Document(every=3))
    assert L.PrefixLM(3) != L.PrefixLM(3, negate=True)
    u = L.Uploaded.from_allowed(np.eye(3, 4, dtype=bool))
    assert hash(u) == hash(L.Uploaded.from_allowed(np.eye(3, 4, dtype=bool)))
    np.testing.assert_array_equal(u.array(), np.eye(3, 4, dtype=bool))


def test_padding_gives_fully_masked_rows_with_the_bias_as_output():
    s = replace(SMALL, pad=2, gate=True)
    r = L.compose(s, (L.PrefixLM(2),))
    assert r.T == 13 and r.fully_masked_rows.tolist() == [11, 12]
    assert [p.name for p in r.keras_parts] == [
        "query_mask",
        "value_mask",
        "use_causal_mask",
        "attention_mask",
    ]
    qm = r.keras_parts[0]
    assert qm.broadcast == "[B, T, 1]" and qm.given == "[B, T] = [1, 13]"
    assert r.keras_parts[1].broadcast == "[B, 1, S]"
    np.testing.assert_allclose(
        r.output[[11, 12]], np.broadcast_to(r.output_bias, (2, 16)), atol=1e-6
    )
    # Keras' fused path: the uniform average over all keys, masked ones included.
    ref = playground.run(s)
    fused = core.attention(
        ref.params,
        playground.build_inputs(s, [])[0],
        playground.build_inputs(s, [])[1],
        spec=ref.spec,
        query_mask=ref.query_mask,
        value_mask=ref.value_mask,
        attention_mask=r.extra,
        use_causal_mask=True,
        fully_masked_rows="uniform",
    )
    np.testing.assert_allclose(r.uniform_output, np.asarray(fused)[0, [11, 12]], atol=1e-4)
    assert not np.allclose(r.uniform_output, r.output_bias)


def test_random_mode_batch_item_and_cross_attention():
    s = replace(SMALL, mode="random", attn="cross", t=5, s=8, batch=3, item=2, causal=False)
    r = L.compose(s, (L.BottomRightCausal(),))
    assert (r.T, r.S) == (5, 8) and r.probs.shape == (4, 5, 8)
    np.testing.assert_array_equal(r.final, _np(M.causal("bottom_right"), 5, 8))
    al = L.alignment(5, 8)
    np.testing.assert_array_equal(al["bottom_right"], r.final)
    assert al["top_left"].sum() < al["bottom_right"].sum()
    # Top-left with T > S: the first queries of a short key axis.
    al = L.alignment(6, 3)
    assert not al["bottom_right"][:3].any(axis=1).all()


def test_component_errors_name_the_problem():
    with pytest.raises(ValueError, match="T = 11"):
        L.compose(SMALL, (L.Document((0, 0, 1)),))
    with pytest.raises(ValueError, match="prefix length"):
        L.compose(SMALL, (L.PrefixLM(-1),))
    with pytest.raises(ValueError, match=r"\[3, 3\]"):
        L.compose(SMALL, (L.Uploaded.from_allowed(np.ones((3, 3), bool)),))
    s = replace(SMALL, attn="cross")  # 11 queries, 7 keys
    with pytest.raises(ValueError, match="S = 7"):
        L.compose(s, (L.Document(tuple(range(11))),))
    r = L.compose(s, (L.Document(tuple([0] * 6 + [1] * 5), tuple([0] * 4 + [1] * 3)),))
    assert r.final[10, 6] and not r.final[10, 0]


def test_parse_document_ids():
    assert L.parse_document_ids("0,0,1, 1 2") == ((0, 0, 1, 1, 2), None)
    assert L.parse_document_ids("0 0 1 | 0 1") == ((0, 0, 1), (0, 1))
    for bad, match in (("", "empty"), ("0,a,1", "'a'"), ("0|1|2", "'|'"), ("-1,0", "'-1'")):
        with pytest.raises(ValueError, match=match):
            L.parse_document_ids(bad)


# ---------------------------------------------------------------------------------------------
# Uploads: each bad file keeps the previous mask and says why.

PREVIOUS = np.eye(4, 5, dtype=bool)
BAD_UPLOADS = {
    "pickled": ("m.npy", lambda: _npy(np.array([[1, 0]] * 4, dtype=object), allow_pickle=True)),
    "wrong shape": ("m.npy", lambda: _npy(np.ones((5, 4), bool))),
    "0.5 values": ("m.npy", lambda: _npy(np.full((4, 5), 0.5))),
    "a header row": ("m.csv", lambda: b"a,b,c,d,e\n" + b"1,0,0,0,0\n" * 4),
    "not numbers": ("m.csv", lambda: b"1,0,0,0,0\n1,1,x,0,0\n" + b"1,1,1,0,0\n" * 2),
    "too large": ("m.npy", lambda: b"\x93NUMPY" + b"0" * (limits.MAX_UPLOAD_BYTES + 1)),
}


@pytest.mark.parametrize("case", BAD_UPLOADS)
def test_bad_uploads_keep_the_previous_mask(case):
    name, data = BAD_UPLOADS[case]
    mask, error = L.accept_upload(PREVIOUS, name, data(), 4, 5)
    assert mask is PREVIOUS
    assert isinstance(error, str) and len(error) > 10


def test_good_uploads_and_download_round_trip():
    good = np.tril(np.ones((4, 5), bool))
    for name, data in (("m.npy", L.npy_bytes(good)), ("m.csv", L.matrix_csv(good))):
        mask, error = L.accept_upload(PREVIOUS, name, data, 4, 5)
        assert error is None
        np.testing.assert_array_equal(mask_tools.to_allowed(mask, "keep_bool"), good)


def test_readings_of_an_upload_and_their_outputs():
    s = replace(SMALL, causal=False)
    keep = np.tril(np.ones((T, T), bool))
    rd = L.compare_readings(s, keep, "keep_bool")
    assert rd.inverted_convention == "ignore_bool"
    np.testing.assert_array_equal(rd.as_read.final, keep)
    np.testing.assert_array_equal(rd.inverted.final, ~keep)
    # The inverted reading leaves the last query with no key; every row's output moves.
    assert rd.inverted.fully_masked_rows.tolist() == [T - 1]
    assert rd.output_change.shape == (T,) and (rd.output_change > 1e-4).all()


def test_embedding_padding_and_keras_code():
    s = replace(SMALL, pad=2, window=3)
    r = L.compose(s)
    e = L.embedding_padding(r)
    # "the cat sat on the mat because the cat was tired": 'the' = 1, 'cat' = 2, pads = 0.
    assert e.q_ids.tolist() == [1, 2, 3, 4, 1, 5, 6, 1, 2, 7, 8, 0, 0]
    assert e.query_mask.tolist() == [True] * 11 + [False] * 2
    np.testing.assert_array_equal(e.value_mask, e.query_mask)
    assert e.fully_masked_rows.tolist() == [11, 12]
    code = L.keras_code(r)
    assert "GroupQueryAttention" in code and "sliding_window" in code
    assert "query_mask" in code and "value_mask" in code


def test_block_skip_on_the_final_mask():
    r = L.compose(replace(SMALL, mode="random", t=32), (L.CausalWindow(4),))
    info = r.block_skip(8, 8)
    assert info["blocks"] == 16
    assert info["empty_blocks"] + info["partial_blocks"] + info["full_blocks"] == 16
    assert 0 < info["skippable_fraction"] < 1


def test_an_additive_mask_read_as_boolean_is_inverted():
    s = replace(SMALL, causal=False)
    causal = np.tril(np.ones((T, T), bool))
    additive = np.where(causal, 0.0, -1e9)  # Hugging Face style: 0 = attend
    assert mask_tools.detect_convention(additive)[0] == "additive"
    rd = L.compare_readings(s, additive, "additive")
    assert rd.inverted_convention == "keep_bool"
    np.testing.assert_array_equal(rd.as_read.final, causal)
    np.testing.assert_array_equal(rd.inverted.final, ~causal)
    assert rd.row_outcomes == [] and rd.inverted.fully_masked_rows.tolist() == [T - 1]
