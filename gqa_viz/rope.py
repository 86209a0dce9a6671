"""Rotary position embedding (RoPE) as the Llama, Mistral, Qwen and Gemma families use it.

Axis letters: B batch, T positions, N heads, H head_dim, R = rotary_dim // 2 frequencies.

A :class:`Rope` is hashable (it rides in :class:`gqa_viz.core.GQASpec`, a jit static
argument). Its frequencies follow Hugging Face's ``modeling_rope_utils`` (transformers 5),
computed in float32 the same way so the angles round alike:

* ``"default"``: inv_freq_i = theta ** (-2i / rotary_dim).
* ``"linear"``: inv_freq / factor (position interpolation).
* ``"dynamic"`` (NTK-aware): the base grows once the sequence passes
  ``max_position_embeddings``: theta * (factor * L / max_pos - (factor - 1)) ** (d / (d - 2)),
  L = the sequence length. Here L is the key length S of the call: transformers' value,
  max(position) + 1, for a full pass over positions 0 .. S - 1 (what gqa-viz runs). With other
  positions the two differ (transformers also keeps a grown base between calls, a state this
  pure function does not have). Equal to "default" up to max_pos.
* ``"llama3"``: long wavelengths divided by factor, short ones kept, a smooth ramp between
  (Llama 3.1 / 3.2).
* ``"yarn"``: a per-frequency ramp between interpolation and extrapolation, and cos/sin scaled
  by ``attention_factor`` (0.1 ln(factor) + 1 unless given).

The rotation is the "rotate half" form (GPT-NeoX / Llama): the first ``rotary_dim`` features
of a head are split in two halves (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin); features past
``rotary_dim`` (partial rotary, e.g. Phi) pass through unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

KINDS = ("default", "linear", "dynamic", "llama3", "yarn")


@dataclass(frozen=True)
class Rope:
    """RoPE settings of one attention layer. ``rotary_dim`` None rotates the whole head."""

    theta: float = 10_000.0
    rotary_dim: int | None = None
    kind: str = "default"
    factor: float = 1.0
    # llama3
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    # llama3, yarn: the pretraining length; dynamic: max_position_embeddings
    original_max_position_embeddings: int | None = None
    max_position_embeddings: int | None = None
    # yarn
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"RoPE kind must be one of {KINDS}, got {self.kind!r}.")
        if not (self.theta > 0):
            raise ValueError(f"RoPE theta must be positive, got {self.theta!r}.")
        if self.kind != "default" and not (self.factor > 0):
            raise ValueError(f"RoPE {self.kind} needs a positive factor, got {self.factor!r}.")
        if self.kind in ("llama3", "yarn") and not self.original_max_position_embeddings:
            raise ValueError(f"RoPE {self.kind} needs original_max_position_embeddings.")
        if self.kind == "dynamic" and not self.max_position_embeddings:
            raise ValueError("RoPE dynamic needs max_position_embeddings.")
        if self.kind == "llama3" and self.high_freq_factor == self.low_freq_factor:
            raise ValueError("RoPE llama3 needs high_freq_factor != low_freq_factor.")

    def dim(self, head_dim: int) -> int:
        """Rotated features per head: ``rotary_dim`` or all of H; must be even and <= H."""
        d = head_dim if self.rotary_dim is None else self.rotary_dim
        if d <= 0 or d % 2 or d > head_dim:
            raise ValueError(
                f"RoPE rotary_dim must be even and between 2 and head_dim ({head_dim}), got {d}."
            )
        if self.kind == "dynamic" and d == 2:  # its base grows as ** (d / (d - 2))
            raise ValueError("RoPE dynamic needs rotary_dim > 2, got 2.")
        return d

    def inverse_frequencies(self, head_dim: int, seq_len: int) -> tuple[np.ndarray, float]:
        """(inv_freq [R] float32, cos/sin scale) for a sequence of ``seq_len`` positions."""
        d = self.dim(head_dim)
        exponents = np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / np.float32(d)  # [R]
        base = self.theta
        if self.kind == "dynamic":
            length = max(seq_len, self.max_position_embeddings)
            ratio = self.factor * length / self.max_position_embeddings - (self.factor - 1)
            base = base * ratio ** (d / (d - 2))
        inv = np.float32(1.0) / _pow32(base, exponents)  # [R]
        scale = 1.0
        if self.kind == "linear":
            inv = inv / np.float32(self.factor)
        elif self.kind == "llama3":
            inv = self._llama3(inv)
        elif self.kind == "yarn":
            inv, scale = self._yarn(d)
        return inv.astype(np.float32), float(scale)

    def _llama3(self, inv: np.ndarray) -> np.ndarray:
        old = self.original_max_position_embeddings
        low_wavelen = old / self.low_freq_factor
        high_wavelen = old / self.high_freq_factor
        wavelen = np.float32(2 * math.pi) / inv
        scaled = np.where(wavelen > low_wavelen, inv / np.float32(self.factor), inv)
        smooth = (old / wavelen - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / np.float32(self.factor) + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)

    def _yarn(self, d: int) -> tuple[np.ndarray, float]:
        factor, base = self.factor, self.theta
        original = self.original_max_position_embeddings

        def mscale(scale, m=1.0):
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        attention_factor = self.attention_factor
        if attention_factor is None:
            if self.mscale and self.mscale_all_dim:
                attention_factor = mscale(factor, self.mscale) / mscale(factor, self.mscale_all_dim)
            else:
                attention_factor = mscale(factor)

        def correction_dim(rotations):
            return (d * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

        low, high = correction_dim(self.beta_fast), correction_dim(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        if low == high:
            high += 0.001  # as transformers: no division by zero
        ramp = np.clip((np.arange(d // 2, dtype=np.float32) - low) / (high - low), 0, 1)
        pos_freqs = _pow32(base, np.arange(0, d, 2).astype(np.float32) / np.float32(d))  # [R]
        extrapolation = np.float32(1.0) / pos_freqs
        interpolation = np.float32(1.0) / (np.float32(factor) * pos_freqs)
        keep = (1 - ramp).astype(np.float32)  # 1 = extrapolate (high frequencies kept)
        inv = interpolation * (1 - keep) + extrapolation * keep
        return inv.astype(np.float32), float(attention_factor)


def _pow32(base: float, exponents: np.ndarray) -> np.ndarray:
    """float32 base ** exponents, correctly rounded (so equal to torch's float32 pow but for
    its own rare last-bit slips; NumPy's float32 power is an ulp off for ~1 in 5 exponents)."""
    return np.power(np.float64(np.float32(base)), exponents.astype(np.float64)).astype(np.float32)


def tables(rope: Rope, positions, head_dim: int, seq_len: int):
    """cos and sin [B or 1, T, 1, R] for integer ``positions`` [B or 1, T] (float32)."""
    inv, scale = rope.inverse_frequencies(head_dim, seq_len)
    angles = jnp.asarray(positions, jnp.float32)[..., None] * jnp.asarray(inv)  # [B, T, R]
    cos = jnp.cos(angles) * jnp.float32(scale)
    sin = jnp.sin(angles) * jnp.float32(scale)
    return cos[:, :, None, :], sin[:, :, None, :]  # [B, T, 1, R]


def rotate(x, cos, sin):
    """Apply RoPE to ``x`` [B, T, N, H] with tables [B or 1, T, 1, R] ("rotate half" layout)."""
    R = cos.shape[-1]
    rot, rest = x[..., : 2 * R], x[..., 2 * R :]
    x1, x2 = rot[..., :R], rot[..., R:]
    c, s = cos.astype(x.dtype), sin.astype(x.dtype)
    out = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    return jnp.concatenate([out, rest], axis=-1) if rest.shape[-1] else out
