"""Keras' initializers, regularizers and constraints, by name, dict config or callable.

Only what ``GroupQueryAttention`` takes as arguments. Each object serializes to the exact dict
Keras 3 writes (``{"module", "class_name", "config", "registered_name"}``), so a config moves
between Keras and gqa_viz in both directions. Formulas follow Keras 3.15.1. Random draws come
from NumPy's seeded generator (fast: no per-shape compile), so a seeded initializer is
reproducible but does not repeat Keras' numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

EPSILON = 1e-7  # keras.backend.epsilon()


class KerasObject:
    """Base: a frozen dataclass whose fields are its Keras config."""

    module: ClassVar[str]
    class_name: ClassVar[str]

    def get_config(self) -> dict[str, Any]:
        return asdict(self)

    def serialize(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "class_name": self.class_name,
            "config": self.get_config(),
            "registered_name": None,
        }


def _lookup(kind: str, registry: dict[str, type], identifier):
    """Resolve a Keras identifier: None, an instance, a name, a serialized dict, or a callable."""
    if identifier is None or isinstance(identifier, KerasObject):
        return identifier
    if isinstance(identifier, str):
        cls = registry.get(identifier) or registry.get(identifier.lower())
        if cls is None:
            names = sorted(n for n in registry if n.islower())
            raise ValueError(f"Unknown {kind} {identifier!r}. Known names: {', '.join(names)}.")
        return cls()
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        cls = registry.get(name) if isinstance(name, str) else None
        if cls is None:
            raise ValueError(f"Unknown {kind} config {identifier!r}.")
        return cls(**identifier.get("config", {}))
    name = type(identifier).__name__
    if name in registry and hasattr(identifier, "get_config"):
        # A Keras object (e.g. keras.regularizers.L2(0.1)): rebuild it from its config.
        return registry[name](**identifier.get_config())
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret {kind} identifier {identifier!r}.")


def serialize(obj) -> dict[str, Any] | None:
    """Keras' serialized form of an initializer, regularizer or constraint (None stays None)."""
    if obj is None:
        return None
    if isinstance(obj, KerasObject):
        return obj.serialize()
    raise ValueError(f"Cannot serialize the custom callable {obj!r}; use a Keras name or config.")


# ---------------------------------------------------------------------------------------------
# Initializers: ``init(shape, dtype, rng) -> array``. ``rng`` (a numpy Generator) is the fallback
# used when the initializer has no seed of its own.


def compute_fans(shape, input_axes=None, output_axes=None) -> tuple[int, int]:
    """Keras' fans. With EinsumDense's axes, a [D, N, H] kernel has fan_in = D, fan_out = N * H;
    without axes Keras falls back to convolution-style fans (fan_in = N * D, fan_out = H * D)."""
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        return math.prod(shape[a] for a in input_axes), math.prod(shape[a] for a in output_axes)
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _truncated_normal(rng, shape):
    """Unit normal truncated to [-2, 2] (redraws outside), as Keras' truncated_normal."""
    z = rng.standard_normal(shape)
    out = np.abs(z) > 2.0
    while out.any():
        z[out] = rng.standard_normal(int(out.sum()))
        out = np.abs(z) > 2.0
    return z


class Initializer(KerasObject):
    module = "keras.initializers"

    def __call__(self, shape, dtype=jnp.float32, rng=None):
        seed = getattr(self, "seed", None)
        if seed is not None or rng is None:
            rng = np.random.default_rng(seed)
        return jnp.asarray(self.sample(tuple(shape), rng), dtype)


@dataclass(frozen=True)
class Zeros(Initializer):
    class_name = "Zeros"

    def sample(self, shape, rng):
        return np.zeros(shape)


@dataclass(frozen=True)
class Ones(Initializer):
    class_name = "Ones"

    def sample(self, shape, rng):
        return np.ones(shape)


@dataclass(frozen=True)
class Constant(Initializer):
    class_name = "Constant"
    value: float = 0.0

    def sample(self, shape, rng):
        return np.full(shape, self.value)


@dataclass(frozen=True)
class RandomNormal(Initializer):
    class_name = "RandomNormal"
    seed: int | None = None
    mean: float = 0.0
    stddev: float = 0.05

    def sample(self, shape, rng):
        return self.mean + self.stddev * rng.standard_normal(shape)


@dataclass(frozen=True)
class RandomUniform(Initializer):
    class_name = "RandomUniform"
    seed: int | None = None
    minval: float = -0.05
    maxval: float = 0.05

    def sample(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, shape)


@dataclass(frozen=True)
class TruncatedNormal(Initializer):
    class_name = "TruncatedNormal"
    seed: int | None = None
    mean: float = 0.0
    stddev: float = 0.05

    def sample(self, shape, rng):
        return self.mean + self.stddev * _truncated_normal(rng, shape)


@dataclass(frozen=True)
class VarianceScaling(Initializer):
    class_name = "VarianceScaling"
    seed: int | None = None
    scale: float = 1.0
    mode: str = "fan_in"
    distribution: str = "truncated_normal"
    input_axes: list[int] | None = None
    output_axes: list[int] | None = None

    def __post_init__(self):
        if self.mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(
                f"VarianceScaling mode must be fan_in, fan_out or fan_avg: {self.mode!r}"
            )
        if self.distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"Unknown VarianceScaling distribution {self.distribution!r}.")
        if self.scale <= 0:
            raise ValueError(f"VarianceScaling scale must be positive, got {self.scale}.")

    def sample(self, shape, rng):
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        variance = self.scale / max(1.0, fan)
        if self.distribution == "truncated_normal":
            # 0.879... is the stddev of a unit normal truncated to [-2, 2] (Keras' constant).
            std = math.sqrt(variance) / 0.87962566103423978
            return std * _truncated_normal(rng, shape)
        if self.distribution == "untruncated_normal":
            return math.sqrt(variance) * rng.standard_normal(shape)
        limit = math.sqrt(3.0 * variance)
        return rng.uniform(-limit, limit, shape)


def _scaling(name: str, scale_: float, mode_: str, distribution_: str):
    @dataclass(frozen=True)
    class _Named(VarianceScaling):
        class_name = name
        seed: int | None = None
        input_axes: list[int] | None = None
        output_axes: list[int] | None = None
        scale: float = field(default=scale_, init=False)
        mode: str = field(default=mode_, init=False)
        distribution: str = field(default=distribution_, init=False)

        def get_config(self):
            return {
                "seed": self.seed,
                "input_axes": self.input_axes,
                "output_axes": self.output_axes,
            }

    _Named.__name__ = _Named.__qualname__ = name
    return _Named


GlorotUniform = _scaling("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _scaling("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _scaling("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _scaling("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _scaling("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _scaling("LecunNormal", 1.0, "fan_in", "truncated_normal")


@dataclass(frozen=True)
class Orthogonal(Initializer):
    class_name = "Orthogonal"
    seed: int | None = None
    gain: float = 1.0

    def sample(self, shape, rng):
        # Keras flattens all leading axes into rows: [prod(shape[:-1]), shape[-1]].
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)


_INITIALIZERS: dict[str, type] = {}
for _cls, _alias in [
    (Zeros, "zeros"),
    (Ones, "ones"),
    (Constant, "constant"),
    (RandomNormal, "random_normal"),
    (RandomUniform, "random_uniform"),
    (TruncatedNormal, "truncated_normal"),
    (VarianceScaling, "variance_scaling"),
    (GlorotUniform, "glorot_uniform"),
    (GlorotNormal, "glorot_normal"),
    (HeUniform, "he_uniform"),
    (HeNormal, "he_normal"),
    (LecunUniform, "lecun_uniform"),
    (LecunNormal, "lecun_normal"),
    (Orthogonal, "orthogonal"),
]:
    _INITIALIZERS[_cls.class_name] = _INITIALIZERS[_alias] = _cls


def get_initializer(identifier):
    """A Keras initializer from a name ("glorot_uniform"), a config dict, or a callable.

    A custom callable is called as ``fn(shape, dtype)`` like a Keras initializer.
    """
    if identifier is None:
        raise ValueError("An initializer is required; got None.")
    return _lookup("initializer", _INITIALIZERS, identifier)


def initialize(init, shape, dtype, rng, fan_axes=None):
    """Run ``init`` for one weight; ``rng`` is the fallback generator for unseeded initializers.

    ``fan_axes`` = (input_axes, output_axes) of an EinsumDense kernel: as in Keras, a
    variance-scaling initializer without axes of its own takes its fans from them.
    """
    if (
        isinstance(init, VarianceScaling)
        and fan_axes
        and None in (init.input_axes, init.output_axes)
    ):
        init = replace(init, input_axes=list(fan_axes[0]), output_axes=list(fan_axes[1]))
    if isinstance(init, Initializer):
        return init(shape, dtype, rng)
    return jnp.asarray(init(tuple(shape), dtype), dtype)


# ---------------------------------------------------------------------------------------------
# Regularizers: ``reg(weight) -> scalar loss``.


class Regularizer(KerasObject):
    module = "keras.regularizers"


@dataclass(frozen=True)
class L1(Regularizer):
    class_name = "L1"
    l1: float = 0.01

    def __call__(self, x):
        return jnp.asarray(self.l1, x.dtype) * jnp.sum(jnp.abs(x))

    def get_config(self):
        # Keras keeps l1 as a float32 tensor, so its config shows the float32 value.
        return {"l1": float(np.float32(self.l1))}


@dataclass(frozen=True)
class L2(Regularizer):
    class_name = "L2"
    l2: float = 0.01

    def __call__(self, x):
        return jnp.asarray(self.l2, x.dtype) * jnp.sum(jnp.square(x))


@dataclass(frozen=True)
class L1L2(Regularizer):
    class_name = "L1L2"
    l1: float = 0.0
    l2: float = 0.0

    def __call__(self, x):
        loss = jnp.zeros((), x.dtype)
        if self.l1:
            loss = loss + jnp.asarray(self.l1, x.dtype) * jnp.sum(jnp.abs(x))
        if self.l2:
            loss = loss + jnp.asarray(self.l2, x.dtype) * jnp.sum(jnp.square(x))
        return loss


def _l1_l2():
    # The name "l1_l2" is tf.keras' ``regularizers.l1_l2()``: both factors 0.01. Keras 3 itself
    # does not resolve this string; gqa_viz accepts it as that function's default.
    return L1L2(l1=0.01, l2=0.01)


_REGULARIZERS: dict[str, Any] = {"L1": L1, "l1": L1, "L2": L2, "l2": L2, "L1L2": L1L2}
_REGULARIZERS["l1_l2"] = _l1_l2


def get_regularizer(identifier):
    """A Keras regularizer from "l1", "l2", "l1_l2", a config dict, a callable, or None."""
    return _lookup("regularizer", _REGULARIZERS, identifier)


# ---------------------------------------------------------------------------------------------
# Constraints: ``constraint(weight) -> projected weight``. Keras applies them after each
# optimizer update, never when weights are set or loaded.


class Constraint(KerasObject):
    module = "keras.constraints"


def _norms(w, axis):
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))


@dataclass(frozen=True)
class MaxNorm(Constraint):
    class_name = "MaxNorm"
    max_value: float = 2
    axis: int = 0

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = jnp.clip(norms, 0, self.max_value)
        return w * (desired / (EPSILON + norms))


@dataclass(frozen=True)
class MinMaxNorm(Constraint):
    class_name = "MinMaxNorm"
    min_value: float = 0.0
    max_value: float = 1.0
    rate: float = 1.0
    axis: int = 0

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = self.rate * jnp.clip(norms, self.min_value, self.max_value)
        desired = desired + (1 - self.rate) * norms
        return w * (desired / (EPSILON + norms))


@dataclass(frozen=True)
class NonNeg(Constraint):
    class_name = "NonNeg"

    def __call__(self, w):
        return w * (w >= 0.0).astype(w.dtype)


@dataclass(frozen=True)
class UnitNorm(Constraint):
    class_name = "UnitNorm"
    axis: int = 0

    def __call__(self, w):
        return w / (EPSILON + _norms(w, self.axis))


_CONSTRAINTS: dict[str, type] = {}
for _cls, _alias in [
    (MaxNorm, "max_norm"),
    (MinMaxNorm, "min_max_norm"),
    (NonNeg, "non_neg"),
    (UnitNorm, "unit_norm"),
]:
    _CONSTRAINTS[_cls.class_name] = _CONSTRAINTS[_alias] = _cls


def get_constraint(identifier):
    """A Keras constraint from "max_norm", "non_neg", "unit_norm", "min_max_norm", a dict, or None."""
    return _lookup("constraint", _CONSTRAINTS, identifier)
