"""Real-checkpoint parity: ``gqa_viz.checkpoints`` against Hugging Face ``transformers``.

Every variant of :data:`tests.checkpoint_fixtures.VARIANTS` (llama with llama3 / linear /
dynamic / yarn rope scaling, mistral, qwen2 with and without windows, qwen3, gemma in float32
and bfloat16, gemma2, gpt2) is written by ``transformers`` with widened random weights and
run through our loader. Per layer, our attention probabilities [B, N, T, T] must equal
``output_attentions`` of transformers' eager attention to 1e-5 and our logits [B, T, V] its
logits to 1e-4, at B = 2 and T = 64 (past every window and past the rope scalings' original
lengths) and at a short T. The same must hold after the config is rewritten in the Hub's older
dialect, for GPT-2 without its ``transformer.`` prefix, for sharded weights and for the Hub
cache's symlinked layout; ``layers=`` and ``probs=False`` must not change what they return.

Each checkpoint is written once per session and transformers runs once per (checkpoint, T).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402

# float32 matmuls default to TF32 on GPUs; parity at 1e-5 needs full precision.
jax.config.update("jax_default_matmul_precision", "highest")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("transformers")

from gqa_viz import checkpoints  # noqa: E402
from tests import checkpoint_fixtures as cf  # noqa: E402

PROBS_ATOL = 1e-5
LOGITS_ATOL = 1e-4
# Two compiled programs of the same computation may round differently, no more.
SAME_PROBS = 1e-6
SAME_LOGITS = 1e-5
T_SHORT = 7
VARIANTS = tuple(cf.VARIANTS)
# One variant per family for the checks that are about the API rather than the numerics.
ONE_PER_FAMILY = ("llama_dynamic", "mistral", "qwen2_windowed", "qwen3", "gemma", "gemma2", "gpt2")


# ----------------------------------------------------------------------------------------------
# Session fixtures: each checkpoint written once, each reference computed once.
# ----------------------------------------------------------------------------------------------


def _make_form(src, dst, form: str) -> None:
    cf.copy_checkpoint(src, dst)
    if form == "hub":
        cf.rewrite_hub_dialect(dst)
    elif form == "hub_type":
        cf.rewrite_hub_dialect(dst, type_key="type")
    elif form == "unprefixed":
        cf.unprefix_gpt2(dst)
    elif form == "unprefixed_buffers":
        cf.unprefix_gpt2(dst, mask_buffers=True)
    elif form == "sharded":
        cf.shard(dst, 3)
    else:
        raise ValueError(form)


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory):
    """``checkpoint_dir(name, form="plain")``: the directory of variant ``name`` in ``form``."""
    root = tmp_path_factory.mktemp("hf_checkpoints")
    made: dict = {}

    def get(name: str, form: str = "plain"):
        key = (name, form)
        if key not in made:
            if form == "plain":
                made[key] = cf.write_checkpoint(name, root / name)
            elif form == "cache":
                sharded = get(name, "sharded")
                made[key] = cf.hf_cache_layout(root / f"{name}_cache", f"test-org/{name}", sharded)
            else:
                _make_form(get(name), root / f"{name}_{form}", form)
                made[key] = root / f"{name}_{form}"
        return made[key]

    return get


def _ids(name: str, T: int):
    return cf.random_ids(cf.VARIANTS_VOCAB[name], 2, T, seed=T)


@pytest.fixture(scope="session")
def reference(checkpoint_dir):
    """``reference(name, T)``: transformers' (logits, probs) on the plain checkpoint."""
    done: dict = {}

    def get(name: str, T: int):
        if (name, T) not in done:
            done[name, T] = cf.transformers_reference(checkpoint_dir(name), _ids(name, T))
        return done[name, T]

    return get


@pytest.fixture(scope="session")
def loaded(checkpoint_dir):
    """``loaded(name, form="plain")``: ``checkpoints.load`` of that directory, once."""
    done: dict = {}

    def get(name: str, form: str = "plain"):
        if (name, form) not in done:
            done[name, form] = checkpoints.load(checkpoint_dir(name, form))
        return done[name, form]

    return get


def _assert_close(what: str, ours, theirs, atol: float) -> None:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != transformers' {theirs.shape}"
    diff = np.abs(ours - theirs)
    worst = float(diff.max())
    if not worst <= atol:
        at = np.unravel_index(int(diff.argmax()), diff.shape)
        raise AssertionError(
            f"{what}: max abs diff {worst:.3g} > {atol:g} at index {tuple(int(i) for i in at)} "
            f"(ours {ours[at]:.6g}, transformers {theirs[at]:.6g})"
        )


def _assert_matches(ckpt, name: str, T: int, reference, label: str) -> None:
    logits_ref, probs_ref = reference(name, T)
    logits, probs = ckpt.forward(_ids(name, T))
    assert isinstance(logits, np.ndarray) and logits.dtype == np.float32
    assert len(probs) == len(probs_ref), f"{label}: {len(probs)} layers of probs"
    for layer, (ours, theirs) in enumerate(zip(probs, probs_ref)):
        _assert_close(f"{label} layer {layer} probs", ours, theirs, PROBS_ATOL)
    _assert_close(f"{label} logits", logits, logits_ref, LOGITS_ATOL)


# ----------------------------------------------------------------------------------------------
# The fixtures exercise what they claim (transformers only; guards the tests below).
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_fixture_attention_is_far_from_uniform_and_windows_bite(name, checkpoint_dir, reference):
    _, probs = reference(name, cf.T_LONG)
    T = cf.T_LONG
    past = np.subtract.outer(np.arange(T), np.arange(T))  # [T, T]: query i minus key j
    uniform_median_max = 1.0 / (T // 2)
    for layer, (p, w) in enumerate(zip(probs, cf.expected_windows(checkpoint_dir(name)))):
        assert np.median(p.max(-1)) > 4 * uniform_median_max, f"layer {layer} near uniform"
        far = p[..., past >= cf.WINDOW]  # keys at least WINDOW behind the query
        if w is None:
            assert far.max() > 0.1, f"layer {layer}: global attention never looks far back"
        else:
            assert w < T and far.max() == 0.0, f"layer {layer}: window {w} not applied"


# ----------------------------------------------------------------------------------------------
# Numerics: every variant, T = 64 and a short T.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [cf.T_LONG, T_SHORT])
@pytest.mark.parametrize("name", VARIANTS)
def test_matches_transformers(name, T, loaded, reference):
    _assert_matches(loaded(name), name, T, reference, f"{name} T={T}")


@pytest.mark.parametrize(
    "name,form",
    [(n, "hub") for n in VARIANTS] + [("llama_linear", "hub_type"), ("llama_yarn", "hub_type")],
)
def test_hub_dialect_config_gives_the_same_model(name, form, loaded, reference):
    ckpt = loaded(name, form)
    assert _arch_fields(ckpt.arch) == _arch_fields(loaded(name).arch)
    _assert_matches(ckpt, name, cf.T_LONG, reference, f"{name} ({form} config)")


@pytest.mark.parametrize("form", ["unprefixed", "unprefixed_buffers"])
def test_gpt2_without_transformer_prefix(form, loaded, reference):
    _assert_matches(loaded("gpt2", form), "gpt2", cf.T_LONG, reference, f"gpt2 ({form})")


@pytest.mark.parametrize("name", ["llama_llama3", "gemma2"])
def test_sharded_weights(name, loaded, reference):
    _assert_matches(loaded(name, "sharded"), name, cf.T_LONG, reference, f"{name} (sharded)")


def test_hf_cache_layout_follows_links_inside_the_repository_folder(
    checkpoint_dir, loaded, reference
):
    snapshot = checkpoint_dir("qwen2_windowed", "cache")
    assert (snapshot / "model.safetensors.index.json").is_symlink()
    _assert_matches(
        loaded("qwen2_windowed", "cache"), "qwen2_windowed", cf.T_LONG, reference, "cache"
    )


# ----------------------------------------------------------------------------------------------
# The architecture a user reads off the loaded checkpoint.
# ----------------------------------------------------------------------------------------------


def _arch_fields(arch) -> dict:
    keys = ("family", "num_layers", "num_query_heads", "num_kv_heads", "head_dim", "model_dim")
    return {k: getattr(arch, k) for k in (*keys, "vocab_size", "windows")}


@pytest.mark.parametrize("name", VARIANTS)
def test_architecture_matches_the_config(name, checkpoint_dir, loaded):
    cfg = cf.hf_config(checkpoint_dir(name))
    if cfg.model_type == "gpt2":
        n, k, d, layers = cfg.n_head, cfg.n_head, cfg.n_embd, cfg.n_layer
        h = d // n
    else:
        n, k, d, layers = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.hidden_size,
            cfg.num_hidden_layers,
        )
        h = getattr(cfg, "head_dim", None) or d // n
    assert _arch_fields(loaded(name).arch) == {
        "family": cf.VARIANTS[name].family,
        "num_layers": layers,
        "num_query_heads": n,
        "num_kv_heads": k,
        "head_dim": h,
        "model_dim": d,
        "vocab_size": cfg.vocab_size,
        "windows": cf.expected_windows(checkpoint_dir(name)),
    }


def test_families_are_the_supported_model_types():
    assert set(checkpoints.FAMILIES) >= {v.family for v in cf.VARIANTS.values()}


# ----------------------------------------------------------------------------------------------
# forward's options.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_chosen_layers_equal_the_full_run(name, loaded):
    ckpt = loaded(name)
    L = ckpt.arch.num_layers
    chosen = [0, L - 1] if L > 2 else [L - 1]
    ids = _ids(name, cf.T_LONG)
    logits_all, probs_all = ckpt.forward(ids)
    logits, probs = ckpt.forward(ids, layers=chosen)
    assert len(probs) == len(chosen)
    for layer, p in zip(chosen, probs):
        _assert_close(f"{name} layer {layer} of {chosen}", p, probs_all[layer], SAME_PROBS)
    _assert_close(f"{name} logits with layers={chosen}", logits, logits_all, SAME_LOGITS)


def test_chosen_layers_come_back_in_layer_order(loaded):
    ckpt = loaded("gemma2")
    ids = _ids("gemma2", cf.T_LONG)
    _, probs_all = ckpt.forward(ids)
    _, probs = ckpt.forward(ids, layers=[2, 0])
    _assert_close("first of layers=[2, 0]", probs[0], probs_all[0], SAME_PROBS)
    _assert_close("second of layers=[2, 0]", probs[1], probs_all[2], SAME_PROBS)


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_without_probs_the_logits_are_the_same(name, loaded):
    ckpt = loaded(name)
    ids = _ids(name, cf.T_LONG)
    logits_all, _ = ckpt.forward(ids)
    logits, probs = ckpt.forward(ids, probs=False)
    assert probs is None
    _assert_close(f"{name} logits with probs=False", logits, logits_all, SAME_LOGITS)
