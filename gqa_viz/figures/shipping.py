"""Figures that are built once and sent many times: :class:`FrozenFigure`. No Streamlit.

Two costs dominate a classroom's reruns, and neither is attention math:

* ``st.plotly_chart(fig)`` calls ``fig.to_dict()`` on every rerun, which deep-copies every
  trace and base64-encodes every array again. For a cached 32-head map at T = S = 64
  (64 heatmaps, 1.9 MB) that was a quarter of a no-change rerun's server CPU.
* Building a figure out of graph objects validates every property and every list item: for
  that map, 90 ms of Plotly's Python for a figure the browser draws in a few.

A frozen figure answers both. ``to_dict()`` returns the dict it was made with, every time.
Made by :func:`frozen_figure` from plain trace and layout dicts (what a builder writes), it
does not build graph objects at all until something other than ``to_dict()`` reads it
(``.data``, ``.layout``, ``show()``...); then it becomes ``go.Figure(data=..., layout=...)``,
validated as usual, so a test that reads a figure checks it as Plotly would. :func:`freeze`
makes one from a finished ``go.Figure``.

A frozen figure must not be changed: it would keep sending the dict it was made with. That is
what a cached figure shared by every session needs anyway.

What it sends is the browser's form of the figure (:func:`for_browser`), which lets a new chart
be drawn once, not twice. Streamlit's front end draws every new chart with ``Plotly.react``
and then, at once, again with a JSON copy of the same figure (its theme step). plotly.js
redraws all of it the second time, as long as it must assume a copied object changed:
a trace's ``meta`` dict, the layout's ``template`` dict, and every data array unless the
layout has a ``datarevision``. (For the Playground's heads figure the second draw took 20
of a press's 100 ms.) So in that form:

* each trace's ``meta``, and the layout's, is a one-element list, ``[meta]`` (plotly.js
  compares arrays only by ``datarevision``); :func:`trace_meta` reads it back from either form;
* the empty template every figure of the app asks for (``"none"``) is left out, which
  plotly.js draws exactly as it would;
* ``layout.datarevision`` is a digest of the rest, so equal figures keep equal specs.

The graph objects of a frozen figure (what its tests read) keep ``meta`` as a dict.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import threading

import numpy as np
import plotly.graph_objects as go

# NumPy dtypes plotly.js reads as typed arrays (its "dtype" names), as plotly's to_dict().
_TYPED = {
    "float64": "f8",
    "float32": "f4",
    "int32": "i4",
    "uint32": "u4",
    "int16": "i2",
    "uint16": "u2",
    "int8": "i1",
    "uint8": "u1",
}


def typed_array(a: np.ndarray):
    """``a`` as plotly.js's typed-array spec (what ``go.Figure.to_dict()`` makes of it).

    Other dtypes (int64 among them, which Plotly would narrow first) go as lists: the
    builders that freeze their figures pass float32 only.
    """
    code = _TYPED.get(str(a.dtype))
    if code is None or a.size == 0:
        return a.tolist()
    spec = {"dtype": code, "bdata": base64.b64encode(np.ascontiguousarray(a)).decode("ascii")}
    if a.ndim > 1:
        spec["shape"] = str(a.shape)[1:-1]
    return spec


def array_of(value) -> np.ndarray:
    """:func:`typed_array` undone: a typed-array spec (``{"dtype", "bdata", "shape"}``, in its
    dtype) or a list (as floats), as a NumPy array. Reads figures back from what they send."""
    if isinstance(value, dict):
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = [int(n) for n in str(value["shape"]).split(",")] if "shape" in value else [-1]
        return data.reshape(shape)
    return np.asarray(value, dtype=float)


def _shipped(value):
    """A copy of ``value`` (dicts, lists, arrays) in the form ``to_dict()`` gives."""
    if isinstance(value, dict):
        return {
            k: _colorscale(v) if k == "colorscale" and isinstance(v, str) else _shipped(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_shipped(v) for v in value]
    if isinstance(value, np.ndarray):
        return typed_array(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


@functools.cache
def _colorscale(name: str) -> list:
    """A named colour scale ("Blues") as the [[position, colour], ...] list Plotly sends."""
    return go.layout.Coloraxis(colorscale=name).to_plotly_json()["colorscale"]


@functools.cache
def _template(name: str) -> dict:
    return go.Figure(layout=dict(template=name)).to_dict()["layout"]["template"]


def trace_meta(trace) -> dict:
    """A trace's ``meta`` (or a layout's) as a dict ({} when it has none), from a graph object,
    a dict, or a dict in the browser's form (where it is ``[meta]``, see the module
    docstring)."""
    meta = trace.get("meta") if isinstance(trace, dict) else trace.meta
    if isinstance(meta, list | tuple) and len(meta) == 1 and isinstance(meta[0], dict):
        meta = meta[0]
    return meta if isinstance(meta, dict) else {}


def for_browser(figure: dict) -> dict:
    """``figure`` (a dict as ``to_dict()`` gives it) in the form a browser draws once: see the
    module docstring. A new dict sharing its arrays and strings; ``figure`` is left alone.
    Applied twice, it changes nothing more."""
    data = []
    for trace in figure.get("data", []):
        if isinstance(trace.get("meta"), dict):
            trace = {**trace, "meta": [trace["meta"]]}
        data.append(trace)
    layout = dict(figure.get("layout", {}))
    if isinstance(layout.get("meta"), dict):
        layout["meta"] = [layout["meta"]]
    if layout.get("template") == _template("none"):
        del layout["template"]
    layout.pop("datarevision", None)
    out = {**figure, "data": data, "layout": layout}
    text = json.dumps(out, sort_keys=True, default=_exact)  # the same for a rebuilt copy
    digest = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
    layout["datarevision"] = digest
    return out


def _exact(value):
    """JSON for what ``to_dict()`` may leave as NumPy (arrays of strings or objects): all of
    it, since ``str()`` of a long array elides its middle and two figures would share a
    digest."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _unwired(shipped: dict) -> dict:
    """:func:`for_browser` undone as far as graph objects need: ``meta`` back to a dict, the
    empty template back (else Plotly would apply its default one)."""
    data = [
        {**t, "meta": trace_meta(t)} if isinstance(t.get("meta"), list) else t
        for t in shipped.get("data", [])
    ]
    layout = shipped.get("layout", {})
    if "template" not in layout:
        layout = {**layout, "template": _template("none")}
    if isinstance(layout.get("meta"), list):
        layout = {**layout, "meta": trace_meta(layout)}
    return {**shipped, "data": data, "layout": layout}


class FrozenFigure(go.Figure):
    """A ``go.Figure`` whose ``to_dict()`` is computed once (see the module docstring)."""

    _frozen: dict

    def to_dict(self) -> dict:
        return self._frozen

    def __reduce__(self):
        # copy, deepcopy, pickle: a new frozen figure from a copy of the dict. Plotly's own
        # __reduce__ would write grid keys into the dict every session sends.
        return _from_dict, (copy.deepcopy(self._frozen),)


def _from_dict(shipped: dict) -> FrozenFigure:
    return freeze(go.Figure(_unwired(shipped)))


# What a lazy figure answers without building its graph objects.
_LAZY_OWN = frozenset({"to_dict", "_frozen", "_spec", "__class__", "__dict__"})


_BUILDING = threading.Lock()


class _LazyFrozenFigure(FrozenFigure):
    """A :class:`FrozenFigure` whose graph objects are built on first use of anything but
    ``to_dict()``; it then becomes a plain :class:`FrozenFigure`.

    Cached figures are shared by sessions' threads: the graph objects are built apart, under
    a lock, and the class changes last, so no thread sees a half-built figure.
    """

    def __getattribute__(self, name: str):
        if name not in _LAZY_OWN:
            with _BUILDING:
                if type(self) is _LazyFrozenFigure:  # not built by a thread that held the lock
                    own = object.__getattribute__(self, "__dict__")
                    data, layout = own["_spec"]
                    # Copies: Plotly takes "type" out of each trace dict it is given.
                    built = go.Figure(data=[dict(t) for t in data], layout=dict(layout))
                    own.update(built.__dict__)
                    del own["_spec"]
                    object.__setattr__(self, "__class__", FrozenFigure)
        return object.__getattribute__(self, name)


def frozen_figure(data: list[dict], layout: dict) -> FrozenFigure:
    """A frozen figure of ``data`` (trace dicts, each with its ``type``) and ``layout``.

    Arrays may be NumPy (as data arrays: a NumPy ``range`` or ``layers`` would be encoded
    where Plotly would not); a ``template`` or ``colorscale`` given by name is resolved as
    Plotly does. The dicts are kept for the graph objects built on first use; do not change
    them.
    """
    shipped = {"data": _shipped(data), "layout": _shipped(layout)}
    if isinstance(layout.get("template"), str):
        shipped["layout"]["template"] = _template(layout["template"])
    return _lazy((data, layout), for_browser(shipped))


def _lazy(spec: tuple[list[dict], dict], shipped: dict) -> FrozenFigure:
    """A lazy frozen figure sending ``shipped``, its graph objects built from ``spec``."""
    fig = _LazyFrozenFigure.__new__(_LazyFrozenFigure)
    object.__setattr__(fig, "_spec", spec)
    object.__setattr__(fig, "_frozen", shipped)
    return fig


def with_width(fig: FrozenFigure, width: int) -> FrozenFigure:
    """``fig`` drawn ``width`` px wide: a frozen figure with a layout of its own. For a lazy
    frozen figure (graph objects not built yet, as the figure cache keeps them) it shares its
    arrays and data revision and costs nothing; once ``fig``'s graph objects have been built,
    it builds and freezes a copy (tens of ms at 32 heads)."""
    spec = fig.__dict__.get("_spec")  # a lazy figure's source dicts, read without building
    if spec is None:
        built = go.Figure(fig)
        built.update_layout(width=width)
        return freeze(built)
    shipped = fig.to_dict()
    sent = {**shipped, "layout": {**shipped["layout"], "width": width}}
    return _lazy((spec[0], {**spec[1], "width": width}), sent)


def freeze(fig: go.Figure) -> FrozenFigure:
    """A frozen view of a finished ``fig`` (returned as is when already frozen). It shares
    ``fig``'s traces and layout, so ``fig`` should not change either."""
    if isinstance(fig, FrozenFigure):
        return fig
    out = FrozenFigure.__new__(FrozenFigure)
    out.__dict__.update(fig.__dict__)  # the same traces and layout objects: nothing is copied
    out._frozen = for_browser(fig.to_dict())
    return out
