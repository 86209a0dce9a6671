"""Frozen figures (gqa_viz/figures/shipping.py): what the browser receives is exactly what the
validated graph-objects figure would send, in the browser's form (meta in a list, no empty
template, a data revision), and the fast path really skips building it."""

from __future__ import annotations

import base64
import copy
import json
import pickle
import threading

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import plotly.tools
import pytest

from gqa_viz.figures.heads import heads_figure, zoom_figure
from gqa_viz.figures.shipping import (
    FrozenFigure,
    for_browser,
    freeze,
    frozen_figure,
    trace_meta,
    typed_array,
    with_width,
)
from tests.apptest_pages import open_page, page_files

_PAGE_FILES = page_files()


def _sent(fig) -> dict:
    """The figure as st.plotly_chart serialises it: to_dict() through plotly.io.to_json."""
    as_dict = plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True)
    return json.loads(pio.to_json(as_dict, validate=False))


def _unrevised(figure: dict) -> dict:
    """``figure`` without its data revision (a digest of the rest, checked on its own below)."""
    return {**figure, "layout": {k: v for k, v in figure["layout"].items() if k != "datarevision"}}


def _browser(fig) -> dict:
    """What a plain graph-objects figure would send in the browser's form."""
    return _unrevised(json.loads(json.dumps(for_browser(_sent(fig)))))


def _is_lazy(fig) -> bool:
    return "_spec" in vars(fig)


def _values(rng, n, t, s, kind):
    v = rng.random((n, t, s)).astype(np.float32)
    return (v - 0.5) * 8 if kind == "logits" else v


# (N, K, T, S, kind, mask, labels, max_cells, extra): every branch of heads_figure's layout.
CASES = [
    (8, 2, 64, 64, "probs", "causal", "positions", 10**6, {"saturate": 99.0}),
    (32, 8, 64, 64, "logits", "causal", "positions", 10**6, {}),
    (4, 4, 5, 7, "probs", None, "tokens", 10**6, {}),
    (6, 3, 300, 300, "probs", "causal", "positions", 200_000, {"pool": "mean"}),
    (12, 3, 20, 20, "dropped", "band", "tokens", 10**6, {"title": "Dropped <b>weights</b>"}),
    (16, 2, 40, 30, "logits", None, "positions", 10**6, {"q_start": 100, "k_start": 7}),
    (2, 1, 9, 9, "probs", "causal", "html", 10**6, {"first_head": 4}),
]


def _case(rng, N, K, T, S, kind, mask, labels, cap, extra):
    values = _values(rng, N, T, S, kind)
    m = None
    if mask == "causal":
        m = np.tril(np.ones((T, S), bool), k=S - T)
    elif mask == "band":
        i, j = np.indices((T, S))
        m = np.abs(i - j) < 4
    if labels == "tokens":
        q = [f"tok{i}" for i in range(T)]
        k = [f"tok{j}" for j in range(S)]
    elif labels == "html":
        q = k = ["<pad>", "a&b", "'q'", "x", "<s>", "é", "日本", "🙂", "z"][:T]
    else:
        q, k = [str(i) for i in range(T)], [str(j) for j in range(S)]
    return (values, m, q, k, K), dict(kind=kind, max_cells=cap, **extra)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"N{c[0]}K{c[1]}T{c[2]}S{c[3]}-{c[4]}")
def test_frozen_heads_figure_sends_exactly_what_the_graph_objects_figure_sends(case):
    args, kwargs = _case(np.random.default_rng(0), *case)
    plain = heads_figure(*args, **kwargs)
    frozen = heads_figure(*args, **kwargs, frozen=True)
    assert isinstance(frozen, FrozenFigure) and _is_lazy(frozen)
    assert _unrevised(_sent(frozen)) == _browser(plain)
    assert _is_lazy(frozen), "sending a frozen figure must not build its graph objects"


def test_reading_a_frozen_figure_builds_the_same_validated_figure():
    args, kwargs = _case(np.random.default_rng(1), *CASES[0])
    plain = heads_figure(*args, **kwargs)
    frozen = heads_figure(*args, **kwargs, frozen=True)
    sent_before = frozen.to_dict()
    # What the figure tests read: titles, traces, groups, hover text, masked cells.
    assert frozen.layout.title.text == plain.layout.title.text
    assert [t.name for t in frozen.data] == [t.name for t in plain.data]
    assert [t.hovertemplate for t in frozen.data] == [t.hovertemplate for t in plain.data]
    assert [a.text for a in frozen.layout.annotations] == [a.text for a in plain.layout.annotations]
    assert [s.line.color for s in frozen.layout.shapes] == [
        s.line.color for s in plain.layout.shapes
    ]
    np.testing.assert_array_equal(frozen.data[1].z, plain.data[1].z)
    assert not _is_lazy(frozen) and type(frozen) is FrozenFigure
    assert frozen.to_dict() is sent_before  # still the dict it was made with


def test_a_frozen_figure_is_validated_when_read():
    fig = frozen_figure([{"type": "heatmap", "z": [[1.0]], "not_a_property": 1}], {})
    for _ in range(2):  # and again: a failed build leaves it as it was
        with pytest.raises(ValueError, match="not_a_property"):
            _ = fig.data


def test_sessions_reading_one_cached_figure_at_once_all_see_it_whole():
    args, kwargs = _case(np.random.default_rng(3), *CASES[1])
    frozen = heads_figure(*args, **kwargs, frozen=True)
    expected = len(heads_figure(*args, **kwargs).data)
    start, seen = threading.Barrier(8), []

    def read():
        start.wait()
        seen.append((len(frozen.data), frozen.layout.title.text))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert seen == [(expected, seen[0][1])] * 8 and seen[0][1]


def test_frozen_figure_resolves_named_templates_and_colour_scales_as_plotly_does():
    data = [{"type": "heatmap", "z": np.eye(3, dtype=np.float32), "colorscale": "Blues"}]
    layout = {"template": "none", "coloraxis": {"colorscale": "RdBu_r"}, "height": 200}
    frozen = frozen_figure(data, layout)
    assert _unrevised(_sent(frozen)) == _browser(go.Figure(data=data, layout=layout))


def test_the_zoom_keeps_its_figure_mutable():
    values = np.random.default_rng(2).random((4, 40, 40)).astype(np.float32)
    fig = zoom_figure(
        values, None, [str(i) for i in range(40)], [str(i) for i in range(40)], 2,
        group=1, queries=(3, 12), keys=(0, 9), max_cells=10**6,
    )  # fmt: skip
    assert not isinstance(fig, FrozenFigure)


def test_freeze_shares_a_finished_figure_and_sends_the_same_dict_every_time():
    fig = go.Figure(go.Heatmap(z=np.arange(6, dtype=np.float32).reshape(2, 3), name="h"))
    frozen = freeze(fig)
    assert frozen.to_dict() is frozen.to_dict()
    assert _unrevised(_sent(frozen)) == _browser(fig)
    assert frozen.data[0].name == "h" and freeze(frozen) is frozen


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint8"])
def test_typed_arrays_decode_back_to_the_array(dtype):
    a = (np.arange(12).reshape(3, 4) * 3).astype(dtype)
    spec = typed_array(a)
    assert spec["shape"] == "3, 4"
    back = np.frombuffer(base64.b64decode(spec["bdata"]), dtype=dtype).reshape(3, 4)
    np.testing.assert_array_equal(back, a)
    assert spec == go.Figure(go.Heatmap(z=a)).to_dict()["data"][0]["z"]


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_copying_a_frozen_figure_leaves_the_shared_dict_alone(how):
    args, kwargs = _case(np.random.default_rng(4), *CASES[2])
    for original in (
        heads_figure(*args, **kwargs, frozen=True),
        freeze(heads_figure(*args, **kwargs)),
    ):
        before = _sent(original)
        if how == "pickle":
            twin = pickle.loads(pickle.dumps(original))
        else:
            twin = getattr(copy, how)(original)
        assert isinstance(twin, FrozenFigure) and _sent(twin) == before
        assert _sent(original) == before and "_grid_str" not in original.to_dict()


def test_the_browser_form_keeps_a_second_draw_cheap():
    """Streamlit draws a new chart, then again with a JSON copy of it: plotly.js redraws it
    all unless the copy's meta are lists, the empty template is gone and the layout has a
    data revision (see the module docstring). Same figure, same revision; other data, another."""
    args, kwargs = _case(np.random.default_rng(5), *CASES[0])
    sent = _sent(heads_figure(*args, **kwargs, frozen=True))
    assert "template" not in sent["layout"]
    assert all(isinstance(t["meta"], list) and len(t["meta"]) == 1 for t in sent["data"])
    assert trace_meta(sent["data"][0])["role"] in ("mask", "scores")
    again = _sent(heads_figure(*args, **kwargs, frozen=True))
    assert sent["layout"]["datarevision"] == again["layout"]["datarevision"]
    values, *rest = args
    other = _sent(heads_figure(values * 0.5, *rest, **kwargs, frozen=True))
    assert other["layout"]["datarevision"] != sent["layout"]["datarevision"]
    assert for_browser(sent) == sent  # applied twice, nothing more changes
    # The graph objects keep meta as a dict, as a builder wrote it.
    assert isinstance(heads_figure(*args, **kwargs, frozen=True).data[0].meta, dict)


def test_a_figure_at_a_width_shares_its_arrays():
    args, kwargs = _case(np.random.default_rng(6), *CASES[0])
    frozen = heads_figure(*args, **kwargs, frozen=True)
    wide = with_width(frozen, 663)
    assert wide.to_dict()["layout"]["width"] == 663 and "width" not in frozen.to_dict()["layout"]
    assert wide.to_dict()["data"] is frozen.to_dict()["data"]  # nothing copied or encoded
    assert wide.to_dict()["layout"]["datarevision"] == frozen.to_dict()["layout"]["datarevision"]
    assert _is_lazy(wide) and wide.layout.width == 663  # and it reads as a validated figure
    built = freeze(heads_figure(*args, **kwargs))
    assert with_width(built, 500).layout.width == 500 and "width" not in built.to_dict()["layout"]


@pytest.mark.parametrize("page", sorted(set(_PAGE_FILES.values())))
def test_every_page_sends_its_charts_in_the_browsers_form(page):
    """Every chart of every page (its default view) goes through app_pages/_chart.py: meta in
    a list, no empty template, a data revision, so Streamlit's second draw is a no-op."""
    at = open_page(page, 180)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert specs or page.endswith(("kv_calculator.py", "real_models.py")), page
    for spec in specs:
        title = (spec["layout"].get("title") or {}).get("text", "")
        assert "template" not in spec["layout"], title
        assert spec["layout"].get("datarevision"), title
        metas = [t["meta"] for t in spec["data"] if "meta" in t]
        assert all(isinstance(m, list) and len(m) == 1 for m in metas), title
