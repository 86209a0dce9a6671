"""Tools around attention masks: reading uploaded masks, conventions, and what frameworks do.

Axis letters: B batch, T query length, S key/value length, N query heads, H head_dim.
An "allowed" array is boolean [T, S] with True = query t may attend to key s (Keras, JAX).

Pure NumPy, except :func:`keras_call_code`, which only writes Keras code as text. The facts
stated here about Keras 3.15.1, jax 0.10.2 and torch 2.13.0 (CPU) were checked by running
them; ``tests/test_mask_tools.py`` runs them again, so an upgrade that changes one fails there.

* Uploads (:func:`parse_upload`): .npy (never unpickled) or .csv, [T, S], [B, T, S] or
  Hugging Face's [B, 1, T, S]; every problem is a :class:`MaskUploadError` for a person.
* Conventions (:data:`CONVENTIONS`, :func:`detect_convention`, :func:`to_allowed`): the same
  numbers mean opposite things in different libraries.
* Rows with no allowed key (:data:`FRAMEWORK_ROW_RULES`, :func:`row_outcomes`): each framework
  returns something different there: 0, a uniform average, or NaN.
* Windows (:func:`window_semantics`): "window w" counts 2w - 1, 2w + 1, w or w + 1 keys
  depending on who says it.
* Cost (:func:`sparsity`, :func:`block_skip`): what a block-sparse kernel could skip.
* Keras' implicit masks (:func:`embedding_padding_masks`) and the equivalent Keras call
  (:func:`keras_call_code`).

No Streamlit here.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

UPLOAD_EXTENSIONS = (".npy", ".csv")


class MaskUploadError(ValueError):
    """An uploaded mask cannot be used; the message says why, for a person."""


# ---------------------------------------------------------------------------------------------
# Uploads.


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.3g} MB ({n:,} bytes)"


def _shape_error(shape, T: int, S: int) -> MaskUploadError:
    return MaskUploadError(
        f"expected shape (T, S) = {(T, S)}, (B, T, S) or (B, 1, T, S) — got {tuple(shape)}."
    )


def _check_elements(filename: str, shape, max_elements: int) -> None:
    n = math.prod(shape)
    if n > max_elements:
        raise MaskUploadError(
            f"{filename} holds {n:,} values (shape {tuple(shape)}); the limit is {max_elements:,}."
        )


def _read_npy(filename: str, data: bytes, max_elements: int) -> np.ndarray:
    buf = io.BytesIO(data)
    try:  # the header first: dtype and shape, before any data is read
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(buf)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(buf)
    except (ValueError, OSError, SyntaxError, EOFError, TypeError) as e:
        raise MaskUploadError(f"{filename} is not a valid .npy file ({e}).") from None
    if dtype.hasobject:
        raise MaskUploadError(
            f"{filename} holds Python objects (pickled data), which is never loaded: "
            f"save a numeric or boolean array, e.g. np.save(path, mask.astype(bool))."
        )
    if dtype.names is not None or dtype.kind not in "biuf":
        raise MaskUploadError(
            f"{filename} holds {dtype} values; a mask must be boolean, integer or float."
        )
    _check_elements(filename, shape, max_elements)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise MaskUploadError(
                f"{filename} holds Python objects (pickled data), which is never loaded."
            ) from None
        raise MaskUploadError(f"{filename} is not a valid .npy file ({e}).") from None
    except (OSError, EOFError) as e:
        raise MaskUploadError(f"{filename} is not a valid .npy file ({e}).") from None


_WORDS = {"true": 1.0, "false": 0.0}


def _cell(text: str) -> float | None:
    t = text.strip()
    if t.lower() in _WORDS:
        return _WORDS[t.lower()]
    try:
        return float(t)
    except ValueError:
        return None


def _read_csv(filename: str, data: bytes, max_elements: int) -> np.ndarray:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MaskUploadError(f"{filename} is not UTF-8 text; a CSV mask is plain text.") from None
    lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise MaskUploadError(f"{filename} holds no values.")
    rows: list[list[float]] = []
    n = 0
    words_only = True
    for i, line in lines:
        cells = line.split(",")
        n += len(cells)
        if n > max_elements:
            raise MaskUploadError(
                f"{filename} holds more than {max_elements:,} values; "
                f"the limit is {max_elements:,}."
            )
        values = [_cell(c) for c in cells]
        if not rows and all(v is None for v in values):
            raise MaskUploadError(
                f"CSV row {i} looks like a header ({line.strip()[:40]!r}); remove it: the file "
                f"must hold only the numbers, one row per query."
            )
        for j, (c, v) in enumerate(zip(cells, values), start=1):
            if v is None:
                raise MaskUploadError(
                    f"CSV row {i}, column {j}: {c.strip()[:20]!r} is not a number."
                )
        if rows and len(values) != len(rows[0]):
            raise MaskUploadError(
                f"CSV row {i} has {len(values)} values but row {lines[0][0]} has "
                f"{len(rows[0])}: every row needs one value per key."
            )
        words_only &= all(c.strip().lower() in _WORDS for c in cells)
        rows.append(values)
    arr = np.asarray(rows, np.float64)
    return arr.astype(bool) if words_only else arr


def _check_values(arr: np.ndarray) -> None:
    if arr.dtype == bool:
        return
    a = arr.astype(np.float64)
    for bad, what in ((np.isnan(a), "NaN"), (np.isposinf(a), "+inf")):
        if bad.any():
            idx = tuple(int(x) for x in np.argwhere(bad)[0])
            raise MaskUploadError(
                f"the mask holds {what} (first at index {idx}); a mask holds 0/1 or 0 and "
                f"negative numbers / -inf."
            )
    is_01 = np.isin(a, (0.0, 1.0)).all()
    if is_01 or (a <= 0).all():
        return
    odd = a[(a > 0) & (a != 1)]
    found = (
        f"{odd.flat[0]:g}"
        if odd.size
        else f"both 1 and {a[a < 0].flat[0]:g} (1 only belongs in a 0/1 mask)"
    )
    raise MaskUploadError(
        "values must be 0/1 (boolean masks) or 0 and a negative number / -inf (additive "
        f"masks); found {found}."
    )


def parse_upload(
    filename: str, data: bytes, T: int, S: int, *, max_bytes: int, max_elements: int
) -> np.ndarray:
    """An uploaded .npy or .csv mask as a [T, S] bool or float64 array, or a MaskUploadError.

    Shapes [T, S], [B, T, S] and [B, 1, T, S] (Hugging Face) are accepted; with B > 1 batch
    item 0 is returned. Values stay as given; read them with :func:`to_allowed`. A file over
    ``max_bytes``, or an array of more than ``max_elements`` values (B * T * S, checked from
    a .npy header before its data is read), is refused.
    """
    name = os.path.basename(str(filename)) or "the file"
    ext = os.path.splitext(name)[1].lower()
    if len(data) > max_bytes:
        raise MaskUploadError(f"{name} is {_mb(len(data))}; the limit is {_mb(max_bytes)}.")
    if ext not in UPLOAD_EXTENSIONS:
        raise MaskUploadError(
            f"{name}: files of type {ext or '(no extension)'!r} are not read; upload a .npy "
            f"or .csv file."
        )
    if not data:
        raise MaskUploadError(f"{name} is empty.")
    if ext == ".npy":
        arr = _read_npy(name, data, max_elements)
    else:
        arr = _read_csv(name, data, max_elements)
    if arr.size == 0:
        raise MaskUploadError(f"{name} holds no values (shape {arr.shape}).")
    _check_elements(name, arr.shape, max_elements)
    shape = arr.shape
    if arr.ndim == 4 and shape[1] == 1:  # Hugging Face [B, 1, T, S]
        arr = arr[:, 0]
    if arr.ndim == 3:
        arr = arr[0]
    if arr.shape != (T, S):
        raise _shape_error(shape, T, S)
    _check_values(arr)
    return arr.copy() if arr.dtype == bool else arr.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Conventions.

CONVENTIONS: dict[str, str] = {
    "keep_bool": "boolean, True = attend (Keras, JAX, torch SDPA bool attn_mask)",
    "ignore_bool": (
        "boolean, True = ignore (torch key_padding_mask, nn.MultiheadAttention bool attn_mask)"
    ),
    "additive": (
        "additive float, 0 = attend, -inf or a large negative (e.g. -1e9) = ignore "
        "(Hugging Face 4-D masks)"
    ),
}


def detect_convention(arr) -> tuple[str | None, str]:
    """(convention or None, one-sentence reason). A float array of 0 and negatives is additive.

    0/1 masks are ambiguous; the heuristic: for a square mask, a diagonal of 1s means
    keep_bool (queries see themselves), of 0s ignore_bool; otherwise the majority value is
    read as "attend". Half 1s and half 0s: None.
    """
    a = np.asarray(arr)
    if a.size == 0:
        return None, "the mask is empty."
    f = a.astype(np.float64)
    if np.isnan(f).any():
        return None, "the mask holds NaN, which no convention allows."
    is_01 = a.dtype == bool or np.isin(f, (0.0, 1.0)).all()
    if not is_01:
        if (f <= 0).all():
            soft = f[(f < 0) & (f > -1e4)]
            reason = (
                f"the values are 0 and negative (down to {f.min():g}): an additive mask, added "
                f"to the logits, 0 = attend."
            )
            if soft.size:
                reason += (
                    f" Note: {soft.flat[0]:g} is a soft bias rather than a mask; it is read as "
                    f"'ignore' here."
                )
            return "additive", reason
        return None, "the values are neither 0/1 nor 0 and negatives."
    ones = f.mean()
    if ones == 1.0:
        return "keep_bool", "every entry is 1: read as True = attend, every pair attends."
    if ones == 0.0:
        if a.dtype != bool:
            return "additive", "every entry is 0: as an additive mask every pair attends."
        return "ignore_bool", "every entry is False: read as True = ignore, every pair attends."
    if a.ndim == 2 and a.shape[0] == a.shape[1]:
        diag = np.diagonal(f)
        if (diag == 1).all():
            return "keep_bool", (
                "the diagonal is all 1: every query may see itself, as in causal and windowed "
                "masks, so 1 = attend."
            )
        if (diag == 0).all():
            return "ignore_bool", (
                "the diagonal is all 0: read as 1 = attend no query could see itself, so "
                "1 = ignore (e.g. torch's causal triu(ones, 1))."
            )
    if ones > 0.5:
        return (
            "keep_bool",
            f"{ones:.0%} of the entries are 1; masks usually allow more than they block.",
        )
    if ones < 0.5:
        return "ignore_bool", (
            f"{1 - ones:.0%} of the entries are 0; masks usually allow more than they block, "
            f"so 0 = attend."
        )
    return None, "exactly half the entries are 1: the values alone cannot tell."


def to_allowed(arr, convention: str) -> np.ndarray:
    """``arr`` read in ``convention`` as a bool array of the same shape, True = attend.

    keep_bool: nonzero attends; ignore_bool: zero attends; additive: >= 0 attends (negatives,
    -inf included, are ignored).
    """
    a = np.asarray(arr)
    if convention == "keep_bool":
        return a.astype(bool)
    if convention == "ignore_bool":
        return ~a.astype(bool)
    if convention == "additive":
        return a.astype(np.float64) >= 0
    raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}.")


def inverted(convention: str) -> str:
    """The other boolean reading: keep_bool <-> ignore_bool; additive -> keep_bool.

    An additive mask read as keep_bool (nonzero = attend) is exactly inverted: the classic
    mistake of passing a Hugging Face -inf mask where a boolean one is expected.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}.")
    return "ignore_bool" if convention == "keep_bool" else "keep_bool"


# ---------------------------------------------------------------------------------------------
# Rows with no allowed key.

# Framework -> what a query row with no allowed key becomes (verified by the tests).
FRAMEWORK_ROW_RULES: dict[str, str] = {
    "Keras, return_attention_scores=True": (
        "probabilities all 0, so the context is 0 and the output is the output bias "
        "(gqa_viz does this on both paths)"
    ),
    "Keras, no scores (fused path)": (
        "a uniform average of all S values, masked ones included "
        "(it calls jax.nn.dot_product_attention)"
    ),
    "jax.nn.dot_product_attention": "a uniform average of all S values, masked ones included",
    "torch SDPA, bool attn_mask": "zeros, not NaN (torch 2.13, CPU)",
    "torch SDPA, float attn_mask with -inf": "zeros, not NaN (torch 2.13, CPU)",
    "torch nn.MultiheadAttention (need_weights=True, the default)": (
        "NaN in the output and the weights"
    ),
    "torch nn.MultiheadAttention (need_weights=False)": (
        "zeros before out_proj, so the output is out_proj's bias (it runs SDPA), except on "
        "its inference fast path"
    ),
    "torch nn.MultiheadAttention (need_weights=False, inference fast path)": (
        "NaN; the fast path runs in eval mode without autograd, for self-attention (query is "
        "key is value), an even num_heads and a boolean mask (torch 2.13, CPU)"
    ),
    "hand-written softmax(scores + mask) with -inf": "NaN (exp(-inf) / 0)",
    "Hugging Face-style additive -1e9 mask + softmax": (
        "a uniform average of all S values (every logit is the same -1e9)"
    ),
}

# The same, in a few words, for a table cell.
ROW_OUTCOME: dict[str, str] = {
    "Keras, return_attention_scores=True": "0 (output = bias)",
    "Keras, no scores (fused path)": "mean of all values",
    "jax.nn.dot_product_attention": "mean of all values",
    "torch SDPA, bool attn_mask": "0",
    "torch SDPA, float attn_mask with -inf": "0",
    "torch nn.MultiheadAttention (need_weights=True, the default)": "NaN",
    "torch nn.MultiheadAttention (need_weights=False)": "0 (output = bias)",
    "torch nn.MultiheadAttention (need_weights=False, inference fast path)": "NaN",
    "hand-written softmax(scores + mask) with -inf": "NaN",
    "Hugging Face-style additive -1e9 mask + softmax": "mean of all values",
}


def count_allowed(allowed) -> np.ndarray:
    """[T] the number of keys each query may attend to."""
    return np.asarray(allowed, bool).sum(axis=-1)


def row_outcomes(allowed) -> list[dict]:
    """One dict per query row with no allowed key: {"row": t, framework: outcome, ...}.

    Outcomes are :data:`ROW_OUTCOME`'s short forms; an empty list when every row has a key.
    """
    counts = count_allowed(allowed)
    return [{"row": int(t), **ROW_OUTCOME} for t in np.flatnonzero(counts == 0)]


# ---------------------------------------------------------------------------------------------
# "Window w" in different libraries.

WINDOW_RULES: dict[str, str] = {
    "Keras sliding_window=w": "|i - j| < w: up to 2w - 1 keys (w - 1 on each side)",
    "Keras sliding_window=w + causal": "i - w < j <= i: up to w keys, the query included",
    "jax local_window_size=(w, w)": "i - w <= j <= i + w: up to 2w + 1 keys",
    "jax local_window_size=(w, 0) + is_causal": "i - w <= j <= i: up to w + 1 keys",
    "FlexAttention sliding_window (q - kv <= w, causal)": (
        "j <= i and i - j <= w (attention-gym): up to w + 1 keys"
    ),
}


def window_semantics(window: int, T: int, S: int) -> dict[str, np.ndarray]:
    """The bool [T, S] masks "window w" means in Keras, JAX and FlexAttention (keys: WINDOW_RULES).

    All are aligned top-left (query i sits at key position i), as each library does.
    """
    w = int(window)
    if w <= 0 or w != window:
        raise ValueError(f"window must be a positive integer, got {window!r}.")
    i = np.arange(T)[:, None]
    j = np.arange(S)[None, :]
    causal = j <= i
    return {
        "Keras sliding_window=w": np.abs(i - j) < w,
        "Keras sliding_window=w + causal": (np.abs(i - j) < w) & causal,
        # jax _get_window_mask: q <= k + left and q >= k - right.
        "jax local_window_size=(w, w)": (i <= j + w) & (i >= j - w),
        "jax local_window_size=(w, 0) + is_causal": (i <= j + w) & (i >= j - 0) & causal,
        "FlexAttention sliding_window (q - kv <= w, causal)": causal & (i - j <= w),
    }


def keys_per_query(mask) -> np.ndarray:
    """[T] how many keys each query row of a bool [T, S] mask allows."""
    return count_allowed(mask)


# ---------------------------------------------------------------------------------------------
# Cost.


def sparsity(allowed) -> float:
    """The fraction of (query, key) pairs allowed (0.0 for an empty mask)."""
    a = np.asarray(allowed, bool)
    return float(a.mean()) if a.size else 0.0


def block_skip(
    allowed, block_q: int = 16, block_k: int = 16, num_heads: int = 1, head_dim: int = 64
) -> dict:
    """What a block-sparse kernel (block_q x block_k tiles) could skip on a bool [T, S] mask.

    FLOPs count QK^T and PV: 2 matmuls x 2 FLOPs per multiply-add, so 4 * T * S * H * N dense.
    Empty tiles (no allowed pair) are skipped, edge tiles counted at their real size.
    "state" is [ceil(T / block_q), ceil(S / block_k)]: 0 empty, 1 partial, 2 full.
    """
    a = np.asarray(allowed, bool)
    if a.ndim != 2:
        raise ValueError(f"block_skip needs a [T, S] mask, got shape {a.shape}.")
    for name, v in (
        ("block_q", block_q),
        ("block_k", block_k),
        ("num_heads", num_heads),
        ("head_dim", head_dim),
    ):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    T, S = a.shape
    nq, nk = -(-T // block_q), -(-S // block_k)
    state = np.zeros((nq, nk), np.int8)
    per_pair = 4 * head_dim * num_heads
    skippable = 0
    for bi in range(nq):
        rows = a[bi * block_q : (bi + 1) * block_q]
        for bj in range(nk):
            tile = rows[:, bj * block_k : (bj + 1) * block_k]
            if not tile.any():
                skippable += tile.size * per_pair
            else:
                state[bi, bj] = 2 if tile.all() else 1
    dense = T * S * per_pair
    return {
        "blocks": nq * nk,
        "empty_blocks": int((state == 0).sum()),
        "full_blocks": int((state == 2).sum()),
        "partial_blocks": int((state == 1).sum()),
        "dense_flops": int(dense),
        "skippable_flops": int(skippable),
        "skippable_fraction": skippable / dense if dense else 0.0,
        "state": state,
    }


# ---------------------------------------------------------------------------------------------
# Keras' implicit masks, and the equivalent Keras call.


def embedding_padding_masks(token_ids, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(query_mask, value_mask), each bool like ``token_ids`` [B, T]: True where id != pad_id.

    What Keras passes on its own when x = Embedding(..., mask_zero=True)(ids) and the layer is
    called as layer(x, x): both masks come from x's mask (mask_zero means pad_id 0), so a
    padding query sees nothing and a padding key is hidden from every query.
    """
    ids = np.asarray(token_ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"token_ids must be integers, got dtype {ids.dtype}.")
    valid = ids != pad_id
    return valid, valid.copy()


def _in_use(x) -> bool:
    return x is not None and x is not False


def keras_call_code(
    *,
    causal: bool,
    sliding_window: int | None,
    query_mask,
    value_mask,
    attention_mask,
    num_query_heads: int,
    num_key_value_heads: int,
    head_dim: int,
) -> str:
    """Keras code (a constructor and a call) that applies these settings' masks.

    It runs given NumPy arrays ``query`` [B, T, D], ``value`` [B, S, D], and, for each mask
    in use, ``query_mask`` [B, T], ``value_mask`` [B, S], ``attention_mask`` [B, T, S] or
    [T, S] (bool, True = attend). A mask argument is in use when it is True or an array
    (None / False: not used). The code assigns ``layer``, ``output`` and ``scores``.
    """
    window = None if not sliding_window else int(sliding_window)
    lines = [
        "import keras",
        "",
        "layer = keras.layers.GroupQueryAttention(",
        f"    head_dim={int(head_dim)},",
        f"    num_query_heads={int(num_query_heads)},",
        f"    num_key_value_heads={int(num_key_value_heads)},",
    ]
    if window is not None:
        lines.append(f"    sliding_window={window},  # |i - j| < {window}")
    lines += [
        ")",
        "# Returning scores keeps Keras on its explicit softmax: a row with no allowed key then",
        "# gets probabilities 0 (the fused path without scores would average all values).",
        "output, scores = layer(",
        "    query,",
        "    value,",
    ]
    if _in_use(query_mask):
        lines.append("    query_mask=query_mask,  # [B, T] False = padding query, sees nothing")
    if _in_use(value_mask):
        lines.append("    value_mask=value_mask,  # [B, S] False = padding key, hidden")
    if _in_use(attention_mask):
        lines.append("    attention_mask=attention_mask,  # [B, T, S] True = attend")
    if causal:
        lines.append("    use_causal_mask=True,  # query i sees keys j <= i")
    lines += ["    return_attention_scores=True,", ")", ""]
    return "\n".join(lines)
