"""The KV calculator's figures, without Streamlit: bars per layer and the cache against context."""

from __future__ import annotations

import json

import pytest

from gqa_viz.figures.kv_cache import layer_figure, pick_unit
from gqa_viz.figures.sharing import cache_figure
from gqa_viz.figures.theme import LAYER_KIND_COLORS, POSITION_LIMIT_COLOR, VARIANT_COLORS
from gqa_viz.kv_cache import from_config, kv_cache_bytes

# Gemma 2 9B's published fields that size the cache: 42 layers alternating local (even) and
# global (odd), 8 kv heads of 256, a 4,096-token window.
GEMMA_2_9B = {
    "model_type": "gemma2", "num_hidden_layers": 42, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 256, "hidden_size": 3584,
    "intermediate_size": 14336, "vocab_size": 256000, "max_position_embeddings": 8192,
    "sliding_window": 4096,
}  # fmt: skip
LLAMA = {
    "model_type": "llama", "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "hidden_size": 4096, "intermediate_size": 14336,
    "vocab_size": 128256,
}  # fmt: skip
DEEPSEEK_V2_LITE = {
    "model_type": "deepseek_v2", "num_hidden_layers": 27, "num_attention_heads": 16,
    "num_key_value_heads": 16, "hidden_size": 2048, "kv_lora_rank": 512,
    "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128, "q_lora_rank": None,
}  # fmt: skip


def _traces(fig, role: str) -> list[dict]:
    return [t for t in json.loads(fig.to_json())["data"] if t.get("meta", {}).get("role") == role]


def _bytes(trace: dict) -> list[float]:
    """A bar trace's heights back in bytes."""
    return [y * trace["meta"]["unit"] for y in trace["y"]]


def test_gemma_2_9b_local_and_global_bars():
    model = from_config(GEMMA_2_9B)
    cache = kv_cache_bytes(model, tokens=8192)
    fig = layer_figure(model, cache)
    layers = {t["meta"]["kind"]: t for t in _traces(fig, "layer")}
    assert set(layers) == {"full", "sliding"}
    # 2 (K and V) x 8 heads x 256 x 2 B = 8,192 B per token: global layers hold 8,192 tokens,
    # local ones their 4,096-token window.
    assert layers["full"]["x"] == list(range(1, 42, 2))
    assert layers["sliding"]["x"] == list(range(0, 42, 2))
    assert _bytes(layers["full"]) == pytest.approx([8192 * 8192] * 21)
    assert _bytes(layers["sliding"]) == pytest.approx([8192 * 4096] * 21)
    assert sum(_bytes(layers["full"]) + _bytes(layers["sliding"])) == pytest.approx(2_113_929_216)
    assert layers["full"]["marker"]["color"] == LAYER_KIND_COLORS["full"]
    assert layers["sliding"]["marker"]["color"] == LAYER_KIND_COLORS["sliding"]
    assert layers["sliding"]["name"] == "local layers (4,096-token window)"
    assert layers["full"]["meta"]["unit"] == 10**6  # drawn in MB
    assert fig.layout.yaxis.title.text == "KV cache per layer (MB)"
    # Behind each local layer: what it would hold without the window, the whole context.
    (uncapped,) = _traces(fig, "uncapped")
    assert uncapped["x"] == list(range(0, 42, 2))
    assert _bytes(uncapped) == pytest.approx([8192 * 8192] * 21)
    assert "8,192 tokens" in fig.layout.title.text and "bf16" in fig.layout.title.text


def test_below_the_window_local_layers_hold_as_much_as_global_ones():
    model = from_config(GEMMA_2_9B)
    fig = layer_figure(model, kv_cache_bytes(model, tokens=1024, batch=3, dtype="fp8"))
    layers = _traces(fig, "layer")
    heights = [b for t in layers for b in _bytes(t)]
    assert heights == pytest.approx([2 * 8 * 256 * 1 * 1024 * 3] * 42)  # fp8: 1 B, batch 3
    assert _traces(fig, "uncapped") == []
    assert "batch 3" in fig.layout.title.text and "fp8" in fig.layout.title.text


def test_uniform_and_mla_models():
    llama = from_config(LLAMA)
    fig = layer_figure(llama, kv_cache_bytes(llama, tokens=131072))
    (layers,) = _traces(fig, "layer")
    assert layers["name"] == "layers (every token)" and len(layers["x"]) == 32
    assert _bytes(layers) == pytest.approx([2 * 8 * 128 * 2 * 131072] * 32)
    assert layers["meta"]["unit"] == 10**6

    lite = from_config(DEEPSEEK_V2_LITE)
    fig = layer_figure(lite, kv_cache_bytes(lite, tokens=8192))
    (layers,) = _traces(fig, "layer")
    assert layers["meta"]["kind"] == "mla" and layers["x"] == list(range(27))
    assert layers["name"] == "MLA layers (576-element latent)"
    assert _bytes(layers) == pytest.approx([576 * 2 * 8192] * 27)  # 1,152 B per token
    assert layers["marker"]["color"] == LAYER_KIND_COLORS["mla"]


def test_layer_figure_refuses_a_cache_of_another_model():
    with pytest.raises(ValueError, match="cache has 32 layers; the model has 42"):
        layer_figure(from_config(GEMMA_2_9B), kv_cache_bytes(from_config(LLAMA), tokens=8))


@pytest.mark.parametrize(
    ("top", "unit"),
    [(0.5, ("B", 1)), (999, ("B", 1)), (1000, ("kB", 10**3)), (67e6, ("MB", 10**6)),
     (3e9, ("GB", 10**9))],
)  # fmt: skip
def test_pick_unit(top, unit):
    assert pick_unit(top) == unit


def test_cache_figure_marks_max_position_and_max_context():
    contexts = [128, 1024, 8192, 131072, 262144]
    sizes = {"configured": [c * 131072.0 for c in contexts]}  # 128 KiB per token
    budget = 131072 * 131072.0  # room for 131,072 tokens
    fig = cache_figure(
        contexts, sizes, budget_bytes=budget, current=8192, max_context=131072, max_position=8192
    )
    (position,) = _traces(fig, "max_position")
    assert position["x"] == [8192, 8192]
    assert position["y"][0] == 0 and position["y"][1] == pytest.approx(262144 * 131072 / 1e9)
    assert "max_position_embeddings: 8,192" in position["name"]
    (fits,) = _traces(fig, "max_context")
    assert fits["x"] == [131072] and fits["y"] == pytest.approx([budget / 1e9])
    assert len(_traces(fig, "gpu")) == 1
    # The chosen context: a dotted line with its own legend entry; the limit is not coloured
    # like any cache curve.
    (chosen,) = _traces(fig, "context")
    assert chosen["x"] == [8192, 8192] and chosen["name"] == "context chosen above: 8,192"
    assert chosen["line"]["dash"] == "dot"
    curves = {t["line"]["color"] for t in _traces(fig, "cache")} | set(VARIANT_COLORS.values())
    assert position["line"]["color"] == POSITION_LIMIT_COLOR not in curves

    # Outside the drawn contexts, or with the weights alone over the GPU: not drawn.
    fig = cache_figure(contexts, sizes, budget_bytes=-5e9, max_context=0, max_position=10**7)
    assert _traces(fig, "max_position") == [] and _traces(fig, "max_context") == []
    assert _traces(fig, "gpu") == []
