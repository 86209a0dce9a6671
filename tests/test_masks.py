"""Mask predicates against NumPy-written expectations, and their composition laws."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from gqa_viz import masks as M

SIZES = [(1, 1), (4, 4), (3, 6), (6, 3), (5, 8)]


def _np(mask, T, S, batch=1):
    return np.asarray(M.materialize(mask, T, S, batch, xp=np))


@pytest.mark.parametrize(("T", "S"), SIZES)
def test_causal_alignments(T, S):
    i, j = np.meshgrid(np.arange(T), np.arange(S), indexing="ij")
    np.testing.assert_array_equal(_np(M.causal(), T, S)[0], j <= i)
    np.testing.assert_array_equal(_np(M.causal("bottom_right"), T, S)[0], j <= i + S - T)
    if T == S:  # the two alignments only differ when T != S
        np.testing.assert_array_equal(_np(M.causal(), T, S), _np(M.causal("bottom_right"), T, S))


def test_causal_top_left_explicit_example():
    expected = np.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], bool)
    np.testing.assert_array_equal(_np(M.causal(), 3, 5)[0], expected)
    bottom = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(_np(M.causal("bottom_right"), 3, 5)[0], bottom)


@pytest.mark.parametrize("w", [1, 2, 3, 7])
@pytest.mark.parametrize(("T", "S"), SIZES)
def test_sliding_window_is_kerass_band(w, T, S):
    got = _np(M.sliding_window(w), T, S)[0]
    for i, j in itertools.product(range(T), range(S)):
        assert got[i, j] == (abs(i - j) < w)


def test_window_one_is_the_diagonal():
    np.testing.assert_array_equal(_np(M.sliding_window(1), 4, 4)[0], np.eye(4, dtype=bool))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_sliding_window_rejects(bad):
    with pytest.raises(ValueError, match="positive integer"):
        M.sliding_window(bad)


def test_padding_masks_are_batched():
    qv = np.array([[1, 1, 0], [1, 0, 0]], bool)
    kv = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    got = _np(M.query_valid(qv) & M.key_valid(kv), 3, 4, batch=2)
    np.testing.assert_array_equal(got, qv[:, :, None] & kv[:, None, :])
    # A batch-1 array serves every batch item.
    one = _np(M.key_valid(kv[:1]), 3, 4, batch=2)
    np.testing.assert_array_equal(one, np.broadcast_to(kv[:1, None, :], (2, 3, 4)))


def test_from_array_two_and_three_dims():
    r = np.random.default_rng(0)
    a2 = r.random((3, 4)) > 0.5
    a3 = r.random((2, 3, 4)) > 0.5
    np.testing.assert_array_equal(_np(M.from_array(a2), 3, 4)[0], a2)
    np.testing.assert_array_equal(_np(M.from_array(a3), 3, 4, batch=2), a3)


@pytest.mark.parametrize(("T", "S"), SIZES)
def test_composition_laws(T, S):
    a, b, c = M.causal(), M.sliding_window(2), M.causal("bottom_right")
    ev = lambda m: _np(m, T, S)
    np.testing.assert_array_equal(ev(a & b), ev(a) & ev(b))
    np.testing.assert_array_equal(ev(a | b), ev(a) | ev(b))
    np.testing.assert_array_equal(ev(~a), ~ev(a))
    np.testing.assert_array_equal(ev(~(a & b)), ev(~a | ~b))  # De Morgan
    np.testing.assert_array_equal(ev(a & (b | c)), ev((a & b) | (a & c)))  # distributive
    np.testing.assert_array_equal(ev(a & M.full()), ev(a))  # identity
    np.testing.assert_array_equal(ev(a | ~a), ev(M.full()))


def test_materialize_jnp_equals_numpy():
    m = M.causal() & M.sliding_window(3)
    np.testing.assert_array_equal(np.asarray(M.materialize(m, 5, 7, xp=jnp)), _np(m, 5, 7))


def test_names_describe_the_composition():
    assert repr(M.causal() & ~M.sliding_window(2)) == "Mask((causal & ~sliding_window(2)))"


def test_keras_mask_merges_in_kerass_order():
    qm = np.array([[1, 1, 0]], bool)
    vm = np.array([[1, 0, 1, 1]], bool)
    am = np.ones((1, 3, 4), bool)
    am[0, 0, 0] = False
    m = M.keras_mask(query_mask=qm, value_mask=vm, attention_mask=am, use_causal_mask=True)
    i, j = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    expected = qm[:, :, None] & vm[:, None, :] & (j <= i) & am
    np.testing.assert_array_equal(_np(m, 3, 4), expected)
    assert M.keras_mask() is None


def test_keras_mask_numeric_attention_mask_quirk():
    am = np.array([[[0.3, 1.0], [1.0, 0.0]]], np.float32)
    alone = _np(M.keras_mask(attention_mask=am), 2, 2)
    np.testing.assert_array_equal(alone[0], [[False, True], [True, False]])  # > 0.5
    with_causal = _np(M.keras_mask(attention_mask=am, use_causal_mask=True), 2, 2)
    np.testing.assert_array_equal(with_causal[0], [[True, False], [True, False]])  # nonzero


# ---------------------------------------------------------------------------------------------
# The Mask Lab's patterns, each against an expectation written with explicit loops.


def _loops(rule, T, S):
    return np.array([[bool(rule(i, j)) for j in range(S)] for i in range(T)], bool)


@pytest.mark.parametrize("w", [1, 2, 3, 9])
@pytest.mark.parametrize(("T", "S"), SIZES)
def test_causal_window(w, T, S):
    top = _loops(lambda i, j: j <= i and i - j < w, T, S)
    np.testing.assert_array_equal(_np(M.causal_window(w), T, S)[0], top)
    s = S - T
    bottom = _loops(lambda i, j: j <= i + s and i + s - j < w, T, S)
    np.testing.assert_array_equal(_np(M.causal_window(w, align="bottom_right"), T, S)[0], bottom)
    # Each query sees exactly w keys once there are w behind it (top-left).
    for i in range(min(T, S)):
        assert top[i].sum() == min(w, i + 1)
    # Top-left, it is Keras' causal AND sliding_window.
    np.testing.assert_array_equal(
        _np(M.causal_window(w), T, S), _np(M.causal() & M.sliding_window(w), T, S)
    )


def test_causal_window_names():
    assert M.causal_window(4).name == "causal_window(4)"
    assert M.causal_window(4, align="bottom_right").name == 'causal_window(4, "bottom_right")'


@pytest.mark.parametrize("p", [0, 1, 3, 10])
@pytest.mark.parametrize(("T", "S"), SIZES)
def test_prefix_lm(p, T, S):
    expected = _loops(lambda i, j: j < p or j <= i, T, S)
    np.testing.assert_array_equal(_np(M.prefix_lm(p), T, S)[0], expected)


def test_prefix_lm_zero_is_causal_and_names():
    np.testing.assert_array_equal(_np(M.prefix_lm(0), 5, 5), _np(M.causal(), 5, 5))
    assert M.prefix_lm(3).name == "prefix_lm(3)"


@pytest.mark.parametrize(("T", "S"), SIZES)
def test_document_1d(T, S):
    r = np.random.default_rng(T * 10 + S)
    q_ids = np.sort(r.integers(0, 3, T))
    k_ids = np.sort(r.integers(0, 3, S))
    expected = _loops(lambda i, j: q_ids[i] == k_ids[j], T, S)
    m = M.document(q_ids, k_ids)
    assert m.batch_free
    got = _np(m, T, S, batch=3)
    assert got.shape == (1, T, S)
    np.testing.assert_array_equal(got[0], expected)
    np.testing.assert_array_equal(np.asarray(M.materialize(m, T, S, xp=jnp)), got)


def test_document_self_attention_defaults_k_ids():
    ids = np.array([0, 0, 1, 1, 1, 2])
    expected = _loops(lambda i, j: ids[i] == ids[j], 6, 6)
    np.testing.assert_array_equal(_np(M.document(ids), 6, 6)[0], expected)
    with pytest.raises(ValueError, match="S = T"):
        _np(M.document(ids), 6, 7)


def test_document_batched_ids():
    q_ids = np.array([[0, 0, 1, 1], [0, 1, 1, 1]])
    k_ids = np.array([[0, 1, 1, 1, 2], [0, 0, 0, 1, 1]])
    m = M.document(q_ids, k_ids)
    assert not m.batch_free
    got = _np(m, 4, 5, batch=2)
    for b in range(2):
        np.testing.assert_array_equal(
            got[b], _loops(lambda i, j, b=b: q_ids[b, i] == k_ids[b, j], 4, 5)
        )
    np.testing.assert_array_equal(np.asarray(M.materialize(m, 4, 5, 2, xp=jnp)), got)
    # [1, T] ids serve every batch item; [T] query ids mix with [B, S] key ids.
    one = _np(M.document(q_ids[:1], k_ids[:1]), 4, 5, batch=2)
    np.testing.assert_array_equal(one, np.broadcast_to(got[:1], (2, 4, 5)))
    mixed = _np(M.document(q_ids[0], k_ids), 4, 5, batch=2)
    for b in range(2):
        np.testing.assert_array_equal(
            mixed[b], _loops(lambda i, j, b=b: q_ids[0, i] == k_ids[b, j], 4, 5)
        )


def test_document_rejects():
    with pytest.raises(ValueError, match="integer array"):
        M.document(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="integer array"):
        M.document(np.zeros((1, 2, 3), int))
    with pytest.raises(ValueError, match="integer array"):
        M.document([])
    with pytest.raises(ValueError, match="3 positions but T = 4"):
        _np(M.document([0, 0, 1], [0, 0, 1, 1]), 4, 4)
    with pytest.raises(ValueError, match="batch size 3 but the input has B = 2"):
        _np(M.document(np.zeros((3, 4), int)), 4, 4, batch=2)


@pytest.mark.parametrize(("w", "d"), [(1, 1), (2, 1), (2, 2), (3, 2), (2, 3)])
@pytest.mark.parametrize(("T", "S"), SIZES)
def test_dilated_window(w, d, T, S):
    expected = _loops(lambda i, j: abs(i - j) < w * d and (i - j) % d == 0, T, S)
    np.testing.assert_array_equal(_np(M.dilated_window(w, d), T, S)[0], expected)
    if d == 1:
        np.testing.assert_array_equal(
            _np(M.dilated_window(w, 1), T, S), _np(M.sliding_window(w), T, S)
        )


def test_dilated_window_explicit_row():
    row = _np(M.dilated_window(3, 2), 1, 12)[0, 0]  # query 0: keys 0, 2, 4
    np.testing.assert_array_equal(np.flatnonzero(row), [0, 2, 4])
    row = _np(M.dilated_window(2, 3), 8, 12)[0, 6]  # query 6: keys 3, 6, 9
    np.testing.assert_array_equal(np.flatnonzero(row), [3, 6, 9])


@pytest.mark.parametrize(
    ("block", "lb", "g"), [(1, 1, 0), (2, 1, 0), (2, 2, 0), (3, 1, 2), (4, 2, 1), (2, 0, 1)]
)
@pytest.mark.parametrize(("T", "S"), SIZES + [(9, 9)])
def test_block_sparse(block, lb, g, T, S):
    expected = _loops(lambda i, j: abs(i // block - j // block) < lb or j < g or i < g, T, S)
    np.testing.assert_array_equal(_np(M.block_sparse(block, lb, g), T, S)[0], expected)


def test_block_sparse_global_tokens_example():
    got = _np(M.block_sparse(2, local_blocks=1, global_tokens=1), 6, 6)[0].astype(int)
    expected = np.array(
        [
            [1, 1, 1, 1, 1, 1],  # the global query sees everything
            [1, 1, 0, 0, 0, 0],
            [1, 0, 1, 1, 0, 0],  # every query sees the global key 0
            [1, 0, 1, 1, 0, 0],
            [1, 0, 0, 0, 1, 1],
            [1, 0, 0, 0, 1, 1],
        ]
    )
    np.testing.assert_array_equal(got, expected)
    assert (
        M.block_sparse(2, global_tokens=1).name
        == "block_sparse(2, local_blocks=1, global_tokens=1)"
    )


@pytest.mark.parametrize(("vq", "vk"), [(None, None), (2, None), (None, 3), (0, 2), (4, 9)])
@pytest.mark.parametrize(("T", "S"), SIZES)
def test_padding(vq, vk, T, S):
    expected = _loops(lambda i, j: (vq is None or i < vq) and (vk is None or j < vk), T, S)
    m = M.padding(vq, vk)
    assert m.batch_free
    np.testing.assert_array_equal(_np(m, T, S)[0], expected)
    # The same as Keras' query_mask / value_mask with those lengths.
    qv = (np.arange(T) < (T if vq is None else vq))[None]
    kv = (np.arange(S) < (S if vk is None else vk))[None]
    np.testing.assert_array_equal(_np(m, T, S), _np(M.query_valid(qv) & M.key_valid(kv), T, S))


def test_padding_name():
    assert M.padding(3, 4).name == "padding(valid_queries=3, valid_keys=4)"
    assert M.padding(valid_keys=2).name == "padding(valid_keys=2)"


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: M.causal_window(0), "causal_window window must be a positive integer, got 0"),
        (lambda: M.causal_window(2.5), "got 2.5"),
        (lambda: M.causal_window(True), "got True"),
        (lambda: M.causal_window(2, align="left"), "got 'left'"),
        (lambda: M.prefix_lm(-1), "prefix_lm prefix must be an integer >= 0, got -1"),
        (lambda: M.prefix_lm("3"), "got '3'"),
        (lambda: M.dilated_window(0, 2), "dilated_window window .* got 0"),
        (lambda: M.dilated_window(2, 0), "dilated_window dilation .* got 0"),
        (lambda: M.block_sparse(0), "block_sparse block must be a positive integer, got 0"),
        (lambda: M.block_sparse(2, local_blocks=-1), "local_blocks .* got -1"),
        (lambda: M.block_sparse(2, global_tokens=1.0), "global_tokens .* got 1.0"),
        (lambda: M.padding(-1), "valid_queries .* got -1"),
        (lambda: M.padding(valid_keys="x"), "valid_keys .* got 'x'"),
    ],
)
def test_new_builders_reject(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def _new_masks():
    return [
        M.causal_window(3),
        M.causal_window(2, align="bottom_right"),
        M.prefix_lm(2),
        M.document(np.array([0, 0, 1, 1, 1, 2, 2, 3])[:5], np.array([0, 0, 1, 1, 1, 2, 2, 3])),
        M.dilated_window(2, 2),
        M.block_sparse(2, 1, 1),
        M.padding(4, 6),
    ]


@pytest.mark.parametrize(("T", "S"), [(5, 8)])
def test_composition_laws_new_predicates(T, S):
    ev = lambda m: _np(m, T, S)
    masks = _new_masks() + [M.causal(), M.sliding_window(2)]
    for a, b in itertools.combinations(masks, 2):
        np.testing.assert_array_equal(ev(a & b), ev(a) & ev(b))
        np.testing.assert_array_equal(ev(a | b), ev(a) | ev(b))
        np.testing.assert_array_equal(ev(~(a & b)), ev(~a | ~b))  # De Morgan
        np.testing.assert_array_equal(ev(~(a | b)), ev(~a & ~b))
    for a, b, c in itertools.combinations(masks[:6], 3):
        np.testing.assert_array_equal(ev(a & (b | c)), ev((a & b) | (a & c)))
        np.testing.assert_array_equal(ev(a | (b & c)), ev((a | b) & (a | c)))
    for a in masks:
        np.testing.assert_array_equal(ev(~a), ~ev(a))
        np.testing.assert_array_equal(ev(a & M.full()), ev(a))
        np.testing.assert_array_equal(ev(a | ~a), ev(M.full()))
        np.testing.assert_array_equal(ev(a & a), ev(a))  # idempotent


def test_new_predicates_materialize_under_jit():
    import jax

    masks = _new_masks()

    @jax.jit
    def run():
        return [M.materialize(m, 5, 8) for m in masks]

    for m, got in zip(masks, run()):
        np.testing.assert_array_equal(np.asarray(got), _np(m, 5, 8))


def test_batch_free_propagates_through_composition():
    batched = M.document(np.array([[0, 0, 1], [0, 1, 1]]))
    assert (M.causal_window(2) & M.padding(2)).batch_free
    assert not (M.causal_window(2) & batched).batch_free
    assert _np(M.prefix_lm(1) | batched, 3, 3, batch=2).shape == (2, 3, 3)


def test_components_describe_every_kind():
    expected = {
        "causal",
        "causal_bottom_right",
        "sliding_window",
        "causal_window",
        "prefix_lm",
        "document",
        "dilated_window",
        "block_sparse",
        "padding",
        "custom",
    }
    assert set(M.COMPONENTS) == expected
    for text in M.COMPONENTS.values():
        assert text and "\n" not in text and len(text) < 100


def test_new_builders_state_their_rule_in_one_line():
    for fn in (
        M.causal_window,
        M.prefix_lm,
        M.document,
        M.dilated_window,
        M.block_sparse,
        M.padding,
    ):
        assert fn.__doc__ and "\n" not in fn.__doc__.strip(), fn.__name__
