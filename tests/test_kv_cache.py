"""KV cache arithmetic against hand-computed values, and the presets against their configs."""

from __future__ import annotations

import dataclasses

import pytest

from gqa_viz import kv_cache as kv
from gqa_viz.models import PRESETS, ModelShape

GB, GiB = kv.GB, kv.GiB
LLAMA2_7B = PRESETS["Llama-2-7B"]
LLAMA3_8B = PRESETS["Llama-3-8B"]
LLAMA2_70B = PRESETS["Llama-2-70B"]
MISTRAL = PRESETS["Mistral-7B"]
FALCON = PRESETS["Falcon-7B"]
DEEPSEEK = PRESETS["DeepSeek-V2-Lite"]


# ---------------------------------------------------------------------------------------------
# The cache, by hand.


def test_llama2_7b_bf16_4096_tokens_is_2_gib():
    # 2 * 32 layers * 32 kv heads * 128 * 2 B * 4096 = 2**31
    assert kv.kv_cache_bytes(LLAMA2_7B, 4096) == 2 * 32 * 32 * 128 * 2 * 4096 == 2 * GiB


def test_llama3_8b_bf16_8192_tokens_is_1_gib():
    # 2 * 32 * 8 * 128 * 2 * 8192 = 2**30
    assert kv.kv_cache_bytes(LLAMA3_8B, 8192, dtype="bf16") == 2 * 32 * 8 * 128 * 2 * 8192 == GiB


def test_falcon_7b_multi_query():
    # 2 * 32 layers * 1 kv head * 64 * 2 B = 8192 B per token; * 2048 tokens = 16 MiB
    assert kv.kv_cache_bytes(FALCON, 1) == 8192
    assert kv.kv_cache_bytes(FALCON, 2048) == 16 * 2**20


def test_gemma_2b_and_qwen2_7b():
    # Gemma-2B: 2 * 18 * 1 * 256 * 2 * 8192 = 150,994,944
    assert kv.kv_cache_bytes(PRESETS["Gemma-2B"], 8192) == 150_994_944
    # Qwen2-7B: 2 * 28 * 4 * 128 * 2 = 57,344 B per token; * 32768 = 1,879,048,192
    assert kv.kv_cache_bytes(PRESETS["Qwen2-7B"], 32768) == 1_879_048_192


def test_mistral_sliding_window_caps_the_cache_at_4096_tokens():
    window = 2 * 32 * 8 * 128 * 2 * 4096  # 512 MiB
    assert kv.kv_cache_bytes(MISTRAL, 32768) == window == 512 * 2**20
    assert kv.kv_cache_bytes(MISTRAL, 4096) == window
    assert kv.kv_cache_bytes(MISTRAL, 1000) == 2 * 32 * 8 * 128 * 2 * 1000
    assert kv.cached_tokens(MISTRAL, 32768) == 4096
    # Mixtral has no window: the same heads, 8x the cache at 32k.
    assert kv.kv_cache_bytes(PRESETS["Mixtral-8x7B"], 32768) == 8 * window


def test_batch_and_zero_tokens():
    assert kv.kv_cache_bytes(LLAMA3_8B, 8192, batch=8) == 8 * GiB
    assert kv.kv_cache_bytes(LLAMA3_8B, 0) == 0


@pytest.mark.parametrize(
    "dtype, expected",
    [("fp32", 4 * GiB), ("bf16", 2 * GiB), ("fp16", 2 * GiB), ("fp8", GiB), ("int4", GiB / 2)],
)
def test_dtypes(dtype, expected):
    assert kv.kv_cache_bytes(LLAMA2_7B, 4096, dtype=dtype) == expected


def test_variants_mha_and_mqa():
    v = kv.variants(LLAMA3_8B, tokens=8192)
    assert v == {"configured": GiB, "mha": 4 * GiB, "mqa": GiB / 8}  # K = 8, 32, 1
    v = kv.variants(LLAMA2_7B)  # already MHA: configured == mha; MQA is 1/32
    assert v["configured"] == v["mha"] == 2 * GiB
    assert v["mqa"] == 2 * GiB / 32
    v = kv.variants(FALCON, tokens=2048)  # already MQA: MHA is 71x
    assert v["configured"] == v["mqa"] and v["mha"] == 71 * v["mqa"]


def test_kv_heads_override():
    assert kv.kv_cache_bytes(LLAMA3_8B, 8192, kv_heads=2) == GiB / 4
    with pytest.raises(ValueError, match=r"kv_heads \(3\)"):
        kv.kv_cache_bytes(LLAMA3_8B, 8192, kv_heads=3)
    with pytest.raises(ValueError, match="got 0"):
        kv.kv_cache_bytes(LLAMA3_8B, 8192, kv_heads=0)


# ---------------------------------------------------------------------------------------------
# MLA is refused, not computed.


@pytest.mark.parametrize(
    "call",
    [
        lambda: kv.kv_cache_bytes(DEEPSEEK, 4096),
        lambda: kv.variants(DEEPSEEK),
        lambda: kv.formula(DEEPSEEK, 4096),
        lambda: kv.max_context(DEEPSEEK, 80 * GB),
        lambda: kv.max_batch(DEEPSEEK, 80 * GB, 4096),
        lambda: kv.decode_time_lower_bound(DEEPSEEK, 4096),
    ],
)
def test_mla_is_refused(call):
    with pytest.raises(ValueError, match="DeepSeek-V2-Lite.*GQA formula does not apply"):
        call()


def test_mla_weights_are_still_known():
    assert kv.weights_bytes(DEEPSEEK, "bf16") == pytest.approx(31.4 * GB)


# ---------------------------------------------------------------------------------------------
# Budgets, by hand. Weights: params_billion * 1e9 * bytes.


def test_weights_bytes():
    assert kv.weights_bytes(LLAMA2_7B, "bf16") == pytest.approx(13.48 * GB)
    assert kv.weights_bytes(LLAMA2_70B, "int4") == pytest.approx(34.49 * GB)
    assert kv.weights_bytes(LLAMA3_8B, "fp32") == pytest.approx(32.12 * GB)


def test_max_context_24_40_80_gb():
    # Llama-2-7B, 24 GB: 24e9 - 13.48e9 = 10.52e9 free; 524,288 B/token;
    # 524288 * 20065 = 10,519,838,720 <= 10.52e9 < 524288 * 20066 = 10,520,363,008
    assert kv.max_context(LLAMA2_7B, 24 * GB) == 20065
    # Llama-3-8B, 40 GB: 40e9 - 16.06e9 = 23.94e9 free; 131,072 B/token;
    # 131072 * 182647 = 23,939,907,584 <= 23.94e9 < 131072 * 182648 = 23,940,038,656
    assert kv.max_context(LLAMA3_8B, 40 * GB) == 182647
    # ... and at batch 4 each sequence gets a quarter: floor(182647.7 / 4)
    assert kv.max_context(LLAMA3_8B, 40 * GB, batch=4) == 45661
    # Llama-2-70B, 80 GB: bf16 weights (137.96e9) alone don't fit.
    assert kv.max_context(LLAMA2_70B, 80 * GB) == 0
    # int4 weights: 80e9 - 34.49e9 = 45.51e9 free; 2 * 80 * 8 * 128 * 2 = 327,680 B/token;
    # 327680 * 138885 = 45,509,836,800 <= 45.51e9 < 327680 * 138886 = 45,510,164,480
    assert kv.max_context(LLAMA2_70B, 80 * GB, weights_dtype="int4") == 138885


def test_max_context_sliding_window_is_unbounded_when_a_window_fits():
    # Mistral-7B, 24 GB: 24e9 - 14.48e9 = 9.52e9 free >= 512 MiB for a full window.
    assert kv.max_context(MISTRAL, 24 * GB) is None
    # 15 GB: 0.52e9 free < 536,870,912 B for the window: bounded by memory, below the window.
    # 0.52e9 / 131072 = 3967.28
    assert kv.max_context(MISTRAL, 15 * GB) == 3967


def test_max_batch():
    # Llama-3-8B, 80 GB, 8192 tokens: 63.94e9 free / 2**30 per sequence = 59.55
    assert kv.max_batch(LLAMA3_8B, 80 * GB, 8192) == 59
    # Llama-2-7B, 24 GB, 4096 tokens: 10.52e9 / 2**31 = 4.90
    assert kv.max_batch(LLAMA2_7B, 24 * GB, 4096) == 4
    # Mistral-7B, 40 GB, 32k tokens: capped at the window, 25.52e9 / 2**29 = 47.53
    assert kv.max_batch(MISTRAL, 40 * GB, 32768) == 47
    # fp8 cache halves the per-sequence bytes: 63.94e9 / 2**29 = 119.1
    assert kv.max_batch(LLAMA3_8B, 80 * GB, 8192, dtype="fp8") == 119
    assert kv.max_batch(LLAMA2_70B, 80 * GB, 4096) == 0


def test_decode_time_lower_bound():
    # Llama-3-8B bf16, 8192 tokens, batch 1, 2 TB/s: (16.06e9 + 2**30) / 2e12 s
    t = kv.decode_time_lower_bound(LLAMA3_8B, 8192, 1, "bf16", "bf16", 2e12)
    assert t == pytest.approx((16.06e9 + 1_073_741_824) / 2e12) == pytest.approx(0.008566870912)
    # batch 8 reads eight caches but the weights once
    t8 = kv.decode_time_lower_bound(LLAMA3_8B, 8192, 8, "bf16", "bf16", 2e12)
    assert t8 == pytest.approx((16.06e9 + 8 * 2**30) / 2e12)


def test_formula_shows_the_numbers():
    text = kv.formula(LLAMA3_8B, 8192)
    assert "2 (K and V) × 32 layers × 8 kv heads × 128 head_dim × 2 B (bf16)" in text
    assert "8,192 tokens × 1 batch = 1,073,741,824 B = 1.07 GB = 1.00 GiB" in text
    assert "capped at the 4,096-token sliding window" in kv.formula(MISTRAL, 32768)
    assert "0.5 B (int4)" in kv.formula(LLAMA2_7B, 4096, dtype="int4")
    assert "32 kv heads" in kv.formula(LLAMA3_8B, 8192, kv_heads=32)


# ---------------------------------------------------------------------------------------------
# Bad inputs: ValueError naming the value.


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: kv.kv_cache_bytes(LLAMA2_7B, -1), "tokens.*-1"),
        (lambda: kv.kv_cache_bytes(LLAMA2_7B, 1.5), "tokens.*1.5"),
        (lambda: kv.kv_cache_bytes(LLAMA2_7B, 10, batch=0), "batch.*0"),
        (lambda: kv.kv_cache_bytes(LLAMA2_7B, 10, dtype="fp64"), "'fp64'"),
        (lambda: kv.weights_bytes(LLAMA2_7B, "int8"), "'int8'"),
        (lambda: kv.max_context(LLAMA2_7B, -5), "gpu_bytes.*-5"),
        (lambda: kv.max_context(LLAMA2_7B, 24 * GB, weights_dtype="q4"), "'q4'"),
        (lambda: kv.max_batch(LLAMA2_7B, 24 * GB, 0), "tokens.*0"),
        (lambda: kv.decode_time_lower_bound(LLAMA2_7B, 10, bandwidth_bytes_per_s=0), "bandwidth"),
        (lambda: kv.formula(LLAMA2_7B, -3), "tokens.*-3"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_model_shape_validation():
    with pytest.raises(ValueError, match=r"num_query_heads \(32\).*\(5\)"):
        dataclasses.replace(LLAMA3_8B, num_key_value_heads=5)
    with pytest.raises(ValueError, match="attention='mha'"):
        dataclasses.replace(LLAMA3_8B, attention="mha")
    with pytest.raises(ValueError, match="source"):
        ModelShape("X", 1, 1, 1, 1, 1, 1.0, attention="mha")
    with pytest.raises(ValueError, match="sliding_window.*0"):
        dataclasses.replace(MISTRAL, sliding_window=0)


# ---------------------------------------------------------------------------------------------
# The presets: consistent with themselves and with their configs.

EXPECTED = {  # layers, N, K, H, D from each config.json
    "Llama-2-7B": (32, 32, 32, 128, 4096),
    "Llama-2-70B": (80, 64, 8, 128, 8192),
    "Llama-3-8B": (32, 32, 8, 128, 4096),
    "Llama-3-70B": (80, 64, 8, 128, 8192),
    "Mistral-7B": (32, 32, 8, 128, 4096),
    "Mixtral-8x7B": (32, 32, 8, 128, 4096),
    "Qwen2-7B": (28, 28, 4, 128, 3584),
    "Gemma-2B": (18, 8, 1, 256, 2048),
    "Gemma-7B": (28, 16, 16, 256, 3072),
    "Falcon-7B": (32, 71, 1, 64, 4544),
    "DeepSeek-V2-Lite": (27, 16, 16, 128, 2048),
}
# Gemma-7B's config sets head_dim 256 explicitly: 16 * 256 = 4096 != hidden_size 3072.
HEAD_DIM_NOT_HIDDEN_OVER_HEADS = {"Gemma-7B"}


def test_presets_are_the_expected_models():
    assert set(PRESETS) == set(EXPECTED)
    for name, m in PRESETS.items():
        assert m.name == name
        assert (
            m.layers,
            m.num_query_heads,
            m.num_key_value_heads,
            m.head_dim,
            m.hidden_size,
        ) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_consistent(name):
    m = PRESETS[name]
    assert m.num_query_heads % m.num_key_value_heads == 0
    assert m.groups * m.num_key_value_heads == m.num_query_heads
    if name in HEAD_DIM_NOT_HIDDEN_OVER_HEADS:
        assert m.head_dim * m.num_query_heads != m.hidden_size
        assert m.note  # the exception is explained
    else:
        assert m.head_dim * m.num_query_heads == m.hidden_size
    assert "config.json" in m.source
    assert m.params_billion > 0
    if m.attention == "mha":
        assert m.num_key_value_heads == m.num_query_heads
    elif m.attention == "mqa":
        assert m.num_key_value_heads == 1
    elif m.attention == "gqa":
        assert 1 < m.num_key_value_heads < m.num_query_heads


def test_attention_kinds_and_windows():
    kinds = {name: m.attention for name, m in PRESETS.items()}
    assert kinds["Falcon-7B"] == kinds["Gemma-2B"] == "mqa"
    assert kinds["Gemma-7B"] == kinds["Llama-2-7B"] == "mha"
    assert kinds["DeepSeek-V2-Lite"] == "mla"
    windows = {name: m.sliding_window for name, m in PRESETS.items() if m.sliding_window}
    assert windows == {"Mistral-7B": 4096}


def test_presets_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        LLAMA3_8B.layers = 1
