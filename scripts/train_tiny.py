"""Train the tiny GQA models shipped in assets/trained/, and the uptraining experiment.

    python -m scripts.train_tiny                    # or make train: models, then experiment
    python -m scripts.train_tiny --experiment-only  # load the models, rerun the experiment

For each task of :mod:`gqa_viz.tasks`, four models that differ only in their number of K/V
heads (K = 8: MHA, 4 and 2: GQA, 1: MQA; N = 8 query heads, head_dim 8, d_model 64, 2
layers, MLP 64), trained from the same seed (0). Then, as in Ainslie et al. (2023) in
miniature, each task's MHA model is converted to K = 4, 2, 1 kv heads (mean-pooled, first or
random head per group), evaluated at once, uptrained for 5 % of the original steps under the
same schedule shape, and evaluated again: once per seed of ``--seeds`` (default 0, 1, 2).
The seed varies the uptraining data and the random-head draw (:func:`draw_seed`); every run
starts from the same MHA model, the seed-0 one. Seed 0 is the first release's single run,
number for number. Every accuracy is measured on one held-out batch
(:data:`gqa_viz.tiny.EVAL_SEED`, never a training stream).

Writes ``<task>-k<K>.safetensors`` (float32, config and card in the metadata; not with
``--experiment-only``, which loads them), ``experiment.json`` (per conversion cell every run,
and the mean, min and max over the runs) and ``MODEL_CARD.md`` to ``--out`` (default
assets/trained).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import numpy as np

from gqa_viz import tiny, trained
from gqa_viz.app.limits import MAX_TRAINED_ASSET_BYTES

DATE = "2026-11-23"  # the models' date (their cards carry it)
EXPERIMENT_DATE = "2026-11-30"
COMMAND = "python -m scripts.train_tiny"
KS = (8, 4, 2, 1)
UPTRAIN_KS = (4, 2, 1)
METHODS = ("mean", "first", "random")
SEED = 0  # the models' training seed
SEEDS = (0, 1, 2)  # the uptraining runs of every conversion cell
LR = 3e-3
BATCH = 64
WARMUP = 0.1
WEIGHT_DECAY = 0.01
CLIP = 1.0
UPTRAIN_FRACTION = 0.05
# Steps per task (multiples of 20, so 5 % of them is a whole number). Copy and sort are
# learned within a few hundred steps; recall waits on a loss plateau (until a previous-token
# head forms) whose length varies with the seed and K (measured: left after 350-450 steps at
# K = 8, after 700 at K = 1, and not at all at K = 1 under a 1000-step schedule), hence its
# margin.
STEPS = {"copy": 500, "recall": 2000, "induction": 1000, "sort": 500}
OPTIMIZER = (
    f"adamw (b1 0.9, b2 0.98, eps 1e-8, weight decay {WEIGHT_DECAY} on kernels and "
    f"embeddings), gradient clipping at global norm {CLIP}"
)
SCHEDULE = f"linear warmup over {WARMUP:.0%} of the steps to the peak, then cosine decay to 0"
SOURCE = (
    "each task's MHA model (K = 8, trained with seed 0: the shipped <task>-k8.safetensors), "
    "the same for every uptraining seed"
)


def _kind(cfg: tiny.Config) -> str:
    N, K = cfg.num_query_heads, cfg.num_key_value_heads
    return "MHA" if K == N else "MQA" if K == 1 else "GQA"


def _acc(a: tiny.Accuracy) -> dict:
    return {"token": round(a.token, 6), "sequence": round(a.sequence, 6)}


def _train(cfg: tiny.Config, steps: int, seed: int = SEED, **kw) -> tiny.TrainResult:
    return tiny.train(
        cfg,
        steps,
        seed=seed,
        lr=LR,
        batch=BATCH,
        warmup=WARMUP,
        weight_decay=WEIGHT_DECAY,
        clip=CLIP,
        **kw,
    )


def draw_seed(seed: int, cfg: tiny.Config) -> int:
    """The random-head draw of uptraining run ``seed``: :func:`gqa_viz.tiny.convert`'s seed.

    Block i keeps the heads ``default_rng(draw_seed + i)`` picks, so seed * num_layers gives
    every run draws of its own (seed 0: convert's default, the first release's draw).
    """
    return seed * cfg.num_layers


def _card(cfg: tiny.Config, params, result: tiny.TrainResult, acc: tiny.Accuracy) -> dict:
    return {
        "name": f"{cfg.task}-k{cfg.num_key_value_heads}",
        "task": cfg.task,
        "task_description": tiny.describe(cfg.task),
        "attention": _kind(cfg),
        "config": json.loads(cfg.to_json()),
        "parameters": tiny.count_params(params),
        "dtype": "float32",
        "training": {
            "steps": len(result.losses),
            "batch": BATCH,
            "seed": SEED,
            "data": f"make_batch from default_rng([{SEED}, 0x7A1, 0])",
            "optimizer": OPTIMIZER,
            "peak_lr": LR,
            "schedule": SCHEDULE,
            "first_loss": round(float(result.losses[0]), 4),
            "final_loss": round(float(result.losses[-20:].mean()), 6),
            "seconds": round(result.seconds, 1),
        },
        "eval": {"seed": tiny.EVAL_SEED, "batch": tiny.EVAL_BATCH, **_acc(acc)},
        "date": DATE,
        "machine": _machine(),
        "command": COMMAND,
    }


def _machine() -> str:
    return (
        f"{platform.machine()} CPU, {jax.device_count()} device(s), jax {jax.__version__}; "
        f"2 cores shared with other work, so times are indicative"
    )


def _task_info(task: str, scratch: dict) -> dict:
    return {
        "steps": STEPS[task],
        "uptrain_steps": round(UPTRAIN_FRACTION * STEPS[task]),
        "description": tiny.describe(task),
        "scratch": {str(K): v for K, v in scratch.items()},
        "mha_token_accuracy": scratch[8]["token"],
    }


def train_models(out: Path, task_names) -> tuple[list, dict, dict]:
    """Train and save every model: (models [(path, card)], per-task info, {task: MHA (params,
    cfg)})."""
    models, per_task, sources = [], {}, {}
    for task in task_names:
        scratch = {}
        for K in KS:
            cfg = tiny.Config.for_task(task, num_key_value_heads=K)
            result = _train(cfg, STEPS[task])
            acc = tiny.evaluate(result.params, cfg)
            card = _card(cfg, result.params, result, acc)
            path = out / f"{card['name']}.safetensors"
            tiny.save(path, result.params, cfg, card)
            models.append((path, card))
            scratch[K] = {**_acc(acc), "seconds": round(result.seconds, 1)}
            print(
                f"{card['name']:>13}: {STEPS[task]} steps in {result.seconds:5.1f} s, "
                f"token {acc.token:.2%}, sequence {acc.sequence:.2%}",
                flush=True,
            )
            if K == cfg.num_query_heads:
                sources[task] = (result.params, cfg)
        per_task[task] = _task_info(task, scratch)
    return models, per_task, sources


def load_models(out: Path, task_names) -> tuple[list, dict, dict]:
    """:func:`train_models`' result from the files in ``out`` (their cards' numbers)."""
    models, per_task, sources = [], {}, {}
    for task in task_names:
        scratch = {}
        for K in KS:
            path = out / f"{task}-k{K}.safetensors"
            params, cfg, card = tiny.load(path)
            models.append((path, card))
            scratch[K] = {
                "token": card["eval"]["token"],
                "sequence": card["eval"]["sequence"],
                "seconds": card["training"]["seconds"],
            }
            if K == cfg.num_query_heads:
                sources[task] = (params, cfg)
        per_task[task] = _task_info(task, scratch)
    return models, per_task, sources


def uptrain_run(mha, K: int, method: str, seed: int, steps: int) -> dict:
    """One run of a conversion cell: MHA model ``mha`` = (params, cfg) converted to K kv heads
    by ``method`` (random heads drawn by :func:`draw_seed`), evaluated, uptrained ``steps``
    steps on the data of ``seed`` (stream 1, which training never read), evaluated again."""
    params, cfg = mha
    draw = draw_seed(seed, cfg)
    params, cfg = tiny.convert(params, cfg, K, method, seed=draw)
    before = tiny.evaluate(params, cfg)
    # Fresh data (stream 1), fresh optimizer state, same schedule shape.
    up = _train(cfg, steps, seed=seed, params=params, stream=1)
    after = tiny.evaluate(up.params, cfg)
    return {
        "seed": seed,
        "draw_seed": draw,
        "before": _acc(before),
        "after": _acc(after),
        "uptrain_seconds": round(up.seconds, 1),
    }


def cell_row(task: str, method: str, K: int, runs: list[dict], scratch: dict) -> dict:
    """experiment.json's row of one cell: per phase and metric the mean over the runs (under
    the first release's keys "token" and "sequence") and the min and max; then the runs."""
    row = {"task": task, "method": method, "K": K, "seeds": [r["seed"] for r in runs]}
    for phase in ("before", "after"):
        stats = {}
        for metric in ("token", "sequence"):
            values = [r[phase][metric] for r in runs]
            stats[metric] = round(float(np.mean(values)), 6)
            stats[f"{metric}_min"], stats[f"{metric}_max"] = min(values), max(values)
        row[phase] = stats
    row["scratch"] = {k: v for k, v in scratch.items() if k != "seconds"}
    row["runs"] = runs
    return row


def run_experiment(task: str, mha, info: dict, seeds) -> list[dict]:
    """Every conversion cell of ``task`` (K, method), one run per seed: its rows."""
    rows = []
    for K in UPTRAIN_KS:
        for method in METHODS:
            runs = [uptrain_run(mha, K, method, s, info["uptrain_steps"]) for s in seeds]
            rows.append(cell_row(task, method, K, runs, info["scratch"][str(K)]))
            before = ", ".join(f"{r['before']['token']:.1%}" for r in runs)
            after = ", ".join(f"{r['after']['token']:.1%}" for r in runs)
            print(
                f"{task:>9} K={K} {method:>6}: converted {before}; uptrained {after} (from "
                f"scratch {info['scratch'][str(K)]['token']:.1%})",
                flush=True,
            )
    return rows


def run(out: Path, task_names, seeds=SEEDS, *, retrain: bool = True) -> dict:
    """Train (or, ``retrain=False``, load) the models in ``out``, run the experiment for
    ``seeds``, and write experiment.json and MODEL_CARD.md."""
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in seeds]
    started = time.perf_counter()
    if retrain:
        models, per_task, sources = train_models(out, task_names)
        models_seconds = time.perf_counter() - started
    else:
        models, per_task, sources = load_models(out, task_names)
        models_seconds = sum(card["training"]["seconds"] for _, card in models)
    exp_started = time.perf_counter()
    rows = []
    for task in task_names:
        rows += run_experiment(task, sources[task], per_task[task], seeds)
    experiment_seconds = time.perf_counter() - exp_started
    sizes = {path.name: path.stat().st_size for path, _ in models}
    total = sum(sizes.values())
    if total > MAX_TRAINED_ASSET_BYTES:
        raise SystemExit(
            f"The models take {total} bytes, over the {MAX_TRAINED_ASSET_BYTES} allowed."
        )
    experiment = {
        "date": EXPERIMENT_DATE,
        "command": COMMAND if retrain else f"{COMMAND} --experiment-only",
        "paper": "Ainslie et al. 2023, GQA: Training Generalized Multi-Query Transformer "
        "Models from Multi-Head Checkpoints (uptraining in miniature)",
        "eval": {"seed": tiny.EVAL_SEED, "batch": tiny.EVAL_BATCH},
        "training": {
            "seed": SEED,
            "batch": BATCH,
            "peak_lr": LR,
            "optimizer": OPTIMIZER,
            "schedule": SCHEDULE,
            "data": "train: default_rng([seed, 0x7A1, 0]); uptrain: default_rng([seed, 0x7A1, 1])",
        },
        "uptraining": {
            "fraction": UPTRAIN_FRACTION,
            "start": SOURCE + ", converted by gqa_viz.tiny.convert",
            "methods": list(METHODS),
            "seeds": seeds,
            "seed": "run s uptrains on default_rng([s, 0x7A1, 1]); its random heads: "
            "tiny.convert(seed=s * num_layers), block i drawing with default_rng(s * "
            "num_layers + i)",
            "cell": "before and after: mean over the runs under token and sequence, and "
            "<metric>_min, <metric>_max; runs: one per seed",
            "schedule": "the same shape over the uptraining steps (warmup, cosine to 0), "
            "same peak lr, fresh optimizer state",
        },
        "tasks": per_task,
        "rows": rows,
        "sizes_bytes": sizes,
        "total_bytes": total,
        "timing": {
            "models": "trained in this run"
            if retrain
            else "loaded; the seconds their "
            "cards give (trained by an earlier full run, on the same kind of machine)",
            "models_seconds": round(models_seconds, 1),
            "experiment_seconds": round(experiment_seconds, 1),
            "whole_run_seconds": round(models_seconds + experiment_seconds, 1),
        },
        "seconds": round(time.perf_counter() - started, 1),
        "machine": _machine(),
    }
    (out / "experiment.json").write_text(json.dumps(experiment, indent=1) + "\n")
    (out / "MODEL_CARD.md").write_text(model_card(models, experiment))
    return experiment


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def cell_text(stats: dict, metric: str = "token") -> str:
    """ "81.1% (6.7–99.0)": a cell's mean over the runs and its min–max, in percent."""
    lo, hi = stats[f"{metric}_min"], stats[f"{metric}_max"]
    return f"{_pct(stats[metric])} ({100 * lo:.1f}–{100 * hi:.1f})"


def verdicts(experiment: dict, task: str) -> str:
    """Which start is best after uptraining at each K of ``task``, by the page's rule
    (:func:`gqa_viz.trained.compare`)."""
    names = {"mean": "mean-pool", "first": "first head", "random": "random head"}
    parts = []
    for K in UPTRAIN_KS:
        c = trained.compare(experiment, task, K, "after")
        if c.best:
            parts.append(f"K = {K} {names[c.best]} best")
        else:
            parts.append(f"K = {K} runs overlap")
    return ", ".join(parts)


def model_card(models: list, experiment: dict) -> str:
    """MODEL_CARD.md: every model, then the uptraining table."""
    first = models[0][1]["config"]
    up = experiment["uptraining"]
    seeds = up["seeds"]
    timing = experiment["timing"]
    loaded = not timing["models"].startswith("trained")
    lines = [
        "# Tiny GQA models",
        "",
        f"Decoder-only transformers trained on synthetic tasks whose right attention is known "
        f"(`gqa_viz/tasks.py`), with this project's grouped-query attention layer "
        f"(`gqa_viz/tiny.py`): each block's `attention` weights are a "
        f"`keras.layers.GroupQueryAttention` weight set as they are. Models: {DATE}; "
        f"uptraining experiment: {experiment['date']}.",
        "",
        f"- Architecture (all models): token + learned position embeddings, "
        f"{first['num_layers']} pre-LayerNorm blocks (causal GQA self-attention with biases, "
        f"GELU MLP of width {first['mlp_dim']}), final LayerNorm, untied unembedding; "
        f"d_model {first['d_model']}, {first['num_query_heads']} query heads of head_dim "
        f"{first['head_dim']}, K kv heads as named. Weights stored in float32.",
        f"- Training: {experiment['training']['optimizer']}; peak lr "
        f"{experiment['training']['peak_lr']}, {experiment['training']['schedule']}; batch "
        f"{experiment['training']['batch']}, seed {experiment['training']['seed']}; loss on the "
        f"answer positions only. One model per task and K (one training seed).",
        f"- Evaluation: one held-out batch of {experiment['eval']['batch']} sequences, "
        f"`make_batch(task, {experiment['eval']['seed']}, {experiment['eval']['batch']})` (a seed "
        f"no training stream uses); token accuracy over answer positions (argmax), sequence "
        f"accuracy = every answer of the sequence right.",
        f"- Times: wall clock including compilation, on {experiment['machine']}. Training "
        f"the {len(models)} models: {timing['models_seconds'] / 60:.1f} min"
        f"{' (their cards, from the full run that trained them)' if loaded else ''}; the "
        f"uptraining experiment, {len(seeds)} seeds: "
        f"{timing['experiment_seconds'] / 60:.1f} min. The whole `make train` (both) takes "
        f"about {timing['whole_run_seconds'] / 60:.0f} min on 2 cores.",
        f"- Reproduce: `{COMMAND}` (or `make train`); same seeds, same files up to float "
        f"round-off. `{COMMAND} --experiment-only` keeps the models and reruns the experiment.",
        "",
        "| model | task | attention | parameters | steps | train s | token acc | sequence acc | "
        "size |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path, card in models:
        lines.append(
            f"| `{path.name}` | {card['task']} | {card['attention']} (K = "
            f"{card['config']['num_key_value_heads']}) | {card['parameters']:,} | "
            f"{card['training']['steps']} | {card['training']['seconds']:.1f} | "
            f"{_pct(card['eval']['token'])} | {_pct(card['eval']['sequence'])} | "
            f"{experiment['sizes_bytes'][path.name] / 1024:.0f} KiB |"
        )
    lines += ["", f"Total size: {experiment['total_bytes'] / 2**20:.2f} MiB.", ""]
    lines += ["## Tasks", ""]
    for task, info in experiment["tasks"].items():
        lines += [f"- **{task}** ({info['steps']} steps): {info['description']}"]
    seed_list = ", ".join(str(s) for s in seeds)
    lines += [
        "",
        "## Uptraining (Ainslie et al., 2023, in miniature)",
        "",
        f"Each task's MHA model (K = 8) converted to K kv heads by mean-pooling each group's "
        f"K/V heads (mean), keeping the group's first head (first) or a random one (random); "
        f"answer-token accuracy right after conversion and after uptraining for "
        f"{up['fraction']:.0%} of the original steps (same peak lr and schedule shape, fresh "
        f"optimizer state, fresh data), next to the model of that K trained from scratch for "
        f"all the steps.",
        "",
        f"{len(seeds)} runs per cell, seeds {seed_list}. The seed varies the uptraining data "
        f"(`default_rng([seed, 0x7A1, 1])`) and, for random, the heads kept (block i draws "
        f"with `default_rng(seed * {first['num_layers']} + i)`). Every run starts from the "
        f"same source: the shipped MHA model of the task (`<task>-k8.safetensors`, trained "
        f"with seed 0); the source and the from-scratch models were not retrained per seed, "
        f"so their own spread over training seeds is not measured here. Seed 0 is the first "
        f"release's single run. Each cell: the mean over the runs, (min–max) in percent; "
        f"mean and first convert the same way in every run, so their converted numbers do "
        f"not vary.",
        "",
        f"| task | K | method | converted | uptrained | uptrained per seed ({seed_list}) | "
        f"from scratch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in experiment["rows"]:
        per_seed = ", ".join(_pct(run["after"]["token"]) for run in r["runs"])
        lines.append(
            f"| {r['task']} | {r['K']} | {r['method']} | {cell_text(r['before'])} | "
            f"{cell_text(r['after'])} | {per_seed} | {_pct(r['scratch']['token'])} |"
        )
    lines += [
        "",
        "## Notes",
        "",
        "- Recall asks 3 queries per sequence (`k1 v1 .. k8 v8 = q1 a1 q2 a2 q3 a3`): with a "
        "single query, the models sat on a loss plateau for 1000-2000+ steps depending on the "
        "seed, longer than a training run here.",
        "- In copy, recall and induction a head of the last layer puts 80-100% of its attention "
        "on the key holding the answer (`gqa_viz.tasks.answer_keys`). Sort is solved without "
        "such a lookup head: the best head gives the answer 23-46%, the rest spread over the "
        "inputs and the numbers written so far (which numbers are present is enough to sort "
        "distinct numbers).",
        f"- A method is called better than another only where its worst run beats the "
        f"other's best (as on the Trained heads page); otherwise their runs overlap. With "
        f"{len(seeds)} runs each, two methods that do not differ at all are still separated "
        f"that way, one way or the other, "
        f"{_separation_odds(len(seeds))}. After uptraining:",
    ]
    lines += [f"  - {task}: {verdicts(experiment, task)}." for task in experiment["tasks"]]
    lines += ["", "## Model details", ""]
    for path, card in models:
        t = card["training"]
        lines += [
            f"### {card['name']}",
            "",
            f"- File: `assets/trained/{path.name}`; task {card['task']}; {card['attention']} "
            f"with K = {card['config']['num_key_value_heads']} kv heads; "
            f"{card['parameters']:,} parameters (float32).",
            f"- Config: `{json.dumps(card['config'], sort_keys=True)}`",
            f"- Training: {t['steps']} steps, batch {t['batch']}, seed {t['seed']}, "
            f"{t['optimizer']}, peak lr {t['peak_lr']}; loss {t['first_loss']} -> "
            f"{t['final_loss']}; {t['seconds']:.1f} s.",
            f"- Held-out accuracy (seed {card['eval']['seed']}, {card['eval']['batch']} "
            f"sequences): token {_pct(card['eval']['token'])}, sequence "
            f"{_pct(card['eval']['sequence'])}.",
            f"- Date {card['date']}; reproduce: `{card['command']}`.",
            "",
        ]
    return "\n".join(lines)


def _separation_odds(n: int) -> str:
    """How often n exchangeable runs of each of two methods come out fully separated (every
    run of one above every run of the other): 2 (n!)^2 / (2n)!, as "1 time in 10" for n = 3."""
    from math import comb

    return f"1 time in {comb(2 * n, n) // 2}"


def rewrite_card(out: Path) -> None:
    """MODEL_CARD.md again from the files in ``out`` (no training)."""
    experiment = json.loads((out / "experiment.json").read_text())
    paths = [out / f"{task}-k{K}.safetensors" for task in experiment["tasks"] for K in KS]
    models = [(path, tiny.load(path).card) for path in paths]
    (out / "MODEL_CARD.md").write_text(model_card(models, experiment))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("assets/trained"))
    parser.add_argument("--tasks", nargs="+", default=list(tiny.TASKS), choices=tiny.TASKS)
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=list(SEEDS), help="uptraining runs per cell"
    )
    parser.add_argument(
        "--experiment-only",
        action="store_true",
        help="load the models in --out instead of training them; rerun the experiment",
    )
    parser.add_argument(
        "--card-only", action="store_true", help="rewrite MODEL_CARD.md from the files only"
    )
    args = parser.parse_args(argv)
    if args.card_only:
        rewrite_card(args.out)
        return
    experiment = run(args.out, args.tasks, args.seeds, retrain=not args.experiment_only)
    t = experiment["timing"]
    print(
        f"done: models {t['models_seconds']:.0f} s, experiment {t['experiment_seconds']:.0f} s; "
        f"models {experiment['total_bytes']} bytes"
    )


if __name__ == "__main__":
    main()
