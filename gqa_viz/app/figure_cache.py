"""Figures shared by every session of a server: built once per key, frozen, kept while they fit.
No Streamlit.

A page's figure is a function of what was computed and of the few view choices it follows. A
rerun that changes neither (a class opening the same link, another widget of the page moving,
the figure's page visited again) sends the figure built before instead of building it anew:
Plotly's graph objects cost 10-30 ms of validation a figure, about 135 ms of the Walkthrough's
170 ms rerun at the default view before this cache. The figures are frozen
(:class:`~gqa_viz.figures.shipping.FrozenFigure`): sending one again does not copy or encode
it, and nobody may change it.

:func:`shared` takes the key from its caller, which names everything the figure depends on
(usually the compute key of the result, a head, and the figure's name): a key that leaves
something out would show one visitor another's figure. Least recently used figures go first
once the cache holds ``limits.MAX_FIGURE_BYTES`` (their arrays and strings, estimated when
each is stored: the dict a figure sends and the arrays it holds besides).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np
import plotly.graph_objects as go

from gqa_viz.app.limits import MAX_FIGURE_BYTES
from gqa_viz.figures.shipping import FrozenFigure, freeze

__all__ = ["FIGURES", "FigureCache", "shared"]


def _size(value) -> int:
    """Bytes a figure dict holds, roughly: its strings (base64 arrays) and list items."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_size(v) for v in value.values()) + 16 * len(value)
    if isinstance(value, list | tuple):
        return sum(_size(v) for v in value) + 8 * len(value)
    return 8


def _array_bytes(value) -> int:
    """Bytes of the NumPy arrays in ``value`` (nested dicts and lists)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return sum(_array_bytes(v) for v in value)
    return 0


def _stored(figure: go.Figure | FrozenFigure) -> tuple[FrozenFigure, int]:
    """``figure`` frozen as it is kept, and its bytes: the dict it sends, plus the arrays it
    holds besides. A lazy frozen figure (:func:`~gqa_viz.figures.shipping.frozen_figure`)
    holds its source NumPy arrays until it is read; a figure of graph objects holds its
    arrays as NumPy again, counted as 3/4 of their base64 in the dict."""
    figure = figure if isinstance(figure, FrozenFigure) else freeze(figure)
    sent = _size(figure.to_dict())
    spec = figure.__dict__.get("_spec")  # answered without building graph objects
    return figure, sent + (_array_bytes(spec) if spec is not None else 3 * sent // 4)


class FigureCache:
    """A byte-bounded LRU of frozen figures; safe to share between script threads."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._figures: OrderedDict[Hashable, tuple[FrozenFigure, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, build: Callable[[], go.Figure | FrozenFigure]) -> FrozenFigure:
        """The figure stored under ``key``, else ``build()`` frozen and stored.

        ``build`` runs outside the lock: two sessions asking for a new figure at once may
        both build it (the second one stored wins), and nobody waits on another's figure.
        """
        with self._lock:
            if key in self._figures:
                self._figures.move_to_end(key)
                self.hits += 1
                return self._figures[key][0]
            self.misses += 1
        figure, size = _stored(build())
        with self._lock:
            if key in self._figures:
                self._bytes -= self._figures.pop(key)[1]
            if size <= self.max_bytes:  # a figure larger than the whole cache is not kept
                self._figures[key] = (figure, size)
                self._bytes += size
            while self._bytes > self.max_bytes:
                self._bytes -= self._figures.popitem(last=False)[1][1]
        return figure

    def clear(self) -> None:
        with self._lock:
            self._figures.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._figures)

    @property
    def bytes(self) -> int:
        return self._bytes


FIGURES = FigureCache(MAX_FIGURE_BYTES)  # the server's one figure cache


def shared(key: Hashable, build: Callable[[], go.Figure | FrozenFigure]) -> FrozenFigure:
    """The server's figure for ``key`` (see the module docstring), built by ``build`` once."""
    return FIGURES.get(key, build)
