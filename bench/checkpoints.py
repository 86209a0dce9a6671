"""Benchmark: a real-sized checkpoint's forward pass, ours against Hugging Face transformers.

Run: ``make bench-checkpoints`` (or ``python -m bench.checkpoints [--models smollm2 llama1b]
[--rounds R] [--tokens T]``). About 4 minutes on 2 CPU cores with both models (most of it
writing the random 1B checkpoint). Not part of CI.

Axis letters: B batch, T tokens, L layers, N query heads, K kv heads, H head_dim, D model dim.

For each model shape (no pretrained weights can be downloaded here, so a random checkpoint with
the published config's shapes is written by ``transformers``), stored in bfloat16 as the real
ones are and in float32 (``--dtypes``):

* SmolLM2-135M: L 30, D 576, N 9, K 3, H 64, MLP 1536, vocabulary 49,152, tied embeddings.
* Llama-3.2-1B: L 16, D 2048, N 32, K 8, H 64, MLP 8192, vocabulary 128,256, llama3 RoPE.

it measures, B = 1, T = 128:

* load: :func:`gqa_viz.checkpoints.load` in a fresh subprocess; its peak resident memory
  above the interpreter's (the kernel's high-water mark, reset before loading) over the bytes
  stored on disk.
* compile: lowering and compiling our forward program ahead of time (every layer's
  probabilities); first call: our first ``forward``, which compiles it again and runs.
* warm: ours (``forward(ids)``, all L layers' [B, N, T, T] probabilities and the logits)
  against transformers' eager forward with ``output_attentions=True`` in float32, on the same
  threads, rounds interleaved; medians and their ratio. transformers converts the weights to
  float32 when it loads them (twice the memory of bf16); ours keep the stored dtype and
  convert each layer's weights as the layer runs, which on a CPU costs a pass over memory per
  call: the float32 rows compare the two computations alone. Both must agree (checked: logits to
  1e-3, probabilities to 1e-4, as the weights are identical).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

MODELS = {
    "smollm2": dict(
        title="SmolLM2-135M",
        config=dict(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            rope_theta=100000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
        ),
    ),
    "llama1b": dict(
        title="Llama-3.2-1B",
        config=dict(
            vocab_size=128256,
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=64,
            max_position_embeddings=131072,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500000.0,
                factor=32.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=8192,
            ),
        ),
    ),
}


def _write(name: str, directory: str, dtype: str = "bfloat16") -> None:
    import torch
    import transformers

    spec = dict(MODELS[name]["config"])
    theta = spec.pop("rope_theta", None)
    if theta is not None:
        spec["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**spec)
    with torch.device("cpu"):
        model = transformers.LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(directory)
    del model


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        lines = f.readlines()
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _load_child(directory: str) -> None:
    """In a fresh process: peak memory of loading, as JSON on stdout.

    The kernel's high-water mark (VmHWM) is reset just before loading (``clear_refs`` 5), so
    start-up transients of the interpreter and JAX do not count; peak = VmHWM after the load
    minus the resident memory before it.
    """
    import jax

    from gqa_viz import checkpoints

    jax.numpy.zeros(1).block_until_ready()  # the runtime's own memory is not the load's
    before = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    t = time.perf_counter()
    ckpt = checkpoints.load(directory)
    seconds = time.perf_counter() - t
    peak = _status_bytes("VmHWM") - before
    print(json.dumps({"peak": peak, "stored": ckpt.summary.stored_bytes, "seconds": seconds}))


def _measure_load(directory: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.checkpoints", "--load-child", directory],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compile_seconds(ckpt, T: int) -> float:
    """Lowering and compiling the forward program (all layers' probabilities) ahead of time."""
    from gqa_viz.checkpoints import model

    arch = ckpt.arch
    Tp = model.padded_length(arch, T)
    ids = np.zeros((1, Tp), np.int32)
    chosen = tuple(range(arch.num_layers))
    t = time.perf_counter()
    model._forward.lower(ckpt.weights, ids, arch=arch, chosen=chosen, inputs=False).compile()
    return time.perf_counter() - t


def _bench(name: str, dtype: str, rounds: int, T: int) -> dict:
    import torch
    import transformers

    from gqa_viz import checkpoints

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        _write(name, d, dtype)
        title = MODELS[name]["title"]
        print(f"  wrote {title} ({dtype}) in {time.perf_counter() - t:.0f} s", flush=True)
        load = _measure_load(d)
        ckpt = checkpoints.load(d)
        ref = transformers.AutoModelForCausalLM.from_pretrained(
            d, attn_implementation="eager", dtype=torch.float32
        ).eval()
    ids = np.random.default_rng(0).integers(0, ckpt.arch.vocab_size, (1, T))
    compile_s = _compile_seconds(ckpt, T)
    t = time.perf_counter()
    logits, probs = ckpt.forward(ids)
    first_s = time.perf_counter() - t
    tids = torch.tensor(ids)

    def theirs():
        with torch.no_grad():
            return ref(tids, output_attentions=True)

    out = theirs()
    logit_diff = float(np.abs(logits - out.logits.numpy()).max())
    prob_diff = max(float(np.abs(p - a.numpy()).max()) for p, a in zip(probs, out.attentions))
    assert logit_diff < 1e-3 and prob_diff < 1e-4, (logit_diff, prob_diff)
    ours_t, theirs_t = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        ckpt.forward(ids)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        theirs()
        theirs_t.append(time.perf_counter() - t)
    ours_m, theirs_m = statistics.median(ours_t), statistics.median(theirs_t)
    return dict(
        model=MODELS[name]["title"],
        dtype=dtype,
        arch=ckpt.arch.describe(),
        params=ckpt.params,
        load_s=load["seconds"],
        peak_over_stored=load["peak"] / load["stored"],
        stored_mb=load["stored"] / 2**20,
        compile_s=compile_s,
        first_s=first_s,
        ours_ms=ours_m * 1e3,
        theirs_ms=theirs_m * 1e3,
        ratio=ours_m / theirs_m,
        logit_diff=logit_diff,
        prob_diff=prob_diff,
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32"]
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--load-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_child:
        _load_child(args.load_child)
        return
    import jax
    import torch

    print(
        f"{platform.node()} | {os.cpu_count()} CPUs | jax {jax.__version__} "
        f"({jax.default_backend()}) | torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads) | B = 1, T = {args.tokens}, {args.rounds} interleaved rounds"
    )
    rows = [
        _bench(name, dtype, args.rounds, args.tokens)
        for name in args.models
        for dtype in args.dtypes
    ]
    print()
    print(
        "| model | stored as | params | stored | load | peak / stored | compile | first call | ours "
        "| transformers | ours / theirs | max diff logits, probs |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['dtype']} | {r['params'] / 1e6:,.0f} M | {r['stored_mb']:,.0f} MiB "
            f"| {r['load_s']:.1f} s | {r['peak_over_stored']:.2f}x | {r['compile_s']:.1f} s "
            f"| {r['first_s']:.1f} s "
            f"| {r['ours_ms']:,.0f} ms | {r['theirs_ms']:,.0f} ms | {r['ratio']:.2f}x "
            f"| {r['logit_diff']:.1e}, {r['prob_diff']:.1e} |"
        )


if __name__ == "__main__":
    main()
