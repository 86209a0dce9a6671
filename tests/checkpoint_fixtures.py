"""Small random Hugging Face checkpoints written by ``transformers`` itself, for tests only.

Each variant in :data:`VARIANTS` is a tiny config of one family (vocabulary 64-128, model dim
32-64, 2-3 layers) chosen to exercise what that family adds: N != K everywhere, head_dim !=
D / N where the family allows it, sliding windows shorter than the test sequence (T = 64),
every ``rope_scaling`` kind Llama configs use, Qwen2's q/k/v biases, Qwen3's QK-norm, Gemma's
tied embeddings and (1 + w) norms, Gemma 2's soft-capping, GPT-2's fused Conv1D weights.

:func:`write_checkpoint` builds ``XForCausalLM(config)`` and widens its random weights (x3 on
top of ``initializer_range`` 0.1, biases drawn non-zero, norm weights drawn around their
identity value) so attention is far from uniform, then calls ``save_pretrained``. The other
helpers turn such a directory into what the Hub really serves: the older config dialect
(:func:`rewrite_hub_dialect`), GPT-2 keys without ``transformer.`` (:func:`unprefix_gpt2`),
sharded weights (:func:`shard`) and the Hub cache's blobs/snapshots layout
(:func:`hf_cache_layout`). :func:`transformers_reference` runs Hugging Face's eager attention
for the numbers our loader must reproduce.

``torch``, ``transformers`` and ``safetensors.torch`` are imported here and in tests only.

Axis letters: B batch, T sequence length, N query heads, K kv heads, H head_dim, D model dim,
L layers, V vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

WIDEN = 3.0
INIT_STD = 0.06
# Norm weights are drawn around their identity value with this spread.
NORM_SPREAD = 0.2
# Added to the identity of QK-norm weights (Qwen3): see build_model.
QK_NORM_GAIN = 0.5
# The sequence length the windows and rope scalings below are sized against.
T_LONG = 64
WINDOW = 16


@dataclass(frozen=True)
class Variant:
    """One checkpoint to build: a family, its transformers config class and arguments."""

    family: str
    config_class: str
    model_class: str
    kwargs: dict = field(default_factory=dict)
    # dtype the weights are stored in (the loader computes in float32 regardless).
    stored_dtype: str = "float32"


def _llama_like(**extra) -> dict:
    base = dict(
        vocab_size=96,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,  # != D / N = 12
        max_position_embeddings=128,
        initializer_range=INIT_STD,
        rms_norm_eps=1e-6,
    )
    base.update(extra)
    if base["head_dim"] is None:  # the family derives it as D / N
        del base["head_dim"]
    return base


VARIANTS: dict[str, Variant] = {
    "llama_llama3": Variant(
        "llama",
        "LlamaConfig",
        "LlamaForCausalLM",
        _llama_like(
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            )
        ),
    ),
    # SmolLM-like: tied embeddings, MQA, head_dim == D / N, linear position interpolation.
    "llama_linear": Variant(
        "llama",
        "LlamaConfig",
        "LlamaForCausalLM",
        _llama_like(
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=8,
            tie_word_embeddings=True,
            rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0),
        ),
    ),
    # Dynamic NTK changes the frequencies only past max_position_embeddings, so it is < T.
    "llama_dynamic": Variant(
        "llama",
        "LlamaConfig",
        "LlamaForCausalLM",
        _llama_like(
            num_hidden_layers=3,
            max_position_embeddings=32,
            rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0),
        ),
    ),
    "llama_yarn": Variant(
        "llama",
        "LlamaConfig",
        "LlamaForCausalLM",
        _llama_like(
            hidden_size=64,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=16,  # != D / N = 8
            rope_parameters=dict(
                rope_type="yarn",
                rope_theta=10000.0,
                factor=4.0,
                original_max_position_embeddings=32,
            ),
        ),
    ),
    "mistral": Variant(
        "mistral",
        "MistralConfig",
        "MistralForCausalLM",
        _llama_like(sliding_window=WINDOW),
    ),
    "qwen2": Variant(
        "qwen2",
        "Qwen2Config",
        "Qwen2ForCausalLM",
        _llama_like(head_dim=None, vocab_size=128, rope_parameters=dict(rope_theta=1000000.0)),
    ),
    # Layers >= max_window_layers use the window (Qwen2's rule; transformers 5 writes it out
    # as layer_types).
    "qwen2_windowed": Variant(
        "qwen2",
        "Qwen2Config",
        "Qwen2ForCausalLM",
        _llama_like(
            head_dim=None,
            num_hidden_layers=3,
            use_sliding_window=True,
            sliding_window=WINDOW,
            max_window_layers=1,
        ),
    ),
    "qwen3": Variant(
        "qwen3",
        "Qwen3Config",
        "Qwen3ForCausalLM",
        _llama_like(tie_word_embeddings=True),
    ),
    # Gemma 2B-like: one kv head, head_dim != D / N, tied embeddings.
    "gemma": Variant(
        "gemma",
        "GemmaConfig",
        "GemmaForCausalLM",
        _llama_like(num_key_value_heads=1),
    ),
    # Gemma ships bfloat16 weights: stored as such, computed in float32.
    "gemma_bf16": Variant(
        "gemma",
        "GemmaConfig",
        "GemmaForCausalLM",
        _llama_like(num_key_value_heads=2, vocab_size=64),
        stored_dtype="bfloat16",
    ),
    # Soft caps low enough to bend these logits; local layers (0 and 2) see the last 16 keys.
    "gemma2": Variant(
        "gemma2",
        "Gemma2Config",
        "Gemma2ForCausalLM",
        _llama_like(
            num_hidden_layers=3,
            sliding_window=WINDOW,
            query_pre_attn_scalar=24,  # != head_dim
            attn_logit_softcapping=5.0,
            final_logit_softcapping=4.0,
        ),
    ),
    "gpt2": Variant(
        "gpt2",
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(
            vocab_size=80,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=T_LONG,
            initializer_range=INIT_STD,
            bos_token_id=0,
            eos_token_id=0,
        ),
    ),
}

# Families whose RMSNorm multiplies by (1 + w): their identity weight is 0, not 1.
_ONE_PLUS_W_NORMS = ("gemma", "gemma2", "gemma3")


def make_config(name: str, **overrides):
    """Variant ``name``'s transformers config; ``overrides`` replace its arguments (e.g. a
    ``vocab_size`` that holds a test tokenizer's vocabulary)."""
    variant = VARIANTS[name]
    return getattr(transformers, variant.config_class)(**{**variant.kwargs, **overrides})


VARIANTS_VOCAB = {name: make_config(name).vocab_size for name in VARIANTS}


def _is_norm(param_name: str) -> bool:
    leaf = param_name.rsplit(".", 2)
    owner = leaf[-2] if len(leaf) >= 2 else ""
    return "norm" in owner or owner.startswith("ln_")


def _is_qk_norm(param_name: str) -> bool:
    return ".q_norm." in param_name or ".k_norm." in param_name


@torch.no_grad()
def build_model(name: str, *, widen: float = WIDEN, seed: int = 0, **overrides):
    """``XForCausalLM(config)`` with widened random weights, in float32, eval mode;
    ``overrides`` as for :func:`make_config`."""
    variant = VARIANTS[name]
    torch.manual_seed(seed)
    model = getattr(transformers, variant.model_class)(make_config(name, **overrides)).eval()
    identity = 0.0 if variant.family in _ONE_PLUS_W_NORMS else 1.0
    gen = torch.Generator().manual_seed(seed + 1)
    for pname, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        if _is_norm(pname):
            if pname.endswith(".bias"):
                centre = 0.0
            elif _is_qk_norm(pname):
                # Normalised q and k would give near-uniform attention at unit scale.
                centre = identity + QK_NORM_GAIN
            else:
                centre = identity
            p.copy_(centre + NORM_SPREAD * noise)
        elif pname.endswith(".bias"):
            # transformers initialises biases to 0, which would leave a bias path untested.
            p.copy_(INIT_STD * widen * noise)
        else:
            p.mul_(widen)
    return model


def write_checkpoint(
    name: str, directory, *, widen: float = WIDEN, seed: int = 0, **overrides
) -> Path:
    """Write variant ``name`` with ``save_pretrained`` into ``directory``; returns it.
    ``overrides`` replace config arguments (:func:`make_config`)."""
    directory = Path(directory)
    model = build_model(name, widen=widen, seed=seed, **overrides)
    dtype = getattr(torch, VARIANTS[name].stored_dtype)
    if dtype != torch.float32:
        model = model.to(dtype)
    model.save_pretrained(directory)
    return directory


def read_config(directory) -> dict:
    return json.loads((Path(directory) / "config.json").read_text())


def write_config(directory, config: dict) -> None:
    (Path(directory) / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def copy_checkpoint(src, dst) -> Path:
    """A copy of checkpoint directory ``src`` at ``dst`` (plain files; links resolved)."""
    shutil.copytree(src, dst, symlinks=False)
    return Path(dst)


def rewrite_hub_dialect(directory, *, type_key: str = "rope_type") -> None:
    """Rewrite ``config.json`` from transformers 5's dialect into the Hub's older one.

    transformers 5 writes ``rope_parameters`` (theta inside) and ``layer_types``; configs on
    the Hub have a top-level ``rope_theta``, ``rope_scaling`` (null, or a dict keyed by
    ``rope_type`` or, in older files, ``type``), ``torch_dtype`` and no ``layer_types``: the
    windowed layers follow from ``use_sliding_window``/``max_window_layers`` (Qwen2) or from
    the family's fixed alternation with a bare ``sliding_window`` (Gemma 2).
    """
    cfg = read_config(directory)
    cfg.pop("layer_types", None)
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    rope = cfg.pop("rope_parameters", None)
    if rope is not None:
        rope = dict(rope)
        cfg["rope_theta"] = rope.pop("rope_theta")
        kind = rope.pop("rope_type", "default")
        cfg["rope_scaling"] = None if kind == "default" else {type_key: kind, **rope}
    if cfg.get("model_type") == "qwen2" and not cfg.get("use_sliding_window"):
        # Qwen2.5 configs carry a sliding_window number even with use_sliding_window false
        # (it is then ignored); make it one that would bite if a loader applied it.
        cfg["sliding_window"] = WINDOW // 2
    if cfg.get("model_type") == "gpt2":
        cfg["n_ctx"] = cfg["n_positions"]
    write_config(directory, cfg)


def unprefix_gpt2(directory, *, mask_buffers: bool = False) -> None:
    """Rename GPT-2's ``transformer.*`` tensors to bare names, like openai-community/gpt2.

    With ``mask_buffers`` also store each layer's old causal-mask buffer ``h.{i}.attn.bias``
    ([1, 1, P, P]), which older GPT-2 files carry and a loader must ignore.
    """
    path = Path(directory) / "model.safetensors"
    tensors = load_file(path)
    renamed = {k.removeprefix("transformer."): v.contiguous() for k, v in tensors.items()}
    if renamed.keys() == tensors.keys():
        raise AssertionError("no transformer.-prefixed key to rename; did save_pretrained change?")
    if mask_buffers:
        cfg = read_config(directory)
        n_pos = cfg["n_positions"]
        mask = torch.tril(torch.ones(n_pos, n_pos, dtype=torch.float32))[None, None]
        for i in range(cfg["n_layer"]):
            renamed[f"h.{i}.attn.bias"] = mask.clone()
    save_file(renamed, path, metadata={"format": "pt"})


def shard(directory, n: int) -> list[str]:
    """Split ``model.safetensors`` into ``n`` shards plus ``model.safetensors.index.json``.

    Names and index follow ``save_pretrained(max_shard_size=...)``:
    ``model-00001-of-0000n.safetensors`` and ``{"metadata": {"total_size": bytes},
    "weight_map": {tensor: shard}}``. Returns the shard names.
    """
    directory = Path(directory)
    single = directory / "model.safetensors"
    tensors = load_file(single)
    keys = sorted(tensors)
    if n > len(keys):
        raise ValueError(f"cannot split {len(keys)} tensors into {n} shards")
    groups = np.array_split(np.arange(len(keys)), n)
    names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    weight_map, total = {}, 0
    for shard_name, idx in zip(names, groups):
        part = {keys[i]: tensors[keys[i]].contiguous() for i in idx}
        save_file(part, directory / shard_name, metadata={"format": "pt"})
        for k, v in part.items():
            weight_map[k] = shard_name
            total += v.numel() * v.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    single.unlink()
    return names


def hf_cache_layout(tmp, repo_id: str, src_dir, *, revision: str | None = None) -> Path:
    """Lay ``src_dir``'s files out as the Hub cache does; returns the snapshot directory.

    ``tmp/hub/models--ORG--NAME/blobs/<sha256>`` holds the contents,
    ``snapshots/<revision>/<file>`` are relative symlinks ``../../blobs/<sha256>`` and
    ``refs/main`` holds the revision, as ``huggingface_hub`` writes them.
    """
    org, name = repo_id.split("/")
    repo = Path(tmp) / "hub" / f"models--{org}--{name}"
    revision = revision or hashlib.sha1(repo_id.encode()).hexdigest()
    blobs, snap, refs = repo / "blobs", repo / "snapshots" / revision, repo / "refs"
    for d in (blobs, snap, refs):
        d.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(src_dir).iterdir()):
        if not f.is_file():
            continue
        data = f.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / digest)
    (refs / "main").write_text(revision)
    return snap


def random_ids(vocab_size: int, batch: int = 2, length: int = T_LONG, seed: int = 0):
    """Token ids [B, T] int32, uniform over the vocabulary."""
    return np.random.default_rng(seed).integers(0, vocab_size, size=(batch, length), dtype=np.int32)


@torch.no_grad()
def transformers_reference(directory, ids, *, dtype=torch.float32):
    """Hugging Face's eager forward: (logits [B, T, V], list of L probs [B, N, T, T]) as numpy.

    The model is loaded afresh on every call: dynamic NTK rope keeps state between calls.
    """
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, attn_implementation="eager", dtype=dtype
    ).eval()
    out = model(torch.as_tensor(np.asarray(ids), dtype=torch.long), output_attentions=True)
    logits = out.logits.to(torch.float64).numpy()
    probs = [a.to(torch.float64).numpy() for a in out.attentions]
    return logits, probs


def hf_config(directory):
    """The config transformers reads from ``directory`` (either dialect)."""
    return transformers.AutoConfig.from_pretrained(directory)


def expected_windows(directory) -> tuple:
    """Per-layer window (None = global) as transformers builds the model from ``directory``."""
    cfg = hf_config(directory)
    n_layers = cfg.num_hidden_layers
    layer_types = getattr(cfg, "layer_types", None)
    window = getattr(cfg, "sliding_window", None)
    if cfg.model_type == "gpt2":
        return (None,) * n_layers
    if layer_types is None:  # mistral: the one window applies everywhere
        return (window,) * n_layers
    return tuple(window if t == "sliding_attention" else None for t in layer_types)
