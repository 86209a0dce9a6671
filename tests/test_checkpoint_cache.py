"""The app's checkpoint cache: one model resident by default, shared, bounded by bytes."""

from __future__ import annotations

import threading

import pytest

from gqa_viz import checkpoints
from gqa_viz.app.checkpoint_cache import CheckpointCache
from tests.checkpoint_fixtures import copy_checkpoint, random_ids, write_checkpoint


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    base = tmp_path_factory.mktemp("cache")
    a = write_checkpoint("llama_llama3", base / "a")
    b = copy_checkpoint(a, base / "b")
    return a, b


def test_one_model_resident_by_default_and_reused(two_models):
    a, b = two_models
    cache = CheckpointCache(max_models=1, max_bytes=2**30)
    first = cache.get(a)
    assert cache.get(a) is first and cache.loads == 1
    second = cache.get(b)
    assert second is not first and len(cache) == 1 and cache.loads == 2
    assert cache.get(a) is not first  # evicted: loaded again
    assert cache.loads == 3


def test_byte_bound_evicts_before_loading(two_models):
    a, b = two_models
    size = checkpoints.inspect(a).stored_bytes
    cache = CheckpointCache(max_models=5, max_bytes=int(size * 1.5))
    cache.get(a)
    cache.get(b)  # two would exceed the bytes: the first goes
    assert len(cache) == 1 and cache.size_bytes <= int(size * 1.5)


def test_limits_refuse_before_anything_is_evicted(two_models):
    a, b = two_models
    cache = CheckpointCache(max_models=1, max_bytes=2**30)
    kept = cache.get(a)
    params = checkpoints.inspect(b).params
    small = CheckpointCache(max_models=1, max_bytes=2**30, max_params=params - 1)
    with pytest.raises(checkpoints.CheckpointError, match=f"{params:,} parameters; the limit is"):
        small.get(b)
    tight = CheckpointCache(max_models=1, max_bytes=1000)
    with pytest.raises(checkpoints.CheckpointError, match="at most"):
        tight.get(b)
    assert cache.get(a) is kept


def test_concurrent_sessions_share_one_load(two_models):
    a, _ = two_models
    cache = CheckpointCache(max_models=1, max_bytes=2**30)
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(a))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.loads == 1 and all(g is got[0] for g in got)
    logits, _ = got[0].forward(random_ids(got[0].arch.vocab_size, batch=1, length=8), probs=False)
    assert logits.shape == (1, 8, got[0].arch.vocab_size)
