"""``GroupedQueryAttention``: Keras 3's layer API over the functional core.

Same constructor, call arguments, weight order and shapes, config format and errors as
``keras.layers.GroupQueryAttention`` (Keras 3.15.1), so Keras weights and configs load here
and ours load into Keras. Axis letters as in :mod:`gqa_viz.core`.

Decisions where Keras leaves room, written down once:

* Rows with no allowed key give context 0 whether or not scores are returned (Keras' fused
  path averages all keys there instead); see :func:`gqa_viz.masks.keras_mask`.
* ``seed`` seeds dropout, as in Keras, and also weight initialization for initializers
  without a seed of their own, so one integer makes the whole layer reproducible. Without
  any seed the weights are random, as in Keras. Initial weights come from NumPy's seeded
  generator and dropout from JAX's PRNG, so they differ from Keras' draws for the same seed.
* ``flash_attention=True`` on a CPU runs the usual CPU path (Keras would raise because cuDNN
  is missing); on a GPU it asks for cuDNN and falls back to XLA where cuDNN declines.
* A numeric ``attention_mask`` given alone is read as ``> 0.5`` on every path, as Keras'
  scores path does (its fused path reads any nonzero as "attend"); see
  :func:`gqa_viz.masks.keras_mask`, rule 6.
* Constraints are applied only by :meth:`apply_constraints` (call it after an optimizer
  step, as Keras' optimizers do); ``set_weights`` and ``load_weights`` keep weights exactly.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gqa_viz import core, weights_io
from gqa_viz import keras_objects as ko

_DTYPE_POLICIES = {
    # policy name: (variable dtype, compute dtype)
    "float32": ("float32", "float32"),
    "float16": ("float16", "float16"),
    "bfloat16": ("bfloat16", "bfloat16"),
    "float64": ("float64", "float64"),
    "mixed_float16": ("float32", "float16"),
    "mixed_bfloat16": ("float32", "bfloat16"),
}

_FLASH_SCORES_ERROR = (
    "Returning attention scores is not supported when flash attention is enabled. Please "
    "disable flash attention to access attention scores."
)
_FLASH_DROPOUT_ERROR = (
    "Dropout is not supported when flash attention is enabled. Please set dropout to 0.0 to "
    "use flash attention."
)


def _policy_name(dtype) -> str:
    if dtype is None:
        return "float32"
    if isinstance(dtype, dict):  # Keras' serialized DTypePolicy
        dtype = dtype.get("config", {}).get("name", dtype)
    name = getattr(dtype, "name", dtype)
    name = str(jnp.dtype(name)) if not isinstance(name, str) else name
    if name not in _DTYPE_POLICIES:
        raise ValueError(f"Unsupported dtype {dtype!r}; use one of {', '.join(_DTYPE_POLICIES)}.")
    if _DTYPE_POLICIES[name][0] == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            'dtype="float64" needs JAX x64: jax.config.update("jax_enable_x64", True).'
        )
    return name


class GroupedQueryAttention:
    """Grouped-query attention (Ainslie et al., 2023) with Keras 3's API.

    ``num_key_value_heads`` kv heads are each shared by ``num_query_heads //
    num_key_value_heads`` query heads: 1 kv head is multi-query attention, as many as query
    heads is multi-head attention. Call with query [B, T, D] and value [B, S, D] (key
    [B, S, Dk] optional) to get [B, T, D], and with ``return_attention_scores=True`` also the
    probabilities [B, N, T, S].
    """

    def __init__(
        self,
        head_dim,
        num_query_heads,
        num_key_value_heads,
        dropout=0.0,
        use_bias=True,
        sliding_window=None,
        flash_attention=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        use_gate=False,
        seed=None,
        *,
        name=None,
        dtype=None,
        trainable=True,
    ):
        self.spec = core.GQASpec(
            num_query_heads=num_query_heads,
            num_key_value_heads=num_key_value_heads,
            head_dim=head_dim,
            use_bias=bool(use_bias),
            use_gate=bool(use_gate),
            sliding_window=sliding_window,
            dropout=float(dropout),
        )
        self.head_dim = head_dim
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.num_repeats = self.spec.groups
        self.dropout = dropout
        self.use_bias = use_bias
        self.use_gate = use_gate
        self.sliding_window = sliding_window
        self.flash_attention = flash_attention
        if flash_attention and dropout > 0.0:
            raise ValueError(_FLASH_DROPOUT_ERROR)
        self.kernel_initializer = ko.get_initializer(kernel_initializer)
        self.bias_initializer = ko.get_initializer(bias_initializer)
        self.kernel_regularizer = ko.get_regularizer(kernel_regularizer)
        self.bias_regularizer = ko.get_regularizer(bias_regularizer)
        self.activity_regularizer = ko.get_regularizer(activity_regularizer)
        self.kernel_constraint = ko.get_constraint(kernel_constraint)
        self.bias_constraint = ko.get_constraint(bias_constraint)
        if seed is not None and (not isinstance(seed, int | np.integer) or isinstance(seed, bool)):
            raise ValueError(f"seed must be None or an integer, got {seed!r}.")
        self.seed = None if seed is None else int(seed)
        self.name = name or "grouped_query_attention"
        self.trainable = trainable
        self.dtype_policy = _policy_name(dtype)
        self.variable_dtype, self.compute_dtype = _DTYPE_POLICIES[self.dtype_policy]
        self.params: core.Params | None = None
        self.feature_dim = None
        self._dropout_key = jax.random.key(self.seed if self.seed is not None else _fresh_seed())
        self._activity_losses: list[jax.Array] = []

    # -- building ------------------------------------------------------------------------------

    @property
    def built(self) -> bool:
        return self.params is not None

    def build(self, query_shape, value_shape, key_shape=None) -> None:
        """Create the weights for inputs of these shapes (only the last axes matter)."""
        key_shape = value_shape if key_shape is None else key_shape
        self.feature_dim = int(query_shape[-1])
        seed = self.seed if self.seed is not None else _fresh_seed()
        self.params = core.init_params(
            self.spec,
            self.feature_dim,
            int(value_shape[-1]),
            int(key_shape[-1]),
            seed=seed,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.variable_dtype,
        )

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        """The output's shape (= the query's); Keras' checks and messages."""
        if key_shape is None:
            key_shape = value_shape
        if query_shape[-1] != value_shape[-1]:
            raise ValueError(
                "The last dimension of `query_shape` and `value_shape` must be equal, but are "
                f"{query_shape[-1]}, {value_shape[-1]}. Received: query_shape={query_shape}, "
                f"value_shape={value_shape}"
            )
        if tuple(value_shape[1:-1]) != tuple(key_shape[1:-1]):
            raise ValueError(
                "All dimensions of `value` and `key`, except the last one, must be equal. "
                f"Received: value_shape={value_shape} and key_shape={key_shape}"
            )
        return query_shape

    # -- calling -------------------------------------------------------------------------------

    def __call__(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        query, value, key = (None if x is None else self._cast(x) for x in (query, value, key))
        if not self.built:
            core.check_inputs(self.spec, None, query, value, key)
            self.build(query.shape, value.shape, None if key is None else key.shape)
        return self.apply(
            self.params,
            query,
            value,
            key,
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
            return_attention_scores=return_attention_scores,
            training=training,
            use_causal_mask=use_causal_mask,
        )

    def apply(
        self,
        params: core.Params,
        query,
        value,
        key=None,
        *,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
        dropout_rng=None,
    ):
        """The layer as a function of explicit ``params`` (for ``jax.grad`` and training loops).

        ``dropout_rng`` defaults to the layer's own seeded stream, advanced once per call.
        """
        if self.flash_attention and return_attention_scores:
            raise ValueError(_FLASH_SCORES_ERROR)
        training = bool(training)
        if training and self.spec.dropout > 0.0 and dropout_rng is None:
            self._dropout_key, dropout_rng = jax.random.split(self._dropout_key)
        params = self._cast_params(params)
        query, value, key = (None if x is None else self._cast(x) for x in (query, value, key))
        kwargs = dict(
            spec=self.spec,
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
            use_causal_mask=use_causal_mask,
            training=training,
            dropout_rng=dropout_rng,
        )
        if self.activity_regularizer is not None:
            trace = core.attention_trace(params, query, value, key, **kwargs)
            self._record_activity(trace, return_attention_scores)
            return (trace.output, trace.probs) if return_attention_scores else trace.output
        if return_attention_scores:
            return core.attention(params, query, value, key, return_scores=True, **kwargs)
        return self._fused_output(params, query, value, key, kwargs)

    def trace(self, query, value, key=None, **kwargs) -> core.AttentionTrace:
        """Every intermediate of a call (see :class:`gqa_viz.core.AttentionTrace`)."""
        query, value, key = (None if x is None else self._cast(x) for x in (query, value, key))
        if not self.built:
            core.check_inputs(self.spec, None, query, value, key)
            self.build(query.shape, value.shape, None if key is None else key.shape)
        if kwargs.pop("return_attention_scores", False) and self.flash_attention:
            raise ValueError(_FLASH_SCORES_ERROR)
        training = bool(kwargs.pop("training", False))
        rng = kwargs.pop("dropout_rng", None)
        if training and self.spec.dropout > 0.0 and rng is None:
            self._dropout_key, rng = jax.random.split(self._dropout_key)
        params = self._cast_params(self.params)
        return core.attention_trace(
            params, query, value, key, spec=self.spec, training=training, dropout_rng=rng, **kwargs
        )

    def _fused_output(self, params, query, value, key, kwargs):
        on_gpu = jax.default_backend() == "gpu"
        if self.flash_attention and on_gpu:
            try:
                return core.attention(params, query, value, key, implementation="cudnn", **kwargs)
            except Exception:  # cuDNN declines some dtypes and shapes; XLA takes them all.
                pass
        return core.attention(params, query, value, key, **kwargs)

    def _cast_params(self, params):
        if self.variable_dtype == self.compute_dtype:
            return params
        return jax.tree.map(lambda w: w.astype(self.compute_dtype), params)

    def _cast(self, x):
        x = jnp.asarray(x)
        return x.astype(self.compute_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    # -- losses and constraints ----------------------------------------------------------------

    def _record_activity(self, trace: core.AttentionTrace, with_scores: bool) -> None:
        # Keras' order: this layer's outputs, then each sublayer's output in build order.
        # Every activity loss is divided by the batch size.
        reg = self.activity_regularizer
        own = [trace.output] + ([trace.probs] if with_scores else [])
        sub = [trace.query, trace.key] + ([trace.gate] if self.use_gate else [])
        sub += [trace.value, trace.output]
        self._activity_losses = [reg(x) / x.shape[0] for x in own + sub]

    @property
    def losses(self) -> list[jax.Array]:
        """Activity losses of the last call, then weight penalties, in Keras' order."""
        out = list(self._activity_losses)
        if self.built:
            for (_, name), w in self._named_weights():
                reg = self.kernel_regularizer if name == "kernel" else self.bias_regularizer
                if reg is not None:
                    out.append(reg(w))
        return out

    def constrain(self, params: core.Params) -> core.Params:
        """``params`` with kernel/bias constraints applied (a pure function for training loops)."""
        out = {}
        for layer, ws in params.items():
            out[layer] = {}
            for name, w in ws.items():
                c = self.kernel_constraint if name == "kernel" else self.bias_constraint
                out[layer][name] = w if c is None else c(w)
        return out

    def apply_constraints(self) -> None:
        """Project the layer's weights onto their constraints, as Keras does after an update."""
        self._require_built("apply_constraints")
        self.params = self.constrain(self.params)

    # -- weights -------------------------------------------------------------------------------

    def _named_weights(self):
        return [((layer, name), self.params[layer][name]) for layer, name in self._weight_keys()]

    def _weight_keys(self):
        return list(core.param_shapes(self.spec, *self._dims()))

    def _dims(self):
        q = self.params["query"]["kernel"].shape[0]
        v = self.params["value"]["kernel"].shape[0]
        k = self.params["key"]["kernel"].shape[0]
        return q, v, k

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' has no weights yet: call build(query_shape, value_shape) "
                f"or call the layer on data before {what}()."
            )

    @property
    def weight_names(self) -> list[str]:
        """Keras' variable paths, e.g. 'grouped_query_attention/query/kernel'."""
        self._require_built("weight_names")
        return [f"{self.name}/{layer}/{name}" for layer, name in self._weight_keys()]

    def get_weights(self) -> list[np.ndarray]:
        """The weights as NumPy arrays, in the order and shapes of Keras' get_weights()."""
        self._require_built("get_weights")
        return [np.asarray(w) for _, w in self._named_weights()]

    def set_weights(self, weights) -> None:
        """Set every weight from a list in Keras' order (e.g. ``keras_layer.get_weights()``)."""
        self._require_built("set_weights")
        keys = self._weight_keys()
        if len(weights) != len(keys):
            raise ValueError(
                f"Layer '{self.name}' expects {len(keys)} weights "
                f"({', '.join(f'{a}/{b}' for a, b in keys)}), got {len(weights)}."
            )
        shapes = core.param_shapes(self.spec, *self._dims())
        new = {layer: dict(ws) for layer, ws in self.params.items()}
        for (layer, name), w in zip(keys, weights, strict=True):
            w = np.asarray(w)
            if tuple(w.shape) != shapes[(layer, name)]:
                raise ValueError(
                    f"Weight {layer}/{name} of layer '{self.name}' has shape "
                    f"{shapes[(layer, name)]}; got an array of shape {w.shape}."
                )
            new[layer][name] = jnp.asarray(w, dtype=self.variable_dtype)
        self.params = new

    def save_weights(self, path: str | os.PathLike) -> None:
        """Write the weights to a ``.npz`` or ``.safetensors`` file, named ``query/kernel`` etc."""
        self._require_built("save_weights")
        weights_io.save(path, {f"{a}/{b}": np.asarray(w) for (a, b), w in self._named_weights()})

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load weights saved by :meth:`save_weights`; builds the layer from them if needed."""
        tensors = weights_io.load(path)
        if not self.built:
            try:
                q, k, v = (tensors[f"{n}/kernel"].shape[0] for n in ("query", "key", "value"))
            except KeyError as e:
                raise ValueError(f"{os.fspath(path)!r} has no {e.args[0]} tensor.") from None
            self.build((None, None, q), (None, None, v), (None, None, k))
        keys = [f"{a}/{b}" for a, b in self._weight_keys()]
        missing = [k for k in keys if k not in tensors]
        extra = [k for k in tensors if k not in keys]
        if missing or extra:
            raise ValueError(
                f"{os.fspath(path)!r} does not match layer '{self.name}': "
                f"missing {missing or 'nothing'}, unexpected {extra or 'nothing'}."
            )
        self.set_weights([tensors[k] for k in keys])

    def count_params(self) -> int:
        self._require_built("count_params")
        return sum(math.prod(w.shape) for _, w in self._named_weights())

    # -- config --------------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Keras' config dict, key for key (loadable by ``keras.layers.GroupQueryAttention``)."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": {
                "module": "keras",
                "class_name": "DTypePolicy",
                "config": {"name": self.dtype_policy},
                "registered_name": None,
            },
            "head_dim": self.head_dim,
            "num_query_heads": self.num_query_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "use_bias": self.use_bias,
            "use_gate": self.use_gate,
            "sliding_window": self.sliding_window,
            "dropout": self.dropout,
            "kernel_initializer": ko.serialize(self.kernel_initializer),
            "bias_initializer": ko.serialize(self.bias_initializer),
            "kernel_regularizer": ko.serialize(self.kernel_regularizer),
            "bias_regularizer": ko.serialize(self.bias_regularizer),
            "activity_regularizer": ko.serialize(self.activity_regularizer),
            "kernel_constraint": ko.serialize(self.kernel_constraint),
            "bias_constraint": ko.serialize(self.bias_constraint),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GroupedQueryAttention:
        """A new, unbuilt layer from :meth:`get_config` or a Keras layer's get_config()."""
        return cls(**config)

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"GroupedQueryAttention(name={self.name!r}, num_query_heads={s.num_query_heads}, "
            f"num_key_value_heads={s.num_key_value_heads}, head_dim={s.head_dim})"
        )


GroupQueryAttention = GroupedQueryAttention  # Keras 3's public name


def _fresh_seed() -> int:
    return int(np.random.SeedSequence().generate_state(1)[0] >> 1)
