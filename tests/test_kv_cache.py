"""KV cache arithmetic against hand-computed values, on models read from published configs.

The models are inline copies of the attention fields of each published ``config.json`` (so a
data file cannot break them), read by ``from_config`` like any upload. The budget tests give
the parameter count by hand (``with_params``, as a visitor does for a config it cannot be
derived from), so their arithmetic stays the rounded count written in each comment; derived
counts are tested in tests/test_from_config.py.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest

from gqa_viz import kv_cache as kv
from gqa_viz.kv_cache import from_config, with_params

GB, GiB = kv.GB, kv.GiB


def _model(name: str, params: int | None = None, **config):
    model = from_config(config, name=name, max_layers=1024)
    return model if params is None else with_params(model, params)


LLAMA = dict(model_type="llama", vocab_size=32000, tie_word_embeddings=False)
LLAMA2_7B = _model(
    "Llama-2-7B", 6_740_000_000, **LLAMA, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, hidden_size=4096, intermediate_size=11008,
)  # fmt: skip
LLAMA2_70B = _model(
    "Llama-2-70B", 68_980_000_000, **LLAMA, num_hidden_layers=80, num_attention_heads=64,
    num_key_value_heads=8, hidden_size=8192, intermediate_size=28672,
)  # fmt: skip
LLAMA3_8B = _model(
    "Llama-3-8B", 8_030_000_000, model_type="llama", vocab_size=128256, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, hidden_size=4096, intermediate_size=14336,
)  # fmt: skip
MISTRAL = _model(
    "Mistral-7B", 7_240_000_000, model_type="mistral", num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, hidden_size=4096, sliding_window=4096,
    max_position_embeddings=32768,
)  # fmt: skip
MIXTRAL = _model(
    "Mixtral-8x7B", model_type="mixtral", num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, hidden_size=4096, sliding_window=None, vocab_size=32000,
    intermediate_size=14336, num_local_experts=8, num_experts_per_tok=2,
)  # fmt: skip
FALCON = _model(
    "Falcon-7B", model_type="falcon", num_hidden_layers=32, num_attention_heads=71,
    hidden_size=4544, multi_query=True, new_decoder_architecture=False, vocab_size=65024,
)  # fmt: skip
GEMMA_2B = _model(
    "Gemma-2B", model_type="gemma", num_hidden_layers=18, num_attention_heads=8,
    num_key_value_heads=1, head_dim=256, hidden_size=2048, vocab_size=256000,
    intermediate_size=16384,
)  # fmt: skip
QWEN2_7B = _model(
    "Qwen2-7B", model_type="qwen2", num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, hidden_size=3584, sliding_window=131072, use_sliding_window=False,
    max_window_layers=28,
)  # fmt: skip
DEEPSEEK = _model(
    "DeepSeek-V2-Lite", model_type="deepseek_v2", num_hidden_layers=27,
    num_attention_heads=16, num_key_value_heads=16, hidden_size=2048, kv_lora_rank=512,
    q_lora_rank=None, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128,
    vocab_size=102400, intermediate_size=10944, moe_intermediate_size=1408,
    n_routed_experts=64, n_shared_experts=2, num_experts_per_tok=6, first_k_dense_replace=1,
    tie_word_embeddings=False, max_position_embeddings=163840,
)  # fmt: skip


def total(model, tokens, **kw):
    return kv.kv_cache_bytes(model, tokens=tokens, **kw).total


# ---------------------------------------------------------------------------------------------
# The cache, by hand.


def test_llama2_7b_bf16_4096_tokens_is_2_gib():
    # 2 * 32 layers * 32 kv heads * 128 * 2 B * 4096 = 2**31
    assert total(LLAMA2_7B, 4096) == 2 * 32 * 32 * 128 * 2 * 4096 == 2 * GiB


def test_llama3_8b_bf16_8192_tokens_is_1_gib():
    # 2 * 32 * 8 * 128 * 2 * 8192 = 2**30
    assert total(LLAMA3_8B, 8192, dtype="bf16") == 2 * 32 * 8 * 128 * 2 * 8192 == GiB


def test_falcon_7b_multi_query():
    # 2 * 32 layers * 1 kv head * 64 * 2 B = 8192 B per token; * 2048 tokens = 16 MiB
    assert total(FALCON, 1) == 8192
    assert total(FALCON, 2048) == 16 * 2**20


def test_gemma_2b_and_qwen2_7b():
    # Gemma-2B: 2 * 18 * 1 * 256 * 2 * 8192 = 150,994,944
    assert total(GEMMA_2B, 8192) == 150_994_944
    # Qwen2-7B: 2 * 28 * 4 * 128 * 2 = 57,344 B per token; * 32768 = 1,879,048,192
    assert total(QWEN2_7B, 32768) == 1_879_048_192


def test_mistral_sliding_window_caps_the_cache_at_4096_tokens():
    window = 2 * 32 * 8 * 128 * 2 * 4096  # 512 MiB
    assert total(MISTRAL, 32768) == window == 512 * 2**20
    assert total(MISTRAL, 4096) == window
    assert total(MISTRAL, 1000) == 2 * 32 * 8 * 128 * 2 * 1000
    assert kv.cached_tokens(MISTRAL, 32768) == 4096
    # Mixtral has no window: the same heads, 8x the cache at 32k.
    assert total(MIXTRAL, 32768) == 8 * window


def test_batch_and_zero_tokens():
    assert total(LLAMA3_8B, 8192, batch=8) == 8 * GiB
    assert total(LLAMA3_8B, 0) == 0


@pytest.mark.parametrize(
    "dtype, expected",
    [("fp32", 4 * GiB), ("bf16", 2 * GiB), ("fp16", 2 * GiB), ("fp8", GiB), ("int4", GiB / 2)],
)
def test_dtypes(dtype, expected):
    assert total(LLAMA2_7B, 4096, dtype=dtype) == expected


def test_bytes_are_exact_integers_or_fractions():
    # Whole bytes are ints: Falcon-7B in int4, 2 * 32 * 1 * 64 * 0.5 B * 3 tokens = 6,144 B.
    assert type(total(LLAMA3_8B, 8192)) is int
    assert total(FALCON, 3, dtype="int4") == 6144 and type(total(FALCON, 3, dtype="int4")) is int
    # An odd latent in int4 leaves half a byte: 1 layer * (3 + 0) elements * 0.5 B = 1.5 B.
    odd = _model("odd", num_hidden_layers=1, num_attention_heads=1, hidden_size=1,
                 kv_lora_rank=3, qk_rope_head_dim=0)  # fmt: skip
    assert total(odd, 1, dtype="int4") == Fraction(3, 2)
    assert total(odd, 2, dtype="int4") == 3 and type(total(odd, 2, dtype="int4")) is int
    assert "= 1.5 B" in kv.formula(odd, tokens=1, dtype="int4")


def test_per_layer_bytes_add_up_to_the_total():
    c = kv.kv_cache_bytes(LLAMA3_8B, tokens=8192)
    assert len(c.per_layer) == 32 and set(c.per_layer) == {GiB // 32}
    assert sum(c.per_layer) == c.total == GiB
    assert c.cached_tokens == (8192,) * 32


def test_variants_mha_and_mqa():
    v = kv.variants(LLAMA3_8B, tokens=8192)
    assert v == {"configured": GiB, "mha": 4 * GiB, "mqa": GiB / 8}  # K = 8, 32, 1
    v = kv.variants(LLAMA2_7B)  # already MHA: configured == mha; MQA is 1/32
    assert v["configured"] == v["mha"] == 2 * GiB
    assert v["mqa"] == 2 * GiB / 32
    v = kv.variants(FALCON, tokens=2048)  # already MQA: MHA is 71x
    assert v["configured"] == v["mqa"] and v["mha"] == 71 * v["mqa"]
    # Windows stay: Mistral's MHA variant is capped at 4096 tokens too (4x its 512 MiB).
    assert kv.variants(MISTRAL, tokens=32768)["mha"] == 4 * 512 * 2**20


def test_kv_heads_override():
    assert total(LLAMA3_8B, 8192, kv_heads=2) == GiB / 4
    with pytest.raises(ValueError, match=r"kv_heads \(3\)"):
        total(LLAMA3_8B, 8192, kv_heads=3)
    with pytest.raises(ValueError, match="got 0"):
        total(LLAMA3_8B, 8192, kv_heads=0)


def test_with_kv_heads_is_the_variant_every_function_computes():
    mha = kv.with_kv_heads(MISTRAL, 32)
    assert mha.num_key_value_heads == 32 and mha.attention == "mha"
    assert {(x.kv_heads, x.window) for x in mha.layers} == {(32, 4096)}  # windows kept
    assert MISTRAL.num_key_value_heads == 8  # a new model; the original is unchanged
    assert total(mha, 32768) == total(MISTRAL, 32768, kv_heads=32) == 4 * 512 * 2**20
    with pytest.raises(ValueError, match=r"kv_heads \(3\) must divide Mistral-7B's"):
        kv.with_kv_heads(MISTRAL, 3)
    with pytest.raises(ValueError, match="no per-head keys"):
        kv.with_kv_heads(DEEPSEEK, 1)


def test_exact_bytes_helpers():
    assert kv.dtype_bytes("int4") == Fraction(1, 2) and kv.dtype_bytes("fp32") == 4
    with pytest.raises(ValueError, match="Unknown weights dtype 'q4'"):
        kv.dtype_bytes("q4", "weights dtype")
    assert kv.whole(Fraction(6, 2)) == 3 and type(kv.whole(Fraction(6, 2))) is int
    assert kv.whole(Fraction(3, 2)) == Fraction(3, 2)
    assert kv.exact_bytes(1_073_741_824) == "1,073,741,824"
    assert kv.exact_bytes(Fraction(3, 2)) == "1.5"


def test_params_read():
    assert kv.params_read(LLAMA3_8B) == 8_030_000_000  # given by hand: read whole
    assert kv.params_read(MIXTRAL) == MIXTRAL.read_params < MIXTRAL.params  # 2 of 8 experts
    unknown = _model("X", model_type="olmo", num_hidden_layers=2, num_attention_heads=2,
                     hidden_size=8)  # fmt: skip
    with pytest.raises(ValueError, match="X: the parameter count cannot be derived"):
        kv.params_read(unknown)


def test_a_cache_computed_once_is_reused():
    cache = kv.kv_cache_bytes(MISTRAL, tokens=32768, batch=4, dtype="fp8")
    # 32 layers x 2 x 8 kv heads x 128 x 1 B per token; each layer capped at 4,096 tokens
    assert cache.per_token == 65_536 and cache.total == 4 * 65_536 * 4096
    (group,) = cache.groups
    assert group.count == 32 and group.indices == tuple(range(32)) and group.cached_tokens == 4096
    assert kv.formula(MISTRAL, tokens=32768, batch=4, dtype="fp8", cache=cache) == kv.formula(
        MISTRAL, tokens=32768, batch=4, dtype="fp8"
    )
    assert kv.variants(MISTRAL, tokens=32768, batch=4, dtype="fp8", cache=cache) == (
        kv.variants(MISTRAL, tokens=32768, batch=4, dtype="fp8")
    )
    # max_batch counts sequences: a cache of any batch serves.
    assert kv.max_batch(MISTRAL, 40 * GB, 32768, "fp8", cache=cache) == kv.max_batch(
        MISTRAL, 40 * GB, 32768, "fp8"
    )
    t = kv.decode_time_lower_bound(MISTRAL, 32768, 4, "fp8", cache=cache)
    assert t == kv.decode_time_lower_bound(MISTRAL, 32768, 4, "fp8")
    # A cache of other arguments is refused, naming what differs.
    with pytest.raises(ValueError, match=r"tokens 32768 \(not 1024\)"):
        kv.formula(MISTRAL, tokens=1024, batch=4, dtype="fp8", cache=cache)
    with pytest.raises(ValueError, match=r"dtype 'fp8' \(not 'bf16'\)"):
        kv.decode_time_lower_bound(MISTRAL, 32768, 4, "bf16", cache=cache)
    with pytest.raises(ValueError, match=r"layers 32 \(not 18\)"):
        kv.max_batch(GEMMA_2B, 40 * GB, 32768, "fp8", cache=cache)


# ---------------------------------------------------------------------------------------------
# MLA is computed (it used to be refused); only its MHA/MQA variants are refused, with why.


def test_mla_is_computed_from_the_latent():
    # 27 layers * (512 + 64) elements * 2 B = 31,104 B per token, whatever K = 16 and H say
    assert total(DEEPSEEK, 1) == 27 * (512 + 64) * 2 == 31_104
    assert total(DEEPSEEK, 4096) == 31_104 * 4096
    # 2 * K * H per layer would have said 2 * 27 * 16 * 128 * 2 = 221,184 B (7.1x too much)
    assert 2 * 27 * 16 * 128 * 2 / 31_104 == pytest.approx(7.11, abs=0.01)
    assert kv.variants(DEEPSEEK, tokens=4096) == {"configured": 31_104 * 4096}
    assert "27 MLA layers × (512 kv_lora_rank + 64 qk_rope_head_dim)" in kv.formula(
        DEEPSEEK, tokens=4096
    )


@pytest.mark.parametrize("kv_heads", [1, 16])
def test_mla_has_no_mha_or_mqa_variant(kv_heads):
    with pytest.raises(ValueError, match="DeepSeek-V2-Lite.*latent.*no per-head keys"):
        total(DEEPSEEK, 4096, kv_heads=kv_heads)


def test_mla_weights_are_still_known():
    # 15,706,484,224 derived parameters * 2 B (bf16); the old hand-typed 15.7B gave 31.4 GB
    assert kv.weights_bytes(DEEPSEEK, "bf16") == 2 * 15_706_484_224 == 31_412_968_448


# ---------------------------------------------------------------------------------------------
# Budgets, by hand. Weights: the given parameter count * bytes.


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
    text = kv.formula(LLAMA3_8B, tokens=8192)
    assert "2 (K and V) × 32 layers × 8 kv heads × 128 head_dim × 2 B (bf16)" in text
    assert "8,192 tokens × 1 batch = 1,073,741,824 B = 1.07 GB = 1.00 GiB" in text
    assert "capped at the 4,096-token sliding window" in kv.formula(MISTRAL, tokens=32768)
    assert "0.5 B (int4)" in kv.formula(LLAMA2_7B, tokens=4096, dtype="int4")
    assert "32 kv heads" in kv.formula(LLAMA3_8B, tokens=8192, kv_heads=32)


# ---------------------------------------------------------------------------------------------
# Bad inputs: ValueError naming the value.


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: total(LLAMA2_7B, -1), "tokens.*-1"),
        (lambda: total(LLAMA2_7B, 1.5), "tokens.*1.5"),
        (lambda: total(LLAMA2_7B, 10, batch=0), "batch.*0"),
        (lambda: total(LLAMA2_7B, 10, dtype="fp64"), "'fp64'"),
        (lambda: kv.weights_bytes(LLAMA2_7B, "int8"), "'int8'"),
        (lambda: kv.max_context(LLAMA2_7B, -5), "gpu_bytes.*-5"),
        (lambda: kv.max_context(LLAMA2_7B, 24 * GB, weights_dtype="q4"), "'q4'"),
        (lambda: kv.max_batch(LLAMA2_7B, 24 * GB, 0), "tokens.*0"),
        (lambda: kv.decode_time_lower_bound(LLAMA2_7B, 10, bandwidth_bytes_per_s=0), "bandwidth"),
        (lambda: kv.formula(LLAMA2_7B, tokens=-3), "tokens.*-3"),
        (lambda: with_params(LLAMA2_7B, 0), "params.*0"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_model_validation():
    with pytest.raises(ValueError, match=r"num_attention_heads \(32\).*\(5\)"):
        _model("X", num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=5,
               hidden_size=4096)  # fmt: skip
    with pytest.raises(ValueError, match="sliding_window.*0"):
        _model("X", model_type="mistral", num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=2, hidden_size=8, sliding_window=0)  # fmt: skip
    with pytest.raises(ValueError, match="num_key_value_heads must be an integer >= 1"):
        dataclasses.replace(LLAMA3_8B, num_key_value_heads=0)


def test_weights_unknown_is_asked_for():
    unknown = _model("X", model_type="olmo", num_hidden_layers=2, num_attention_heads=2,
                     hidden_size=8)  # fmt: skip
    assert unknown.params is None
    with pytest.raises(ValueError, match="X: the parameter count cannot be derived.*give it"):
        kv.weights_bytes(unknown)
    assert kv.weights_bytes(with_params(unknown, 1000), "fp16") == 2000


# ---------------------------------------------------------------------------------------------
# The inline models: consistent with themselves and with their configs.

EXPECTED = {  # layers, N, K, H, D, attention
    "Llama-2-7B": (LLAMA2_7B, 32, 32, 32, 128, 4096, "mha"),
    "Llama-2-70B": (LLAMA2_70B, 80, 64, 8, 128, 8192, "gqa"),
    "Llama-3-8B": (LLAMA3_8B, 32, 32, 8, 128, 4096, "gqa"),
    "Mistral-7B": (MISTRAL, 32, 32, 8, 128, 4096, "gqa"),
    "Mixtral-8x7B": (MIXTRAL, 32, 32, 8, 128, 4096, "gqa"),
    "Qwen2-7B": (QWEN2_7B, 28, 28, 4, 128, 3584, "gqa"),
    "Gemma-2B": (GEMMA_2B, 18, 8, 1, 256, 2048, "mqa"),
    "Falcon-7B": (FALCON, 32, 71, 1, 64, 4544, "mqa"),
    "DeepSeek-V2-Lite": (DEEPSEEK, 27, 16, 16, 192, 2048, "mla"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_models_read_as_expected(name):
    m, L, N, K, H, D, attention = EXPECTED[name]
    assert m.name == name
    assert (m.num_layers, m.num_query_heads, m.num_key_value_heads, m.head_dim) == (L, N, K, H)
    assert m.hidden_size == D and m.attention == attention
    assert m.groups * m.num_key_value_heads == m.num_query_heads
    windows = {layer.window for layer in m.layers}
    assert windows == ({4096} if name == "Mistral-7B" else {None})
    assert m.sliding_window == (4096 if name == "Mistral-7B" else None)


def test_models_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        LLAMA3_8B.num_query_heads = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        LLAMA3_8B.layers[0].window = 1


def test_duration_picks_the_unit_people_read():
    assert kv.duration(47.78e-9) == "47.78 ns"
    assert kv.duration(172.1e-6) == "172.1 µs"
    assert kv.duration(4.8e-3) == "4.8 ms"
    assert kv.duration(999.9e-9) == "999.9 ns" and kv.duration(1.2e-6) == "1.2 µs"
