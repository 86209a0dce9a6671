"""Reading published config.json files: every trap other calculators fall into, by hand.

Each config below is an inline copy of the fields of the published file that matter (so a data
file cannot break these tests); the arithmetic is written out beside each number. Parameter
counts were also checked against transformers 5.24.0 building each model on the meta device.
"""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from gqa_viz import kv_cache as kv
from gqa_viz.app import limits
from gqa_viz.kv_cache import from_config, kv_cache_bytes, parse_config_json

GB, GiB = kv.GB, kv.GiB
CAP = limits.MAX_CONFIG_LAYERS

LLAMA_3_1_8B = {
    "model_type": "llama", "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "hidden_size": 4096, "intermediate_size": 14336,
    "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": False,
    "rope_scaling": {"factor": 8.0, "rope_type": "llama3"},
}  # fmt: skip
LLAMA_2_7B = {
    "model_type": "llama", "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "hidden_size": 4096, "intermediate_size": 11008,
    "vocab_size": 32000, "max_position_embeddings": 4096, "tie_word_embeddings": False,
}  # fmt: skip
LLAMA_3_70B = {
    "model_type": "llama", "num_hidden_layers": 80, "num_attention_heads": 64,
    "num_key_value_heads": 8, "hidden_size": 8192, "intermediate_size": 28672,
    "vocab_size": 128256, "max_position_embeddings": 8192,
}  # fmt: skip
MISTRAL_7B = {
    "model_type": "mistral", "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "hidden_size": 4096, "intermediate_size": 14336,
    "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": 4096,
    "tie_word_embeddings": False,
}  # fmt: skip
MIXTRAL = {
    "model_type": "mixtral", "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "hidden_size": 4096, "intermediate_size": 14336,
    "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": None,
    "num_local_experts": 8, "num_experts_per_tok": 2, "tie_word_embeddings": False,
}  # fmt: skip
GEMMA_7B = {
    "model_type": "gemma", "num_hidden_layers": 28, "num_attention_heads": 16,
    "num_key_value_heads": 16, "head_dim": 256, "hidden_size": 3072,
    "intermediate_size": 24576, "vocab_size": 256000, "max_position_embeddings": 8192,
}  # fmt: skip
GEMMA_2_9B = {
    "model_type": "gemma2", "num_hidden_layers": 42, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 256, "hidden_size": 3584,
    "intermediate_size": 14336, "vocab_size": 256000, "max_position_embeddings": 8192,
    "sliding_window": 4096, "query_pre_attn_scalar": 256,
}  # fmt: skip
GEMMA_3_27B = {  # multimodal: the decoder is in text_config
    "model_type": "gemma3",
    "text_config": {
        "model_type": "gemma3_text", "num_hidden_layers": 62, "num_attention_heads": 32,
        "num_key_value_heads": 16, "head_dim": 128, "hidden_size": 5376,
        "intermediate_size": 21504, "sliding_window": 1024, "sliding_window_pattern": 6,
    },
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152},
}  # fmt: skip
QWEN2_7B = {
    "model_type": "qwen2", "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "hidden_size": 3584, "intermediate_size": 18944,
    "vocab_size": 152064, "max_position_embeddings": 131072, "sliding_window": 131072,
    "use_sliding_window": False, "max_window_layers": 28, "tie_word_embeddings": False,
}  # fmt: skip
GPT_OSS_20B = {
    "model_type": "gpt_oss", "num_hidden_layers": 24, "num_attention_heads": 64,
    "num_key_value_heads": 8, "head_dim": 64, "hidden_size": 2880, "intermediate_size": 2880,
    "num_local_experts": 32, "num_experts_per_tok": 4, "vocab_size": 201088,
    "sliding_window": 128, "max_position_embeddings": 131072, "tie_word_embeddings": False,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
}  # fmt: skip
FALCON_7B = {  # the original RW config: n_head / n_layer, multi_query
    "model_type": "RefinedWebModel", "n_layer": 32, "n_head": 71, "hidden_size": 4544,
    "multi_query": True, "parallel_attn": True, "bias": False, "vocab_size": 65024,
}  # fmt: skip
FALCON_40B = {  # as transformers' FalconConfig writes it
    "model_type": "falcon", "num_hidden_layers": 60, "num_attention_heads": 128,
    "num_kv_heads": 8, "new_decoder_architecture": True, "hidden_size": 8192,
    "parallel_attn": True, "bias": False, "vocab_size": 65024,
}  # fmt: skip
GPT2 = {
    "model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024,
    "n_ctx": 1024, "vocab_size": 50257,
}  # fmt: skip
DEEPSEEK_V2_LITE = {
    "model_type": "deepseek_v2", "num_hidden_layers": 27, "num_attention_heads": 16,
    "num_key_value_heads": 16, "hidden_size": 2048, "kv_lora_rank": 512, "q_lora_rank": None,
    "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
    "intermediate_size": 10944, "moe_intermediate_size": 1408, "n_routed_experts": 64,
    "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1,
    "vocab_size": 102400, "max_position_embeddings": 163840, "tie_word_embeddings": False,
}  # fmt: skip
DEEPSEEK_V3 = {  # DeepSeek-V3 and V3.1 share these fields
    "model_type": "deepseek_v3", "num_hidden_layers": 61, "num_attention_heads": 128,
    "num_key_value_heads": 128, "hidden_size": 7168, "kv_lora_rank": 512,
    "q_lora_rank": 1536, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "n_routed_experts": 256,
    "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
    "vocab_size": 129280, "max_position_embeddings": 163840,
}  # fmt: skip


def read(config, **kw):
    return from_config(config, max_layers=CAP, **kw)


def per_token(config, dtype="bf16"):
    return kv_cache_bytes(read(config), tokens=1, dtype=dtype).total


# ---------------------------------------------------------------------------------------------
# The traps, by hand.


def test_llama_3_1_8b_128k_tokens_fp16_is_15_625_gib():
    # 2 (K and V) * 32 layers * 8 kv heads * 128 head_dim * 2 B = 131,072 B per token;
    # * 128,000 tokens = 16,777,216,000 B = 15.625 * 2**30
    c = kv_cache_bytes(read(LLAMA_3_1_8B), tokens=128_000, batch=1, dtype="fp16")
    assert c.total == 2 * 32 * 8 * 128 * 2 * 128_000 == 16_777_216_000
    assert c.total / GiB == 15.625
    assert c.per_layer == (131_072 // 32 * 128_000 * 32 // 32,) * 32  # 524,288,000 B each


def test_the_public_call_as_the_issue_writes_it():
    c = kv_cache_bytes(from_config(LLAMA_3_1_8B), tokens=128_000, batch=2, dtype="fp16")
    assert c.total == 2 * 16_777_216_000 and c.batch == 2 and c.tokens == 128_000


def test_kv_heads_are_not_ignored():
    # Llama-3-70B: K = 8 of N = 64 heads. 2 * 80 * 8 * 128 * 2 = 327,680 B per token; reading
    # K as N would say 2 * 80 * 64 * 128 * 2 = 2,621,440 (8x too much).
    assert per_token(LLAMA_3_70B) == 2 * 80 * 8 * 128 * 2 == 327_680
    model = read(LLAMA_3_70B)
    assert kv.variants(model, tokens=1)["mha"] == 2_621_440 == 8 * 327_680


def test_gemma_2_9b_8192_tokens_with_4096_token_local_layers():
    # head_dim 256 (not D / N = 3584 / 16 = 224); 16 heads share K = 8; layers alternate,
    # 0, 2, ..., 40 local. Per layer and token: 2 * 8 * 256 * 2 B = 8,192 B.
    # 21 global * 8,192 * 8,192 tokens = 1,409,286,144
    # 21 local  * 8,192 * 4,096 tokens =   704,643,072  (the window)
    model = read(GEMMA_2_9B)
    assert model.head_dim == 256 and model.num_key_value_heads == 8
    c = kv_cache_bytes(model, tokens=8192, batch=1, dtype="bf16")
    assert c.total == 21 * 8192 * 8192 + 21 * 8192 * 4096 == 2_113_929_216
    assert c.per_layer[0] == 8192 * 4096 and c.per_layer[1] == 8192 * 8192  # local first
    assert [layer.kind for layer in model.layers[:4]] == ["sliding", "full"] * 2
    # Ignoring the windows would say 42 * 8,192 * 8,192 = 2,818,572,288 (1.33x).
    text = kv.formula(model, tokens=8192)
    assert "2 (K and V) × 21 global layers × 8 kv heads × 256 head_dim × 2 B (bf16)" in text
    assert "21 local layers" in text and "4,096 tokens (8,192 capped" in text
    assert "total = 2,113,929,216 B" in text


def test_gemma_3_27b_in_text_config_five_local_to_one_global():
    # sliding_window_pattern 6: layers 5, 11, ..., 59 global (10), the other 52 local (1,024).
    # Per layer and token: 2 * 16 * 128 * 2 B = 8,192 B. At 131,072 tokens:
    # 10 * 8,192 * 131,072 = 10,737,418,240 and 52 * 8,192 * 1,024 = 436,207,616
    model = read(GEMMA_3_27B)
    assert model.model_type == "gemma3_text" and model.num_layers == 62
    full = [i for i, layer in enumerate(model.layers) if layer.kind == "full"]
    assert full == list(range(5, 62, 6)) and len(full) == 10
    c = kv_cache_bytes(model, tokens=131_072)
    assert c.total == 10 * 8192 * 131_072 + 52 * 8192 * 1024 == 11_173_625_856
    # The usual estimate, every layer global with head_dim D / N = 168 and K = N = 32, is
    # 2 * 62 * 32 * 168 * 2 * 131,072 = 174,751,481,856 B: 15.6x too much.
    naive = 2 * 62 * 32 * 168 * 2 * 131_072
    assert naive == 174_751_481_856 and round(naive / c.total, 1) == 15.6
    assert any("text_config" in note for note in model.notes)


def test_deepseek_v2_lite_31104_bytes_per_token():
    # MLA: 27 layers * (kv_lora_rank 512 + qk_rope_head_dim 64) * 2 B = 31,104 B per token,
    # not 2 * 27 * 16 kv heads * 128 * 2 = 221,184.
    model = read(DEEPSEEK_V2_LITE)
    assert per_token(DEEPSEEK_V2_LITE) == 27 * (512 + 64) * 2 == 31_104
    assert model.attention == "mla" and {layer.latent for layer in model.layers} == {576}
    assert kv.bytes_per_token(model) == (1152,) * 27


def test_deepseek_v3_at_163840_tokens_is_10_72_gib():
    # 61 layers * 576 elements * 2 B = 70,272 B per token; * 163,840 = 11,513,364,480 B
    # = 10.72 GiB (an estimate of 2.08 GB is 5x short).
    c = kv_cache_bytes(read(DEEPSEEK_V3), tokens=163_840, dtype="bf16")
    assert c.total == 61 * 576 * 2 * 163_840 == 11_513_364_480
    assert round(c.total / GiB, 2) == 10.72


def test_mla_is_detected_by_kv_lora_rank_first():
    # Whatever the model type and whatever num_key_value_heads / head_dim say.
    config = {**DEEPSEEK_V3, "model_type": "kimi_k2", "head_dim": 64}
    model = read(config)
    assert model.attention == "mla" and per_token(config) == 61 * 576 * 2
    with pytest.raises(ValueError, match="qk_rope_head_dim"):
        read({k: v for k, v in config.items() if k != "qk_rope_head_dim"})


def test_falcon_7b_is_8_kib_per_token():
    # multi_query: 1 kv head. 2 * 32 layers * 1 * 64 (4544 / 71) * 2 B = 8,192 B
    model = read(FALCON_7B)
    assert (model.num_layers, model.num_query_heads, model.num_key_value_heads) == (32, 71, 1)
    assert per_token(FALCON_7B) == 2 * 32 * 1 * 64 * 2 == 8 * 2**10


@pytest.mark.parametrize(
    "fields, K",
    [
        ({"new_decoder_architecture": True, "num_kv_heads": 8}, 8),  # Falcon-40B
        ({"new_decoder_architecture": False, "multi_query": True, "num_kv_heads": 8}, 1),
        ({"multi_query": True}, 1),  # Falcon-7B
        ({}, 1),  # FalconConfig defaults multi_query to true
        ({"multi_query": False}, 128),  # neither: K = N
    ],
)
def test_falcon_kv_heads_as_modeling_falcon_reads_them(fields, K):
    base = {"model_type": "falcon", "num_hidden_layers": 60, "num_attention_heads": 128,
            "hidden_size": 8192}  # fmt: skip
    assert read({**base, **fields}).num_key_value_heads == K


def test_falcon_40b_both_spellings():
    # 2 * 60 layers * 8 kv heads * 64 * 2 B = 122,880 B per token
    assert per_token(FALCON_40B) == 2 * 60 * 8 * 64 * 2 == 122_880
    rw = {"model_type": "RefinedWeb", "n_layer": 60, "n_head": 128, "n_head_kv": 8,
          "hidden_size": 8192, "parallel_attn": True, "bias": False, "vocab_size": 65024}  # fmt: skip
    assert per_token(rw) == 122_880
    assert read(rw).params == read(FALCON_40B).params


def test_gpt2_field_names():
    # n_layer 12, n_head 12, n_embd 768: 2 * 12 * 12 * 64 * 2 B = 36,864 B per token
    model = read(GPT2)
    assert (model.num_layers, model.num_query_heads, model.hidden_size) == (12, 12, 768)
    assert model.max_position_embeddings == 1024 and model.attention == "mha"
    assert per_token(GPT2) == 2 * 12 * 12 * 64 * 2 == 36_864


def test_head_dim_given_is_not_d_over_n():
    # Gemma-7B: head_dim 256 with N = 16 and D = 3072 (D / N = 192).
    # 2 * 28 * 16 * 256 * 2 = 458,752 B per token; D / N would say 344,064.
    assert per_token(GEMMA_7B) == 2 * 28 * 16 * 256 * 2 == 458_752
    # A gemma config without head_dim takes GemmaConfig's default 256, not D / N, and says so.
    model = read({k: v for k, v in GEMMA_7B.items() if k != "head_dim"})
    assert model.head_dim == 256 and model.defaulted["head_dim"] == 256
    # A llama config without head_dim: D / N.
    assert read(LLAMA_3_1_8B).head_dim == 4096 // 32 == 128


def test_qwen2_use_sliding_window_false_means_no_window():
    model = read(QWEN2_7B)
    assert {layer.window for layer in model.layers} == {None}
    assert any("use_sliding_window is false" in note for note in model.notes)
    # 2 * 28 * 4 * 128 * 2 = 57,344 B per token at any length
    assert kv_cache_bytes(model, tokens=131_072).total == 57_344 * 131_072


def test_qwen2_sliding_layers_from_max_window_layers():
    config = {**QWEN2_7B, "use_sliding_window": True, "sliding_window": 4096,
              "max_window_layers": 20}  # fmt: skip
    model = read(config)
    assert [layer.window for layer in model.layers] == [None] * 20 + [4096] * 8
    # 20 global * 2,048 B * 32,768 + 8 local * 2,048 B * 4,096 (2 * 4 * 128 * 2 = 2,048)
    assert kv_cache_bytes(model, tokens=32_768).total == 20 * 2048 * 32_768 + 8 * 2048 * 4096


def test_gpt_oss_layer_types_and_its_128_token_window():
    # 12 full layers * 2 * 8 * 64 * 2 B (2,048 B) * 131,072 = 3,221,225,472
    # 12 sliding     * 2,048 B * 128                    =     3,145,728
    model = read(GPT_OSS_20B)
    assert kv_cache_bytes(model, tokens=131_072).total == 3_221_225_472 + 3_145_728
    # Without layer_types gpt-oss alternates the same way (GptOssConfig's default).
    no_types = read({k: v for k, v in GPT_OSS_20B.items() if k != "layer_types"})
    assert no_types.layers == model.layers


def test_layer_types_all_full_without_a_window():
    # Qwen3's published configs list every layer as full_attention, with sliding_window null.
    config = {"model_type": "qwen3", "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 8, "hidden_size": 32, "vocab_size": 10,
              "sliding_window": None, "use_sliding_window": False,
              "layer_types": ["full_attention"] * 4}  # fmt: skip
    model = read(config)
    assert {layer.kind for layer in model.layers} == {"full"}
    assert "layer_types: all 4 global." in model.notes


def test_mistral_window_on_every_layer_and_null_means_none():
    assert {layer.window for layer in read(MISTRAL_7B).layers} == {4096}
    assert {layer.window for layer in read({**MISTRAL_7B, "sliding_window": None}).layers} == {None}
    # Absent, MistralConfig's default 4096 applies, and is shown as defaulted.
    absent = read({k: v for k, v in MISTRAL_7B.items() if k != "sliding_window"})
    assert absent.sliding_window == 4096 and absent.defaulted["sliding_window"] == 4096


def test_llama_ignores_a_sliding_window_its_class_does_not_read():
    model = read({**LLAMA_3_1_8B, "sliding_window": 4096})
    assert model.sliding_window is None
    assert any("no sliding_window" in note for note in model.notes)


# ---------------------------------------------------------------------------------------------
# Defaults of the config class, shown as defaulted; what is never defaulted.


def test_absent_num_key_value_heads():
    # Llama: absent means multi-head (LlamaConfig's None -> N).
    llama = read({k: v for k, v in LLAMA_3_1_8B.items() if k != "num_key_value_heads"})
    assert llama.num_key_value_heads == 32 and llama.defaulted["num_key_value_heads"] == 32
    # Qwen2's class defaults it to 32, whatever N is.
    qwen = read({**{k: v for k, v in QWEN2_7B.items() if k != "num_key_value_heads"},
                 "num_attention_heads": 64, "hidden_size": 8192})  # fmt: skip
    assert qwen.num_key_value_heads == 32 and qwen.defaulted["num_key_value_heads"] == 32
    # An untabulated model type: multi-head, nothing defaulted.
    other = read({"model_type": "olmo", "num_hidden_layers": 2, "num_attention_heads": 4,
                  "hidden_size": 64})  # fmt: skip
    assert other.num_key_value_heads == 4 and other.defaulted == {}
    assert other.params is None


def test_gemma_2_without_sliding_window_takes_the_class_default():
    model = read({k: v for k, v in GEMMA_2_9B.items() if k != "sliding_window"})
    assert model.defaulted["sliding_window"] == 4096
    assert kv_cache_bytes(model, tokens=8192).total == 2_113_929_216


def test_defaults_table_states_its_transformers_version():
    assert kv.TRANSFORMERS_VERSION == "5.24.0"
    assert kv.DEFAULTS["gemma3_text"]["sliding_window_pattern"] == 6
    assert kv.DEFAULTS["qwen2"]["num_key_value_heads"] == 32
    assert kv.DEFAULTS["llama"]["num_key_value_heads"] is None


@pytest.mark.parametrize(
    "missing, named",
    [
        ("num_hidden_layers", "num_hidden_layers"),
        ("num_attention_heads", "num_attention_heads"),
        ("hidden_size", "hidden_size"),
    ],
)
def test_layers_heads_and_hidden_size_are_never_defaulted(missing, named):
    config = {k: v for k, v in LLAMA_3_1_8B.items() if k != missing}
    with pytest.raises(ValueError, match=f"no {named}.*never guessed"):
        read(config)
    # ... nor null, nor in a text_config (named with its path), though the class defaults it.
    with pytest.raises(ValueError, match=f"no {named}"):
        read({**LLAMA_3_1_8B, missing: None})
    text = {k: v for k, v in GEMMA_3_27B["text_config"].items() if k != missing}
    with pytest.raises(ValueError, match=f"no text_config.{named}"):
        read({**GEMMA_3_27B, "text_config": text})


def test_gpt2_refusal_names_its_own_field_too():
    with pytest.raises(ValueError, match=r"no num_attention_heads \(nor n_head\)"):
        read({k: v for k, v in GPT2.items() if k != "n_head"})


@pytest.mark.parametrize(
    "change, match",
    [
        ({"num_key_value_heads": 5}, r"num_attention_heads \(32\) must be divisible.*\(5\)"),
        ({"num_key_value_heads": 64}, r"\(32\) must be divisible.*\(64\)"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be an integer >= 1, got 0"),
        ({"num_hidden_layers": True}, "num_hidden_layers must be an integer >= 1, got true"),
        ({"num_attention_heads": "32"}, 'num_attention_heads must be .*got "32"'),
        ({"hidden_size": 4096.0}, "hidden_size must be an integer >= 1, got 4096.0"),
        ({"head_dim": -1}, "head_dim must be an integer >= 1, got -1"),
        ({"hidden_size": 4001, "head_dim": None}, r"hidden_size \(4001\) is not a multiple"),
        ({"num_hidden_layers": 2000}, "num_hidden_layers is 2,000; at most 1,024 layers"),
        ({"model_type": 7}, "model_type must be a string"),
        # Shown back in notes and messages: a family's name only, never the file's Markdown.
        (
            {"model_type": "llama` ![x](http://e.co/x.png)"},
            "model_type must be a string of 1 to 64 letters, digits, '_', '.' or '-'",
        ),
        ({"model_type": ""}, "model_type must be a string of 1 to 64"),
        ({"model_type": "x" * 65}, "model_type must be a string of 1 to 64"),
        ({"model_type": "llama\n"}, "model_type must be a string of 1 to 64"),
        ({"text_config": {"model_type": "a b"}}, "text_config.model_type must be a string of"),
        ({"text_config": [1]}, "text_config must be a JSON object"),
    ],
)
def test_bad_configs_name_the_field(change, match):
    with pytest.raises(ValueError, match=match):
        read({**LLAMA_3_1_8B, **change})


@pytest.mark.parametrize(
    "change, match",
    [
        ({"layer_types": ["full_attention"] * 23}, "lists 23 layers but num_hidden_layers is 24"),
        ({"layer_types": ["linear_attention"] * 24}, '"linear_attention".*only'),
        ({"layer_types": [["full_attention"]] * 24}, r"\[\"full_attention\"\].*only"),
        ({"layer_types": "full"}, "layer_types must be a list"),
        ({"sliding_window": 0}, "sliding_window must be a positive integer or null, got 0"),
        ({"sliding_window": 1.5}, "sliding_window must be a positive integer or null, got 1.5"),
    ],
)
def test_bad_windows_name_the_field(change, match):
    with pytest.raises(ValueError, match=match):
        read({**GPT_OSS_20B, **change})


def test_model_types_as_families_spell_them_are_read():
    for model_type in ("qwen3_vl_text", "RefinedWebModel", "my-arch.v2", "x" * 64):
        assert read({**LLAMA_3_1_8B, "model_type": model_type}).num_layers == 32


def test_the_name_keeps_a_repository_ids_characters():
    model = read({**LLAMA_3_1_8B, "_name_or_path": " <script>![x](http://e.co/x.png) "})
    assert model.name == "-script---x--http://e.co/x.png-"
    assert read({**LLAMA_3_1_8B, "_name_or_path": "a/" + "b" * 200}).name == "a/" + "b" * 78
    assert read({**LLAMA_3_1_8B, "_name_or_path": "meta-llama/Llama-3.1-8B"}).name == (
        "meta-llama/Llama-3.1-8B"
    )
    assert read(LLAMA_3_1_8B).name == "llama"  # no _name_or_path: the model type


def test_not_a_dict():
    with pytest.raises(ValueError, match="JSON object; got a list"):
        read([1, 2])


# ---------------------------------------------------------------------------------------------
# Uploads: JSON only, size and layer caps, no NaN, never executed.


def _parse(data, max_bytes=limits.MAX_CONFIG_BYTES):
    return parse_config_json(
        data, max_bytes=max_bytes, max_layers=CAP, max_int=limits.MAX_CONFIG_INT
    )


def test_upload_limits_are_the_apps():
    assert limits.MAX_CONFIG_BYTES == 256 * 2**10 and limits.MAX_CONFIG_LAYERS == 1024


def test_parse_reads_a_real_config():
    data = json.dumps(LLAMA_3_1_8B).encode()
    assert _parse(data) == LLAMA_3_1_8B
    assert _parse(data.decode()) == LLAMA_3_1_8B
    assert _parse(b"\xef\xbb\xbf" + data) == LLAMA_3_1_8B  # a byte-order mark is fine


@pytest.mark.parametrize(
    "data, match",
    [
        (b'{"a": NaN}', "NaN; a config's numbers must be finite"),
        (b'{"a": Infinity}', "Infinity"),
        (b'{"a": -Infinity}', "-Infinity"),
        (b'{"a": 1e400}', "1e400, too large to be finite"),
        (b'{"a": 1,}', r"not valid JSON: .* at line 1, column 9"),
        (b'{"a": 1', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", r"JSON object \(\{...\}\); this file holds a list"),
        (b'"config"', "holds a string"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not valid JSON"),
        (b'{"a": ' + b"1" * 5000 + b"}", "digits|integer"),
        (b'{"num_hidden_layers": 1025}', "num_hidden_layers is 1,025; at most 1,024 layers"),
        (b'{"n_layer": 5000}', "n_layer is 5,000"),
        (b'{"text_config": {"num_hidden_layers": 4096}}', "text_config.num_hidden_layers"),
        (json.dumps({"layer_types": ["full_attention"] * 1025}).encode(), "lists 1,025 layers"),
        # Integers beyond MAX_CONFIG_INT, either way, by their field (a 401-digit hidden size
        # used to pass and overflow a float in the parameter count).
        (
            b'{"hidden_size": 1' + b"0" * 400 + b"}",
            r"The file has hidden_size = an integer of "
            r"401 digits; a config's integers may be at most 9,007,199,254,740,992 either way",
        ),
        (
            json.dumps({"text_config": {"vocab_size": 2**53 + 1}}).encode(),
            r"text_config\.vocab_size = 9,007,199,254,740,993;",
        ),
        (b'{"a": {"b": [1, -9007199254740993]}}', r"a\.b\[1\] = -9,007,199,254,740,993;"),
        (b'{"n_layer": -1' + b"0" * 5000 + b"}", "n_layer = an integer of 5,001 digits"),
    ],
)
def test_parse_refuses(data, match):
    with pytest.raises(ValueError, match=match):
        _parse(data)


def test_parse_takes_integers_up_to_the_limit():
    config = _parse(json.dumps({"a": [2**53, -(2**53)], "b": {"c": 7}}).encode())
    assert config == {"a": [2**53, -(2**53)], "b": {"c": 7}}
    # The cap is the caller's.
    with pytest.raises(ValueError, match="b.c = 7; a config's integers may be at most 6"):
        parse_config_json(b'{"a": 6, "b": {"c": 7}}', max_bytes=100, max_layers=1, max_int=6)


def test_parse_names_what_it_was_given():
    with pytest.raises(ValueError, match="^The pasted text is not valid JSON"):
        parse_config_json(b"{", max_bytes=100, max_layers=1, max_int=9, what="pasted text")
    with pytest.raises(ValueError, match="^The file a.json has NaN"):
        parse_config_json(b"[NaN]", max_bytes=100, max_layers=1, max_int=9, what="file a.json")


def test_parse_refuses_a_file_over_the_size_limit():
    big = json.dumps({**LLAMA_3_1_8B, "padding": "x" * limits.MAX_CONFIG_BYTES}).encode()
    with pytest.raises(ValueError, match=r"at most 262,144 bytes \(256 KiB\)"):
        _parse(big)
    # Exactly at the limit is fine.
    exact = json.dumps({"p": ""}).encode()
    exact = exact[:-2] + b"x" * (limits.MAX_CONFIG_BYTES - len(exact)) + b'"}'
    assert len(exact) == limits.MAX_CONFIG_BYTES and _parse(exact)["p"]


def test_uploads_go_through_the_same_reader():
    from gqa_viz.app.kv_calculator import uploaded_model

    model = uploaded_model(json.dumps(GEMMA_2_9B).encode(), name="mine")
    assert model.name == "mine"
    assert kv_cache_bytes(model, tokens=8192).total == 2_113_929_216
    with pytest.raises(ValueError, match="NaN"):
        uploaded_model(b'{"num_hidden_layers": NaN}')
    with pytest.raises(ValueError, match="no num_attention_heads"):
        uploaded_model(b'{"num_hidden_layers": 2, "hidden_size": 8}')


# ---------------------------------------------------------------------------------------------
# Parameter counts, derived from the config.


def test_published_parameter_counts_by_hand():
    # GPT-2: wte 50257 * 768 = 38,597,376; wpe 1024 * 768 = 786,432; per block: ln_1 1,536 +
    # c_attn 768 * 2304 + 2304 = 1,771,776 + c_proj 768 * 768 + 768 = 590,592 + ln_2 1,536 +
    # c_fc 768 * 3072 + 3072 = 2,362,368 + c_proj 3072 * 768 + 768 = 2,360,064 = 7,087,872;
    # * 12 = 85,054,464; ln_f 1,536; the head is tied.
    assert read(GPT2).params == 38_597_376 + 786_432 + 85_054_464 + 1_536 == 124_439_808
    # Llama-2-7B: embeddings and head 2 * 32000 * 4096 = 262,144,000; per layer q, k, v, o
    # 4 * 4096**2 = 67,108,864 + MLP 3 * 4096 * 11008 = 135,266,304 + norms 8,192
    # = 202,383,360; * 32 = 6,476,267,520; final norm 4,096.
    assert read(LLAMA_2_7B).params == 262_144_000 + 6_476_267_520 + 4_096 == 6_738_415_616
    # Mistral-7B: per layer q, o 2 * 4096**2 + k, v 2 * 4096 * 1024 = 41,943,040 + MLP
    # 3 * 4096 * 14336 = 176,160,768 + 8,192 = 218,112,000; * 32 = 6,979,584,000.
    assert read(MISTRAL_7B).params == 262_144_000 + 6_979_584_000 + 4_096 == 7_241_732_096
    # Llama-3.1-8B: the same layers, embeddings and head 2 * 128256 * 4096 = 1,050,673,152.
    assert read(LLAMA_3_1_8B).params == 1_050_673_152 + 6_979_584_000 + 4_096 == 8_030_261_248


@pytest.mark.parametrize(
    "config, total, active",
    [  # totals as transformers 5.24.0 counts them on the meta device
        (GEMMA_7B, 8_537_680_896, None),
        (GEMMA_2_9B, 9_241_705_984, None),
        (QWEN2_7B, 7_615_616_512, None),
        (FALCON_7B, 6_921_720_704, None),
        (MIXTRAL, 46_702_792_704, 12_879_925_248),  # 2 of 8 experts: "12.9B active"
        (DEEPSEEK_V2_LITE, 15_706_484_224, 2_661_150_208),
        (DEEPSEEK_V3, 671_026_419_200, 37_552_297_472),  # with e_score_correction_bias
        (GPT_OSS_20B, 20_914_757_184, 4_187_440_704),
    ],
)
def test_derived_parameter_counts(config, total, active):
    model = read(config)
    assert model.params == total and model.active_params == active


def test_a_decode_step_reads_the_active_weights():
    # gpt-oss-20b: active 4,187,440,704 less the untied input embedding 201088 * 2880 =
    # 579,133,440 is 3,608,307,264, OpenAI's "3.6B active".
    model = read(GPT_OSS_20B)
    assert model.read_params == 4_187_440_704 - 201_088 * 2880 == 3_608_307_264
    # So the bound at 0 tokens is those weights once: 3,608,307,264 * 2 B / 2e12 B/s.
    t = kv.decode_time_lower_bound(model, 0, 1, "bf16", "bf16", 2e12)
    assert t == pytest.approx(3_608_307_264 * 2 / 2e12)
    # A dense model with tied embeddings reads everything: Gemma-7B.
    assert read(GEMMA_7B).read_params == 8_537_680_896


def test_multimodal_params_count_the_text_decoder():
    model = read(GEMMA_3_27B)
    assert model.params == 27_009_346_304  # transformers' Gemma3TextConfig model, tied head
    assert any("vision encoder is not counted" in note for note in model.notes)


# ---------------------------------------------------------------------------------------------
# Fit, with windows and MLA; the model's own context limit.


def test_max_context_with_local_layers_that_stop_growing():
    # Gemma 2 9B on 24 GB, bf16 weights 2 * 9,241,705,984 = 18,483,411,968 B:
    # free 5,516,588,032 B. All 42 layers grow (42 * 8,192 B per token) up to the 4,096-token
    # window: 1,409,286,144 B fits. Then only the 21 global layers grow, 172,032 B per token:
    # (5,516,588,032 - 21 * 8,192 * 4,096) / 172,032 = 27,971.3
    model = read(GEMMA_2_9B)
    assert kv.max_context(model, 24 * GB) == 27_971
    assert kv.kv_cache_bytes(model, tokens=27_971).total <= 5_516_588_032
    assert kv.kv_cache_bytes(model, tokens=27_972).total > 5_516_588_032
    # Counting every layer as global would say 5,516,588,032 // 344,064 = 16,033.
    # 27,971 is beyond the config's max_position_embeddings (8,192): flagged.
    assert kv.beyond_max_position(model, 27_971) and not kv.beyond_max_position(model, 8192)


def test_max_context_of_an_mla_model():
    # DeepSeek-V2-Lite on 80 GB: 80e9 - 2 * 15,706,484,224 = 48,587,031,552 B free;
    # / 31,104 B per token = 1,562,083.6
    assert kv.max_context(read(DEEPSEEK_V2_LITE), 80 * GB) == 1_562_083


def test_layer_groups_for_the_page():
    groups = kv.layer_groups(read(GEMMA_2_9B), tokens=8192)
    assert [(g.count, g.label, g.cached_tokens, g.bytes) for g in groups] == [
        (21, "global layers", 8192, 1_409_286_144),
        (21, "local layers", 4096, 704_643_072),
    ]
    # Each group knows its layers: Gemma 2 alternates, local first.
    assert groups[0].indices == tuple(range(1, 42, 2))
    assert groups[1].indices == tuple(range(0, 42, 2))


def test_every_tabulated_family_has_its_parameters_derived():
    assert set(kv.PARAM_FAMILIES) == set(kv.DEFAULTS)


def test_per_layer_fields_are_exact():
    c = kv_cache_bytes(read(GEMMA_2_9B), tokens=5, dtype="int4")
    # 2 * 8 * 256 * 0.5 B * 5 tokens = 10,240 B per layer
    assert set(c.per_layer) == {10_240} and c.total == 42 * 10_240
    assert all(isinstance(b, int) for b in c.per_layer)
    assert Fraction(c.total) == 430_080


# ---------------------------------------------------------------------------------------------
# The presets: every published file in assets/configs, against numbers written here.

# file -> (L, N, K, H, {window: number of sliding layers}, attention, parameters)
EXPECTED_PRESETS = {
    "deepseek-v2-lite.json": (27, 16, 16, 192, {}, "mla", 15_706_484_224),
    "deepseek-v3.json": (61, 128, 128, 192, {}, "mla", 671_026_419_200),
    "falcon-40b.json": (60, 128, 8, 64, {}, "gqa", 41_303_293_952),
    "falcon-7b.json": (32, 71, 1, 64, {}, "mqa", 6_921_720_704),
    "gemma-2-27b.json": (46, 32, 16, 128, {4096: 23}, "gqa", 27_227_128_320),
    "gemma-2-2b.json": (26, 8, 4, 256, {4096: 13}, "gqa", 2_614_341_888),
    "gemma-2-9b.json": (42, 16, 8, 256, {4096: 21}, "gqa", 9_241_705_984),
    "gemma-2b.json": (18, 8, 1, 256, {}, "mqa", 2_506_172_416),
    "gemma-3-1b-it.json": (26, 4, 1, 256, {512: 22}, "mqa", 999_885_952),
    "gemma-7b.json": (28, 16, 16, 256, {}, "mha", 8_537_680_896),
    "gpt-oss-20b.json": (24, 64, 8, 64, {128: 12}, "gqa", 20_914_757_184),
    "gpt2.json": (12, 12, 12, 64, {}, "mha", 124_439_808),
    "llama-2-13b.json": (40, 40, 40, 128, {}, "mha", 13_015_864_320),
    "llama-2-70b.json": (80, 64, 8, 128, {}, "gqa", 68_976_648_192),
    "llama-2-7b.json": (32, 32, 32, 128, {}, "mha", 6_738_415_616),
    "llama-3-8b.json": (32, 32, 8, 128, {}, "gqa", 8_030_261_248),
    "llama-3.1-405b.json": (126, 128, 8, 128, {}, "gqa", 405_853_388_800),
    "llama-3.1-70b.json": (80, 64, 8, 128, {}, "gqa", 70_553_706_496),
    "llama-3.1-8b.json": (32, 32, 8, 128, {}, "gqa", 8_030_261_248),
    "llama-3.2-1b-instruct.json": (16, 32, 8, 64, {}, "gqa", 1_235_814_400),
    "llama-3.2-3b.json": (28, 24, 8, 128, {}, "gqa", 3_212_749_824),
    "mistral-7b-v0.1.json": (32, 32, 8, 128, {4096: 32}, "gqa", 7_241_732_096),
    "mistral-7b-v0.3.json": (32, 32, 8, 128, {}, "gqa", 7_248_023_552),
    "mixtral-8x7b.json": (32, 32, 8, 128, {}, "gqa", 46_702_792_704),
    "phi-3-mini-4k-instruct.json": (32, 32, 32, 96, {2047: 32}, "mha", 3_821_079_552),
    "qwen2-0.5b.json": (24, 14, 2, 64, {}, "gqa", 494_032_768),
    "qwen2-72b.json": (80, 64, 8, 128, {}, "gqa", 72_706_203_648),
    "qwen2.5-7b.json": (28, 28, 4, 128, {}, "gqa", 7_615_616_512),
    "qwen3-8b.json": (36, 32, 8, 128, {}, "gqa", 8_190_735_360),
    "qwen3-vl-8b-instruct.json": (36, 32, 8, 128, {}, "gqa", 8_190_735_360),
    "smollm2-135m.json": (30, 9, 3, 64, {}, "gqa", 134_515_008),
}


def _presets():
    from gqa_viz.models import CONFIG_DIR, PRESETS, SOURCES

    if not (CONFIG_DIR / "SOURCES.json").is_file():
        pytest.fail(f"{CONFIG_DIR}/SOURCES.json is missing: the presets are not there yet.")
    return CONFIG_DIR, PRESETS, SOURCES


def test_at_least_25_presets_each_with_its_source():
    directory, presets, sources = _presets()
    assert len(presets) >= 25
    assert set(presets) == set(sources)
    files = {p.name for p in directory.glob("*.json")} - {"SOURCES.json"}
    assert {s.file for s in sources.values()} == files  # every file listed, every listed file
    for name, source in sources.items():
        assert source.name == name and source.repo and source.url.startswith("https://")
        assert source.read, f"{name}: no date read"
        assert presets[name].num_layers <= limits.MAX_CONFIG_LAYERS


def test_every_preset_against_its_published_numbers():
    _, presets, sources = _presets()
    by_file = {sources[name].file: model for name, model in presets.items()}
    assert set(by_file) == set(EXPECTED_PRESETS), "a preset without numbers written here"
    for file, (L, N, K, H, windows, attention, params) in EXPECTED_PRESETS.items():
        m = by_file[file]
        got = (m.num_layers, m.num_query_heads, m.num_key_value_heads, m.head_dim)
        assert got == (L, N, K, H), file
        sliding = [layer.window for layer in m.layers if layer.kind == "sliding"]
        assert {w: sliding.count(w) for w in set(sliding)} == windows, file
        assert m.attention == attention, file
        # A copy that leaves out a field the published file has is read with the class
        # default (listed in defaulted), which can change the parameter count.
        assert m.params == params, f"{file}: {m.params:,} parameters; defaulted {m.defaulted}"


def test_presets_and_uploads_read_alike():
    directory, presets, sources = _presets()
    for name, model in presets.items():
        data = (directory / sources[name].file).read_bytes()
        upload = parse_config_json(
            data, max_bytes=limits.MAX_CONFIG_BYTES, max_layers=CAP, max_int=limits.MAX_CONFIG_INT
        )
        assert from_config(upload, name=name, max_layers=CAP) == model
