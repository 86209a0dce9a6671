"""Downsampling of big heatmaps: what each pooled cell means, and what reaches the browser."""

from __future__ import annotations

import math

import numpy as np
import plotly.io as pio
import pytest

from gqa_viz.app.limits import MAX_DRAWN_CELLS
from gqa_viz.figures.heads import head_maps, heads_figure, pool_blocks, pool_factor


def _brute(values, mask, f, reduce):
    N, T, S = values.shape
    out = np.full((N, -(-T // f), -(-S // f)), np.nan)
    for n in range(N):
        for a in range(0, T, f):
            for b in range(0, S, f):
                block = values[n, a : a + f, b : b + f][mask[a : a + f, b : b + f]]
                if block.size:
                    out[n, a // f, b // f] = reduce(block)
    return out


@pytest.mark.parametrize(("T", "S", "f"), [(12, 12, 3), (13, 7, 4), (5, 9, 5), (16, 16, 1)])
def test_max_pool_keeps_the_max_of_the_unmasked_cells_of_each_block(T, S, f):
    rng = np.random.default_rng(T * S + f)
    values = rng.random((3, T, S)).astype(np.float32)
    mask = rng.random((T, S)) < 0.6
    mask[: min(f, T), : min(f, S)] = False  # one block wholly masked
    pooled, pooled_mask = pool_blocks(values, mask, f, "max")
    expected = _brute(values, mask, f, np.max)
    np.testing.assert_array_equal(pooled, expected.astype(np.float32))
    np.testing.assert_array_equal(pooled_mask, ~np.isnan(expected[0]))
    assert not pooled_mask[0, 0]


def test_mean_pool_averages_only_unmasked_cells():
    rng = np.random.default_rng(1)
    values = rng.random((2, 10, 11)).astype(np.float32)
    mask = rng.random((10, 11)) < 0.5
    pooled, _ = pool_blocks(values, mask, 3, "mean")
    np.testing.assert_allclose(pooled, _brute(values, mask, 3, np.mean), rtol=1e-6)


def test_logit_max_pool_keeps_the_value_of_largest_magnitude_with_its_sign():
    values = np.zeros((1, 4, 4), np.float32)
    values[0, 0, 1] = -9.0  # block (0, 0): a strongly negative logit beats +2
    values[0, 1, 0] = 2.0
    values[0, 2, 3] = 5.0  # block (1, 1)
    values[0, 3, 2] = -1.0
    pooled, _ = pool_blocks(values, np.ones((4, 4), bool), 2, "max", kind="logits")
    assert pooled[0, 0, 0] == -9.0
    assert pooled[0, 1, 1] == 5.0


def test_masked_cells_never_win_a_block():
    values = np.full((1, 4, 4), 0.01, np.float32)
    values[0, 0, 3] = 1.0  # masked: must not show
    mask = np.tril(np.ones((4, 4), bool))
    pooled, pooled_mask = pool_blocks(values, mask, 2, "max")
    assert pooled[0, 0, 1] != pooled[0, 0, 1]  # the upper-right block is all masked: NaN
    assert not pooled_mask[0, 1]
    assert pooled[0, 0, 0] == pytest.approx(0.01)


def test_pool_factor_is_the_smallest_that_fits():
    for N, T, S in [(32, 2048, 2048), (8, 400, 400), (1, 512, 512), (64, 11, 11), (3, 1000, 7)]:
        f = pool_factor(N, T, S, max_cells=MAX_DRAWN_CELLS)
        assert N * math.ceil(T / f) * math.ceil(S / f) <= MAX_DRAWN_CELLS
        if f > 1:
            g = f - 1
            assert N * math.ceil(T / g) * math.ceil(S / g) > MAX_DRAWN_CELLS


def _causal_values(N, T, hot):
    """[N, T, T] (a broadcast view: 16 MiB at T = 2048) with one hot key per row in ``hot``."""
    base = np.full((T, T), 1e-4, np.float32)
    base[:, hot] = 0.9
    return np.broadcast_to(base, (N, T, T)), np.tril(np.ones((T, T), bool))


def test_a_single_hot_key_survives_downsampling_of_the_largest_map():
    N, T, hot = 32, 2048, 1000
    values, mask = _causal_values(N, T, hot)
    labels = [str(i) for i in range(T)]
    fig = heads_figure(values, mask, labels, labels, 8, saturate=99.0, max_cells=MAX_DRAWN_CELLS)
    maps = head_maps(fig)
    assert len(maps) == N
    z = maps[5].z.astype(np.float32)
    f = pool_factor(N, T, T, max_cells=MAX_DRAWN_CELLS)
    column = hot // f
    # Every block row at or below the hot key's row sees it at full strength.
    assert np.all(z[column:, column] == pytest.approx(0.9, abs=1e-4))
    others = np.delete(z[column:], column, axis=1)
    assert np.nanmax(others) == pytest.approx(1e-4, abs=1e-6)


def test_the_largest_map_is_sent_compactly():
    """T = S = 2048 with 32 heads: the figure's JSON, as Streamlit sends it, under 5 MB."""
    N, T = 32, 2048
    values, mask = _causal_values(N, T, 7)
    labels = [str(i) for i in range(T)]
    for kind in ("probs", "logits"):
        fig = heads_figure(
            values, mask, labels, labels, 4, kind=kind, saturate=99.0, max_cells=MAX_DRAWN_CELLS
        )
        payload = len(pio.to_json(fig, validate=False).encode())
        assert payload < 5_000_000, (kind, payload)
        assert '"bdata"' in pio.to_json(fig, validate=False)[:200_000]  # typed arrays


def test_a_zoomed_region_keeps_its_place_in_the_whole():
    rng = np.random.default_rng(0)
    values = rng.random((4, 6, 5)).astype(np.float32)
    labels_q = [str(i) for i in range(6)]
    labels_k = [str(i) for i in range(5)]
    fig = heads_figure(
        values,
        None,
        labels_q,
        labels_k,
        1,  # one K/V group of G = 4 heads...
        first_head=8,  # ... the third group of the layer
        q_start=1000,
        k_start=300,
        color_limits=(0.0, 2.0),
        max_cells=MAX_DRAWN_CELLS,
    )
    scores = [tr for tr in fig.data if tr.meta["role"] == "scores"]
    maps = head_maps(fig)
    assert list(maps) == [8, 9, 10, 11] and [tr.name for tr in scores] == ["kv2"]
    assert {tr.meta["kv_head"] for tr in scores} == {2}
    assert maps[8].y[0] == "@1000" and maps[8].keys[-1] == "@304"
    assert maps[11].x[0].startswith("q head 11 (K/V head 2)<br>")  # the hover's head
    assert fig.layout.coloraxis.cmax == 2.0
    labels = [a.text for a in fig.layout.annotations]
    assert any("K/V head 2" in t or "K/V 2" in t for t in labels)
    with pytest.raises(ValueError, match="multiple of G"):
        heads_figure(values, None, labels_q, labels_k, 1, first_head=3, max_cells=MAX_DRAWN_CELLS)


def test_zoom_figure_draws_a_region_exactly_on_the_overview_colours():
    from gqa_viz.figures.heads import color_range, zoom_figure

    rng = np.random.default_rng(3)
    N, T = 8, 600
    values = rng.random((N, T, T)).astype(np.float32)
    mask = np.tril(np.ones((T, T), bool))
    labels = [str(i) for i in range(T)]
    fig = zoom_figure(
        values,
        mask,
        labels,
        labels,
        2,
        group=1,
        queries=(500, 599),
        keys=(450, 560),
        max_cells=MAX_DRAWN_CELLS,
    )
    maps = head_maps(fig)
    assert list(maps) == [4, 5, 6, 7]
    z = maps[6].z.astype(np.float32)
    expected = np.where(mask[500:600, 450:561], values[6, 500:600, 450:561], np.nan)
    np.testing.assert_allclose(z, np.round(expected, 4), atol=1e-6)  # full resolution
    assert maps[4].y[:2] == ["@500", "@501"]
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == color_range(
        values, mask, "probs"
    )
    with pytest.raises(ValueError, match="at most"):
        zoom_figure(
            values,
            mask,
            labels,
            labels,
            2,
            group=None,
            queries=(0, 599),
            keys=(0, 599),
            max_cells=MAX_DRAWN_CELLS,
        )
    with pytest.raises(ValueError, match="outside the map"):
        zoom_figure(
            values,
            mask,
            labels,
            labels,
            2,
            group=0,
            queries=(0, 600),
            keys=(0, 5),
            max_cells=MAX_DRAWN_CELLS,
        )
