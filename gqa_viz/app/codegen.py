"""The Walkthrough's "same call in code": Keras, JAX and PyTorch snippets for one Settings.

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
G = N // K, H head_dim, D model dim.

Every snippet is plain Python that runs on its own once a few NumPy arrays are in its
namespace; :func:`snippet_inputs` builds that namespace from a :class:`~gqa_viz.app.playground.Result`:

=============== ============== =========================================================
name            shape          what
=============== ============== =========================================================
``query``       [B, T, D]      the query input (float32)
``value``       [B, S, D]      the value input (in self-attention the same array as query)
``query_mask``  [B, T] bool    True = a real query, False = padding
``value_mask``  [B, S] bool    True = a real key/value, False = padding
``weights``     list           Keras ``layer.get_weights()`` order: query, key, [gate,]
                               value, attention_output; each kernel then its bias
``q``           [B, T, N, H]   projected queries, before the 1/sqrt(H) scale
``k``, ``v``    [B, S, K, H]   projected keys and values, one per kv head (not repeated)
=============== ============== =========================================================

Each snippet assigns ``out`` (a NumPy array): the layer output [B, T, D] for Keras, the
per-head context [B, T, N, H] (before the gate and the output projection) for JAX and
PyTorch. The Keras snippet also assigns ``out_explicit`` and ``scores`` [B, N, T, S].

Conventions the comments state were checked by running them (keras 3.15.1, jax 0.10.2,
torch 2.13.0 CPU; ``tests/test_codegen.py`` pins them): a boolean mask is True = attend in
all three; query head n reads kv head n // G in all three; a row with no allowed key gives
0 on Keras' explicit (scores or dropout) path, a uniform average of all S values in
``jax.nn.dot_product_attention`` and Keras' fused path, and 0 in torch 2.13's
``scaled_dot_product_attention`` on CPU (a hand-written softmax over -inf gives NaN there).

A real model's layer (weights "real") may do more than Keras' layer: QK-norm, RoPE, another
softmax scale, a soft-cap (:func:`gqa_viz.app.playground.layer_extras`). The Keras snippet then
says at its top that it is NOT equivalent (Keras has none of these; it runs the same
projections without them). The JAX and PyTorch snippets read ``q`` and ``k`` after the layer's
QK-norm and RoPE and use its softmax scale, so they stay equivalent unless it soft-caps its
logits, which neither function can do: they then say so too. No Streamlit here.
"""

from __future__ import annotations

import textwrap

import numpy as np

from gqa_viz import core
from gqa_viz.app.playground import layer_extras
from gqa_viz.app.settings import Settings

__all__ = ["keras_snippet", "jax_snippet", "torch_snippet", "snippet_inputs", "has_mask"]


# ---------------------------------------------------------------------------------------------
# What masks the settings switch on.


def _query_padding(s: Settings) -> bool:
    return s.pad > 0


def _key_padding(s: Settings) -> bool:
    return s.kpad > 0 if s.cross else s.pad > 0


def has_mask(s: Settings) -> bool:
    """True when some mask applies to a call with these settings."""
    return bool(s.causal or s.window or _query_padding(s) or _key_padding(s))


def _mask_lines(s: Settings) -> list[str]:
    """NumPy lines that build ``mask`` (True = attend) the way Keras merges its masks."""
    if not has_mask(s):
        return ["mask = None  # nothing masks with these settings"]
    lines = [
        "# The mask Keras builds for this call (True = attend), ANDed from its parts:",
        "T, S = q.shape[1], k.shape[1]",
        "i = np.arange(T)[:, None]  # query positions [T, 1]",
        "j = np.arange(S)[None, :]  # key positions [1, S]",
        "mask = np.ones((T, S), dtype=bool)",
    ]
    if s.causal:
        lines.append("mask &= j <= i  # use_causal_mask: query i sees keys j <= i (top-left)")
    if s.window:
        lines.append(
            f"mask &= np.abs(i - j) < {s.window}  # sliding_window={s.window}: |i - j| < w"
        )
    if _query_padding(s):
        lines.append(
            "mask = mask & query_mask[:, :, None]  # a padded query attends to nothing -> [B, T, S]"
        )
    if _key_padding(s):
        lines.append(
            "mask = mask & value_mask[:, None, :]  # a padded key is hidden from every query"
        )
    if not (_query_padding(s) or _key_padding(s)):
        lines.append("mask = mask[None]  # [1, T, S]: the same for every batch item")
    return lines


def _comment(text: str) -> list[str]:
    """``text`` as comment lines of at most 80 characters."""
    return textwrap.wrap(text, 80, initial_indent="# ", subsequent_indent="#   ")


def _empty_rows_possible(s: Settings) -> bool:
    # A query row loses every key through padding, or, in cross-attention with T > S, through
    # a sliding window that ends before the last key.
    return _query_padding(s) or _key_padding(s) or bool(s.cross and s.window)


def _real_extras(s: Settings) -> list[str]:
    """What a real layer adds to Keras' layer, in words; empty for any other weights."""
    return layer_extras(s.spec()) if s.weights == "real" else []


def _not_equivalent(s: Settings, what: str, extras: list[str]) -> list[str]:
    """The caveat at the top of a snippet that cannot compute what this real layer computes."""
    return _comment(
        f"NOT EQUIVALENT for this layer: layer {s.layer} of {s.model[:60]} also applies "
        f"{'; '.join(extras)}, which {what}. The results below differ from this page's."
    )


def _scale(s: Settings) -> tuple[str, str]:
    """The softmax scale as code, and its comment: 1 / sqrt(H), or a real layer's own."""
    if s.weights == "real" and s.spec().scale is not None:
        return f"{s.spec().scale!r}", "this layer's softmax scale (not 1 / sqrt(H))"
    return f"1 / math.sqrt({s.h})", "logits = q . k / sqrt(H)"


def _cap_caveat(s: Settings, function: str) -> list[str]:
    cap = s.spec().logit_softcap if s.weights == "real" else None
    if cap is None:
        return []
    return _not_equivalent(s, f"{function} cannot do", [f"a logit soft-cap of {cap:g}"])


# ---------------------------------------------------------------------------------------------
# Snippets.


def keras_snippet(s: Settings) -> str:
    """``keras.layers.GroupQueryAttention`` built and called for ``s`` (see module docstring)."""
    G = s.n // s.k
    value_name = "value" if s.cross else "query"
    reads = (
        "query [B, T, D], value [B, S, D]"
        if s.cross
        else "query [B, T, D] (self-attention: it is also the value)"
    )
    masks = []
    if _query_padding(s):
        masks.append("query_mask [B, T]")
    if _key_padding(s) and s.cross:
        masks.append("value_mask [B, S]")
    mask_text = (", " + ", ".join(masks) + " (True = real token)") if masks else ""
    extras = _real_extras(s)
    caveat = (
        _not_equivalent(
            s,
            "keras.layers.GroupQueryAttention does not have: it runs the same projections "
            "without them (a QK-norm's gains are not among its weights)",
            extras,
        )
        if extras
        else []
    )
    lines = [
        "# Keras 3: keras.layers.GroupQueryAttention with the Walkthrough's settings.",
        *caveat,
        *_comment(
            f"Reads NumPy arrays: {reads}{mask_text}, weights: the list layer.get_weights() "
            "returns (query, key, [gate,] value, attention_output; each kernel then its bias)."
        ),
        "# Assigns out [B, T, D]; out_explicit [B, T, D] and scores [B, N, T, S].",
        "import os",
        "",
        'os.environ.setdefault("KERAS_BACKEND", "jax")  # before the first keras import',
        "import keras",
        "import numpy as np",
        "",
        "layer = keras.layers.GroupQueryAttention(",
        f"    head_dim={s.h},",
        f"    num_query_heads={s.n},",
        f"    num_key_value_heads={s.k},  # each K/V head is shared by G = {G} query heads",
        f"    dropout={s.dropout},",
        f"    use_bias={s.bias},",
        f"    use_gate={s.gate},",
        f"    sliding_window={s.window or None},",
        f"    seed={s.seed},  # seeds dropout only",
        ")",
        f"layer.build(query.shape, {value_name}.shape)",
        "layer.set_weights(weights)",
        "",
        "call_args = dict(",
    ]
    if _query_padding(s):
        lines.append("    query_mask=query_mask,  # False: this query attends to nothing")
    if _key_padding(s):
        vm = "value_mask" if s.cross else "query_mask"
        lines.append(f"    value_mask={vm},  # False: this key/value is hidden from every query")
    lines += [
        f"    use_causal_mask={s.causal},",
        f"    training={s.training},",
        ")",
    ]
    explain_empty = _empty_rows_possible(s)
    zero_out = "the output bias" if s.bias else "0 (use_bias=False)"
    if s.dropout > 0:
        lines += _comment(
            "dropout > 0: Keras always takes its explicit path (softmax, dropout, einsum)"
            + (
                f"; a row with no allowed key gets probabilities 0, so its output is {zero_out}."
                if explain_empty
                else "."
            )
        )
        if s.training:
            lines += _comment("training=True: each call draws a new dropout mask (Keras' RNG).")
    elif explain_empty:
        lines += _comment(
            "Without scores (and dropout 0) Keras calls the fused dot_product_attention: a "
            "row with no allowed key there averages ALL S values (masked ones included)."
        )
    lines += [
        f"out = np.asarray(layer(query, {value_name}, **call_args))  # [B, T, D]",
        "",
        *_comment(
            "return_attention_scores=True takes the explicit path and also returns the "
            "softmax probabilities [B, N, T, S] (before dropout)"
            + (
                f"; a row with no allowed key has probabilities 0, context 0 and output {zero_out}."
                if explain_empty
                else "."
            )
        ),
        "out_explicit, scores = layer(",
        f"    query, {value_name}, return_attention_scores=True, **call_args",
        ")",
        "out_explicit, scores = np.asarray(out_explicit), np.asarray(scores)",
    ]
    return "\n".join(lines) + "\n"


def _reads_projected(s: Settings) -> str:
    spec = s.spec() if s.weights == "real" else None
    steps = (
        []
        if spec is None
        else [n for n, on in (("QK-norm", spec.qk_norm), ("RoPE", spec.rope)) if on]
    )
    after = f"; q and k after this layer's {' and '.join(steps)}" if steps else ""
    names = ["q [B, T, N, H]", f"k, v [B, S, K, H] (projected, before scaling{after})"]
    if _query_padding(s):
        names.append("query_mask [B, T]")
    if _key_padding(s):
        names.append("value_mask [B, S]")
    return ", ".join(names)


def jax_snippet(s: Settings) -> str:
    """``jax.nn.dot_product_attention`` on the projected q, k, v (see module docstring)."""
    G = s.n // s.k
    scale, why = _scale(s)
    lines = [
        "# JAX: jax.nn.dot_product_attention on the projected tensors (the Q/K/V step).",
        *_cap_caveat(s, "jax.nn.dot_product_attention"),
        *_comment(f"Reads NumPy arrays: {_reads_projected(s)}."),
        "# Assigns out: the per-head context [B, T, N, H], before the gate and the output",
        "# projection. Heads: K < N is allowed; query head n reads kv head n // G.",
        "import math",
        "",
        "import jax",
        "import numpy as np",
        "",
        *_mask_lines(s),
        "",
        "out = jax.nn.dot_product_attention(",
        f"    q,  # [B, T, N={s.n}, H={s.h}]",
        f"    k,  # [B, S, K={s.k}, H]: shared by G = {G} query heads each, no repeat needed",
        "    v,  # [B, S, K, H]",
    ]
    if has_mask(s):
        lines.append("    mask=mask[:, None],  # [B or 1, 1, T, S], True = attend")
    lines += [
        f"    scale={scale},  # {why}",
        ")",
        "out = np.asarray(out)  # [B, T, N, H]",
    ]
    if _empty_rows_possible(s):
        lines += _comment(
            "A row with no allowed key gets a uniform average of all S values here "
            "(Keras' scores path: 0)."
        )
    tail = []
    if s.gate:
        tail.append("out * gate (use_gate)")
    tail.append('einsum("btnh,nhd->btd", ., W_out)' + (" + b_out" if s.bias else ""))
    lines += _comment("Then: " + ", then ".join(tail) + " gives the layer output [B, T, D].")
    if s.training and s.dropout > 0:
        lines.append("# No dropout here: dot_product_attention has none (inference only).")
    return "\n".join(lines) + "\n"


def torch_snippet(s: Settings) -> str:
    """``torch.nn.functional.scaled_dot_product_attention`` with ``enable_gqa=True``."""
    G = s.n // s.k
    scale, why = _scale(s)
    lines = [
        "# PyTorch: F.scaled_dot_product_attention with enable_gqa=True (checked: torch 2.13).",
        *_cap_caveat(s, "F.scaled_dot_product_attention"),
        *_comment(f"Reads NumPy arrays: {_reads_projected(s)}."),
        "# Torch wants heads before positions: q [B, N, T, H], k, v [B, K, S, H].",
        "# Assigns out: the per-head context [B, T, N, H] (Keras' layout), before the gate",
        "# and the output projection.",
        "import math",
        "",
        "import numpy as np",
        "import torch",
        "import torch.nn.functional as F",
        "",
        *_mask_lines(s),
        "",
        "qt = torch.tensor(q).permute(0, 2, 1, 3)  # [B, N, T, H]",
        "kt = torch.tensor(k).permute(0, 2, 1, 3)  # [B, K, S, H]",
        "vt = torch.tensor(v).permute(0, 2, 1, 3)  # [B, K, S, H]",
        "out = F.scaled_dot_product_attention(",
        "    qt,",
        "    kt,",
        "    vt,",
    ]
    if has_mask(s):
        lines.append(
            "    attn_mask=torch.tensor(mask[:, None]),  # bool: True = attend (like Keras)"
        )
    lines += [
        f"    scale={scale},  # {why}",
        f"    enable_gqa=True,  # K={s.k} heads, each shared by G = {G} query heads (n -> n // G)",
        ")",
        "out = out.permute(0, 2, 1, 3).numpy()  # [B, T, N, H]",
    ]
    if has_mask(s):
        lines += _comment(
            "A bool attn_mask is True = attend here, the opposite of nn.MultiheadAttention's "
            "bool masks (True = blocked). A float attn_mask is ADDED to the logits (0 / -inf)."
        )
    if _empty_rows_possible(s):
        lines += _comment(
            "A row with no allowed key: torch 2.13's SDPA on CPU returns 0 there (checked), "
            "like Keras' scores path; a hand-written softmax over -inf logits, or "
            "nn.MultiheadAttention, gives NaN."
        )
    if s.training and s.dropout > 0:
        lines.append("# dropout_p=0 here; dropout_p > 0 draws from torch's RNG, not Keras'.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The namespace the snippets read.


def keras_weights(result) -> list[np.ndarray]:
    """The layer's weights as a list in Keras' ``get_weights()`` order."""
    D = int(result.trace.output.shape[-1])
    return [
        np.array(result.params[layer][name], dtype=np.float32)
        for layer, name in core.param_shapes(result.spec, D)
    ]


def snippet_inputs(result) -> dict:
    """The NumPy arrays the three snippets read, for a playground ``Result``.

    Keys: query, value, query_mask, value_mask, weights, q, k, v (module docstring). Arrays
    are fresh writable copies (``torch.tensor`` and Keras accept them as they are).
    """
    from gqa_viz.app.playground import build_inputs

    query, value, q_valid, k_valid, *_ = build_inputs(result.settings, [])
    tr = result.trace
    return {
        "query": np.array(query, dtype=np.float32),
        "value": np.array(value, dtype=np.float32),
        "query_mask": np.array(q_valid, dtype=bool),
        "value_mask": np.array(k_valid, dtype=bool),
        "weights": keras_weights(result),
        "q": np.array(tr.query, dtype=np.float32),
        "k": np.array(tr.key, dtype=np.float32),
        "v": np.array(tr.value, dtype=np.float32),
    }
