"""Benchmark: greedy decoding with a KV cache against recomputing the whole prefix each token.

Run: ``make bench-decode`` (or ``python -m bench.decode [--rounds R] [--new N]``); about
20 s on 2 CPU cores. Not part of CI.

Axis letters: B batch, T prompt length, S cached tokens, N query heads, K kv heads, H head_dim,
D model dim.

What runs, for each shipped tiny model asked for (default the copy task's MHA and MQA models,
K = 8 and K = 1; N = 8, H = 8, D = 64, 2 layers), B = 1, a 16-token prompt, 256 new tokens:

* cache:     :func:`gqa_viz.decode.prefill` of the prompt, then 255 :func:`gqa_viz.decode.step`
             calls of one token (the public API, input checks included), greedy argmax each.
* recompute: :func:`gqa_viz.tiny.logits` over the whole prefix for every new token, padded to
             its length bucket (:data:`gqa_viz.buckets.LENGTH_BUCKETS`) so it compiles once per
             bucket, not once per token; the causal mask keeps the padding out of the row read.

Every program is compiled before timing. Rounds alternate the two, and per step the median
over rounds is kept. Both must produce the same tokens (checked).

The tiny models learned 24 positions; 16 + 256 tokens need more, so their position table is
extended with random rows (seeded). Past position 24 the text is meaningless, but the work
per step, all this times, is the same as for a model trained that long.

The lower bound per step is :func:`gqa_viz.decode.step_bytes` (weights read + cache read) /
bandwidth, :mod:`gqa_viz.kv_cache`'s formula, at an H100's 3.35e12 B/s unless
``--bandwidth`` says otherwise. At these sizes a step reads a few hundred kB: the bound is
well under a microsecond, and the measured time is dispatch and Python.

SmolLM2-135M (a random checkpoint with its shapes): not decoded here. gqa_viz.decode runs the
tiny models' blocks; real checkpoints (:mod:`gqa_viz.checkpoints`) have a full forward pass
(``python -m bench.checkpoints`` times it) but no cached decoding step yet. Only its bytes per
step are printed, from its config (the preset ``SmolLM2 135M`` of :mod:`gqa_viz.models`).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gqa_viz import buckets, decode, tasks, tiny, trained  # noqa: E402
from gqa_viz.models import PRESETS

PROMPT = 16
BINS = (16, 32, 64, 128, 192, 256)  # cache lengths: rows of the step-time table


def _extended(params, rows: int, seed: int = 0):
    """The model with its position table extended to ``rows`` rows (random, same scale)."""
    table = np.asarray(params["position_embedding"])  # [24, D]
    rng = np.random.default_rng(seed)
    extra = rng.standard_normal((rows - len(table), table.shape[1])) * table.std()
    return {
        **params,
        "position_embedding": jnp.asarray(np.concatenate([table, extra]), jnp.float32),
    }


def run_cache(params, cfg, prompt, new: int):
    """Greedy with the cache: (tokens [1, T + new], prefill s, per-step s, cache length)."""
    state = decode.init_cache(cfg, 1, PROMPT + new - 1)
    t0 = time.perf_counter()
    state, out = decode.prefill(params, cfg, state, prompt)
    tokens = [int(np.argmax(out.logits[0, -1]))]
    prefill = time.perf_counter() - t0
    times, lengths = [], []
    for _ in range(new - 1):
        lengths.append(PROMPT + len(tokens) - 1)  # tokens cached before this step
        t0 = time.perf_counter()
        state, out = decode.step(params, cfg, state, np.array([[tokens[-1]]], np.int32))
        tokens.append(int(np.argmax(out.logits[0, -1])))
        times.append(time.perf_counter() - t0)
    return np.concatenate([prompt[0], tokens]), prefill, np.array(times), np.array(lengths)


def run_recompute(params, cfg, prompt, new: int):
    """Greedy recomputing the prefix: (tokens, per-token s, prefix length)."""
    seq = list(prompt[0])
    times, lengths = [], []
    for _ in range(new):
        n = len(seq)
        padded = np.zeros((1, buckets.bucket(n)), np.int32)
        padded[0, :n] = seq
        t0 = time.perf_counter()
        logits = tiny.logits(params, cfg, padded)
        seq.append(int(np.argmax(logits[0, n - 1])))
        times.append(time.perf_counter() - t0)
        lengths.append(n - 1)  # the same count as the cached step's: tokens before the new one
    return np.array(seq), np.array(times), np.array(lengths)


def _warm(params, cfg, new: int):
    prompt = np.zeros((1, PROMPT), np.int32)
    run_cache(params, cfg, prompt, 2)
    for size in sorted({buckets.bucket(n) for n in range(PROMPT, PROMPT + new)}):
        tiny.logits(params, cfg, np.zeros((1, size), np.int32)).block_until_ready()


def bench_model(name: str, new: int, rounds: int, bandwidth: float) -> dict:
    loaded = trained.load(name)
    cfg = loaded.cfg
    rows = buckets.bucket(PROMPT + new)
    params = _extended(loaded.params, rows)
    prompt = tasks.make_batch(cfg.task, 0, 1).tokens[:, :PROMPT].astype(np.int32)
    t0 = time.perf_counter()
    _warm(params, cfg, new)
    compile_s = time.perf_counter() - t0
    cached, recomputed, prefills, same = [], [], [], True
    for _ in range(rounds):
        seq_c, prefill, step_c, lengths = run_cache(params, cfg, prompt, new)
        seq_r, step_r, lengths_r = run_recompute(params, cfg, prompt, new)
        same &= bool(np.array_equal(seq_c, seq_r))
        cached.append(step_c)
        recomputed.append(step_r)
        prefills.append(prefill)
    step_c = np.median(cached, axis=0)  # [new - 1] per decode step
    step_r = np.median(recomputed, axis=0)  # [new] per token, the first on the prompt alone
    total_c = statistics.median(prefills) + step_c.sum()
    total_r = step_r.sum()
    bytes_ = decode.step_bytes(
        cfg, PROMPT + new - 2, bandwidth_bytes_per_s=bandwidth
    )  # the last step's cache
    return {
        "name": name,
        "cfg": cfg,
        "compile_s": compile_s,
        "same": same,
        "tok_s_cache": new / total_c,
        "tok_s_recompute": new / total_r,
        "step_c": step_c,
        "lengths": lengths,
        "step_r": step_r[1:],  # token 2 .. new: the same prefix lengths as the decode steps
        "bytes": bytes_,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--models", default="copy-k8,copy-k1", help="shipped tiny models, comma-separated"
    )
    ap.add_argument("--new", type=int, default=256, help="new tokens per run (default 256)")
    ap.add_argument("--rounds", type=int, default=5, help="runs of each, alternating")
    ap.add_argument("--bandwidth", type=float, default=3.35e12, help="B/s for the lower bound")
    args = ap.parse_args(argv)
    print(
        f"jax {jax.__version__} on {jax.default_backend()} ({platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores); B=1, prompt {PROMPT}, {args.new} new tokens, greedy, "
        f"{args.rounds} rounds (median)\n"
    )
    results = [
        bench_model(n, args.new, args.rounds, args.bandwidth) for n in args.models.split(",")
    ]

    print(
        "| model | K | tokens/s, cache | tokens/s, recompute | speed-up | same tokens | compile s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        speed = r["tok_s_cache"] / r["tok_s_recompute"]
        print(
            f"| {r['name']} | {r['cfg'].num_key_value_heads} | {r['tok_s_cache']:,.0f} | "
            f"{r['tok_s_recompute']:,.0f} | {speed:.1f}x | {'yes' if r['same'] else 'NO'} | "
            f"{r['compile_s']:.1f} |"
        )

    print("\nStep time (ms, median over the steps in each range) as the cache grows:\n")
    header = ["cached tokens"] + [
        f"{r['name']} {k}" for r in results for k in ("cache", "recompute")
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    edges = [*BINS, PROMPT + args.new]
    for lo, hi in zip(edges, edges[1:]):
        cells = [f"{lo}-{hi - 1}"]
        for r in results:
            sel = (r["lengths"] >= lo) & (r["lengths"] < hi)
            if not sel.any():
                cells += ["", ""]
                continue
            cells.append(f"{1e3 * np.median(r['step_c'][sel]):.3f}")
            cells.append(f"{1e3 * np.median(r['step_r'][sel]):.3f}")
        print("| " + " | ".join(cells) + " |")

    print(f"\nBytes per decode step and the lower bound at {args.bandwidth:.3g} B/s:\n")
    for r in results:
        b = r["bytes"]
        print(f"{r['name']} at {b['cached_tokens']} cached tokens (fp32):")
        print(b["configured"]["formula"])
        print(
            "  cache read per step, MHA / this model / MQA: "
            f"{b['mha']['cache']:,} / {b['configured']['cache']:,} / {b['mqa']['cache']:,} B\n"
        )
    smol = PRESETS["SmolLM2 135M"]
    b = decode.step_bytes(
        smol, PROMPT + args.new - 2, dtype="bf16", bandwidth_bytes_per_s=args.bandwidth
    )
    print(f"SmolLM2-135M (bf16) at {b['cached_tokens']} cached tokens: bytes only, not run")
    print(b["configured"]["formula"])
    print(
        "  not measured: gqa_viz.decode steps the tiny models only; real checkpoints have a "
        "full forward pass (python -m bench.checkpoints), not a cached step yet."
    )


if __name__ == "__main__":
    main()
