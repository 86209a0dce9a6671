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
