"""The figures shared by every session (gqa_viz/app/figure_cache.py), and the Walkthrough's use
of them: built once per view, sent again unchanged, bounded in bytes."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import pytest

from gqa_viz.app import mask_lab as L
from gqa_viz.app import walkthrough as wt
from gqa_viz.app.figure_cache import FIGURES, FigureCache
from gqa_viz.app.settings import DEFAULTS, compute_key
from gqa_viz.figures.heads import heads_figure
from gqa_viz.figures.shipping import FrozenFigure, for_browser
from tests.apptest_pages import assert_ok, open_page


def _heatmap(n: int, value: float = 0.5) -> go.Figure:
    return go.Figure(go.Heatmap(z=np.full((n, n), value, np.float32)))


def test_a_figure_is_built_once_per_key_and_frozen():
    cache, built = FigureCache(2**20), []

    def build(value):
        def run():
            built.append(value)
            return _heatmap(4, value)

        return run

    first = cache.get(("a", 1), build(0.1))
    again = cache.get(("a", 1), build(0.9))  # the same key: the stored figure, not a new one
    other = cache.get(("a", 2), build(0.2))
    assert built == [0.1, 0.2] and again is first and isinstance(first, FrozenFigure)
    # What Plotly would have sent, in the browser's form (gqa_viz.figures.shipping).
    assert first.to_dict() == for_browser(_heatmap(4, 0.1).to_dict())
    assert other.to_dict()["data"][0]["z"] != first.to_dict()["data"][0]["z"]
    assert (cache.hits, cache.misses, len(cache)) == (1, 2, 2)


def test_least_recently_used_figures_go_first_when_the_bytes_run_out():
    one = FigureCache(2**20).get("x", lambda: _heatmap(64))
    size = FigureCache(2**30)
    size.get("x", lambda: _heatmap(64))
    cache = FigureCache(int(2.5 * size.bytes))  # room for two such figures
    cache.get("a", lambda: _heatmap(64))
    cache.get("b", lambda: _heatmap(64))
    cache.get("a", lambda: pytest.fail("a is stored"))  # a is now the most recent
    cache.get("c", lambda: _heatmap(64))  # evicts b
    assert cache.bytes <= cache.max_bytes and len(cache) == 2
    rebuilt = []
    cache.get("b", lambda: rebuilt.append("b") or _heatmap(64))
    assert rebuilt == ["b"]
    tiny = FigureCache(100)  # a figure bigger than the whole cache is returned, not kept
    assert tiny.get("x", lambda: _heatmap(64)).to_dict() == one.to_dict() and len(tiny) == 0


def test_a_frozen_figure_passes_through_as_it_is():
    frozen = FigureCache(2**20).get("x", lambda: _heatmap(4))
    cache = FigureCache(2**20)
    assert cache.get("y", lambda: frozen) is frozen


def test_a_stored_figure_keeps_its_dict_and_counts_what_it_holds():
    cache = FigureCache(2**30)
    fig = cache.get("g", lambda: _heatmap(64))
    assert fig.to_dict() == for_browser(_heatmap(64).to_dict())
    assert np.asarray(fig.data[0].z).shape == (64, 64)  # readable, as Plotly's
    z_bytes = 64 * 64 * 4  # base64 in the dict (4/3 of it), NumPy in the graph objects
    assert (4 / 3 + 1) * z_bytes <= cache.bytes < 3 * z_bytes
    lazy = heads_figure(
        np.full((2, 64, 64), 0.5, np.float32), None, list("x" * 64), list("y" * 64), 1,
        max_cells=10**6, frozen=True,
    )  # fmt: skip
    other = FigureCache(2**30)
    other.get("h", lambda: lazy)  # its source arrays are kept until it is read: counted too
    assert other.bytes >= 2 * z_bytes * (1 + 3 / 4)


def test_a_mask_lab_result_made_outside_compose_shares_nothing():
    result = L.cached_compose(compute_key(DEFAULTS))
    with pytest.raises(ValueError, match="no key"):
        L.block_figure(replace(result, key=()), 4)
    assert L.block_figure(result, 4) is L.block_figure(result, 4)


def _specs(at) -> dict[str, str]:
    return {c.proto.id: c.proto.spec for c in at.get("plotly_chart")}


def _titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def test_the_walkthrough_draws_a_view_once_and_a_new_head_only_its_own_figures():
    FIGURES.clear()
    before = FIGURES.misses
    query = dict(mode="random", t="12", n="4", k="2", seed="41")
    first = open_page("app_pages/walkthrough.py", 120, **query)
    built = FIGURES.misses
    assert built - before == len(wt.STEP_FIGURES) - 1  # all but dropout (off without training)
    second = open_page("app_pages/walkthrough.py", 120, **query)  # another visitor, same view
    assert_ok(second)
    assert FIGURES.misses == built and _titles(second) == _titles(first)
    assert sorted(_specs(second).values()) == sorted(_specs(first).values())
    second.selectbox(key="walkthrough_head").set_value(3).run()  # another head, same input
    assert_ok(second)
    per_head = len(wt.PER_HEAD) - 1  # dropout again
    assert FIGURES.misses == built + per_head
    titles = _titles(second)
    assert "query head 3 reads K/V head 1" in titles and "K and V of K/V head 1" in titles
    assert sum("query head 3" in t for t in titles) == 5  # Q, sharing, logits, probs, context
    with pytest.raises(ValueError, match="No Walkthrough figure 'nope'"):
        wt.figure(None, "nope", 0)
