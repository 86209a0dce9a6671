"""KV cache, weights and memory arithmetic of real decoder models, read layer by layer from
their Hugging Face ``config.json``.

Axis letters as in :mod:`gqa_viz.core`: B batch, S cached tokens, N query heads, K kv heads,
H head_dim, D hidden size, L layers. A layer of grouped-query attention caches a key and a value
of [S, K, H] per sequence, so its bytes are::

    2 (K and V) * K * H * bytes_per_element * S * B,   S = min(tokens, window) on a sliding layer

and the model's cache is the sum over its layers. Sizes are exact: integers of bytes, or a
:class:`~fractions.Fraction` where int4 (half a byte) leaves half a byte over. Divide by
:data:`GB` (10**9, what GPU makers quote) or :data:`GiB` (2**30) to display. GPU budgets are
taken in bytes too, so "an 80 GB GPU" is ``80 * GB``.

How a config is read (:func:`from_config`)
------------------------------------------
* Multimodal configs: a ``text_config`` object is the decoder and is read instead of the top
  level (its ``model_type``, or the text model type its parent's transformers class uses, picks
  the defaults; ``tie_word_embeddings`` may sit on the parent). The vision encoder has no KV
  cache; its weights are not counted.
* Older remote-code model types are read as the family they became (:data:`TYPE_ALIASES`):
  Falcon's ``RefinedWebModel`` (Falcon-7B) as falcon, ``RefinedWeb`` (Falcon-40B) as falcon
  with ``new_decoder_architecture``, with their ``n_layer``/``n_head``/``n_head_kv`` names.
* ``num_hidden_layers``, ``num_attention_heads`` and ``hidden_size`` are never defaulted: a
  config without one of them is refused, naming the field. GPT-2's ``n_layer``/``n_head``/
  ``n_embd`` (and, for a model type not tabulated here, the common aliases listed in
  :data:`ALIASES`) are read for them.
* Any other field a model type's transformers config class defaults is taken from that default
  when the config leaves it out, and is listed in ``ModelConfig.defaulted``. :data:`DEFAULTS`
  holds those defaults, read from the config classes' dataclass fields of transformers
  :data:`TRANSFORMERS_VERSION` (``dataclasses.fields(CONFIG_MAPPING[model_type])``), plus
  Gemma 3's ``sliding_window_pattern`` (a keyword the class reads with default 6). A field a
  class does not have is not in its table: that family does not read it (a ``sliding_window`` in
  a Llama config is ignored, as transformers ignores it). A model type not in the table is read
  by the common field names with nothing defaulted.
* K: ``num_key_value_heads``; absent or null means multi-head (K = N) unless the class defaults
  a number (Qwen2: 32, Gemma 2: 4, ...). Falcon reads its own fields as modeling_falcon does:
  ``num_kv_heads`` when ``new_decoder_architecture`` (Falcon-40B: 8), else 1 when
  ``multi_query`` (the class default; Falcon-7B), else N. GPT-2 is multi-head.
* H: ``head_dim`` when given (Gemma: 256, whatever D / N is), else the class default, else
  D // N (refused when N does not divide D). Falcon and GPT-2 always use D // N. For MLA, H is
  the query/key head width ``qk_nope_head_dim + qk_rope_head_dim`` (shown only).
* Windows, per layer. ``layer_types`` (``sliding_attention`` / ``full_attention``, its length
  equal to L) wins where the family's class reads it. Otherwise each family's convention, as its
  transformers class builds ``layer_types``: Mistral, Mixtral, Phi-3 and Qwen3-MoE put
  ``sliding_window`` on every layer (null: none); Qwen2/Qwen3 only when ``use_sliding_window``
  (default false), and then on layers i >= ``max_window_layers``; Qwen2-MoE on even layers
  i < ``max_window_layers`` when ``use_sliding_window``; Gemma 2 and gpt-oss alternate, local
  first (0, 2, 4, ... slide; gpt-oss's window defaults to 128); Gemma 3 slides every layer but
  each ``sliding_window_pattern``-th (default 6: 5 local to 1 global). An untabulated model type
  with a ``sliding_window`` slides every layer, and says so. A sliding layer caches
  min(tokens, window) tokens: during a step it holds the window (implementations keep W - 1
  between steps and append the new token; this counts the W it attends to).
* MLA (multi-head latent attention) is detected first, by ``kv_lora_rank`` (given, or
  defaulted for DeepSeek-V2/V3): each layer caches one ``kv_lora_rank`` latent plus one
  ``qk_rope_head_dim`` rotary key per token, shared by every head (DeepSeek-V2-Lite: 512 + 64 =
  576 elements, 1,152 B in bf16, per layer), whatever ``num_key_value_heads`` and ``head_dim``
  say. That is what MLA-aware engines (DeepSeek's, vLLM, SGLang) keep; transformers' eager code
  decompresses and caches per-head K and V instead, far more. MHA and MQA variants of an MLA
  model are not computed: the latent is shared by all heads, there are no per-head K/V to count.

Parameter counts (``ModelConfig.params``)
-----------------------------------------
Derived for the families whose layers this module knows exactly (:data:`PARAM_FAMILIES`), as
transformers builds them (``sum(p.numel() for p in model.parameters())``, tied embeddings
once): embeddings
V x D (GPT-2: plus learned positions), the attention projections with the biases the family or
its flags add, q/k norms (Qwen3, Qwen3-VL, Gemma 3), the MLP or the experts (plus router and
shared experts), the norms, and an untied output head. Checked against transformers
:data:`TRANSFORMERS_VERSION` on the meta device for every family and against published totals
(GPT-2 124,439,808; Llama-2-7B 6,738,415,616; Mistral-7B 7,241,732,096; Llama-3.1-8B
8,030,261,248; ...). One exception to "as transformers builds them": DeepSeek-V3's router
``e_score_correction_bias`` (E per MoE layer) is counted, since checkpoints store it and it is
loaded with the weights (transformers 5 makes it a buffer; the published 671,026,419,200
counts it). ``active_params`` is what one token's forward pass uses in a mixture of experts
(the routed experts it picks plus everything shared: Mixtral 12.9B, DeepSeek-V3 37.6B).
``read_params`` is what a decode step must read from memory for one token: the active
parameters less the embedding tables a lookup reads one row of (the input embedding when it is
not tied to the output head, GPT-2's position table); for gpt-oss that is OpenAI's "active"
count (3.61B of 20.9B, 5.13B of 116.8B; :func:`params_read`). Other families: None, and the
page asks (:func:`with_params`).

The cache (:func:`kv_cache_bytes`)
----------------------------------
One pass over the layers gives a :class:`CacheBytes`: each layer's bytes and S, the total,
and the identical layers grouped (:class:`LayerGroup`, with their indices). :func:`variants`,
:func:`formula`, :func:`max_batch` and :func:`decode_time_lower_bound` compute it themselves,
or take it as ``cache=`` where a caller already has it (it must be for the same arguments).
Helpers shared with other modules: :func:`with_kv_heads` (an MHA or MQA variant),
:func:`dtype_bytes` (exact bytes per element), :func:`whole` and :func:`exact_bytes`.

Pure Python: no JAX, no Streamlit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Literal

DTYPE_BYTES: dict[str, float] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int4": 0.5}
GB = 10**9
GiB = 2**30
TRANSFORMERS_VERSION = "5.24.0"

# Each model type's config-class defaults for the fields this module reads, from transformers
# TRANSFORMERS_VERSION (see the module docstring). None: the class defaults the field to None,
# which its __post_init__ turns into a rule (num_key_value_heads None -> N, head_dim None ->
# D // N, layer_types None -> the family's interleave). Absent: the class has no such field.
DEFAULTS: dict[str, dict[str, object]] = {
    "llama": {
        "vocab_size": 32000, "max_position_embeddings": 2048, "num_key_value_heads": None,
        "head_dim": None, "intermediate_size": 11008, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False,
    },
    "mistral": {
        "vocab_size": 32000, "max_position_embeddings": 131072, "num_key_value_heads": 8,
        "head_dim": None, "sliding_window": 4096, "intermediate_size": 14336,
        "tie_word_embeddings": False,
    },
    "mixtral": {
        "vocab_size": 32000, "max_position_embeddings": 131072, "num_key_value_heads": 8,
        "head_dim": None, "sliding_window": None, "intermediate_size": 14336,
        "tie_word_embeddings": False, "num_local_experts": 8, "num_experts_per_tok": 2,
    },
    "qwen2": {
        "vocab_size": 151936, "max_position_embeddings": 32768, "num_key_value_heads": 32,
        "sliding_window": 4096, "use_sliding_window": False, "max_window_layers": 28,
        "intermediate_size": 22016, "tie_word_embeddings": False, "layer_types": None,
    },
    "qwen2_moe": {
        "vocab_size": 151936, "max_position_embeddings": 32768, "num_key_value_heads": 16,
        "sliding_window": 4096, "use_sliding_window": False, "max_window_layers": 28,
        "intermediate_size": 5632, "tie_word_embeddings": False, "qkv_bias": True,
        "num_experts": 60, "num_experts_per_tok": 4, "moe_intermediate_size": 1408,
        "shared_expert_intermediate_size": 5632, "decoder_sparse_step": 1,
        "mlp_only_layers": None, "layer_types": None,
    },
    "qwen3": {
        "vocab_size": 151936, "max_position_embeddings": 32768, "num_key_value_heads": 32,
        "head_dim": 128, "sliding_window": 4096, "use_sliding_window": False,
        "max_window_layers": 28, "intermediate_size": 22016, "tie_word_embeddings": False,
        "attention_bias": False, "layer_types": None,
    },
    "qwen3_moe": {
        "vocab_size": 151936, "max_position_embeddings": 32768, "num_key_value_heads": 4,
        "sliding_window": 4096, "use_sliding_window": False, "intermediate_size": 6144,
        "tie_word_embeddings": False, "attention_bias": False, "num_experts": 128,
        "num_experts_per_tok": 8, "moe_intermediate_size": 768, "decoder_sparse_step": 1,
        "mlp_only_layers": None,
    },
    "gemma": {
        "vocab_size": 256000, "max_position_embeddings": 8192, "num_key_value_heads": 16,
        "head_dim": 256, "intermediate_size": 24576, "tie_word_embeddings": True,
        "attention_bias": False,
    },
    "gemma2": {
        "vocab_size": 256000, "max_position_embeddings": 8192, "num_key_value_heads": 4,
        "head_dim": 256, "sliding_window": 4096, "intermediate_size": 9216,
        "tie_word_embeddings": True, "attention_bias": False, "layer_types": None,
    },
    "gemma3_text": {
        "vocab_size": 262208, "max_position_embeddings": 131072, "num_key_value_heads": 4,
        "head_dim": 256, "sliding_window": 4096, "sliding_window_pattern": 6,
        "intermediate_size": 9216, "tie_word_embeddings": True, "attention_bias": False,
        "layer_types": None,
    },
    "phi3": {
        "vocab_size": 32064, "max_position_embeddings": 4096, "num_key_value_heads": None,
        "sliding_window": None, "intermediate_size": 8192, "tie_word_embeddings": False,
    },
    "gpt2": {
        "vocab_size": 50257, "max_position_embeddings": 1024, "tie_word_embeddings": True,
        "n_inner": None,
    },
    "falcon": {
        "vocab_size": 65024, "max_position_embeddings": 2048, "tie_word_embeddings": True,
        "multi_query": True, "new_decoder_architecture": False, "num_kv_heads": None,
        "parallel_attn": True, "bias": False, "ffn_hidden_size": None,
        "num_ln_in_parallel_attn": None, "alibi": False,
    },
    "deepseek_v2": {
        "vocab_size": 102400, "max_position_embeddings": 2048, "num_key_value_heads": None,
        "head_dim": None, "intermediate_size": 11008, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False, "n_routed_experts": 64,
        "num_experts_per_tok": None, "moe_intermediate_size": 1407, "kv_lora_rank": 512,
        "q_lora_rank": 1536, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
        "n_shared_experts": 2, "first_k_dense_replace": 0,
    },
    "deepseek_v3": {
        "vocab_size": 129280, "max_position_embeddings": 4096, "num_key_value_heads": 128,
        "intermediate_size": 18432, "tie_word_embeddings": False, "attention_bias": False,
        "n_routed_experts": 256, "num_experts_per_tok": 8, "moe_intermediate_size": 2048,
        "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128, "v_head_dim": 128, "n_shared_experts": 1,
        "first_k_dense_replace": 3,
    },
    # Qwen3-VL's text decoder; tie_word_embeddings is its parent Qwen3VLConfig's field.
    "qwen3_vl_text": {
        "vocab_size": 151936, "max_position_embeddings": 128000, "num_key_value_heads": 32,
        "head_dim": 128, "intermediate_size": 22016, "attention_bias": False,
        "tie_word_embeddings": False,
    },
    "gpt_oss": {
        "vocab_size": 201088, "max_position_embeddings": 131072, "num_key_value_heads": 8,
        "head_dim": 64, "sliding_window": 128, "intermediate_size": 2880,
        "tie_word_embeddings": False, "attention_bias": True, "num_local_experts": 128,
        "num_experts_per_tok": 4, "layer_types": None,
    },
}  # fmt: skip

# The text decoder's model type inside a multimodal config whose text_config leaves it out
# (the parent transformers class's text sub-config).
TEXT_CONFIG_TYPES = {
    "gemma3": "gemma3_text", "llava": "llama", "mistral3": "mistral", "qwen3_vl": "qwen3_vl_text",
}  # fmt: skip
# Model types of older remote-code configs, read as the transformers family they became, with
# the fields that name implied: Falcon-7B's and Falcon-40B's original RW configs.
TYPE_ALIASES: dict[str, tuple[str, dict[str, object]]] = {
    "RefinedWebModel": ("falcon", {}),
    "RefinedWeb": ("falcon", {"new_decoder_architecture": True}),
}

# Names a field goes by in other configs: the family's own attribute map (GPT-2), older
# Falcon configs, and the common spellings read for a model type not in DEFAULTS.
ALIASES: dict[str, tuple[str, ...]] = {
    "num_hidden_layers": ("n_layer", "n_layers", "num_layers"),
    "num_attention_heads": ("n_head", "n_heads", "num_heads"),
    "hidden_size": ("n_embd", "d_model"),
    "max_position_embeddings": ("n_positions", "max_sequence_length", "seq_length"),
    "num_key_value_heads": ("num_kv_heads", "n_head_kv", "n_kv_heads"),
}
# Families whose class declares the aliases (GPT-2's attribute map; Falcon's older names).
_FAMILY_ALIASES = {
    "gpt2": {"num_hidden_layers": ("n_layer",), "num_attention_heads": ("n_head",),
             "hidden_size": ("n_embd",), "max_position_embeddings": ("n_positions",)},
    "falcon": {"num_hidden_layers": ("n_layer",), "num_attention_heads": ("n_head",),
               "num_kv_heads": ("n_head_kv",)},
}  # fmt: skip

# How each family places sliding windows when layer_types is not given (module docstring).
_EVERY_LAYER = {"mistral", "mixtral", "phi3", "qwen3_moe"}
_FROM_WINDOW_LAYER_ON = {"qwen2", "qwen3"}
_ALTERNATE = {"gemma2": "Gemma 2", "gpt_oss": "gpt-oss"}
_USE_SLIDING_WINDOW = {"qwen2", "qwen3", "qwen2_moe", "qwen3_moe"}
_NEVER_MULTI_KV = {"gpt2"}  # multi-head by construction
_HEAD_DIM_IS_D_OVER_N = {"gpt2", "falcon"}

_MODEL_TYPE = re.compile(r"[\w.-]{1,64}")  # how a family's name is spelled
Kind = Literal["full", "sliding", "mla"]
LAYER_TYPES = {"full_attention": "full", "sliding_attention": "sliding"}


# ---------------------------------------------------------------------------------------------
# The model: one cache description per layer.


@dataclass(frozen=True)
class LayerCache:
    """What one layer caches per token of one sequence.

    ``kind`` "full" (grows with every token), "sliding" (keeps the last ``window`` tokens) or
    "mla" (a latent of ``kv_lora_rank`` elements plus a rotary key of ``qk_rope_head_dim``).
    ``kv_heads`` and ``head_dim`` are K and H (for MLA, what the config says; they do not size
    the cache).
    """

    kind: Kind
    kv_heads: int
    head_dim: int
    window: int | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None

    @property
    def latent(self) -> int | None:
        """MLA: elements cached per token, kv_lora_rank + qk_rope_head_dim; else None."""
        if self.kind != "mla":
            return None
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def elements_per_token(self) -> int:
        """Cached elements per token: 2 * K * H (a key and a value per kv head), or the latent."""
        if self.kind == "mla":
            return self.latent
        return 2 * self.kv_heads * self.head_dim

    def cached_tokens(self, tokens: int) -> int:
        """S: how many of ``tokens`` this layer holds."""
        return tokens if self.window is None else min(tokens, self.window)


@dataclass(frozen=True)
class ModelConfig:
    """A decoder's shape as the calculator uses it, layer by layer (from :func:`from_config`).

    ``num_query_heads`` N, ``num_key_value_heads`` K, ``head_dim`` H and ``hidden_size`` D as
    read; ``layers`` one :class:`LayerCache` each. ``params`` is the total parameter count
    (every expert of a mixture of experts), ``active_params`` what one token's forward pass
    uses (mixtures of experts only), ``read_params`` what one decode step reads from memory per
    token (module docstring); None where not derivable. ``defaulted`` maps each field taken
    from the config class's default to the value used; ``notes`` say in words how the config
    was read.
    """

    name: str
    model_type: str
    num_query_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_size: int
    layers: tuple[LayerCache, ...]
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    params: int | None = None
    active_params: int | None = None
    read_params: int | None = None
    defaulted: Mapping[str, object] = field(default_factory=dict, hash=False, compare=False)
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("num_query_heads", "num_key_value_heads", "head_dim", "hidden_size"):
            _count(getattr(self, name), f"{self.name}: {name}", minimum=1)
        if not self.layers:
            raise ValueError(f"{self.name}: a model needs at least one layer.")
        for name in ("params", "active_params", "read_params"):
            value = getattr(self, name)
            if value is not None:
                _count(value, f"{self.name}: {name}", minimum=1)

    @property
    def num_layers(self) -> int:
        """L."""
        return len(self.layers)

    @property
    def is_mla(self) -> bool:
        return any(layer.kind == "mla" for layer in self.layers)

    @property
    def attention(self) -> str:
        """The kind: "mla", else from K and N "mha" (K == N), "mqa" (K == 1), "gqa"."""
        if self.is_mla:
            return "mla"
        N, K = self.num_query_heads, self.num_key_value_heads
        return "mha" if K == N else "mqa" if K == 1 else "gqa"

    @property
    def groups(self) -> int:
        """G: query heads per kv head."""
        return self.num_query_heads // self.num_key_value_heads

    @property
    def sliding_window(self) -> int | None:
        """The largest window of a sliding layer, None when no layer slides."""
        windows = [layer.window for layer in self.layers if layer.kind == "sliding"]
        return max(windows) if windows else None


# ---------------------------------------------------------------------------------------------
# Validation: errors name the offending value.


def dtype_bytes(dtype: str, what: str = "dtype") -> Fraction:
    """Bytes per element of ``dtype`` (a key of :data:`DTYPE_BYTES`), exact: int4 is 1/2.
    ValueError naming ``what`` for an unknown dtype."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"Unknown {what} {dtype!r}; expected one of {sorted(DTYPE_BYTES)}.")
    return Fraction(str(DTYPE_BYTES[dtype]))


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _count(value, name: str, minimum: int = 0) -> int:
    if not _is_int(value) or value < minimum:
        bound = "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value!r}.")
    return value


def _positive(value, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return Fraction(value)


def whole(x: int | Fraction) -> int | Fraction:
    """An integer where the bytes are whole, else the exact fraction (int4's half bytes)."""
    x = Fraction(x)
    return int(x) if x.denominator == 1 else x


def exact_bytes(x: int | Fraction) -> str:
    """Exact bytes with thousands separators, no unit: ``"131,072"``; half bytes (int4) as
    ``".5"``."""
    x = Fraction(x)
    return f"{int(x):,}" if x.denominator == 1 else f"{float(x):,.1f}"


def duration(seconds: float) -> str:
    """A short time as people read it, 4 significant digits: ns below 1 µs, µs below 1 ms,
    else ms (``"47.78 ns"``, ``"172.1 µs"``)."""
    for unit, scale in (("ns", 1e9), ("µs", 1e6)):
        if seconds * scale < 1000:
            return f"{seconds * scale:,.4g} {unit}"
    return f"{seconds * 1e3:,.4g} ms"


# ---------------------------------------------------------------------------------------------
# Reading an uploaded file.


class _Digits(str):
    """An integer's digits, too many for the cap: refused once parsing has finished, by the
    field that holds it (never converted: a long one would cost time and a crash later)."""


def parse_config_json(
    data: bytes | str, *, max_bytes: int, max_layers: int, max_int: int, what: str = "file"
) -> dict:
    """The JSON object of an uploaded ``config.json``, checked before anything reads it.

    Refused with a ValueError that names the limit: more than ``max_bytes`` bytes, not UTF-8,
    not JSON (with the line and column), NaN or Infinity (or a number too large to be finite),
    not an object, an integer beyond ``max_int`` either way (naming its field: the arithmetic
    on it would overflow a float), or a layer count (``num_hidden_layers`` or an alias, also in
    ``text_config``) or a ``layer_types`` list over ``max_layers``. Only parsed, never executed.
    Messages call the data "the ``what``" ("file", "pasted text", "file config.json").
    """
    _count(max_bytes, "max_bytes", minimum=1)
    _count(max_layers, "max_layers", minimum=1)
    _count(max_int, "max_int", minimum=1)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise ValueError(
            f"The {what} is {len(raw):,} bytes; a config may be at most {max_bytes:,} bytes "
            f"({max_bytes / 2**10:g} KiB)."
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"The {what} is not UTF-8 text (byte {error.start}).") from None

    def refuse_constant(name: str):
        raise ValueError(f"The {what} has {name}; a config's numbers must be finite.")

    def finite_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"The {what} has the number {text}, too large to be finite.")
        return value

    digits = len(str(max_int))

    def capped_int(text: str) -> int | _Digits:
        return _Digits(text) if len(text.lstrip("-")) > digits else int(text)

    try:
        config = json.loads(
            text, parse_constant=refuse_constant, parse_float=finite_float, parse_int=capped_int
        )
    except json.JSONDecodeError as error:
        raise ValueError(
            f"The {what} is not valid JSON: {error.msg} at line {error.lineno}, column "
            f"{error.colno}."
        ) from None
    except RecursionError:
        raise ValueError(f"The {what}'s JSON is nested too deeply to be a config.") from None
    except ValueError as error:  # NaN or Infinity: the message above
        raise ValueError(str(error)) from None
    if not isinstance(config, dict):
        raise ValueError(
            f"A config.json is a JSON object ({{...}}); this file holds a {_json_kind(config)}."
        )
    if (found := _integer_over(config, max_int)) is not None:
        where, value = found
        if isinstance(value, _Digits):
            value = f"an integer of {len(value.lstrip('-')):,} digits"
        else:
            value = f"{value:,}"
        raise ValueError(
            f"The {what} has {where} = {value}; a config's integers may be at most "
            f"{max_int:,} either way."
        )
    for part, where in ((config, ""), (config.get("text_config"), "text_config.")):
        if not isinstance(part, dict):
            continue
        for key in ("num_hidden_layers", *ALIASES["num_hidden_layers"]):
            value = part.get(key)
            if _is_int(value) and value > max_layers:
                raise ValueError(
                    f"{where}{key} is {value:,}; at most {max_layers:,} layers are read."
                )
        types = part.get("layer_types")
        if isinstance(types, list) and len(types) > max_layers:
            raise ValueError(
                f"{where}layer_types lists {len(types):,} layers; at most {max_layers:,} are read."
            )
    return config


def _integer_over(config: dict, max_int: int) -> tuple[str, int | _Digits] | None:
    """(where, value) of the first integer beyond ``max_int`` either way, in the file's order;
    None when there is none. Walked without recursion: the JSON may nest deeply."""
    stack: list[tuple[str, object]] = [("", config)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, _Digits) or (_is_int(value) and abs(value) > max_int):
            return (where if len(where) <= 80 else where[:77] + "..."), value
        if isinstance(value, dict):
            items = [(f"{where}.{k}" if where else str(k), v) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        stack.extend(reversed(items))
    return None


def _json_kind(value) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


# ---------------------------------------------------------------------------------------------
# from_config.


class _Reader:
    """Reads one config dict's fields with the model type's defaults, recording what it did."""

    def __init__(self, cfg: dict, model_type: str | None, prefix: str, parent: dict):
        self.cfg = cfg
        self.parent = parent  # the multimodal config around a text_config, else {}
        self.model_type = model_type
        self.defaults = DEFAULTS.get(model_type)
        self.prefix = prefix  # "text_config." inside a multimodal config
        self.defaulted: dict[str, object] = {}
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        if text not in self.notes:  # a field read twice is said once
            self.notes.append(text)

    @property
    def tabulated(self) -> bool:
        return self.defaults is not None

    def class_has(self, key: str) -> bool:
        """Whether the family's config class reads ``key`` (always True when untabulated)."""
        return self.defaults is None or key in self.defaults

    def _aliases(self, key: str) -> tuple[str, ...]:
        if self.defaults is None:
            return ALIASES.get(key, ())
        return _FAMILY_ALIASES.get(self.model_type, {}).get(key, ())

    def given(self, key: str) -> tuple[bool, object, str]:
        """(present, value, the key it was found under)."""
        for k in (key, *self._aliases(key)):
            if k in self.cfg:
                return True, self.cfg[k], k
        return False, None, key

    def get(self, key: str, check=None):
        """The config's value, else the class default (recorded), else None.

        ``check`` validates a present, non-null value: "count" (int >= 1), "count0" (int >= 0),
        "bool", "ints" (a list of non-negative ints).
        """
        present, value, found = self.given(key)
        if present:
            if found != key:
                self.note(f"Read {self.prefix}{found} as {key}.")
            return self._check(found, value, check)
        if self.defaults is not None and key in self.defaults:
            value = self.defaults[key]
            if value is not None:
                self.defaulted[key] = value
            return value
        return None

    def value(self, key: str, check: str):
        """:meth:`get` for a field the reading cannot do without: null is refused."""
        value = self.get(key, check)
        if value is None:
            raise ValueError(f"{self.prefix}{key} is null; this config needs a value for it.")
        return value

    def required(self, key: str, what: str) -> int:
        present, value, found = self.given(key)
        if not present or value is None:
            names = ", ".join(self._aliases(key) or ALIASES.get(key, ()))
            also = f" (nor {names})" if names else ""
            raise ValueError(
                f"The config has no {self.prefix}{key}{also}: {what} is never guessed, so this "
                f"config cannot be read."
            )
        if found != key:
            self.note(f"Read {self.prefix}{found} as {key}.")
        return self._check(found, value, "count")

    def _check(self, key: str, value, check):
        if value is None or check is None:
            return value
        name = f"{self.prefix}{key}"
        if check in ("count", "count0"):
            minimum = 1 if check == "count" else 0
            if not _is_int(value) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {_short(value)}.")
        elif check == "bool" and not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {_short(value)}.")
        elif check == "ints" and not (
            isinstance(value, list) and all(_is_int(v) and v >= 0 for v in value)
        ):
            raise ValueError(f"{name} must be a list of layer indices, got {_short(value)}.")
        return value


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, Fraction) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _select_decoder(config: dict) -> tuple[dict, str | None, str, list[str]]:
    """The dict that describes the decoder, its model type, its key prefix, and notes."""
    top_type = _model_type(config.get("model_type"), "model_type")
    text = config.get("text_config")
    if text is None:
        return config, top_type, "", []
    if not isinstance(text, dict):
        raise ValueError(f"text_config must be a JSON object, got {_short(text)}.")
    text_type = _model_type(
        text.get("model_type", TEXT_CONFIG_TYPES.get(top_type)), "text_config.model_type"
    )
    note = (
        f"Multimodal config ({top_type or 'no model_type'}): its text_config "
        f"({text_type or 'no model_type'}) is the decoder read here; the vision encoder keeps "
        f"no KV cache, and its weights are not counted."
    )
    return text, text_type, "text_config.", [note]


def _model_type(value, name: str) -> str | None:
    """A model type as a family's name is spelled, else ValueError: it is shown back in notes
    and messages, so nothing else of the file's text gets there this way."""
    if value is None:
        return None
    if not isinstance(value, str) or not _MODEL_TYPE.fullmatch(value):
        raise ValueError(
            f"{name} must be a string of 1 to 64 letters, digits, '_', '.' or '-' (a model "
            f"family's name), got {_short(value)}."
        )
    return value


def from_config(
    config: dict, *, name: str | None = None, max_layers: int | None = None
) -> ModelConfig:
    """Read a Hugging Face ``config.json`` (as a dict) into the calculator's model, layer by
    layer, following the rules of this module's docstring.

    ``max_layers`` caps the layer count: the app passes its upload limit for every config a
    visitor gives; None (no cap) is for trusted dicts such as the repository's own presets.
    ``name`` defaults to the config's ``_name_or_path`` (a repository id's characters kept,
    80 at most), else its model type.

    Raises ValueError naming the field for a config that lacks the layer count, the
    attention-head count or the hidden size, whose ``model_type`` is not a family's name (1 to
    64 letters, digits, "_", "." or "-"), or whose values do not fit together (K not dividing
    N, ``layer_types`` of the wrong length, a window that is not a positive integer, a layer
    type this calculator does not know).
    """
    if not isinstance(config, dict):
        raise ValueError(f"A config is a JSON object; got a {_json_kind(config)}.")
    if max_layers is not None:
        _count(max_layers, "max_layers", minimum=1)
    cfg, model_type, prefix, notes = _select_decoder(config)
    if model_type in TYPE_ALIASES:
        family, implied = TYPE_ALIASES[model_type]
        notes.append(
            f"model_type {model_type!r} (remote code) is read as {family}"
            + "".join(f", with {k} {json.dumps(v)}" for k, v in implied.items())
            + "."
        )
        model_type, cfg = family, {**cfg, **implied}
    r = _Reader(cfg, model_type, prefix, config if prefix else {})
    for note in notes:
        r.note(note)
    if model_type is None:
        r.note(
            "No model_type: fields read by their common names, no class defaults, parameter "
            "count not derived."
        )
    elif not r.tabulated:
        r.note(
            f"model_type {model_type!r} is not tabulated here: fields read by their common names "
            f"with nothing defaulted, and its parameter count is not derived."
        )

    L = r.required("num_hidden_layers", "the layer count")
    if max_layers is not None and L > max_layers:
        raise ValueError(
            f"{prefix}num_hidden_layers is {L:,}; at most {max_layers:,} layers are read."
        )
    N = r.required("num_attention_heads", "the attention-head count")
    D = r.required("hidden_size", "the hidden size")
    K = _read_kv_heads(r, N)
    H = _read_head_dim(r, N, D)
    vocab = r.get("vocab_size", "count")
    positions = r.get("max_position_embeddings", "count")

    mla = _read_mla(r, N, K)
    if mla is not None:
        nope = r.get("qk_nope_head_dim", "count0")
        if "head_dim" not in cfg and nope is not None:
            H = nope + mla[1]  # the query/key head width, qk_nope_head_dim + qk_rope_head_dim
        layers = tuple(LayerCache("mla", K, H, None, *mla) for _ in range(L))
    else:
        if K > N or N % K:
            raise ValueError(
                f"{prefix}num_attention_heads ({N}) must be divisible by the "
                f"{prefix}num_key_value_heads ({K}): each kv head serves N / K query heads."
            )
        windows = _read_windows(r, L)
        layers = tuple(
            LayerCache("full" if w is None else "sliding", K, H, window=w) for w in windows
        )
    params, active, read = _derive_params(r, L, N, K, H, D, vocab)
    return ModelConfig(
        name=name or _name_of(config, model_type),
        model_type=model_type or "",
        num_query_heads=N,
        num_key_value_heads=K,
        head_dim=H,
        hidden_size=D,
        layers=layers,
        vocab_size=vocab,
        max_position_embeddings=positions,
        params=params,
        active_params=active,
        read_params=read,
        defaulted=dict(r.defaulted),
        notes=tuple(r.notes),
    )


def _name_of(config: dict, model_type: str | None) -> str:
    path = config.get("_name_or_path")
    if isinstance(path, str) and path.strip():
        # The file's own text, shown in headings and messages: a repository id's characters.
        return re.sub(r"[^\w./:+-]", "-", path.strip())[:80]
    return model_type or "config"


def _read_kv_heads(r: _Reader, N: int) -> int:
    if r.model_type == "falcon":
        return _falcon_kv_heads(r, N)
    if r.model_type in _NEVER_MULTI_KV:
        if "num_key_value_heads" in r.cfg:
            r.note(f"{r.model_type} is multi-head: num_key_value_heads is not read.")
        return N
    present, value, _ = r.given("num_key_value_heads")
    K = r.get("num_key_value_heads", "count")
    if K is None:
        K = N
        why = "is null" if present else "is absent"
        r.note(f"num_key_value_heads {why}: multi-head, K = N = {N}.")
        if not present and r.tabulated:
            r.defaulted["num_key_value_heads"] = N
    return K


def _falcon_kv_heads(r: _Reader, N: int) -> int:
    new = r.get("new_decoder_architecture", "bool")
    multi_query = not new and r.get("multi_query", "bool")
    if new:
        K = r.get("num_kv_heads", "count")
        if K is None:
            K = N
            r.defaulted.setdefault("num_kv_heads", N)
        r.note(f"Falcon: new_decoder_architecture, so num_kv_heads gives K = {K}.")
        return K
    if multi_query:
        r.note(
            "Falcon: multi_query (without new_decoder_architecture) means one kv head, K = 1, "
            "as modeling_falcon reads it."
        )
        return 1
    r.note(f"Falcon: neither new_decoder_architecture nor multi_query: K = N = {N}.")
    return N


def _read_head_dim(r: _Reader, N: int, D: int) -> int:
    if r.model_type in _HEAD_DIM_IS_D_OVER_N:
        if "head_dim" in r.cfg:
            r.note(f"{r.model_type} always uses head_dim = D / N; head_dim is not read.")
    else:
        H = r.get("head_dim", "count")
        if H is not None:
            if "head_dim" in r.cfg and H * N != D:
                r.note(
                    f"head_dim {H} is given: N x H = {N * H:,}, not hidden_size {D:,} (D / N "
                    f"would be wrong here)."
                )
            elif "head_dim" not in r.cfg and H * N != D:
                r.note(
                    f"head_dim absent: {H}, the {r.model_type} config class's default (not D / N)."
                )
            return H
    if D % N:
        raise ValueError(
            f"{r.prefix}hidden_size ({D}) is not a multiple of {r.prefix}num_attention_heads "
            f"({N}) and no head_dim is given."
        )
    return D // N


def _read_mla(r: _Reader, N: int, K: int) -> tuple[int, int] | None:
    """(kv_lora_rank, qk_rope_head_dim) when the config describes MLA, else None."""
    rank = r.get("kv_lora_rank", "count")
    if rank is None:
        return None
    rope = r.get("qk_rope_head_dim", "count0")
    if rope is None:
        raise ValueError(
            f"The config has {r.prefix}kv_lora_rank (multi-head latent attention) but no "
            f"{r.prefix}qk_rope_head_dim: the rotary key cached beside the latent is never guessed."
        )
    r.note(
        f"MLA (kv_lora_rank {rank}): each layer caches a {rank}-element latent plus a "
        f"{rope}-element rotary key (qk_rope_head_dim) per token, {rank + rope} elements shared "
        f"by all {N} heads; num_key_value_heads ({K}) and head_dim do not size the cache. "
        f"(transformers' own code caches decompressed per-head K and V instead; MLA-aware "
        f"engines such as vLLM and SGLang keep the latent.)"
    )
    return rank, rope


def _read_windows(r: _Reader, L: int) -> list[int | None]:
    """Each layer's window (None: full attention), by layer_types or the family's convention."""
    mt = r.model_type
    used = True
    if mt in _USE_SLIDING_WINDOW or (not r.tabulated and "use_sliding_window" in r.cfg):
        used = r.get("use_sliding_window", "bool")
    if not r.class_has("sliding_window"):
        window = None
        if r.cfg.get("sliding_window") is not None:
            r.note(f"{mt}'s config class has no sliding_window: it is ignored.")
    elif used:
        window = r.get("sliding_window")
    else:  # read only to say it is not used
        window = r.cfg.get("sliding_window")
    if window is not None and (not _is_int(window) or window < 1):
        if window == 0 and mt == "qwen2_moe":  # its class writes 0 for "no window"
            window = None
        else:
            raise ValueError(
                f"{r.prefix}sliding_window must be a positive integer or null, got "
                f"{_short(window)}."
            )
    if not used:
        if window is not None:
            r.note(
                f"use_sliding_window is false, so no layer slides (sliding_window "
                f"{window:,} is not used)."
            )
        window = None

    types = r.cfg.get("layer_types") if r.class_has("layer_types") else None
    if "layer_types" in r.cfg and not r.class_has("layer_types"):
        r.note(f"{mt}'s config class does not read layer_types: it is ignored.")
    if types is not None:
        return _from_layer_types(r, types, L, window)
    if window is None:
        return [None] * L
    if mt in _ALTERNATE:
        kinds = [window if (i + 1) % 2 else None for i in range(L)]
        r.note(f"{_ALTERNATE[mt]}: layers alternate, local first: {_count_kinds(kinds, window)}.")
        return kinds
    if mt == "gemma3_text":
        pattern = r.value("sliding_window_pattern", "count")
        kinds = [window if (i + 1) % pattern else None for i in range(L)]
        r.note(
            f"Gemma 3: sliding_window_pattern {pattern}: {pattern - 1} local layers to 1 global; "
            f"{_count_kinds(kinds, window)}."
        )
        return kinds
    if mt in _FROM_WINDOW_LAYER_ON:
        first = r.value("max_window_layers", "count0")
        kinds = [window if i >= first else None for i in range(L)]
        r.note(
            f"use_sliding_window is true: layers from max_window_layers ({first}) on slide; "
            f"{_count_kinds(kinds, window)}."
        )
        return kinds
    if mt == "qwen2_moe":
        last = r.value("max_window_layers", "count0")
        kinds = [window if (i + 1) % 2 and i < last else None for i in range(L)]
        r.note(
            f"Qwen2-MoE with use_sliding_window: even layers below max_window_layers ({last}) "
            f"slide, as its transformers class builds layer_types; {_count_kinds(kinds, window)}."
        )
        return kinds
    if mt in _EVERY_LAYER:
        r.note(f"sliding_window {window:,} on every layer ({mt}).")
    else:
        r.note(
            f"sliding_window {window:,} and no layer_types: every layer slides (as Mistral reads "
            f"it); {mt or 'this model type'}'s own convention is not tabulated here."
        )
    return [window] * L


def _from_layer_types(r: _Reader, types, L: int, window: int | None) -> list[int | None]:
    name = f"{r.prefix}layer_types"
    if not isinstance(types, list):
        raise ValueError(f"{name} must be a list of layer types, got {_short(types)}.")
    if len(types) != L:
        raise ValueError(
            f"{name} lists {len(types):,} layers but num_hidden_layers is {L:,}: they must "
            f"be equal."
        )
    unknown = sorted({_short(t) for t in types if not isinstance(t, str) or t not in LAYER_TYPES})
    if unknown:
        raise ValueError(
            f"{name} has {', '.join(unknown[:3])}: only "
            f"{' and '.join(repr(t) for t in LAYER_TYPES)} layers are computed here."
        )
    sliding = sum(t == "sliding_attention" for t in types)
    if sliding and window is None:
        r.note(
            f"layer_types names {sliding} sliding_attention layers but no window applies "
            f"(sliding_window null or unused): they attend to everything."
        )
        return [None] * L
    kinds = [window if t == "sliding_attention" else None for t in types]
    r.note(f"layer_types: {_count_kinds(kinds, window)}.")
    return kinds


def _count_kinds(kinds: list[int | None], window: int | None) -> str:
    local = sum(k is not None for k in kinds)
    if not local:
        return f"all {len(kinds)} global"
    return f"{local} local ({window:,}-token window), {len(kinds) - local} global"


# ---------------------------------------------------------------------------------------------
# Parameter counts.


def _derive_params(r: _Reader, L, N, K, H, D, V):
    """(total, active, read) parameters (module docstring); Nones when the family is not one of
    PARAM_FAMILIES or a needed field is missing. active is None for a dense model."""
    mt = r.model_type
    if mt not in PARAM_FAMILIES or V is None:
        if mt in PARAM_FAMILIES:
            r.note("No vocab_size: the parameter count is not derived.")
        return None, None, None
    try:
        total, active, unread = _PARAM_COUNTERS[mt](r, L, N, K, H, D, V)
    except _Underived as missing:
        r.note(f"No {r.prefix}{missing}: the parameter count is not derived.")
        return None, None, None
    if r.prefix:
        r.note("Parameters: the text decoder's only (the vision encoder is not counted).")
    return total, active, (active or total) - unread


class _Underived(Exception):
    """A field a parameter count needs is null or missing."""


def _need(r: _Reader, key: str, check: str) -> int:
    value = r.get(key, check)
    if value is None:
        raise _Underived(key)
    return value


def _flag(r: _Reader, key: str) -> bool:
    return bool(r.get(key, "bool"))


def _embeddings(r: _Reader, V: int, D: int) -> tuple[int, int]:
    """(input embeddings, plus the output head unless tied, plus the final norm (weight only);
    the part a decode step does not read: the input table when it is not the output head)."""
    tied = _tied(r)
    return V * D * (1 if tied else 2) + D, 0 if tied else V * D


def _tied(r: _Reader) -> bool:
    """tie_word_embeddings of the decoder, else of a multimodal parent (whose class holds the
    output head), else the class default."""
    if "tie_word_embeddings" not in r.cfg and "tie_word_embeddings" in r.parent:
        value = r.parent["tie_word_embeddings"]
        if not isinstance(value, bool):
            raise ValueError(f"tie_word_embeddings must be true or false, got {_short(value)}.")
        return value
    return _flag(r, "tie_word_embeddings")


def _attention(D, N, K, H, q_bias=False, kv_bias=False, o_bias=False, qk_norm=False) -> int:
    """q, k, v, o projections, their biases, and q/k RMSNorms over head_dim."""
    n = D * N * H + 2 * D * K * H + N * H * D
    n += N * H * q_bias + 2 * K * H * kv_bias + D * o_bias
    return n + 2 * H * qk_norm


def _gated_mlp(D: int, I: int, bias: bool = False) -> int:  # noqa: E741
    """gate, up (D -> I) and down (I -> D)."""
    return 3 * D * I + (2 * I + D) * bias


def _dense(r: _Reader, L, N, K, H, D, V):
    mt = r.model_type
    I = _need(r, "intermediate_size", "count")  # noqa: E741
    if mt in ("llama", "gemma", "gemma2", "gemma3_text", "qwen3", "qwen3_vl_text"):
        bias = _flag(r, "attention_bias")
        qk_norm = mt in ("qwen3", "gemma3_text", "qwen3_vl_text")
        attn = _attention(D, N, K, H, bias, bias, bias, qk_norm=qk_norm)
    elif mt == "qwen2":
        attn = _attention(D, N, K, H, q_bias=True, kv_bias=True)
    else:  # mistral, phi3
        attn = _attention(D, N, K, H)
    mlp = _gated_mlp(D, I, _flag(r, "mlp_bias") if mt == "llama" else False)
    norms = D * (4 if mt in ("gemma2", "gemma3_text") else 2)
    embeddings, unread = _embeddings(r, V, D)
    return embeddings + L * (attn + mlp + norms), None, unread


def _moe_totals(shared: int, expert: int, routed: int, chosen: int | None, moe_layers: int):
    """(total, active): ``shared`` counts everything but the routed experts."""
    total = shared + moe_layers * routed * expert
    active = None if chosen is None else shared + moe_layers * chosen * expert
    return total, active


def _mixtral(r: _Reader, L, N, K, H, D, V):
    I = _need(r, "intermediate_size", "count")  # noqa: E741
    E = _need(r, "num_local_experts", "count")
    k = r.get("num_experts_per_tok", "count")
    embeddings, unread = _embeddings(r, V, D)
    shared = embeddings + L * (_attention(D, N, K, H) + D * E + 2 * D)
    return *_moe_totals(shared, _gated_mlp(D, I), E, k, L), unread


def _qwen_moe(r: _Reader, L, N, K, H, D, V):
    mt = r.model_type
    E = _need(r, "num_experts", "count")
    k = r.get("num_experts_per_tok", "count")
    I = _need(r, "intermediate_size", "count")  # noqa: E741
    moe_I = _need(r, "moe_intermediate_size", "count")
    step = _need(r, "decoder_sparse_step", "count")
    dense_only = set(r.get("mlp_only_layers", "ints") or ())
    moe_layers = [i not in dense_only and E > 0 and (i + 1) % step == 0 for i in range(L)]
    if mt == "qwen2_moe":
        bias = _flag(r, "qkv_bias")
        attn = _attention(D, N, K, H, q_bias=bias, kv_bias=bias)
        shared_I = _need(r, "shared_expert_intermediate_size", "count")
        moe_shared = D * E + _gated_mlp(D, shared_I) + D  # router, shared expert and its gate
    else:
        bias = _flag(r, "attention_bias")
        attn = _attention(D, N, K, H, bias, bias, bias, qk_norm=True)
        moe_shared = D * E  # router
    n_moe = sum(moe_layers)
    embeddings, unread = _embeddings(r, V, D)
    shared = embeddings + L * (attn + 2 * D)
    shared += n_moe * moe_shared + (L - n_moe) * _gated_mlp(D, I)
    return *_moe_totals(shared, _gated_mlp(D, moe_I), E, k, n_moe), unread


def _deepseek(r: _Reader, L, N, K, H, D, V):
    mt = r.model_type
    rank = _need(r, "kv_lora_rank", "count")
    q_rank = r.get("q_lora_rank", "count")
    rope = _need(r, "qk_rope_head_dim", "count0")
    nope = _need(r, "qk_nope_head_dim", "count0")
    v_dim = _need(r, "v_head_dim", "count")
    bias = _flag(r, "attention_bias")
    qk = N * (nope + rope)
    if q_rank is None:
        q = D * qk
    else:
        q = D * q_rank + q_rank * bias + q_rank + q_rank * qk  # q_a, its bias, norm, q_b
    kv = D * (rank + rope) + (rank + rope) * bias + rank + rank * N * (nope + v_dim)
    attn = q + kv + N * v_dim * D + D * bias
    I = _need(r, "intermediate_size", "count")  # noqa: E741
    moe_I = _need(r, "moe_intermediate_size", "count")
    E = _need(r, "n_routed_experts", "count")
    k = r.get("num_experts_per_tok", "count")
    n_shared = r.get("n_shared_experts", "count0") or 0
    first_dense = min(r.get("first_k_dense_replace", "count0") or 0, L)
    mlp_bias = mt == "deepseek_v2" and _flag(r, "mlp_bias")
    n_moe = L - first_dense
    router = D * E + E * (mt == "deepseek_v3")  # V3: plus e_score_correction_bias
    embeddings, unread = _embeddings(r, V, D)
    shared = embeddings + L * (attn + 2 * D)
    shared += first_dense * _gated_mlp(D, I, mlp_bias)
    shared += n_moe * (router + _gated_mlp(D, moe_I * n_shared, mlp_bias) * (n_shared > 0))
    r.note(
        "Parameters: the main model as transformers builds it (no multi-token-prediction layer)."
    )
    # routed experts are fused weights without biases; mlp_bias reaches the dense and shared MLPs
    return *_moe_totals(shared, _gated_mlp(D, moe_I), E, k, n_moe), unread


def _gpt_oss(r: _Reader, L, N, K, H, D, V):
    I = _need(r, "intermediate_size", "count")  # noqa: E741
    E = _need(r, "num_local_experts", "count")
    k = r.get("num_experts_per_tok", "count")
    bias = _flag(r, "attention_bias")
    attn = _attention(D, N, K, H, bias, bias, bias) + N  # + one sink logit per head
    embeddings, unread = _embeddings(r, V, D)
    shared = embeddings + L * (attn + 2 * D + D * E + E)  # router with bias
    expert = D * 2 * I + 2 * I + I * D + D  # gate_up and down, with biases
    return *_moe_totals(shared, expert, E, k, L), unread


def _gpt2(r: _Reader, L, N, K, H, D, V):
    P = _need(r, "max_position_embeddings", "count")
    inner = r.get("n_inner", "count") or 4 * D
    block = 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + 2 * D  # ln_1, c_attn, c_proj, ln_2
    block += D * inner + inner + inner * D + D  # mlp c_fc, c_proj
    tied = _flag(r, "tie_word_embeddings")
    total = V * D + P * D + L * block + 2 * D + V * D * (not tied)
    return total, None, P * D + V * D * (not tied)  # a step reads one position row


def _falcon(r: _Reader, L, N, K, H, D, V):
    new = _flag(r, "new_decoder_architecture")
    multi_query = not new and _flag(r, "multi_query")
    bias = _flag(r, "bias")
    ffn = r.get("ffn_hidden_size", "count") or 4 * D
    if new:
        qkv = (2 * K + N) * H
    elif multi_query:
        qkv = D + 2 * H
    else:
        qkv = 3 * D
    block = D * qkv + qkv * bias + D * D + D * bias  # query_key_value, dense
    block += D * ffn + ffn * bias + ffn * D + D * bias  # dense_h_to_4h, dense_4h_to_h
    n_ln = r.get("num_ln_in_parallel_attn", "count")
    if n_ln is None and new:
        n_ln = 2
    # LayerNorms (weight and bias): two unless attention and MLP share one input norm
    block += 2 * D * (2 if n_ln == 2 or not _flag(r, "parallel_attn") else 1)
    tied = _flag(r, "tie_word_embeddings")
    total = V * D * (1 if tied else 2) + L * block + 2 * D  # ln_f has a bias
    return total, None, 0 if tied else V * D


_DENSE = (
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "qwen3_vl_text",
    "phi3",
)  # fmt: skip
_PARAM_COUNTERS = {
    **dict.fromkeys(_DENSE, _dense),
    "mixtral": _mixtral,
    "qwen2_moe": _qwen_moe,
    "qwen3_moe": _qwen_moe,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "gpt_oss": _gpt_oss,
    "gpt2": _gpt2,
    "falcon": _falcon,
}
# The model types whose parameter count is derived (module docstring).
PARAM_FAMILIES = tuple(_PARAM_COUNTERS)


# ---------------------------------------------------------------------------------------------
# The cache.


def mla_reason(model: ModelConfig) -> str:
    """Why an MLA model's cache is small and has no MHA or MQA variant (a sentence)."""
    layer = model.layers[0]
    return (
        f"{model.name} uses multi-head latent attention (MLA): each layer caches one latent of "
        f"{layer.latent} elements per token ({layer.kv_lora_rank} kv_lora_rank + "
        f"{layer.qk_rope_head_dim} qk_rope_head_dim), shared by all {model.num_query_heads} "
        f"query heads, so there are no per-head keys and values to count, and no MHA or MQA "
        f"variant of its cache."
    )


def with_kv_heads(model: ModelConfig, kv_heads: int) -> ModelConfig:
    """``model`` with ``kv_heads`` kv heads in every layer (its MHA or MQA variant), windows
    kept. ValueError for an MLA model (see :func:`mla_reason`) or a K that does not divide N."""
    _count(kv_heads, "kv_heads", minimum=1)
    if model.is_mla:
        raise ValueError(mla_reason(model))
    if model.num_query_heads % kv_heads != 0:
        raise ValueError(
            f"kv_heads ({kv_heads}) must divide {model.name}'s num_query_heads "
            f"({model.num_query_heads})."
        )
    layers = tuple(replace(layer, kv_heads=kv_heads) for layer in model.layers)
    return replace(model, num_key_value_heads=kv_heads, layers=layers)


@dataclass(frozen=True)
class LayerGroup:
    """Identical layers, counted together, and their cache (what :func:`formula` prints)."""

    count: int
    layer: LayerCache
    label: str  # "layers", "global layers", "local layers" or "MLA layers"
    cached_tokens: int
    bytes: int | Fraction  # all ``count`` layers, every sequence
    indices: tuple[int, ...]  # the layers' places in the model, ascending


@dataclass(frozen=True)
class CacheBytes:
    """Exact cache bytes of ``batch`` sequences of ``tokens`` tokens in ``dtype``.

    ``per_layer`` one entry per layer (each window applied), ``total`` their sum, and
    ``cached_tokens`` each layer's S. Integers, or Fractions where int4 leaves half a byte.
    ``groups`` the identical layers together (:func:`layer_groups`), ``kv_heads`` the K every
    layer was given (None: as configured).
    """

    per_layer: tuple[int | Fraction, ...]
    total: int | Fraction
    cached_tokens: tuple[int, ...]
    tokens: int
    batch: int
    dtype: str
    kv_heads: int | None
    groups: tuple[LayerGroup, ...]

    @property
    def per_token(self) -> int | Fraction:
        """Every layer's bytes for one token of one sequence, before any window."""
        size = dtype_bytes(self.dtype)
        return whole(sum(g.count * g.layer.elements_per_token * size for g in self.groups))


def _group_order(layer: LayerCache) -> tuple[bool, int]:
    """Full (and MLA) layers first, then sliding layers by window, largest first."""
    return layer.window is not None, -(layer.window or 0)


def kv_cache_bytes(
    model: ModelConfig,
    *,
    tokens: int,
    batch: int = 1,
    dtype: str = "bf16",
    kv_heads: int | None = None,
) -> CacheBytes:
    """Bytes of the cache for ``batch`` sequences of ``tokens`` tokens each, layer by layer.

    ``kv_heads`` gives every layer that many kv heads (the MHA or MQA variant); ValueError for
    an MLA model (see :func:`mla_reason`), negative tokens, batch < 1 or an unknown dtype.
    """
    layers = model.layers if kv_heads is None else with_kv_heads(model, kv_heads).layers
    _count(tokens, "tokens")
    _count(batch, "batch", minimum=1)
    size = dtype_bytes(dtype)
    places: dict[LayerCache, list[int]] = {}  # one pass over the layers
    for i, layer in enumerate(layers):
        places.setdefault(layer, []).append(i)
    mixed = len({layer.kind for layer in places}) > 1
    per_layer: list[int | Fraction] = [0] * len(layers)
    S: list[int] = [0] * len(layers)
    groups = []
    for layer in sorted(places, key=_group_order):
        indices = tuple(places[layer])
        s = layer.cached_tokens(tokens)
        each = layer.elements_per_token * size * s * batch
        held = whole(each)
        for i in indices:
            per_layer[i], S[i] = held, s
        if layer.kind == "mla":
            label = "MLA layers"
        else:
            label = {"full": "global layers", "sliding": "local layers"}[layer.kind]
            label = label if mixed else "layers"
        groups.append(
            LayerGroup(len(indices), layer, label, s, whole(each * len(indices)), indices)
        )
    return CacheBytes(
        per_layer=tuple(per_layer),
        total=whole(sum((Fraction(g.bytes) for g in groups), Fraction(0))),
        cached_tokens=tuple(S),
        tokens=tokens,
        batch=batch,
        dtype=dtype,
        kv_heads=kv_heads,
        groups=tuple(groups),
    )


def _reuse(
    model: ModelConfig,
    cache: CacheBytes | None,
    *,
    tokens: int,
    batch: int,
    dtype: str,
    kv_heads: int | None = None,
) -> CacheBytes:
    """``cache`` when it is the one these arguments describe (computed once, reused), else the
    cache computed; ValueError for a cache of other arguments."""
    if cache is None:
        return kv_cache_bytes(model, tokens=tokens, batch=batch, dtype=dtype, kv_heads=kv_heads)
    asked = (model.num_layers, tokens, batch, dtype, kv_heads)
    given = (len(cache.per_layer), cache.tokens, cache.batch, cache.dtype, cache.kv_heads)
    if asked != given:
        names = ("layers", "tokens", "batch", "dtype", "kv_heads")
        wrong = ", ".join(
            f"{n} {g!r} (not {a!r})" for n, a, g in zip(names, asked, given, strict=True) if a != g
        )
        raise ValueError(f"cache is not the one asked for: it has {wrong}.")
    return cache


def bytes_per_token(
    model: ModelConfig, dtype: str = "bf16", kv_heads: int | None = None
) -> tuple[int | Fraction, ...]:
    """Each layer's cache bytes for one token of one sequence (before any window caps it);
    their sum is :attr:`CacheBytes.per_token`."""
    size = dtype_bytes(dtype)
    layers = model.layers if kv_heads is None else with_kv_heads(model, kv_heads).layers
    return tuple(whole(layer.elements_per_token * size) for layer in layers)


def cached_tokens(model: ModelConfig, tokens: int) -> int:
    """S of the layer that holds the most: ``tokens``, or the largest window when every layer
    slides (older entries are evicted)."""
    _count(tokens, "tokens")
    return max(layer.cached_tokens(tokens) for layer in model.layers)


def variants(
    model: ModelConfig,
    *,
    tokens: int = 4096,
    batch: int = 1,
    dtype: str = "bf16",
    cache: CacheBytes | None = None,
) -> dict[str, int | Fraction]:
    """Total cache bytes as configured ("configured"), as MHA (K = N, "mha") and as MQA
    (K = 1, "mqa"), windows kept. An MLA model has "configured" only (:func:`mla_reason`).
    ``cache``: the configured cache at these arguments, when already computed."""
    configured = _reuse(model, cache, tokens=tokens, batch=batch, dtype=dtype)
    out = {"configured": configured.total}
    if not model.is_mla:
        for key, K in (("mha", model.num_query_heads), ("mqa", 1)):
            c = kv_cache_bytes(model, tokens=tokens, batch=batch, dtype=dtype, kv_heads=K)
            out[key] = c.total
    return out


def with_params(model: ModelConfig, params: int) -> ModelConfig:
    """``model`` with a parameter count given by hand (for a config it cannot be derived from):
    the total, also taken as what a decode step reads (no split into experts is known)."""
    _count(params, "params", minimum=1)
    return replace(model, params=params, active_params=None, read_params=None)


def params_read(model: ModelConfig) -> int:
    """Parameters a decode step reads from memory for one token: ``read_params``, else (a count
    given by :func:`with_params`) ``params``. ValueError when neither is known."""
    params = model.read_params or model.params
    if params is None:
        raise ValueError(_no_params(model))
    return params


def _no_params(model: ModelConfig) -> str:
    return (
        f"{model.name}: the parameter count cannot be derived from this config "
        f"({model.model_type or 'no model_type'}); give it."
    )


def _weights(model: ModelConfig, dtype: str, read: bool = False) -> Fraction:
    params = params_read(model) if read else model.params
    if params is None:
        raise ValueError(_no_params(model))
    return params * dtype_bytes(dtype, "weights dtype")


def weights_bytes(model: ModelConfig, dtype: str = "bf16") -> int | Fraction:
    """Bytes of the weights: the total parameter count times the bytes of ``dtype`` (all
    stored alike). ValueError when the count is not known (see :func:`with_params`)."""
    return whole(_weights(model, dtype))


def _free_bytes(model: ModelConfig, gpu_bytes, weights_dtype: str) -> Fraction:
    """GPU bytes left after the weights (negative when they don't fit). Activations, the
    framework's workspace and fragmentation are ignored: the results are upper bounds."""
    return _positive(gpu_bytes, "gpu_bytes") - _weights(model, weights_dtype)


def max_context(
    model: ModelConfig,
    gpu_bytes: float,
    batch: int = 1,
    dtype: str = "bf16",
    weights_dtype: str = "bf16",
) -> int | None:
    """Most tokens per sequence whose cache, for ``batch`` sequences, fits beside the weights.

    A sliding layer stops growing at its window, so the cache is piecewise linear in the
    context; solved exactly. 0 when the weights alone don't fit. None (no limit from memory)
    when every layer slides and the cache of the longest window fits. May exceed the model's
    ``max_position_embeddings`` (see :func:`beyond_max_position`). Ignores activations and
    workspace (an upper bound).
    """
    per = _count(batch, "batch", minimum=1) * dtype_bytes(dtype)
    free = _free_bytes(model, gpu_bytes, weights_dtype)
    if free <= 0:
        return 0
    budget = free / per  # in cached elements
    groups = [
        (g.layer.window, g.count * g.layer.elements_per_token)
        for g in kv_cache_bytes(model, tokens=0).groups
    ]
    fixed = Fraction(0)  # elements of layers already capped at their window
    slope = sum(e for _, e in groups)  # elements per token of layers still growing
    for w in sorted({w for w, _ in groups if w is not None}):
        if fixed + slope * w > budget:
            break
        stopping = sum(e for window, e in groups if window == w)
        fixed += stopping * w
        slope -= stopping
    if slope == 0:
        return None
    return math.floor((budget - fixed) / slope)


def max_batch(
    model: ModelConfig,
    gpu_bytes: float,
    tokens: int,
    dtype: str = "bf16",
    weights_dtype: str = "bf16",
    *,
    cache: CacheBytes | None = None,
) -> int:
    """Most sequences of ``tokens`` tokens (>= 1) whose caches fit beside the weights.

    0 when the weights alone don't fit. Ignores activations and workspace (an upper bound).
    ``cache``: the model's cache at ``tokens`` and ``dtype`` (any batch), when already computed.
    """
    _count(tokens, "tokens", minimum=1)
    batch = 1 if cache is None else cache.batch
    cache = _reuse(model, cache, tokens=tokens, batch=batch, dtype=dtype)
    free = _free_bytes(model, gpu_bytes, weights_dtype)
    if free <= 0:
        return 0
    return math.floor(free * cache.batch / cache.total)


def decode_time_lower_bound(
    model: ModelConfig,
    tokens: int,
    batch: int = 1,
    dtype: str = "bf16",
    weights_dtype: str = "bf16",
    bandwidth_bytes_per_s: float = 3.35e12,
    *,
    cache: CacheBytes | None = None,
) -> float:
    """Seconds per decode step (one new token for each of ``batch`` sequences) if memory-bound.

    (weights bytes + cache bytes) / bandwidth: the weights a step must read (``read_params``:
    for a mixture of experts one token's routed experts and the shared layers, since a larger
    batch only reads more; an input embedding table only by its rows) and the whole cache of
    ``tokens`` tokens (window-capped), once each, at the full ``bandwidth_bytes_per_s``
    (default 3.35e12, an H100 SXM's HBM3 peak), with compute, kernel launches and the new
    token's own K/V ignored. A count given by :func:`with_params` is read whole. ``cache``:
    the cache at these arguments, when already computed.
    """
    bandwidth = _positive(bandwidth_bytes_per_s, "bandwidth_bytes_per_s")
    cache = _reuse(model, cache, tokens=tokens, batch=batch, dtype=dtype)
    weights = _weights(model, weights_dtype, read=True)
    return float((weights + cache.total) / bandwidth)


def beyond_max_position(model: ModelConfig, tokens: int) -> bool:
    """Whether ``tokens`` exceeds the config's ``max_position_embeddings`` (False when the
    config gives none): the model was not built or trained to attend that far."""
    _count(tokens, "tokens")
    limit = model.max_position_embeddings
    return limit is not None and tokens > limit


def layer_groups(
    model: ModelConfig,
    *,
    tokens: int,
    batch: int = 1,
    dtype: str = "bf16",
    kv_heads: int | None = None,
) -> list[LayerGroup]:
    """The model's layers grouped by what they cache: full layers first, then sliding layers
    by window (largest first). "global"/"local" label the groups of a model that mixes them."""
    cache = kv_cache_bytes(model, tokens=tokens, batch=batch, dtype=dtype, kv_heads=kv_heads)
    return list(cache.groups)


def _decimal_and_binary(b: float) -> str:
    """`` = 1.07 GB = 1.00 GiB`` in the largest unit that keeps the number >= 1 (nothing below
    1 kB: the bytes say it), so a tiny model's cache does not read "0.00 GB"."""
    for decimal, binary, unit in ((GB, GiB, "G"), (10**6, 2**20, "M"), (10**3, 2**10, "k")):
        if b >= decimal:
            return f" = {b / decimal:,.2f} {unit}B = {b / binary:,.2f} {unit.upper()}iB"
    return ""


def formula(
    model: ModelConfig,
    *,
    tokens: int,
    batch: int = 1,
    dtype: str = "bf16",
    kv_heads: int | None = None,
    cache: CacheBytes | None = None,
) -> str:
    """The cache formula with the model's numbers, one line per group of identical layers
    (their bytes), then the total in B, GB and GiB (on the one line of a uniform model).
    ``cache``: the cache at these arguments, when already computed."""
    cache = _reuse(model, cache, tokens=tokens, batch=batch, dtype=dtype, kv_heads=kv_heads)
    size = f"{DTYPE_BYTES[dtype]:g} B ({dtype})"
    lines = []
    for g in cache.groups:
        layer = g.layer
        if layer.kind == "mla":
            per = (
                f"{g.count} {g.label} × ({layer.kv_lora_rank} kv_lora_rank + "
                f"{layer.qk_rope_head_dim} qk_rope_head_dim)"
            )
        else:
            per = (
                f"2 (K and V) × {g.count} {g.label} × {layer.kv_heads} kv heads × "
                f"{layer.head_dim} head_dim"
            )
        tokens_text = f"{g.cached_tokens:,} tokens"
        if g.cached_tokens != tokens:
            tokens_text += f" ({tokens:,} capped at the {layer.window:,}-token sliding window)"
        lines.append(f"{per} × {size} × {tokens_text} × {batch} batch = {exact_bytes(g.bytes)} B")
    total_text = f"{exact_bytes(cache.total)} B{_decimal_and_binary(float(cache.total))}"
    if len(lines) == 1:
        return lines[0].rsplit(" = ", 1)[0] + f" = {total_text}"
    return "\n".join([*lines, f"total = {total_text}"])
