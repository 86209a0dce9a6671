"""Weights to and from files: ``.npz`` (NumPy, loaded without pickle) or ``.safetensors``.

Each tensor is stored under its Keras sublayer path, e.g. ``query/kernel`` or
``attention_output/bias``, so a file can be read without gqa_viz.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FORMATS = (".npz", ".safetensors")


def _format(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"Weights files must end in .npz or .safetensors, got {str(path)!r}.")
    return suffix


def save(path: str | os.PathLike, tensors: dict[str, np.ndarray]) -> None:
    """Write ``{"query/kernel": array, ...}`` to ``path`` (format from its suffix)."""
    arrays = {name: np.ascontiguousarray(np.asarray(a)) for name, a in tensors.items()}
    if _format(path) == ".npz":
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    else:
        from safetensors.numpy import save_file

        save_file(arrays, str(path))


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a file written by :func:`save`. Never unpickles (``allow_pickle=False``)."""
    if _format(path) == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    from safetensors.numpy import load_file

    return load_file(str(path))
