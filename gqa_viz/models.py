"""Attention shapes of real decoder models: the one source of truth for every preset.

Each :class:`ModelShape` holds the values of the model's public Hugging Face ``config.json``
(``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim`` or
``hidden_size // num_attention_heads``, ``hidden_size``) in the axis letters of
:mod:`gqa_viz.core`: N query heads, K kv heads, H head_dim, D hidden size. ``source`` names the
config; ``note`` says where a model card, a paper or the config itself needs a word more.

Checked against copies of the published configs on 2026-11-23: Qwen2-7B, Gemma-2B,
Falcon-7B (through its fused QKV width 4672 = 4544 + 2 x 64), DeepSeek-V2-Lite and Mixtral's
head counts. The other presets carry the values those configs are known to publish and were
not re-read that day; re-check one before quoting it.

Pure Python: no JAX, no Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Attention = Literal["gqa", "mha", "mqa", "mla"]
ATTENTION_KINDS = ("gqa", "mha", "mqa", "mla")


@dataclass(frozen=True)
class ModelShape:
    """One decoder's attention shape.

    ``attention`` names the kind: "mha" (K == N), "mqa" (K == 1), "gqa" (1 < K < N), or
    "mla" (multi-head latent attention: the cache is a compressed latent, so the per-head KV
    cache formula does not describe it). ``params_billion`` is the total parameter count in
    units of 10**9 (for a mixture of experts, all experts, not the active ones).
    ``sliding_window`` is the number of past tokens each layer attends to, or None.
    """

    name: str
    layers: int
    num_query_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_size: int
    params_billion: float
    sliding_window: int | None = None
    attention: Attention = "gqa"
    source: str = ""
    note: str = ""

    def __post_init__(self):
        for field in (
            "layers",
            "num_query_heads",
            "num_key_value_heads",
            "head_dim",
            "hidden_size",
        ):
            value = getattr(self, field)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{self.name}: {field} must be a positive integer, got {value!r}.")
        if not (isinstance(self.params_billion, int | float) and self.params_billion > 0):
            raise ValueError(
                f"{self.name}: params_billion must be a positive number, got {self.params_billion!r}."
            )
        w = self.sliding_window
        if w is not None and (not _is_int(w) or w <= 0):
            raise ValueError(
                f"{self.name}: sliding_window must be None or a positive integer, got {w!r}."
            )
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(
                f"{self.name}: attention must be one of {ATTENTION_KINDS}, got {self.attention!r}."
            )
        N, K = self.num_query_heads, self.num_key_value_heads
        if N % K != 0:
            raise ValueError(
                f"{self.name}: num_query_heads ({N}) must be divisible by num_key_value_heads ({K})."
            )
        expected = {"mha": K == N, "mqa": K == 1, "gqa": 1 < K < N, "mla": True}[self.attention]
        if not expected:
            raise ValueError(
                f"{self.name}: attention={self.attention!r} does not match N={N} query heads "
                f"and K={K} kv heads (mha: K == N, mqa: K == 1, gqa: 1 < K < N)."
            )
        if not self.source:
            raise ValueError(f"{self.name}: source must name where the numbers come from.")

    @property
    def groups(self) -> int:
        """G: query heads per kv head."""
        return self.num_query_heads // self.num_key_value_heads


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


_MODELS = (
    ModelShape(
        "Llama-2-7B", 32, 32, 32, 128, 4096, 6.74, attention="mha",
        source="meta-llama/Llama-2-7b-hf config.json",
        note="Multi-head: num_key_value_heads == num_attention_heads == 32.",
    ),
    ModelShape(
        "Llama-2-70B", 80, 64, 8, 128, 8192, 68.98,
        source="meta-llama/Llama-2-70b-hf config.json",
        note="Only the 70B Llama 2 uses GQA; the 7B and 13B are multi-head.",
    ),
    ModelShape(
        "Llama-3-8B", 32, 32, 8, 128, 4096, 8.03,
        source="meta-llama/Meta-Llama-3-8B config.json",
    ),
    ModelShape(
        "Llama-3-70B", 80, 64, 8, 128, 8192, 70.55,
        source="meta-llama/Meta-Llama-3-70B config.json",
    ),
    ModelShape(
        "Mistral-7B", 32, 32, 8, 128, 4096, 7.24, sliding_window=4096,
        source="mistralai/Mistral-7B-v0.1 config.json",
        note="v0.1: sliding_window 4096 (max_position_embeddings 32768), so the cache holds at "
        "most 4096 tokens per layer. Later versions (v0.2, v0.3) drop the sliding window.",
    ),
    ModelShape(
        "Mixtral-8x7B", 32, 32, 8, 128, 4096, 46.7,
        source="mistralai/Mixtral-8x7B-v0.1 config.json",
        note="Mixture of experts: 46.7B parameters in all, about 12.9B active per token (2 of 8 "
        "experts), so reading every weight per step overstates a batch-1 decode. "
        "config.json has sliding_window null (full 32k attention).",
    ),
    ModelShape(
        "Qwen2-7B", 28, 28, 4, 128, 3584, 7.62,
        source="Qwen/Qwen2-7B config.json",
        note="config.json lists sliding_window 131072 with use_sliding_window false: no window.",
    ),
    ModelShape(
        "Gemma-2B", 18, 8, 1, 256, 2048, 2.51, attention="mqa",
        source="google/gemma-2b config.json",
        note="Multi-query: 8 query heads share 1 kv head (head_dim 256).",
    ),
    ModelShape(
        "Gemma-7B", 28, 16, 16, 256, 3072, 8.54, attention="mha",
        source="google/gemma-7b config.json",
        note="Multi-head (16 kv heads) with head_dim 256, so N * H = 4096 != hidden_size 3072; "
        "the model card's '7B' excludes the 0.79B embedding parameters (8.54B in all).",
    ),
    ModelShape(
        "Falcon-7B", 32, 71, 1, 64, 4544, 7.22, attention="mqa",
        source="tiiuae/falcon-7b config.json (multi_query: true; n_head 71)",
        note="Multi-query: 71 query heads, 1 kv head, head_dim 64 (4544 / 71). The config has "
        "no num_key_value_heads: multi_query true means one kv head.",
    ),
    ModelShape(
        "DeepSeek-V2-Lite", 27, 16, 16, 128, 2048, 15.7, attention="mla",
        source="deepseek-ai/DeepSeek-V2-Lite config.json",
        note="Multi-head latent attention: the cache per token and layer is the kv_lora_rank "
        "(512) latent plus a qk_rope_head_dim (64) rotary key, not K x H keys and values; the "
        "GQA formula does not apply. head_dim here is v_head_dim = qk_nope_head_dim = 128 "
        "(query/key heads are 192 wide with the rotary part). 15.7B parameters in all, 2.4B "
        "active (mixture of experts).",
    ),
)  # fmt: skip

PRESETS: dict[str, ModelShape] = {m.name: m for m in _MODELS}
