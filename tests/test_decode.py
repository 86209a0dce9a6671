"""Decoding with a KV cache (gqa_viz.decode): equal to the full pass, bounded caches, bytes.

Axis letters: B batch, C new tokens of a step, S_max cache slots, N query heads, K kv heads,
H head_dim, D model dim, V vocab.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from gqa_viz import buckets, core, decode, kv_cache, tasks, tiny, trained
from gqa_viz import masks as M
from tests import reference

B = 2
L = tasks.seq_len("copy")  # 24 positions in the copy models' table
PROMPT = 9  # then (L - PROMPT) / C steps of C tokens, C in {1, 3}
W, SINKS = 5, 2
ROOT = Path(__file__).resolve().parent.parent


def _model(K: int):
    m = trained.load(f"copy-k{K}")
    return m.params, m.cfg


def _tokens(seed: int = 5) -> np.ndarray:
    return tasks.make_batch("copy", seed, B).tokens  # [B, L]


def _full_pass(params, cfg, tokens, window=None, sinks=0):
    """The whole sequence's forward pass, causal & (j < sinks | i - j < window) when windowed."""
    n = tokens.shape[1]
    mask = None
    if window is not None:
        mask = np.asarray(M.materialize(M.sink_window(window, sinks), n, n, xp=np)[0])  # [L, L]
    return jax.device_get(tiny.trace(params, cfg, tokens, mask))


def _steps(params, cfg, state, tokens, C, prompt=PROMPT):
    """Prefill ``prompt`` tokens, then steps of C: yields (start, state, StepOut) per step."""
    state, out = decode.prefill(params, cfg, state, tokens[:, :prompt])
    yield 0, state, out
    for start in range(prompt, tokens.shape[1], C):
        state, out = decode.step(params, cfg, state, tokens[:, start : start + C])
        yield start, state, out


def _assert_rows_equal(out, ref, start: int):
    """The step's rows equal the full pass's rows start .. start + C - 1, layer by layer."""
    C = out.logits.shape[1]
    rows = slice(start, start + C)
    n = ref.logits.shape[1]
    np.testing.assert_allclose(out.logits, ref.logits[:, rows], rtol=1e-5, atol=2e-5)
    for layer, want in zip(out.probs, ref.layers, strict=True):
        got = decode.probs_by_position(layer, out.key_positions, n)  # [B, N, C, L]
        np.testing.assert_allclose(got, want.probs[:, :, rows], atol=2e-6)
    for got, want in zip(out.outputs, ref.layers, strict=True):
        np.testing.assert_allclose(got, want.output[:, rows], rtol=1e-5, atol=1e-5)


# --- masks: the offset is explicit -----------------------------------------------------------


@pytest.mark.parametrize(("T", "S"), [(1, 1), (1, 6), (3, 8), (5, 5), (4, 10)])
def test_causal_offset_is_bottom_right_for_a_decode_step(T, S):
    got = M.materialize(M.causal_offset(S - T), T, S, xp=np)
    np.testing.assert_array_equal(got, M.materialize(M.causal("bottom_right"), T, S, xp=np))
    np.testing.assert_array_equal(
        M.materialize(M.causal_offset(0), T, S, xp=np),
        M.materialize(M.causal("top_left"), T, S, xp=np),
    )


def test_top_left_would_hide_the_past_from_a_new_token():
    # One new token after 5 cached ones: T = 1, S = 6. It sits at position 5.
    top_left = M.materialize(M.causal("top_left"), 1, 6, xp=np)[0, 0]
    offset = M.materialize(M.causal_offset(5), 1, 6, xp=np)[0, 0]
    assert top_left.tolist() == [True, False, False, False, False, False]  # key 0 alone
    assert offset.tolist() == [True] * 6  # every earlier token and itself


def test_sink_window_by_hand_and_with_an_offset():
    got = M.materialize(M.sink_window(3, 2), 8, 8, xp=np)[0]
    want = np.array([[j <= i and (j < 2 or i - j < 3) for j in range(8)] for i in range(8)])
    np.testing.assert_array_equal(got, want)
    # A chunk of 3 at offset 5 is rows 5..7 of the same triangle.
    chunk = M.materialize(M.sink_window(3, 2, offset=5), 3, 8, xp=np)[0]
    np.testing.assert_array_equal(chunk, want[5:])
    # No sinks: Mistral's causal window.
    np.testing.assert_array_equal(
        M.materialize(M.sink_window(3), 8, 8, xp=np), M.materialize(M.causal_window(3), 8, 8, xp=np)
    )


def test_at_key_positions_reads_slots_and_hides_empty_ones():
    positions = np.array([5, 6, 2, -1])  # a ring: slot 2 holds the oldest, slot 3 is empty
    got = M.materialize(M.at_key_positions(M.causal_offset(5), positions), 2, 4, xp=np)[0]
    # query 0 at position 5 sees 5 and 2; query 1 at 6 sees 5, 6 and 2; nobody sees slot 3.
    assert got.tolist() == [[True, False, True, False], [True, True, True, False]]


# --- decoding equals the full pass ------------------------------------------------------------


@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("window", [None, W])
@pytest.mark.parametrize("K", core.divisors(8))
def test_decode_equals_the_full_pass(K, window, C):
    params, cfg = _model(K)
    tokens = _tokens()
    ref = _full_pass(params, cfg, tokens, window)
    empty = decode.init_cache(cfg, B, L, "full", window)
    n_steps = 0
    for start, state, out in _steps(params, cfg, empty, tokens, C):
        out = jax.device_get(out)
        _assert_rows_equal(out, ref, start)
        # Exact: the mask is the full pass's rows at the columns' positions, zeros where masked.
        C_step = out.logits.shape[1]
        want = M.materialize(M.sink_window(window) if window else M.causal(), L, L, xp=np)[0]
        held = out.key_positions >= 0
        np.testing.assert_array_equal(
            out.allowed[:, held], want[start : start + C_step][:, out.key_positions[held]]
        )
        assert not out.allowed[:, ~held].any()
        for probs in out.probs:
            assert np.all(probs[..., ~out.allowed] == 0)
        # A full cache: slot p holds position p once it has been seen.
        end = start + C_step
        assert int(state.length) == end
        slots = np.arange(L)
        np.testing.assert_array_equal(np.asarray(state.positions), np.where(slots < end, slots, -1))
        n_steps += 1
    assert n_steps == 1 + (L - PROMPT) // C and end == L


@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize(("kind", "sinks"), [("rolling", 0), ("sink", SINKS)])
@pytest.mark.parametrize("K", [1, 8])
def test_bounded_caches_equal_the_full_pass_masked_at_the_original_positions(K, kind, sinks, C):
    """Rolling == causal window w; sink == causal & (j < s | i - j < w), positions unchanged."""
    params, cfg = _model(K)
    tokens = _tokens(seed=8)
    ref = _full_pass(params, cfg, tokens, W, sinks)
    empty = decode.init_cache(cfg, B, policy=kind, window=W, sinks=sinks)
    assert empty.k[0].shape == (B, W + sinks, K, cfg.head_dim)  # [B, S_max, K, H]
    for start, _, out in _steps(params, cfg, empty, tokens, C):
        _assert_rows_equal(jax.device_get(out), ref, start)


def test_a_sink_cache_differs_from_the_unbounded_model_from_position_s_plus_w_on():
    params, cfg = _model(2)
    tokens = _tokens(seed=3)
    unbounded = _full_pass(params, cfg, tokens)
    empty = decode.init_cache(cfg, B, policy="sink", window=W, sinks=SINKS)
    diff = np.zeros(L)
    for start, _, out in _steps(params, cfg, empty, tokens, 1, prompt=1):
        diff[start] = np.abs(np.asarray(out.logits[:, 0]) - unbounded.logits[:, start]).max()
    # Until s + w every earlier key is still held: the same model.
    assert diff[: SINKS + W].max() < 2e-5
    # From s + w on keys s .. i - w are gone: the logits move.
    assert diff[SINKS + W :].min() > 0.1


# --- rolling and sink caches against a hand-written NumPy loop --------------------------------


def _np_layer_norm(x, p, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_gelu(x):  # jax.nn.gelu's default, the tanh approximation
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _numpy_decode(params, cfg, tokens, C, window, sinks):
    """The cache as a dict {position: the layer's input at it}, evicted by hand, in float64.

    Yields per step: the positions each layer keeps (with their slots), the logits and the
    probabilities by position.
    """
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    eps = cfg.layer_norm_epsilon
    N, K, H = cfg.num_query_heads, cfg.num_key_value_heads, cfg.head_dim
    n = tokens.shape[1]
    kept = [{} for _ in p64["layers"]]  # per layer: position -> h [B, D]
    for start in range(0, n, C):
        pos = list(range(start, min(start + C, n)))
        x = p64["token_embedding"][tokens[:, pos]] + p64["position_embedding"][pos]  # [B, C, D]
        probs = []
        for layer, cache in zip(p64["layers"], kept, strict=True):
            h = _np_layer_norm(x, layer["norm1"], eps)  # [B, C, D]
            key_pos = sorted(cache) + pos
            hk = (
                np.concatenate([np.stack([cache[j] for j in sorted(cache)], 1), h], 1)
                if (cache)
                else h
            )  # [B, S, D]
            mask = np.array(
                [[j <= i and (j < sinks or i - j < window) for j in key_pos] for i in pos]
            )
            r = reference.reference_gqa(
                layer["attention"], h, hk, num_query_heads=N, num_key_value_heads=K, head_dim=H,
                mask=mask[None],
            )  # fmt: skip
            by_pos = np.zeros((*r["probs"].shape[:-1], n))
            by_pos[..., key_pos] = r["probs"]
            probs.append(by_pos)
            x = x + r["output"]
            h2 = _np_layer_norm(x, layer["norm2"], eps)
            up = _np_gelu(h2 @ layer["mlp"]["up"]["kernel"] + layer["mlp"]["up"]["bias"])
            x = x + up @ layer["mlp"]["down"]["kernel"] + layer["mlp"]["down"]["bias"]
            for i, p in enumerate(pos):
                cache[p] = h[:, i]
            end = pos[-1] + 1
            for p in list(cache):  # what is dropped: neither a sink nor among the last w
                if not (p < sinks or p >= end - window):
                    del cache[p]
        x = _np_layer_norm(x, p64["final_norm"], eps)
        logits = x @ p64["unembed"]["kernel"] + p64["unembed"]["bias"]
        slots = {p: p if p < sinks else sinks + (p - sinks) % window for p in kept[0]}
        yield start, slots, logits, probs


@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize(("kind", "sinks"), [("rolling", 0), ("sink", SINKS)])
def test_bounded_caches_match_a_numpy_loop(kind, sinks, C):
    params, cfg = _model(2)
    tokens = _tokens(seed=11)[:, :16]
    state = decode.init_cache(cfg, B, policy=kind, window=W, sinks=sinks)
    policy = state.policy
    assert policy.capacity == W + sinks
    for start, slots, logits, probs in _numpy_decode(params, cfg, tokens, C, W, sinks):
        state, out = decode.step(params, cfg, state, tokens[:, start : start + C])
        out = jax.device_get(out)
        # What the cache keeps, and where: exact.
        want = np.full(policy.capacity, -1)
        for p, slot in slots.items():
            want[slot] = p
        np.testing.assert_array_equal(np.asarray(state.positions), want)
        assert policy.kept(min(start + C, tokens.shape[1])) == sorted(slots)
        np.testing.assert_allclose(out.logits, logits, rtol=1e-4, atol=1e-4)
        for got, ref in zip(out.probs, probs, strict=True):
            by_pos = decode.probs_by_position(got, out.key_positions, tokens.shape[1])
            np.testing.assert_allclose(by_pos, ref, atol=1e-5)


def test_a_chunk_longer_than_the_window_keeps_its_last_w_tokens():
    params, cfg = _model(4)
    state = decode.init_cache(cfg, B, policy="sink", window=3, sinks=2)
    tokens = _tokens()
    state, out = decode.prefill(params, cfg, state, tokens[:, :10])
    # Sinks 0, 1 in slots 0, 1; position p >= 2 in slot 2 + (p - 2) % 3: 7 -> 4, 8 -> 2, 9 -> 3.
    np.testing.assert_array_equal(np.asarray(state.positions), [0, 1, 8, 9, 7])
    np.testing.assert_array_equal(np.asarray(out.written), [0, 1, -1, -1, -1, -1, -1, 4, 2, 3])
    assert state.policy.kept(10) == [0, 1, 7, 8, 9]
    assert state.policy.dropped(10) == [2, 3, 4, 5, 6]
    assert "drops the middle" in state.policy.describe()


# --- compiled programs ------------------------------------------------------------------------


def test_steps_reuse_one_compiled_program():
    params, cfg = _model(4)
    tokens = _tokens()
    state = decode.init_cache(cfg, B, policy="rolling", window=W)
    state, _ = decode.prefill(params, cfg, state, tokens[:, :4])
    before = decode.compiled_programs()
    state, _ = decode.step(params, cfg, state, tokens[:, 4:5])
    first = decode.compiled_programs()
    assert first == before + 1  # the C = 1 program, once (the counter sees compiles)
    for i in range(5, 20):
        state, _ = decode.step(params, cfg, state, tokens[:, i : i + 1])
    assert decode.compiled_programs() == first  # 15 more steps, lengths 5 .. 19: no compile


def test_run_lengths_and_windows_of_one_capacity_share_programs():
    """Only the model, B, C and the capacity select a program: a full cache's capacity is the
    model's position table whatever the run's length, and window and sinks are data."""
    params, cfg = _model(4)
    prompt = _tokens(seed=4)[:, :6]
    first = decode.generate(params, cfg, prompt, 3)  # the C = 6 and C = 1 programs
    assert first.policy.capacity == L  # the 24 learned positions, not the 8 tokens fed
    count = decode.compiled_programs()
    for new in (4, 9, 19):
        gen = decode.generate(params, cfg, prompt, new)
        assert gen.steps[-1].length == 6 + new - 1
    assert decode.compiled_programs() == count  # runs of 9, 14 and 24 tokens: no compile

    # Seven slots: a rolling window of 7, sink caches of 2 + 5 and 6 + 1, a full cache of 7
    # with windows 3 and none. Each keeps and attends as its own policy says (data, not code).
    gens = [decode.generate(params, cfg, prompt, 12, policy="rolling", window=7)]
    count = decode.compiled_programs()
    for kind, window, sinks, capacity in [
        ("sink", 5, 2, None),
        ("sink", 1, 6, None),
        ("full", 3, 0, 7),
        ("full", None, 0, 7),
    ]:
        end = 7 if kind == "full" else 17
        gens.append(
            decode.generate(params, cfg, prompt, end - 5, policy=kind, window=window,
                            sinks=sinks, capacity=capacity)
        )  # fmt: skip
    assert decode.compiled_programs() == count
    # Slots after the last step (17 tokens fed; 7 for the full caches), by hand: the rolling
    # cache holds 10 .. 16 at p mod 7, the sink caches their sinks and then their windows.
    held = [
        [14, 15, 16, 10, 11, 12, 13],
        [0, 1, 12, 13, 14, 15, 16],
        [0, 1, 2, 3, 4, 5, 16],
        list(range(7)),
        list(range(7)),
    ]
    attended = [7, 7, 7, 3, 7]  # keys the last query sees: window 3 at position 6 sees 4 .. 6
    for gen, want, n_seen in zip(gens, held, attended, strict=True):
        last = gen.steps[-1]
        assert gen.policy.capacity == 7 and last.out.logits.shape[1] == 1
        np.testing.assert_array_equal(last.cache_positions, want)
        # The last query (position q) attends to the policy's rule at the positions held.
        q = last.length - 1
        rule = M.materialize(gen.policy.rule(), q + 1, q + 1, xp=np)[0, q]  # [q + 1]
        allowed = np.asarray(last.out.allowed, np.float32)  # [1, S_max + 1]
        seen = decode.probs_by_position(allowed, last.out.key_positions, q + 1)[0] > 0
        kept_before = np.isin(np.arange(q + 1), [*last.out.key_positions])
        np.testing.assert_array_equal(seen, rule & kept_before)
        assert seen.sum() == n_seen


def test_decode_programs_count_toward_the_cap_on_programs_in_memory(monkeypatch):
    """Decoding registers its programs with the bucketed attention's: past the cap, JAX's
    in-memory caches are emptied as for the attention programs."""
    cleared = []
    monkeypatch.setattr(buckets, "_program_cap", 3)
    monkeypatch.setattr(buckets, "_programs", set())
    monkeypatch.setattr(buckets.jax, "clear_caches", lambda: cleared.append(1))
    params, cfg = _model(2)
    tokens = _tokens(seed=6)
    decode.generate(params, cfg, tokens[:, :5], 6)  # C = 5, then C = 1: two programs
    assert not cleared
    assert buckets._programs == {
        decode.program_key(cfg, decode.CachePolicy.of("full", L), B, 5),
        decode.program_key(cfg, decode.CachePolicy.of("full", L), B, 1),
    }
    decode.generate(params, cfg, tokens[:, :5], 6)  # the same two: nothing new
    assert len(buckets._programs) == 2 and not cleared
    # A sink cache of 1 + 4 slots: its C = 5 program fills the cap of 3; its C = 1 program
    # is a fourth, so the caches are emptied once and it is the only one counted after.
    decode.generate(params, cfg, tokens[:, :5], 6, policy="sink", window=4, sinks=1)
    assert len(cleared) == 1 and len(buckets._programs) == 1
    decode.prefill(params, cfg, decode.init_cache(cfg, B), tokens[:, :5])  # new since then
    assert len(cleared) == 1 and len(buckets._programs) == 2


# --- greedy generation ------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 4])
def test_generate_is_greedy_decoding_of_the_full_model(chunk):
    params, cfg = _model(2)
    tokens = _tokens(seed=2)
    prompt = tokens[:, :13]  # 12 symbols and the separator: the model copies them
    gen = decode.generate(params, cfg, prompt, 11, chunk=chunk)
    np.testing.assert_array_equal(gen.tokens[:, :13], prompt)
    for t in range(13, L):  # each token is the full pass's argmax on the text so far
        full = np.asarray(tiny.logits(params, cfg, gen.tokens[:, :t]))
        np.testing.assert_array_equal(gen.tokens[:, t], full[:, -1].argmax(-1))
    np.testing.assert_array_equal(gen.tokens[:, 13:], tokens[:, 13:])  # it copied
    kinds = [s.kind for s in gen.steps]
    n_prefill = 1 if chunk is None else math.ceil(13 / chunk)
    assert kinds == ["prefill"] * n_prefill + ["decode"] * 10
    assert gen.steps[-1].length == L - 1  # the last token is never fed back
    # [B, N, C, S_max + C]: a full cache holds the model's L = 24 positions by default.
    assert gen.steps[-1].out.probs[0].shape == (B, 8, 1, L + 1)


# --- bytes per step ---------------------------------------------------------------------------


def test_step_bytes_by_hand():
    _, cfg = _model(2)  # D 64, N 8, K 2, H 8, MLP 64, V 17, 2 layers, 24 positions, fp32
    got = decode.step_bytes(cfg, 20, batch=3, bandwidth_bytes_per_s=1e9)
    # Weights a step reads: all but the two lookup tables (17 x 64 tokens, 24 x 64 positions).
    # Per layer: 2 norms 2 x 128; q and o 64*8*8 + 64 each; k and v 64*2*8 + 16 each;
    # MLP 64*64 + 64 + 64*64 + 64. Then the final norm 128 and unembed 64*17 + 17.
    per_layer = 256 + 2 * 4160 + 2 * 1040 + 2 * 4160
    read = 2 * per_layer + 128 + 1105
    assert read == 39_185
    c = got["configured"]
    assert c["kv_heads"] == 2 and c["weights"] == read * 4 == 156_740
    assert c["cache"] == 2 * 2 * 2 * 8 * 4 * 20 * 3 == 15_360  # 2 KV x L x K x H x 4 B x S x B
    assert c["total"] == 172_100
    assert c["seconds"] == pytest.approx(172_100 / 1e9)
    assert "156,740" in c["formula"] and "15,360" in c["formula"] and "172.1 µs" in c["formula"]
    # MHA (K = 8): k and v are 64*8*8 + 64; MQA (K = 1): 64*8 + 8.
    mha, mqa = got["mha"], got["mqa"]
    assert mha["weights"] == (2 * (256 + 4 * 4160 + 8320) + 1233) * 4
    assert mha["cache"] == 2 * 2 * 8 * 8 * 4 * 20 * 3 == 4 * c["cache"]
    assert mqa["weights"] == (2 * (256 + 2 * 4160 + 2 * 520 + 8320) + 1233) * 4
    assert mqa["cache"] == c["cache"] // 2
    # Bounded caches read at most their capacity.
    rolling = decode.CachePolicy.of("rolling", window=5)
    sink = decode.CachePolicy.of("sink", window=5, sinks=2)
    assert (
        decode.step_bytes(cfg, 20, policy=rolling)["configured"]["cache"] == 2 * 2 * 2 * 8 * 4 * 5
    )
    assert decode.step_bytes(cfg, 20, policy=sink)["configured"]["cache"] == 2 * 2 * 2 * 8 * 4 * 7
    assert decode.step_bytes(cfg, 4, policy=sink)["configured"]["cache"] == 2 * 2 * 2 * 8 * 4 * 4


def test_step_bytes_of_a_real_config():
    config = json.loads((ROOT / "assets/configs/smollm2-135m.json").read_text())
    model = kv_cache.from_config(config)
    got = decode.step_bytes(model, 1000, dtype="bf16", bandwidth_bytes_per_s=3.35e12)
    c = got["configured"]
    # 30 layers, K 3, H 64, bf16: 2 x 30 x 3 x 64 x 2 B = 23,040 B per token.
    assert c["cache"] == 23_040 * 1000
    assert c["weights"] == 134_515_008 * 2  # tied embeddings: the table is the output head too
    assert got["mha"]["cache"] == 3 * c["cache"] and got["mqa"]["cache"] == c["cache"] // 3
    assert got["mha"]["weights"] == c["weights"]  # a calculator model's weights as configured
    assert c["seconds"] == kv_cache.decode_time_lower_bound(model, 1000, dtype="bf16")


# --- bad input --------------------------------------------------------------------------------


def test_bad_input_gets_a_message_naming_the_field():
    params, cfg = _model(2)
    tokens = _tokens()
    with pytest.raises(ValueError, match="capacity = window = 5"):
        decode.init_cache(cfg, B, 8, "rolling", window=5)
    with pytest.raises(ValueError, match="needs a window and sinks >= 1"):
        decode.init_cache(cfg, B, policy="sink", window=5)
    with pytest.raises(ValueError, match="policy must be one of"):
        decode.init_cache(cfg, B, 8, "paged")
    with pytest.raises(ValueError, match="sinks = 2 needs a window"):
        decode.init_cache(cfg, B, 8, sinks=2)
    with pytest.raises(ValueError, match="A rolling cache needs a window"):
        decode.init_cache(cfg, B, policy="rolling")
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        decode.init_cache(cfg, B, 0)
    with pytest.raises(ValueError, match="either a CachePolicy or its kind"):
        decode.init_cache(cfg, B, 8, decode.CachePolicy.of("rolling", window=4))
    state = decode.init_cache(cfg, B, 10)
    with pytest.raises(ValueError, match="full cache holds 10 tokens"):
        decode.prefill(params, cfg, state, tokens[:, :11])
    with pytest.raises(ValueError, match="batch 1 but the cache was made for batch 2"):
        decode.prefill(params, cfg, state, tokens[:1, :3])
    with pytest.raises(ValueError, match=r"ids in 0 \.\. 16"):
        decode.prefill(params, cfg, state, np.full((B, 3), 17))
    with pytest.raises(ValueError, match="integer array"):
        decode.prefill(params, cfg, state, np.zeros((B, 3), np.float32))
    state, _ = decode.prefill(params, cfg, state, tokens[:, :3])
    with pytest.raises(ValueError, match="use step to append"):
        decode.prefill(params, cfg, state, tokens[:, 3:4])
    rolling = decode.init_cache(cfg, B, policy="rolling", window=4)
    with pytest.raises(ValueError, match="24 learned positions"):
        decode.prefill(params, cfg, rolling, np.zeros((B, 25), np.int32))
    with pytest.raises(ValueError, match="model has 2 layers of K = 4"):
        decode.step(*_model(4), decode.init_cache(cfg, B, 10), tokens[:, :1])
    with pytest.raises(ValueError, match="more than the model's 24 learned positions"):
        decode.generate(params, cfg, tokens[:, :20], 6)
