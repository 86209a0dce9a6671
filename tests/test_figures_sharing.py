"""Figure builders of the KV sharing page, without Streamlit."""

from __future__ import annotations

import numpy as np
import pytest

from gqa_viz.figures.sharing import cache_figure, diff_figure, drift_figure, k_label
from gqa_viz.figures.theme import DIFF_COLORSCALE


def _curve(N=8):
    Ks = [k for k in range(N, 0, -1) if N % k == 0]
    return [{"K": k, "G": N // k, "js": 0.1 * (N - k), "rel_error": 0.01 * (N - k)} for k in Ks]


def test_diff_figure_symmetric_scale_and_traces():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(4, 5, 5)).astype(np.float32)
    d[0, 0, 0] = 3.0
    mask = np.tril(np.ones((5, 5), bool))
    fig = diff_figure(d, mask, 2)
    diffs = [t for t in fig.data if t.meta["role"] == "diff"]
    assert [t.name for t in diffs] == ["q0", "q1", "q2", "q3"]
    assert len([t for t in fig.data if t.meta["role"] == "mask"]) == 4
    ca = fig.layout.coloraxis
    assert ca.cmin == -ca.cmax and ca.cmid == 0
    assert ca.cmax == pytest.approx(np.abs(np.where(mask, d, 0)).max(), rel=1e-5)
    assert ca.colorscale == fig.layout.coloraxis.colorscale  # set from the theme
    assert DIFF_COLORSCALE == "RdBu_r"
    assert np.isnan(np.asarray(diffs[0].z, float)[0, 1])  # masked cell


def test_diff_figure_zero_and_errors():
    fig = diff_figure(np.zeros((2, 3, 3)), None, 1)
    assert fig.layout.coloraxis.cmax > 0 and fig.layout.coloraxis.cmin < 0
    with pytest.raises(ValueError):
        diff_figure(np.zeros((3, 2, 2)), None, 2)
    with pytest.raises(ValueError):
        diff_figure(np.zeros((2, 2)), None, 1)


def test_drift_figure_axes_descending_k():
    fig = drift_figure(list(reversed(_curve())), current_k=2)
    js = next(t for t in fig.data if t.meta["role"] == "js")
    err = next(t for t in fig.data if t.meta["role"] == "rel_error")
    assert list(js.x) == ["8 (MHA)", "4", "2", "1 (MQA)"]
    assert js.y[0] == 0 and err.y[0] == 0
    assert js.xaxis == "x" and err.xaxis == "x2"
    assert list(fig.layout.xaxis.categoryarray) == list(js.x)
    assert len([t for t in fig.data if t.meta["role"] == "current"]) == 2
    assert k_label(1, 1) == "1 (MHA = MQA)"
    with pytest.raises(ValueError):
        drift_figure([])


def test_cache_figure_lines_and_gpu_line():
    ctx = [128, 1024, 8192]
    sizes = {"configured": [1e9, 2e9, 4e9], "mha": [4e9, 8e9, 16e9], "mqa": [1e8, 2e8, 4e8]}
    fig = cache_figure(ctx, sizes, budget_bytes=64e9, current=1024)
    cache = [t for t in fig.data if t.meta["role"] == "cache"]
    assert [t.meta["variant"] for t in cache] == ["mha", "configured", "mqa"]
    assert list(cache[0].y) == [4.0, 8.0, 16.0]  # GB
    gpu = [t for t in fig.data if t.meta["role"] == "gpu"]
    assert len(gpu) == 1 and list(gpu[0].y) == [64.0, 64.0] and list(gpu[0].x) == [128, 8192]
    assert fig.layout.xaxis.type == "log"
    assert "GB" in fig.layout.yaxis.title.text
    no_gpu = cache_figure(ctx, sizes)
    assert not [t for t in no_gpu.data if t.meta["role"] == "gpu"]
    with pytest.raises(ValueError):
        cache_figure(ctx, {"mha": [1.0]})
