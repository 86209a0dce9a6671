"""Benchmark: our GroupedQueryAttention against a jitted baseline and against Keras 3.

Run: ``make bench`` (or ``python -m bench.core [--quick] [--rounds R]``).

Axis letters: B batch, T query length, S key/value length, N query heads, K kv heads,
H head_dim, D model dim. Shapes: B=1, D=2048, N=32, H=64, causal, T=S in {128, 512, 1024,
2048}, K in {32, 8, 4, 1}.

Every contender runs on the same weights and input. Within a shape, contenders are timed
interleaved, one call each per round in a freshly shuffled order, so a noisy neighbour or a
warm cache favours none of them; the ratio to the baseline is taken per round and its median
and 10-90 % range are printed. "baseline again" is a second, identical baseline: its ratio is
the measurement's own noise floor.

Contenders:
  baseline     jax.jit: einsum projections + jax.nn.dot_product_attention(is_causal=True)
  ours         GroupedQueryAttention(...)(x, x, use_causal_mask=True)
  ours (dpa)   our core's output-only path forced through jax.nn.dot_product_attention
               (what it uses on accelerators; on a CPU it uses its own contraction)
  ours+scores  the same with return_attention_scores=True
  keras-jit    jax.jit(keras_layer.stateless_call), without / with scores (the fair peer)
  keras-eager  keras_layer(x, x, use_causal_mask=True), as in a notebook
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from functools import partial

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gqa_viz import GroupedQueryAttention, core  # noqa: E402

B, D, N, H = 1, 2048, 32, 64


def _block(x):
    return jax.tree.map(lambda a: a.block_until_ready(), x)


def baseline_fn(params):
    """einsum projections + jax.nn.dot_product_attention, jitted, on the same weights."""

    @jax.jit
    def run(p, x):
        q = jnp.einsum("btd,dnh->btnh", x, p["query"]["kernel"]) + p["query"]["bias"]
        k = jnp.einsum("bsd,dkh->bskh", x, p["key"]["kernel"]) + p["key"]["bias"]
        v = jnp.einsum("bsd,dkh->bskh", x, p["value"]["kernel"]) + p["value"]["bias"]
        ctx = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
        out = p["attention_output"]
        return jnp.einsum("btnh,nhd->btd", ctx, out["kernel"]) + out["bias"]

    return partial(run, params)


def keras_fns(weights, x):
    import keras

    layer = keras.layers.GroupQueryAttention(head_dim=H, num_query_heads=N, num_key_value_heads=K_)
    layer(x, x, use_causal_mask=True)
    layer.set_weights(weights)
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    def stateless(scores):
        f = jax.jit(
            lambda tv, ntv, x: layer.stateless_call(
                tv, ntv, x, x, use_causal_mask=True, return_attention_scores=scores
            )[0]
        )
        return lambda x: f(tv, ntv, x)

    eager = lambda x: layer(x, x, use_causal_mask=True)
    return stateless(False), stateless(True), eager


K_ = 0  # set per shape; keras_fns reads it


def flops(T: int, S: int, K: int) -> float:
    """Multiply-adds x 2 of the layer; attention counted in full (XLA computes the masked half)."""
    proj = 2 * T * D * N * H + 2 * 2 * S * D * K * H + 2 * T * N * H * D
    attn = 2 * 2 * N * T * S * H
    return float(proj + attn)


def matmul_peak(size: int = 2048, reps: int = 10) -> float:
    """Measured float32 matmul GFLOP/s of this machine (the best of ``reps``)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    _block(f(a))
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        _block(f(a))
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def bench_shape(T: int, K: int, rounds: int, with_keras: bool):
    global K_
    K_ = K
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)
    ours = GroupedQueryAttention(H, N, K, seed=0)
    ours.build(x.shape, x.shape)
    base = baseline_fn(ours.params)
    fns = {
        "baseline": base,
        "baseline again": lambda x: base(x),
        "ours": lambda x: ours(x, x, use_causal_mask=True),
        "ours (dpa)": lambda x: core.attention(
            ours.params, x, x, spec=ours.spec, use_causal_mask=True, implementation="xla"
        ),
        "ours+scores": lambda x: ours(x, x, use_causal_mask=True, return_attention_scores=True),
    }
    if with_keras:
        kj, kjs, ke = keras_fns(ours.get_weights(), np.asarray(x))
        fns.update({"keras-jit": kj, "keras-jit+scores": kjs, "keras-eager": ke})
    for f in fns.values():  # compile and warm up
        _block(f(x))
        _block(f(x))
    times = {name: [] for name in fns}
    order = list(fns)
    shuffle = np.random.default_rng(T * 100 + K)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for name in order:
            t = time.perf_counter()
            _block(fns[name](x))
            times[name].append(time.perf_counter() - t)
    return {name: np.asarray(ts) for name, ts in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="T in {128, 1024}, K in {32, 4}")
    ap.add_argument("--rounds", type=int, default=0, help="rounds per shape (0: by size)")
    ap.add_argument("--no-keras", action="store_true", help="skip the Keras contenders")
    args = ap.parse_args(argv)
    lengths = [128, 1024] if args.quick else [128, 512, 1024, 2048]
    kv_heads = [32, 4] if args.quick else [32, 8, 4, 1]
    peak = matmul_peak()
    print(
        f"# gqa_viz core benchmark  ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, jax {jax.__version__}, {jax.default_backend()})"
    )
    print(f"B={B} D={D} N={N} H={H}, causal; float32 matmul peak measured: {peak:.1f} GFLOP/s\n")
    print("median ms per call; ratio = contender / baseline per round: median [p10-p90]\n")
    header = [
        "T=S",
        "K",
        "baseline ms",
        "baseline again",
        "ours",
        "ours (dpa)",
        "ours+scores",
        "keras-jit",
        "keras-jit+scores",
        "keras-eager",
        "ours GFLOP/s (% peak)",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for T in lengths:
        rounds = args.rounds or (30 if T <= 512 else 15 if T <= 1024 else 8)
        for K in kv_heads:
            t = bench_shape(T, K, rounds, not args.no_keras)
            base = t["baseline"]
            cells = [str(T), str(K), f"{np.median(base) * 1e3:.2f}"]
            for name in header[3:10]:
                if name not in t:
                    cells.append("-")
                    continue
                r = t[name] / base
                cells.append(
                    f"{np.median(r):.2f}x [{np.percentile(r, 10):.2f}-{np.percentile(r, 90):.2f}]"
                )
            gf = flops(T, T, K) / np.median(t["ours"]) / 1e9
            cells.append(f"{gf:.1f} ({100 * gf / peak:.0f}%)")
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
