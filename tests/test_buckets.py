"""Shape bucketing: padded runs answer like unpadded ones, and lengths share compiled programs."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from gqa_viz import buckets, core
from gqa_viz.buckets import LENGTH_BUCKETS, bucket, bucketed_trace
from tests import reference

FIELDS_T = ("query", "context", "output")  # [B, T, ...]
FIELDS_S = ("key", "value")  # [B, S, ...]


def test_bucket_is_the_first_size_that_holds_the_length():
    assert [bucket(n) for n in (1, 16, 17, 64, 65, 129, 193, 2047, 2048)] == [
        16, 16, 32, 64, 128, 192, 256, 2048, 2048
    ]  # fmt: skip
    assert bucket(5000) == 5000  # above every bucket: the exact length
    assert all(b / a <= 2 for a, b in zip(LENGTH_BUCKETS, LENGTH_BUCKETS[1:], strict=False))
    with pytest.raises(ValueError, match="at least 1"):
        bucket(0)


CASES = [
    # (T, S, cross, causal, window, pad, kpad, use_bias, use_gate, extra_mask)
    (11, 11, False, True, None, 0, 0, True, False, False),
    (17, 17, False, False, None, 3, 0, False, False, False),
    (5, 9, True, True, 3, 0, 2, True, True, False),
    (40, 23, True, False, None, 1, 1, True, False, True),
    (64, 64, False, True, 8, 5, 0, False, True, True),
    (100, 100, False, True, None, 0, 0, True, False, False),
]


def _inputs(T, S, cross, pad, kpad, extra, seed=0, B=2, D=32):
    rng = np.random.default_rng(seed)
    query = rng.standard_normal((B, T, D)).astype(np.float32)
    value = rng.standard_normal((B, S, D)).astype(np.float32) if cross else query
    qm = np.broadcast_to(np.arange(T) < T - pad, (B, T)) if pad else None
    vm = None
    if cross and kpad:
        vm = np.broadcast_to(np.arange(S) < S - kpad, (B, S))
    elif not cross and pad:
        vm = qm
    am = rng.random((B, T, S)) < 0.7 if extra else None
    return query, value, qm, vm, am


@pytest.mark.parametrize("case", CASES)
def test_padded_run_equals_the_unpadded_one(case):
    T, S, cross, causal, window, pad, kpad, bias, gate, extra = case
    spec = core.GQASpec(8, 2, 16, use_bias=bias, use_gate=gate, sliding_window=window)
    params = core.init_params(spec, 32, seed=3)
    query, value, qm, vm, am = _inputs(T, S, cross, pad, kpad, extra)
    kwargs = dict(query_mask=qm, value_mask=vm, attention_mask=am, use_causal_mask=causal)
    padded = bucketed_trace(params, query, value, spec=spec, **kwargs)
    plain = core.attention_trace(params, query, value, spec=spec, **kwargs)

    # Exact: the mask, its shape, and zero probability wherever it masks.
    assert padded.probs.shape == (2, 8, T, S)
    if plain.mask is None:
        assert padded.mask is None
    else:
        expected = np.broadcast_to(np.asarray(plain.mask), (2, T, S))
        np.testing.assert_array_equal(padded.mask, expected)
        assert np.all(padded.probs[np.broadcast_to(~expected[:, None], padded.probs.shape)] == 0)
    # Equal up to float32 round-off everywhere (XLA picks kernels by shape; see buckets.py).
    for name in ("logits", "probs", "dropped_probs", *FIELDS_T, *FIELDS_S):
        np.testing.assert_allclose(
            getattr(padded, name), np.asarray(getattr(plain, name)), rtol=2e-5, atol=2e-6
        )
    assert (padded.gate is None) == (not gate)


def test_padded_run_matches_the_float64_reference():
    spec = core.GQASpec(6, 3, 8, sliding_window=4)
    params = core.init_params(spec, 24, seed=1)
    query, value, qm, vm, _ = _inputs(19, 13, True, 2, 3, False, D=24)
    got = bucketed_trace(
        params, query, value, spec=spec, query_mask=qm, value_mask=vm, use_causal_mask=True
    )
    mask = reference.reference_mask(
        19, 13, batch=2, query_mask=qm, value_mask=vm, use_causal_mask=True, sliding_window=4
    )
    ref = reference.reference_gqa(
        jax.tree.map(np.asarray, params),
        query,
        value,
        num_query_heads=6,
        num_key_value_heads=3,
        head_dim=8,
        mask=mask,
    )
    np.testing.assert_allclose(got.probs, ref["probs"], atol=2e-6)
    np.testing.assert_allclose(got.output, ref["output"], rtol=1e-5, atol=1e-5)


def _compiled() -> int:
    return core._forward_jit._cache_size()


def test_lengths_masks_and_bias_within_a_bucket_share_one_program():
    spec = core.GQASpec(4, 2, 8)
    params = core.init_params(spec, 16, seed=0)
    rng = np.random.default_rng(0)
    zeros = np.zeros((1, 33, 16), np.float32)
    bucketed_trace(params, zeros, zeros, spec=spec)  # bucket 64 compiles here, once
    before = _compiled()
    for T, causal, window, pad, bias in [
        (34, True, None, 0, True),
        (40, False, 3, 2, True),
        (63, True, 7, 0, False),
        (50, False, None, 9, False),
        (64, True, 64, 1, True),
        (37, True, None, 0, True),
    ]:
        s = dataclasses.replace(spec, sliding_window=window, use_bias=bias, dropout=0.3)
        p = core.init_params(s, 16, seed=T)
        x = rng.standard_normal((1, T, 16)).astype(np.float32)
        qm = (np.arange(T) < T - pad)[None] if pad else None
        bucketed_trace(p, x, x, spec=s, query_mask=qm, value_mask=qm, use_causal_mask=causal)
    assert _compiled() == before  # not one new compile for six different inputs
    longer = np.zeros((1, 65, 16), np.float32)
    bucketed_trace(params, longer, longer, spec=spec)
    assert _compiled() == before + 1  # the next bucket is a new program, once


def test_prewarm_compiles_what_the_app_then_uses():
    program = buckets.Program(3, 1, 8, 24, 1, 100, 100)
    assert buckets.prewarm([program]) == 1
    before = _compiled()
    spec = core.GQASpec(3, 1, 8, use_bias=False, sliding_window=5)
    x = np.random.default_rng(1).standard_normal((1, 120, 24)).astype(np.float32)
    bucketed_trace(core.init_params(spec, 24), x, x, spec=spec, use_causal_mask=False)
    assert _compiled() == before


def test_dropout_draws_stay_put_while_the_length_moves_within_a_bucket():
    spec = core.GQASpec(2, 1, 8, dropout=0.5)
    params = core.init_params(spec, 16, seed=0)
    x = np.random.default_rng(0).standard_normal((1, 30, 16)).astype(np.float32)
    kept = []
    for T in (20, 30):
        tr = bucketed_trace(
            params,
            x[:, :T],
            x[:, :T],
            spec=spec,
            training=True,
            dropout_rng=jax.random.key(7),
        )
        kept.append(tr.dropped_probs[..., :20, :20] > 0)
        scale = tr.dropped_probs[tr.dropped_probs > 0] / tr.probs[tr.dropped_probs > 0]
        np.testing.assert_allclose(scale, 2.0, rtol=1e-6)
    np.testing.assert_array_equal(kept[0], kept[1])


def test_programs_held_in_memory_are_bounded(monkeypatch):
    """Past the limit, JAX's in-memory caches are emptied (programs reload from disk)."""
    from gqa_viz import buckets as bk

    cleared = []
    monkeypatch.setattr(bk, "_program_cap", 2)
    monkeypatch.setattr(bk, "_programs", set())
    monkeypatch.setattr(bk.jax, "clear_caches", lambda: cleared.append(1))
    spec = core.GQASpec(4, 2, 8)
    params = core.init_params(spec, 16, seed=0)
    rng = np.random.default_rng(0)
    for T in (10, 12, 40, 70, 14):  # buckets 16, 16, 64, 128, 16
        x = rng.standard_normal((1, T, 16)).astype("float32")
        bk.bucketed_trace(params, x, x, spec=spec)
    # 16 and 64 fill the budget; 128 clears it; 16 again is new since the clear.
    assert len(cleared) == 1 and len(bk._programs) == 2
