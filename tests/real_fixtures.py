"""A temporary Hugging Face cache holding small random checkpoints with tokenizers that fit.

For every page that opens real checkpoints: the Real models page and the pages that take a
real layer as their weight source (Playground, Walkthrough, KV sharing). Each model is a
variant of :data:`tests.checkpoint_fixtures.VARIANTS` written by ``transformers``, its
vocabulary sized to hold a tokenizer trained offline in the family's style
(:mod:`tests.test_checkpoint_tokenizers`), laid out as the Hub cache does (blobs, snapshots,
refs/main) by :func:`hub_cache`:

* ``test-org/tiny-llama``: Llama, N = 8 query heads sharing K = 2 kv heads (yarn RoPE), with a
  Llama 3 style byte-level BPE tokenizer;
* ``test-org/tiny-gpt2``: GPT-2, multi-head (N = K = 4), 64 positions, GPT-2's tokenizer;
* ``test-org/tiny-qwen3``: Qwen3 (RoPE, QK norm);
* ``test-org/tiny-gemma2``: Gemma 2 (a sliding window on layers 0 and 2, a softmax scale
  other than 1/sqrt(H), soft-capped logits);
* ``test-org/pickled``: a config and a pickled ``pytorch_model.bin`` only, which the list shows
  with the reason it cannot be opened.

Test-only: torch and transformers come in through :mod:`tests.checkpoint_fixtures`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tokenizers import Tokenizer as Backend

from tests import checkpoint_fixtures as cf
from tests.test_checkpoint_tokenizers import _gemma, _gpt2, _llama3, _qwen

LLAMA, GPT2, QWEN3, GEMMA2 = (
    "test-org/tiny-llama",
    "test-org/tiny-gpt2",
    "test-org/tiny-qwen3",
    "test-org/tiny-gemma2",
)
PICKLED = "test-org/pickled"
# repo id -> (checkpoint variant, tokenizer builder)
MODELS = {
    LLAMA: ("llama_yarn", _llama3),
    GPT2: ("gpt2", _gpt2),
    QWEN3: ("qwen3", lambda d: _qwen(d, "qwen3", "<|im_end|>")),
    GEMMA2: ("gemma2", lambda d: _gemma(d, "gemma2")),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def write_model(variant: str, build_tokenizer, directory: Path) -> Path:
    """Checkpoint ``variant`` with the tokenizer ``build_tokenizer`` writes, in ``directory``.

    The vocabulary is the tokenizer's, so every id it gives is a row of the embedding.
    """
    directory = Path(directory)
    tok_dir = directory.with_name(directory.name + "-tokenizer")
    tok_dir.parent.mkdir(parents=True, exist_ok=True)
    build_tokenizer(tok_dir)
    vocab = Backend.from_file(str(tok_dir / "tokenizer.json")).get_vocab_size(
        with_added_tokens=True
    )
    cf.write_checkpoint(variant, directory, vocab_size=vocab)
    for name in TOKENIZER_FILES:
        if (tok_dir / name).exists():
            shutil.copy(tok_dir / name, directory / name)
    return directory


def hub_cache(tmp: Path, repos=(LLAMA, GPT2, PICKLED)) -> tuple[Path, dict[str, Path]]:
    """``tmp/hub`` holding ``repos`` in the Hub cache's layout: (hub dir, {repo: snapshot})."""
    tmp = Path(tmp)
    snapshots = {}
    for repo in repos:
        src = tmp / "src" / repo.replace("/", "--")
        if repo == PICKLED:
            src.mkdir(parents=True)
            cf.write_checkpoint("llama_yarn", tmp / "src" / "config-only")
            shutil.copy(tmp / "src" / "config-only" / "config.json", src / "config.json")
            (src / "pytorch_model.bin").write_bytes(b"not really a pickle")
        else:
            variant, build = MODELS[repo]
            write_model(variant, build, src)
        snapshots[repo] = cf.hf_cache_layout(tmp, repo, src)
    return tmp / "hub", snapshots
