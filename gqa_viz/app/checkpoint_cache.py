"""Loaded checkpoints shared by every session, bounded by count and by bytes of weights.

A real model is hundreds of MB to GB: it is loaded once per server process and kept for every
session that asks for the same directory. By default one model is resident
(:data:`~gqa_viz.app.limits.MAX_RESIDENT_CHECKPOINTS`); picking another evicts the least
recently used before loading, so two never sit in memory at once (except while a computation
that started before the eviction still holds the old one: it is freed when that ends). Loads
run one at a time (a second visitor asking for the model being loaded waits for it instead of
loading a copy).
No Streamlit here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from gqa_viz import checkpoints
from gqa_viz.app import limits
from gqa_viz.app.cache import nbytes


class CheckpointCache:
    """Least-recently-used :class:`~gqa_viz.checkpoints.Checkpoint` objects by directory."""

    def __init__(
        self,
        max_models: int = limits.MAX_RESIDENT_CHECKPOINTS,
        max_bytes: int = limits.MAX_RESIDENT_CHECKPOINT_BYTES,
        max_params: int = limits.MAX_CHECKPOINT_PARAMS,
        max_layers: int = limits.MAX_CHECKPOINT_LAYERS,
    ):
        self.max_models, self.max_bytes = max_models, max_bytes
        self.max_params, self.max_layers = max_params, max_layers
        self._items: OrderedDict[tuple[str, str | None], tuple[checkpoints.Checkpoint, int]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()  # held while loading: one load at a time
        self.loads = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        return sum(size for _, size in list(self._items.values()))

    def get(self, directory, root=None) -> checkpoints.Checkpoint:
        """The checkpoint in ``directory``, loading it (and evicting others) if needed.

        Raises :class:`~gqa_viz.checkpoints.CheckpointError` for a checkpoint over the limits
        (checked from its headers before anything is evicted or read).
        """
        key = (str(Path(directory)), None if root is None else str(Path(root)))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
            summary = checkpoints.inspect(directory, root=root, max_layers=self.max_layers)
            if summary.params > self.max_params:
                raise checkpoints.CheckpointError(
                    f"The checkpoint has {summary.params:,} parameters; the limit is "
                    f"{self.max_params:,}."
                )
            if summary.stored_bytes > self.max_bytes:
                raise checkpoints.CheckpointError(
                    f"The checkpoint's weights take {summary.stored_bytes / 2**30:.2f} GiB; this "
                    f"server keeps at most {self.max_bytes / 2**30:.2f} GiB of models in memory."
                )
            # Make room first, so the old model's memory is free before the new one is read.
            while self._items and (
                len(self._items) >= self.max_models
                or self.size_bytes + summary.stored_bytes > self.max_bytes
            ):
                self._items.popitem(last=False)
            ckpt = checkpoints.load(
                directory, root=root, max_params=self.max_params, max_layers=self.max_layers
            )
            self.loads += 1
            self._items[key] = (ckpt, nbytes(ckpt.weights))
            return ckpt
