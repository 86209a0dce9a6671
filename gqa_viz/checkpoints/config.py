"""A checkpoint's ``config.json`` -> :class:`Architecture`, in either dialect it comes in.

Axis letters: L layers, D model dim, N query heads, K kv heads, H head_dim, V vocabulary,
F the MLP's hidden size, P the longest position the model was configured for.

Hugging Face configs come in two dialects, and both are read:

* **The Hub's** (what most published checkpoints carry): ``rope_theta`` and ``rope_scaling``
  at the top level (``rope_scaling`` names its kind under ``"rope_type"`` or the older
  ``"type"``), no ``layer_types``; which layers slide is implied per family (Gemma 2
  alternates, starting local; Qwen 2 slides from ``max_window_layers`` on when
  ``use_sliding_window``).
* **transformers 5's** (what ``save_pretrained`` writes today): ``rope_parameters`` (holding
  ``rope_type``, ``rope_theta`` and the scaling fields) and an explicit ``layer_types`` list of
  ``"sliding_attention"`` / ``"full_attention"``.

Only the fields that change the forward pass are read; everything else is ignored. A missing
or ill-typed required field is a :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gqa_viz.checkpoints.files import CheckpointError
from gqa_viz.rope import Rope

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gpt2")

# What each family's reference implementation defaults to when config.json is silent.
_ACTIVATION = {
    "llama": "silu",
    "mistral": "silu",
    "qwen2": "silu",
    "qwen3": "silu",
    "gemma": "gelu_pytorch_tanh",
    "gemma2": "gelu_pytorch_tanh",
    "gpt2": "gelu_new",
}
ACTIVATIONS = ("silu", "gelu_pytorch_tanh", "gelu_new", "gelu", "gelu_fast", "relu")
# Fields a config may leave out, which the family's configuration class then fills in
# (transformers 5.23). An explicit null stays null (e.g. Mistral v0.2's sliding_window).
_CLASS_DEFAULTS = {
    "mistral": {"sliding_window": 4096},
    "qwen2": {"sliding_window": 4096},
    "qwen3": {"sliding_window": 4096},
    "gemma2": {
        "sliding_window": 4096,
        "query_pre_attn_scalar": 256,
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
    },
}


@dataclass(frozen=True)
class Architecture:
    """What a checkpoint's forward pass needs to know (hashable: a jit static argument).

    ``windows[l]`` is layer l's causal window (query i sees keys i - w + 1 .. i) or None for
    full causal attention. ``norm`` is "rms" (x * w), "rms_plus_one" (x * (1 + w), Gemma) or
    "layer" (LayerNorm with bias, GPT-2).
    """

    family: str
    num_layers: int  # L
    model_dim: int  # D
    num_query_heads: int  # N
    num_kv_heads: int  # K
    head_dim: int  # H
    vocab_size: int  # V
    mlp_dim: int  # F
    max_positions: int  # P
    windows: tuple[int | None, ...]
    rope: Rope | None
    norm: str
    norm_eps: float
    activation: str
    attention_bias: bool  # q, k, v biases
    output_bias: bool  # the attention output projection's bias
    mlp_bias: bool
    qk_norm: bool
    tie_embeddings: bool
    embed_scale: float | None  # Gemma multiplies embeddings by sqrt(D)
    scale: float | None  # softmax scale when not 1/sqrt(H) (Gemma 2)
    attn_softcap: float | None
    final_softcap: float | None
    sandwich_norms: bool  # Gemma 2: norms after attention and after the MLP too
    learned_positions: bool  # GPT-2's position table
    stored_dtype: str | None  # what config.json says the weights are ("bfloat16", ...)

    @property
    def groups(self) -> int:
        """G: query heads per kv head."""
        return self.num_query_heads // self.num_kv_heads

    def describe(self) -> str:
        """One line for people: family, layers, heads, head size."""
        return (
            f"{self.family}: L={self.num_layers} layers, D={self.model_dim}, "
            f"N={self.num_query_heads} query heads sharing K={self.num_kv_heads} kv heads "
            f"(G={self.groups}), H={self.head_dim}, vocabulary {self.vocab_size:,}"
        )


def _get(config: dict, name: str, kind, *, default=..., positive: bool = False):
    value = config.get(name, default)
    if value is ...:
        raise CheckpointError(f"config.json has no {name!r}, which this model needs.")
    if value is None and default is None:
        return None
    ok = (
        isinstance(value, kind) and not isinstance(value, bool)
        if kind is not bool
        else (isinstance(value, bool))
    )
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise CheckpointError(
            f"config.json's {name!r} must be {'an integer' if kind is int else kind.__name__}, "
            f"got {value!r}."
        )
    if positive and not value > 0:
        raise CheckpointError(f"config.json's {name!r} must be positive, got {value!r}.")
    return value


def _rope(config: dict, family: str, head_dim: int, max_positions: int) -> Rope | None:
    """RoPE from ``rope_parameters`` (transformers 5) or ``rope_theta`` + ``rope_scaling`` (Hub)."""
    if family == "gpt2":
        return None
    params = config.get("rope_parameters")
    if isinstance(params, dict) and any(isinstance(v, dict) for v in params.values()):
        raise CheckpointError(
            "config.json has a different RoPE per layer type, which gqa-viz does not read."
        )
    scaling = config.get("rope_scaling")
    merged: dict = {}
    if isinstance(scaling, dict):
        merged.update(scaling)
    elif scaling is not None:
        raise CheckpointError(f"config.json's 'rope_scaling' must be an object, got {scaling!r}.")
    if isinstance(params, dict):
        merged.update(params)
    elif params is not None:
        raise CheckpointError(f"config.json's 'rope_parameters' must be an object, got {params!r}.")
    kind = merged.get("rope_type", merged.get("type", "default"))
    theta = merged.get("rope_theta", config.get("rope_theta", 10_000.0))
    if not isinstance(theta, int | float) or isinstance(theta, bool) or not theta > 0:
        raise CheckpointError(f"RoPE theta must be a positive number, got {theta!r}.")
    if kind not in ("default", "linear", "dynamic", "llama3", "yarn"):
        raise CheckpointError(
            f"RoPE scaling {kind!r} is not supported; gqa-viz reads default, linear, "
            "dynamic, llama3 and yarn."
        )
    original = merged.get("original_max_position_embeddings")
    if kind in ("llama3", "yarn") and original is None:
        original = config.get("original_max_position_embeddings", max_positions)

    def number(key, default):
        value = merged.get(key, default)
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise CheckpointError(f"RoPE {key!r} must be a number, got {value!r}.")
        return float(value)

    factor = merged.get("factor")
    if kind == "yarn" and factor is None:
        factor = max_positions / original
    try:
        return Rope(
            theta=float(theta),
            kind=kind,
            factor=number("factor", 1.0) if factor is None else float(factor),
            low_freq_factor=number("low_freq_factor", 1.0),
            high_freq_factor=number("high_freq_factor", 4.0),
            original_max_position_embeddings=None if original is None else int(original),
            max_position_embeddings=max_positions,
            beta_fast=number("beta_fast", 32.0) or 32.0,
            beta_slow=number("beta_slow", 1.0) or 1.0,
            attention_factor=merged.get("attention_factor"),
            mscale=merged.get("mscale"),
            mscale_all_dim=merged.get("mscale_all_dim"),
            truncate=bool(merged.get("truncate", True)),
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"config.json's RoPE settings are not usable: {err}") from None


def _windows(config: dict, family: str, L: int) -> tuple[int | None, ...]:
    """Each layer's causal window, from ``layer_types`` or the family's Hub-dialect rule."""
    if family not in ("mistral", "qwen2", "qwen3", "gemma2"):
        return (None,) * L  # their reference implementations ignore any sliding_window
    window = _get(config, "sliding_window", int, default=None)
    if window is not None and window <= 0:
        raise CheckpointError(f"config.json's 'sliding_window' must be positive, got {window}.")
    if family in ("qwen2", "qwen3") and not config.get("use_sliding_window", False):
        window = None  # Qwen 2 configs carry a sliding_window that is off unless asked for
    types = config.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != L:
            raise CheckpointError(
                f"config.json's 'layer_types' must list one type per layer ({L})."
            )
        out = []
        for i, t in enumerate(types):
            if t == "full_attention":
                out.append(None)
            elif t == "sliding_attention":
                if window is None:
                    raise CheckpointError(
                        f"layer {i} is 'sliding_attention' but config.json has no sliding_window."
                    )
                out.append(window)
            else:
                raise CheckpointError(
                    f"layer {i}'s type {t!r} is not supported (full_attention, sliding_attention)."
                )
        return tuple(out)
    if window is None:
        return (None,) * L
    if family == "gemma2":
        return tuple(window if i % 2 == 0 else None for i in range(L))  # local, global, ...
    if family in ("qwen2", "qwen3"):
        first = _get(config, "max_window_layers", int, default=28)  # transformers default
        return tuple(window if i >= first else None for i in range(L))
    return (window,) * L


def parse(config: dict, *, max_layers: int | None = None) -> Architecture:
    """The :class:`Architecture` of a parsed ``config.json`` (either dialect; see the module)."""
    family = config.get("model_type")
    if family is None:
        raise CheckpointError(
            f"config.json has no 'model_type'; gqa-viz reads {', '.join(FAMILIES)}."
        )
    if family not in FAMILIES:
        raise CheckpointError(
            f"model_type {family!r} is not supported; gqa-viz reads {', '.join(FAMILIES)}."
        )
    config = {**_CLASS_DEFAULTS.get(family, {}), **config}
    if family == "gpt2":
        D = _get(config, "n_embd", int, positive=True)
        L = _get(config, "n_layer", int, positive=True)
        N = _get(config, "n_head", int, positive=True)
        K = N
        if D % N:
            raise CheckpointError(f"n_embd ({D}) must be divisible by n_head ({N}).")
        H = D // N
        F = _get(config, "n_inner", int, default=None, positive=True) or 4 * D
        P = _get(config, "n_positions", int, positive=True)
        activation = config.get("activation_function", "gelu_new")
        eps = _get(config, "layer_norm_epsilon", float, default=1e-5)
        if config.get("scale_attn_by_inverse_layer_idx"):
            raise CheckpointError(
                "GPT-2 with scale_attn_by_inverse_layer_idx is not supported (a per-layer scale)."
            )
        scale = None if config.get("scale_attn_weights", True) else 1.0
    else:
        D = _get(config, "hidden_size", int, positive=True)
        L = _get(config, "num_hidden_layers", int, positive=True)
        N = _get(config, "num_attention_heads", int, positive=True)
        K = _get(config, "num_key_value_heads", int, default=N, positive=True)
        H = _get(config, "head_dim", int, default=None, positive=True)
        if H is None:
            if D % N:
                raise CheckpointError(
                    f"hidden_size ({D}) is not divisible by num_attention_heads ({N}) and "
                    "config.json gives no head_dim."
                )
            H = D // N
        F = _get(config, "intermediate_size", int, positive=True)
        P = _get(config, "max_position_embeddings", int, positive=True)
        # Gemma 2 reads hidden_activation, the others hidden_act; Gemma's legacy "gelu" means
        # the tanh approximation (its configuration class rewrites it so).
        key = "hidden_activation" if family == "gemma2" else "hidden_act"
        activation = config.get(key) or _ACTIVATION[family]
        if family == "gemma" and activation == "gelu":
            activation = "gelu_pytorch_tanh"
        eps = _get(config, "rms_norm_eps", float, default=1e-6)
        scale = None
        if family == "gemma2":
            qpas = _get(config, "query_pre_attn_scalar", float, positive=True)
            scale = qpas**-0.5
    if max_layers is not None and L > max_layers:
        raise CheckpointError(f"The model has {L} layers; the limit is {max_layers}.")
    if N % K:
        raise CheckpointError(
            f"num_attention_heads ({N}) must be divisible by num_key_value_heads ({K})."
        )
    V = _get(config, "vocab_size", int, positive=True)
    if activation not in ACTIVATIONS:
        raise CheckpointError(
            f"activation {activation!r} is not supported; gqa-viz has {', '.join(ACTIVATIONS)}."
        )
    rope = _rope(config, family, H, P)
    if rope is not None:
        prf = config.get("partial_rotary_factor", 1.0)
        if prf != 1.0:
            raise CheckpointError(
                f"partial_rotary_factor {prf!r} is not supported for {family} checkpoints."
            )
    gemma = family in ("gemma", "gemma2")
    bias = bool(config.get("attention_bias", False))
    softcap = final_softcap = None
    if family == "gemma2":
        softcap = _get(config, "attn_logit_softcapping", float, default=None, positive=True)
        final_softcap = _get(config, "final_logit_softcapping", float, default=None, positive=True)
    dtype = config.get("dtype", config.get("torch_dtype"))
    return Architecture(
        family=family,
        num_layers=L,
        model_dim=D,
        num_query_heads=N,
        num_kv_heads=K,
        head_dim=H,
        vocab_size=V,
        mlp_dim=F,
        max_positions=P,
        windows=_windows(config, family, L),
        rope=rope,
        norm="layer" if family == "gpt2" else "rms_plus_one" if gemma else "rms",
        norm_eps=float(eps),
        activation=activation,
        attention_bias=family in ("qwen2", "gpt2") or bias,
        output_bias=family == "gpt2" or (bias and family != "qwen2"),
        mlp_bias=family == "gpt2" or bool(config.get("mlp_bias", False)),
        qk_norm=family == "qwen3",
        tie_embeddings=bool(
            config.get("tie_word_embeddings", family in ("gemma", "gemma2", "gpt2"))
        ),
        embed_scale=math.sqrt(D) if gemma else None,
        scale=scale,
        attn_softcap=None if softcap is None else float(softcap),
        final_softcap=None if final_softcap is None else float(final_softcap),
        sandwich_norms=family == "gemma2",
        learned_positions=family == "gpt2",
        stored_dtype=dtype if isinstance(dtype, str) else None,
    )
