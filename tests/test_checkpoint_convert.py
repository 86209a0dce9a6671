"""Grouping a real checkpoint's K/V heads, its loss and head statistics, and model discovery.

Axis letters: B batch, N query heads, T tokens, V vocabulary.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gqa_viz import checkpoints
from gqa_viz.checkpoints import convert, discover
from tests import checkpoint_fixtures as cf


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return checkpoints.load(cf.write_checkpoint("llama_llama3", tmp_path_factory.mktemp("l")))


def test_kv_choices_are_the_divisors_of_k_largest_first(llama):
    assert convert.kv_choices(llama.arch) == [2, 1]
    with pytest.raises(checkpoints.CheckpointError, match=r"must divide the model's 2 kv heads"):
        convert.group_kv_heads(llama, 3)
    with pytest.raises(checkpoints.CheckpointError, match="method must be one of"):
        convert.group_kv_heads(llama, 1, "median")
    assert convert.group_kv_heads(llama, 2) is llama


@pytest.mark.parametrize("method", convert.METHODS)
def test_grouped_kernels_are_the_groups_mean_or_a_kept_head(llama, method):
    grouped = convert.group_kv_heads(llama, 1, method, seed=3)
    assert grouped.arch.num_kv_heads == 1 and llama.arch.num_kv_heads == 2
    for before, after in zip(llama.weights["layers"], grouped.weights["layers"], strict=True):
        k0 = np.asarray(before["attention"]["key"]["kernel"])  # [D, 2, H]
        k1 = np.asarray(after["attention"]["key"]["kernel"])  # [D, 1, H]
        if method == "mean":
            np.testing.assert_allclose(k1[:, 0], k0.mean(axis=1), rtol=1e-6)
        else:
            assert any(np.array_equal(k1[:, 0], k0[:, j]) for j in range(2))
        # queries and the output projection are untouched
        np.testing.assert_array_equal(
            np.asarray(after["attention"]["query"]["kernel"]),
            np.asarray(before["attention"]["query"]["kernel"]),
        )
    logits, probs = grouped.forward(cf.random_ids(llama.arch.vocab_size, 1, 12))
    assert logits.shape == (1, 12, llama.arch.vocab_size) and len(probs) == llama.arch.num_layers


def test_next_token_loss_is_the_mean_cross_entropy_of_each_next_token():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 5, 7))  # [B, T, V]
    ids = rng.integers(0, 7, (2, 5))
    expected = np.mean(
        [
            -math.log(np.exp(logits[b, t, ids[b, t + 1]]) / np.exp(logits[b, t]).sum())
            for b in range(2)
            for t in range(4)
        ]
    )
    assert convert.next_token_loss(logits, ids) == pytest.approx(expected, rel=1e-12)
    uniform = np.zeros((1, 3, 50))
    assert convert.perplexity(convert.next_token_loss(uniform, np.zeros((1, 3), int))) == (
        pytest.approx(50.0)
    )
    with pytest.raises(checkpoints.CheckpointError, match="at least 2 tokens"):
        convert.next_token_loss(uniform[:, :1], np.zeros((1, 1), int))


def _uniform_causal(T: int, window: int | None = None) -> np.ndarray:
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    allowed = (j <= i) & ((i - j) < (window or T))
    p = allowed / allowed.sum(-1, keepdims=True)
    return np.broadcast_to(p, (1, 3, T, T))  # [B, N, T, T]


@pytest.mark.parametrize("window", [None, 4])
def test_uniform_attention_has_entropy_one_over_what_a_row_may_see(window):
    stats = convert.head_stats(_uniform_causal(12, window), window)
    np.testing.assert_allclose(stats["entropy"], 1.0, rtol=1e-12)
    sink = np.mean([1 / min(t + 1, window or 99) if t < (window or 99) else 0 for t in range(12)])
    np.testing.assert_allclose(stats["sink"], sink)


def test_attention_on_one_key_has_entropy_zero_and_its_distance():
    T = 6
    p = np.zeros((1, 2, T, T))
    p[:, 0, :, 0] = 1.0  # head 0: every row on the first token
    p[:, 1, np.arange(T), np.arange(T)] = 1.0  # head 1: every row on itself
    stats = convert.head_stats(p)
    np.testing.assert_allclose(stats["entropy"], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(stats["sink"], [1.0, 1 / T])
    np.testing.assert_allclose(stats["distance"], [np.mean(np.arange(T)), 0.0])


def test_an_operator_folder_that_is_a_cache_snapshot_opens(tmp_path):
    src = cf.write_checkpoint("gpt2", tmp_path / "src")
    snapshot = cf.hf_cache_layout(tmp_path, "org/tiny", src)  # files are links into blobs/
    (entry,) = discover.from_directories([snapshot], max_params=10**9)
    assert entry.usable, entry.problem
    assert entry.root.name == "models--org--tiny"
    assert entry.label.startswith(f"{snapshot.name} (gpt2, ") and "K parameters" in entry.label
    (cached,) = discover.from_cache(tmp_path / "hub", max_params=10**9)
    assert cached.name == "org/tiny" and cached.usable
    (big,) = discover.from_cache(tmp_path / "hub", max_params=10)
    assert big.problem.startswith("too large:") and "the limit is" in big.problem
