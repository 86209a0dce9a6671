"""The decoder-LLM extensions of the core (RoPE, QK-norm, scale, soft-cap) against references.

Two references: the float64 NumPy oracle (tests/reference.py, written from the formulas) for
whole attention passes, and Hugging Face transformers (test-only) for the RoPE frequencies,
the rotation itself and the per-head norms, as the checkpoints that use them are run there.

Axis letters: B batch, T query length, S key length, N query heads, K kv heads, H head_dim,
D model dim, R rotary frequencies.
"""

from __future__ import annotations

import dataclasses
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gqa_viz import core  # noqa: E402
from gqa_viz import rope as rope_lib  # noqa: E402
from gqa_viz.core import GQASpec, HeadNorm  # noqa: E402
from gqa_viz.rope import Rope  # noqa: E402
from tests.reference import (  # noqa: E402
    reference_gqa,
    reference_head_norm,
    reference_mask,
    reference_rope_inv_freq,
    reference_rope_rotate,
)

jax.config.update("jax_default_matmul_precision", "highest")  # GPU would default to TF32

N, K, H, D = 6, 2, 8, 16  # G = 3 query heads per kv head
B, T = 2, 9
WINDOW = 4  # with the causal mask: the last 4 keys
TOL = dict(rtol=1e-5, atol=1e-5)

# Small heads, so each kind's parameters are chosen to reach all its regimes at H = 8
# (frequencies 1, 0.1, 0.01, 0.001 at theta 1e4; wavelengths 6.3, 63, 628, 6283).
ROPES = {
    "default": Rope(),
    "partial": Rope(theta=500.0, rotary_dim=4),
    "linear": Rope(kind="linear", factor=4.0),
    # S = 9 > 6 positions: the base has grown.
    "dynamic": Rope(kind="dynamic", factor=2.0, max_position_embeddings=6),
    # wavelength 628 is between 1000 / 4 and 1000 / 1 (smoothed), 6283 above (divided).
    "llama3": Rope(kind="llama3", factor=8.0, original_max_position_embeddings=1000),
    # ramp 0, 0.5, 1, 1 over the four frequencies; cos and sin scaled by 0.1 ln 4 + 1.
    "yarn": Rope(kind="yarn", factor=4.0, original_max_position_embeddings=64),
}
EXTENSIONS = {f"rope_{name}": dict(rope=r) for name, r in ROPES.items()} | {
    "qk_norm": dict(qk_norm=HeadNorm(eps=1e-6, offset=0.0)),  # Qwen3: the weight is the gain
    "qk_norm_offset": dict(qk_norm=HeadNorm(eps=1e-5, offset=1.0)),  # Gemma 3: gain - 1 stored
    "scale": dict(scale=0.21),  # Gemma 2: query_pre_attn_scalar ** -0.5
    "softcap": dict(logit_softcap=1.5),
    "all": dict(
        rope=Rope(
            theta=1e4,
            rotary_dim=4,
            kind="yarn",
            factor=4.0,
            beta_fast=8.0,
            original_max_position_embeddings=64,
        ),
        qk_norm=HeadNorm(eps=1e-6, offset=1.0),
        scale=0.21,
        logit_softcap=1.5,
    ),
}
POSITIONS = {
    "implicit": None,  # 0 .. T - 1
    "offset": np.arange(5, 5 + T),  # [T]: a chunk that starts at position 5
    "per_batch": np.stack([np.arange(T), 2 * np.arange(T) + 11]),  # [B, T], with gaps
}


def _setup(spec: GQASpec, seed: int = 0):
    """Weights (kernels widened x2 so attention is far from uniform; random biases and norm
    gains, so a missing add or gain shows) and an input [B, T, D]."""
    r = np.random.default_rng(seed)
    params = core.init_params(spec, D, seed=seed)
    params = {
        layer: {
            name: 2 * w
            if name == "kernel"
            else w + 0.3 * r.standard_normal(w.shape).astype(w.dtype)
            for name, w in ws.items()
        }
        for layer, ws in params.items()
    }
    if spec.qk_norm is not None:
        gain = 1.0 - spec.qk_norm.offset  # the identity gain, stored as the checkpoint would
        for layer in ("query_norm", "key_norm"):
            params[layer] = {"scale": (gain + 0.3 * r.standard_normal(H)).astype(np.float32)}
    x = r.standard_normal((B, T, D)).astype(np.float32)
    return params, x


def _reference(spec, params, x, *, causal=True, query_positions=None, key_positions=None, **kw):
    """The float64 oracle for self-attention of x with ``spec`` (causal + the spec's window)."""
    S = x.shape[1] if kw.get("value") is None else kw["value"].shape[1]
    mask = reference_mask(
        x.shape[1],
        S,
        use_causal_mask=causal,
        sliding_window=spec.sliding_window,
        attention_mask=kw.get("attention_mask"),
    )
    qk_norm = spec.qk_norm
    return reference_gqa(
        jax.tree.map(np.asarray, params),
        x,
        x if kw.get("value") is None else kw["value"],
        num_query_heads=spec.num_query_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        mask=mask,
        qk_norm=None if qk_norm is None else dict(eps=qk_norm.eps, offset=qk_norm.offset),
        rope=None if spec.rope is None else dataclasses.asdict(spec.rope),
        query_positions=query_positions,
        key_positions=key_positions,
        scale=spec.scale,
        logit_softcap=spec.logit_softcap,
    )


# ----------------------------------------------------------------------------------------------
# Every extension, alone and together, against the float64 oracle
# ----------------------------------------------------------------------------------------------


def _check_trace(tr, ref):
    for name in ("query", "key", "value", "logits", "probs", "context", "output"):
        np.testing.assert_allclose(getattr(tr, name), ref[name], **TOL, err_msg=name)


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_each_extension_matches_reference_on_every_path(extension):
    """Scores path, trace, output-only path and the fused kernel ("xla"), per-batch positions.

    The soft-cap must bypass jax.nn.dot_product_attention, which cannot cap.
    """
    spec = GQASpec(N, K, H, use_bias=True, sliding_window=WINDOW, **EXTENSIONS[extension])
    params, x = _setup(spec)
    pos = POSITIONS["per_batch"]
    kw = dict(spec=spec, use_causal_mask=True, query_positions=pos, key_positions=pos)
    ref = _reference(spec, params, x, query_positions=pos, key_positions=pos)
    assert ref["probs"].max() > 0.9  # far from uniform: a wrong logit would show

    out, probs = core.attention(params, x, x, return_scores=True, **kw)
    np.testing.assert_allclose(out, ref["output"], **TOL)
    np.testing.assert_allclose(probs, ref["probs"], **TOL)
    tr = core.attention_trace(params, x, x, **kw)
    _check_trace(tr, ref)
    expected_mask = reference_mask(T, T, use_causal_mask=True, sliding_window=WINDOW)
    np.testing.assert_array_equal(tr.mask[0], expected_mask[0])

    np.testing.assert_allclose(core.attention(params, x, x, **kw), ref["output"], **TOL)
    fused = core.attention(params, x, x, implementation="xla", **kw)
    np.testing.assert_allclose(fused, ref["output"], **TOL)
    if spec.logit_softcap is not None:
        # The cap changes the output, so agreeing above means the capped path ran.
        uncapped = dataclasses.replace(spec, logit_softcap=None)
        plain = _reference(uncapped, params, x, query_positions=pos, key_positions=pos)
        assert np.abs(plain["output"] - ref["output"]).max() > 1e-2


@pytest.mark.parametrize("positions", ["implicit", "offset"])
def test_all_extensions_with_implicit_and_offset_positions(positions):
    spec = GQASpec(N, K, H, use_bias=True, sliding_window=WINDOW, **EXTENSIONS["all"])
    params, x = _setup(spec, seed=2)
    where = dict(query_positions=POSITIONS[positions], key_positions=POSITIONS[positions])
    ref = _reference(spec, params, x, **where)
    _check_trace(core.attention_trace(params, x, x, spec=spec, use_causal_mask=True, **where), ref)
    if positions == "implicit":
        explicit = np.arange(T)
        ref_explicit = _reference(spec, params, x, query_positions=explicit, key_positions=explicit)
        np.testing.assert_array_equal(ref_explicit["logits"], ref["logits"])
    else:  # the rotated queries moved with the positions (their logits, by design, did not)
        ref0 = _reference(spec, params, x)
        assert np.abs(ref0["query"] - ref["query"]).max() > 1e-2
        np.testing.assert_allclose(ref0["logits"], ref["logits"], atol=1e-12)


@pytest.mark.parametrize("extension", ["all", "softcap", "rope_yarn"])
def test_causal_only_output_path(extension):
    """Causal alone sends the fused kernel down its is_causal branch (no mask array)."""
    spec = GQASpec(N, K, H, use_bias=True, **EXTENSIONS[extension])
    params, x = _setup(spec, seed=3)
    pos = POSITIONS["offset"]
    kw = dict(spec=spec, use_causal_mask=True, query_positions=pos, key_positions=pos)
    ref = _reference(spec, params, x, query_positions=pos, key_positions=pos)
    np.testing.assert_allclose(core.attention(params, x, x, **kw), ref["output"], **TOL)
    fused = core.attention(params, x, x, implementation="xla", **kw)
    np.testing.assert_allclose(fused, ref["output"], **TOL)


@pytest.mark.parametrize("extension", ["all", "rope_dynamic"])
def test_chunk_of_queries_against_all_keys(extension):
    """T = 4 queries at positions 5..8 against S = 9 keys at 0..8 (a prefill's last chunk):
    positions differ between q and k, the causal mask is given as an array. Dynamic RoPE
    grows its base by S = 9 > 6 for the queries too."""
    spec = GQASpec(N, K, H, use_bias=True, **EXTENSIONS[extension])
    params, x = _setup(spec, seed=1)
    q_in = x[:, 5:]  # [B, 4, D]
    allowed = np.arange(9)[None, :] <= np.arange(5, 9)[:, None]  # [4, 9]
    kw = dict(query_positions=np.arange(5, 9), key_positions=np.arange(9))
    ref = _reference(spec, params, q_in, causal=False, value=x, attention_mask=allowed, **kw)
    tr = core.attention_trace(params, q_in, x, spec=spec, attention_mask=allowed, **kw)
    for name in ("query", "key", "logits", "probs", "output"):
        np.testing.assert_allclose(getattr(tr, name), ref[name], **TOL, err_msg=name)
    # The last query is the full pass's last query.
    full = core.attention_trace(params, x, x, spec=spec, use_causal_mask=True)
    np.testing.assert_allclose(tr.output, full.output[:, 5:], **TOL)


# ----------------------------------------------------------------------------------------------
# RoPE's defining property
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ROPES)
def test_rope_logits_depend_only_on_position_difference(kind):
    spec = GQASpec(N, K, H, rope=ROPES[kind])
    r = np.random.default_rng(5)
    q = r.standard_normal((B, T, N, H)).astype(np.float32)
    k = r.standard_normal((B, T, K, H)).astype(np.float32)
    pos = POSITIONS["per_batch"]

    def logits(qp, kp):  # [B, N, T, S]; query head n reads kv head n // G
        rq, rk = core.positions_and_norms({}, spec, q, k, qp, kp)
        rk = np.repeat(np.asarray(rk), N // K, axis=2)
        return np.einsum("btnh,bsnh->bnts", np.asarray(rq), rk)

    base = logits(pos, pos)
    np.testing.assert_allclose(logits(pos + 7, pos + 7), base, **TOL)
    # Moving the queries alone changes their distance to every key, and so the logits.
    assert np.abs(logits(pos + 7, pos) - base).max() > 0.1


# ----------------------------------------------------------------------------------------------
# RoPE frequencies, rotation and the head norm against transformers
# ----------------------------------------------------------------------------------------------

LLAMA31 = dict(
    rope_type="llama3",
    rope_theta=500_000.0,
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=8192,
)
YARN = dict(
    rope_type="yarn", rope_theta=1_000_000.0, factor=4.0, original_max_position_embeddings=32768
)
# (case name, rope_parameters, head_dim, max_position_embeddings, seq_len)
HF_CASES = [
    ("default", dict(rope_type="default", rope_theta=500_000.0), 128, 131072, None),
    ("default_1e4", dict(rope_type="default", rope_theta=10_000.0), 64, 2048, None),
    ("llama3.1", LLAMA31, 128, 131072, None),
    ("llama3.2", {**LLAMA31, "factor": 32.0}, 64, 131072, None),
    ("linear", dict(rope_type="linear", rope_theta=10_000.0, factor=4.0), 128, 16384, None),
    (
        "linear_partial",
        dict(rope_type="linear", rope_theta=10_000.0, factor=2.0, partial_rotary_factor=0.5),
        128,
        4096,
        None,
    ),
    ("dynamic_below", dict(rope_type="dynamic", rope_theta=10_000.0, factor=2.0), 128, 4096, 100),
    ("dynamic_at", dict(rope_type="dynamic", rope_theta=10_000.0, factor=2.0), 128, 4096, 4096),
    ("dynamic_above", dict(rope_type="dynamic", rope_theta=10_000.0, factor=2.0), 128, 4096, 5000),
    ("dynamic_far", dict(rope_type="dynamic", rope_theta=1e6, factor=4.0), 64, 4096, 40000),
    ("yarn", YARN, 128, 131072, None),
    ("yarn_no_truncate", {**YARN, "truncate": False}, 128, 131072, None),
    ("yarn_mscale_equal", {**YARN, "mscale": 0.707, "mscale_all_dim": 0.707}, 128, 131072, None),
    (
        "yarn_mscale",
        {
            **YARN,
            "factor": 40.0,
            "rope_theta": 10_000.0,
            "mscale": 1.0,
            "mscale_all_dim": 0.5,
            "original_max_position_embeddings": 4096,
        },
        64,
        163840,
        None,
    ),
    (
        "yarn_attention_factor",
        {**YARN, "attention_factor": 1.3, "beta_fast": 16.0, "beta_slow": 2.0},
        128,
        131072,
        None,
    ),
    ("yarn_partial", {**YARN, "partial_rotary_factor": 0.25}, 128, 131072, None),
]


def _hf_config(parameters: dict, head_dim: int, max_position_embeddings: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=4 * head_dim,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        rope_parameters=dict(parameters),
    )


def _our_rope(parameters: dict, head_dim: int, max_position_embeddings: int) -> Rope:
    """The Rope a checkpoint loader builds from a transformers rope_parameters dict."""
    p = dict(parameters)
    kind = p.pop("rope_type")
    theta = p.pop("rope_theta")
    partial = p.pop("partial_rotary_factor", 1.0)
    if kind == "dynamic":
        p["max_position_embeddings"] = max_position_embeddings
    return Rope(theta=theta, rotary_dim=int(head_dim * partial), kind=kind, **p)


@pytest.mark.parametrize(
    ("case", "parameters", "head_dim", "max_pos", "seq_len"), HF_CASES, ids=[c[0] for c in HF_CASES]
)
def test_inverse_frequencies_match_transformers(case, parameters, head_dim, max_pos, seq_len):
    torch = pytest.importorskip("torch")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = _hf_config(parameters, head_dim, max_pos)
    kind = parameters["rope_type"]
    with torch.no_grad():
        if kind == "default":
            theirs, their_scale = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
        else:
            theirs, their_scale = ROPE_INIT_FUNCTIONS[kind](config, device=None, seq_len=seq_len)
    theirs = theirs.numpy()
    rope = _our_rope(parameters, head_dim, max_pos)
    # Our seq_len argument is the call's key length; transformers' None means "at init time".
    ours, our_scale = rope.inverse_frequencies(head_dim, seq_len or 64)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    # Both in float32 from a correctly rounded pow; torch's pow is within an ulp of that, so
    # a few frequencies may differ in their last bits.
    np.testing.assert_array_max_ulp(ours, theirs, maxulp=2)
    assert np.count_nonzero(ours != theirs) <= len(ours) // 8
    assert our_scale == pytest.approx(their_scale, rel=1e-12)
    if kind == "yarn":
        assert their_scale != 1.0 or "mscale_equal" in case  # the cos/sin scale is exercised
    # The float64 oracle, written from the formulas, agrees as well.
    ref, ref_scale = reference_rope_inv_freq(head_dim, seq_len or 64, **dataclasses.asdict(rope))
    np.testing.assert_allclose(ref, theirs, rtol=5e-7)
    assert ref_scale == pytest.approx(their_scale, rel=1e-12)


@pytest.mark.parametrize(
    ("parameters", "max_pos", "positions"),
    [
        (LLAMA31, 131072, np.stack([np.arange(5, 5 + T), 1000 + 3 * np.arange(T)])),
        (YARN, 131072, np.stack([np.arange(5, 5 + T), 1000 + 3 * np.arange(T)])),
        # transformers' dynamic RoPE grows the base to max(position) + 1 = 40 > 16; ours to S.
        (dict(rope_type="dynamic", rope_theta=10_000.0, factor=2.0), 16, np.arange(40)[None]),
    ],
    ids=["llama3", "yarn", "dynamic_grown"],
)
def test_rotation_matches_transformers(parameters, max_pos, positions):
    torch = pytest.importorskip("torch")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    head_dim, length = 64, positions.shape[1]
    r = np.random.default_rng(3)
    q = r.standard_normal((positions.shape[0], length, 4, head_dim)).astype(np.float32)
    k = r.standard_normal((positions.shape[0], length, 2, head_dim)).astype(np.float32)
    embedding = LlamaRotaryEmbedding(_hf_config(parameters, head_dim, max_pos))
    with torch.no_grad():
        cos, sin = embedding(torch.from_numpy(q), torch.from_numpy(positions))
        hf_q, hf_k = apply_rotary_pos_emb(
            torch.from_numpy(q), torch.from_numpy(k), cos, sin, unsqueeze_dim=2
        )
    rope = _our_rope(parameters, head_dim, max_pos)
    ours_cos_sin = rope_lib.tables(rope, positions, head_dim, length)
    # Positions up to ~1000 radians: float32 angles themselves carry ~6e-5 of rounding.
    np.testing.assert_allclose(rope_lib.rotate(q, *ours_cos_sin), hf_q.numpy(), atol=2e-4)
    np.testing.assert_allclose(rope_lib.rotate(k, *ours_cos_sin), hf_k.numpy(), atol=2e-4)
    inv, multiplier = reference_rope_inv_freq(head_dim, length, **dataclasses.asdict(rope))
    ref = reference_rope_rotate(q, positions, inv, multiplier)
    np.testing.assert_allclose(ref, hf_q.numpy(), atol=2e-4)


def test_head_norm_matches_qwen3_and_gemma3_norms():
    torch = pytest.importorskip("torch")
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    r = np.random.default_rng(4)
    x = (3 * r.standard_normal((B, T, N, H))).astype(np.float32)
    w = r.standard_normal(H).astype(np.float32)
    for hf_class, offset in ((Qwen3RMSNorm, 0.0), (Gemma3RMSNorm, 1.0)):
        hf = hf_class(H, eps=1e-6)
        with torch.no_grad():
            hf.weight.copy_(torch.from_numpy(w))
            theirs = hf(torch.from_numpy(x)).numpy()
        ours = core.head_norm(x, w, HeadNorm(eps=1e-6, offset=offset))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
        ref = reference_head_norm(x, w, eps=1e-6, offset=offset)
        np.testing.assert_allclose(ref, theirs, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        (dict(rope=Rope(rotary_dim=3)), r"rotary_dim must be even .*head_dim \(8\), got 3"),
        (dict(rope=Rope(rotary_dim=10)), r"rotary_dim must be even .*head_dim \(8\), got 10"),
        (dict(rope=Rope(rotary_dim=0)), "rotary_dim must be even"),
        (
            dict(rope=Rope(kind="dynamic", max_position_embeddings=8, rotary_dim=2)),
            "dynamic needs rotary_dim > 2",
        ),
        (dict(scale=0.0), "scale must be None or a positive number, got 0.0"),
        (dict(scale=-0.5), "scale must be None or a positive number"),
        (dict(scale=float("nan")), "scale must be None or a positive number"),
        (dict(scale=float("inf")), "scale must be None or a positive number"),
        (dict(scale="0.1"), "scale must be None or a positive number"),
        (dict(logit_softcap=0), "logit_softcap must be None or a positive number, got 0"),
        (dict(logit_softcap=-30.0), "logit_softcap must be None or a positive number"),
        (dict(logit_softcap=float("inf")), "logit_softcap must be None or a positive number"),
        (dict(logit_softcap=True), "logit_softcap must be None or a positive number"),
    ],
)
def test_bad_spec_is_refused(fields, needle):
    with pytest.raises(ValueError, match=needle):
        GQASpec(N, K, H, **fields)


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        (dict(kind="ntk"), "RoPE kind must be one of"),
        (dict(theta=0.0), "theta must be positive"),
        (dict(kind="linear", factor=0.0), "linear needs a positive factor"),
        (dict(kind="llama3", factor=8.0), "llama3 needs original_max_position_embeddings"),
        (dict(kind="yarn", factor=4.0), "yarn needs original_max_position_embeddings"),
        (dict(kind="dynamic", factor=2.0), "dynamic needs max_position_embeddings"),
    ],
)
def test_bad_rope_is_refused(settings, needle):
    with pytest.raises(ValueError, match=needle):
        Rope(**settings)


def test_numpy_scalars_are_accepted():
    """A scale computed with NumPy (e.g. query_pre_attn_scalar ** -0.5 from an array)."""
    a = GQASpec(N, K, H, scale=np.float32(0.25), logit_softcap=np.float64(50.0))
    b = GQASpec(N, K, H, scale=0.25, logit_softcap=50.0)
    assert a.softmax_scale == b.softmax_scale


@pytest.mark.parametrize(
    ("which", "positions", "needle"),
    [
        ("query", np.arange(T + 1), rf"query_positions must be integers of shape \(2, {T}\)"),
        ("key", np.zeros((3, T), np.int32), rf"key_positions .* got int32 \(3, {T}\)"),
        ("query", np.zeros((B, T, 1), np.int32), "query_positions must be integers"),
        ("query", np.arange(T, dtype=np.float32), "query_positions .* got float32"),
        ("key", np.ones(T, bool), "key_positions .* got bool"),
    ],
)
def test_bad_positions_are_refused(which, positions, needle):
    spec = GQASpec(N, K, H, rope=Rope())
    params, x = _setup(spec)
    for call in (core.attention, core.attention_trace):
        with pytest.raises(ValueError, match=needle):
            call(params, x, x, spec=spec, **{f"{which}_positions": positions})


def test_missing_or_misshapen_norm_weights_are_refused():
    spec = GQASpec(N, K, H, qk_norm=HeadNorm())
    params, x = _setup(spec)
    missing = {name: w for name, w in params.items() if name != "query_norm"}
    with pytest.raises(ValueError, match=r"qk_norm: missing \['query_norm/scale'\]"):
        core.attention(params=missing, query=x, value=x, spec=spec)
    wrong = {**params, "key_norm": {"scale": np.ones(H + 1, np.float32)}}
    with pytest.raises(ValueError, match="key_norm"):
        core.attention(wrong, x, x, spec=spec)
    # Norm weights without qk_norm are unexpected rather than silently unused.
    with pytest.raises(ValueError, match=r"unexpected \['key_norm/scale', 'query_norm/scale'\]"):
        core.attention(params, x, x, spec=GQASpec(N, K, H))


# ----------------------------------------------------------------------------------------------
# Defaults unchanged
# ----------------------------------------------------------------------------------------------


def test_defaults_are_bit_identical():
    plain = GQASpec(N, K, H, use_bias=True, sliding_window=WINDOW)
    spelled = GQASpec(
        N,
        K,
        H,
        use_bias=True,
        sliding_window=WINDOW,
        rope=None,
        qk_norm=None,
        scale=None,
        logit_softcap=None,
    )
    params, x = _setup(plain)

    def same(a, b):
        for u, v in zip(a, b, strict=True):
            assert (u is None) == (v is None)
            if u is not None:
                np.testing.assert_array_equal(u, v)

    def outputs(spec, *extra_calls, **extra):
        kw = dict(spec=spec, use_causal_mask=True, **extra)
        calls = {
            "output": lambda: [core.attention(params, x, x, **kw)],
            "xla": lambda: [core.attention(params, x, x, implementation="xla", **kw)],
            "scores": lambda: core.attention(params, x, x, return_scores=True, **kw),
            "trace": lambda: core.attention_trace(params, x, x, **kw),
        }
        return [a for name in extra_calls for a in calls[name]()]

    everything = ("output", "xla", "scores", "trace")
    assert spelled == plain and hash(spelled) == hash(plain)
    same(outputs(plain, *everything), outputs(spelled, *everything))
    # Without RoPE, positions change nothing.
    moved = dict(query_positions=POSITIONS["per_batch"], key_positions=np.arange(T))
    same(outputs(plain, "output", "trace"), outputs(plain, "output", "trace", **moved))
    # The default scale is exactly 1/sqrt(H), applied where an explicit one is.
    explicit = dataclasses.replace(plain, scale=1 / math.sqrt(H))
    same(outputs(plain, "xla", "scores"), outputs(explicit, "xla", "scores"))
    # And it is still the float64 oracle's Keras layer.
    ref = _reference(plain, params, x)
    np.testing.assert_allclose(outputs(plain, "output")[0], ref["output"], **TOL)


def test_init_params_gives_identity_qk_norms_that_run():
    for offset in (0.0, 1.0):
        spec = core.GQASpec(6, 2, 8, qk_norm=core.HeadNorm(eps=1e-6, offset=offset))
        params = core.init_params(spec, 16, seed=0)
        for part in ("query_norm", "key_norm"):
            gain = offset + np.asarray(params[part]["scale"])
            np.testing.assert_array_equal(gain, np.ones(8, np.float32))
        x = np.random.default_rng(0).standard_normal((1, 5, 16)).astype(np.float32)
        out = core.attention(params, x, x, spec=spec, use_causal_mask=True)
        assert out.shape == (1, 5, 16) and np.all(np.isfinite(out))


def test_spec_refuses_extension_objects_of_the_wrong_type():
    with pytest.raises(ValueError, match="rope must be None or a gqa_viz.rope.Rope"):
        core.GQASpec(4, 2, 8, rope="llama3")
    with pytest.raises(ValueError, match="qk_norm must be None or a HeadNorm"):
        core.GQASpec(4, 2, 8, qk_norm=1e-6)
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        core.GQASpec(4, 2, 8, qk_norm=core.HeadNorm(eps=-1.0))


def test_decode_refuses_layers_it_would_run_wrongly():
    from gqa_viz import decode

    spec = core.GQASpec(4, 2, 8, rope=Rope())
    params = core.init_params(spec, 16, seed=0)
    h = np.zeros((1, 1, 16), np.float32)
    cache = np.zeros((1, 4, 2, 8), np.float32)
    allowed = np.ones((1, 5), bool)
    with pytest.raises(ValueError, match="without RoPE or QK norm"):
        decode._cached_attention(
            params, h, spec=spec, cache_k=cache, cache_v=cache, allowed=allowed
        )
