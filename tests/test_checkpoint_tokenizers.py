"""Checkpoint tokenizers (gqa_viz.checkpoints.tokenizer) against transformers' AutoTokenizer.

For each family a small BPE is trained offline with the ``tokenizers`` library in that
family's real style (normalizer, pre-tokenizer, post-processor, decoder, where its special
tokens sit in the vocabulary) and saved next to the family's published
``tokenizer_config.json`` fields and a ``config.json`` with its ``model_type``, which
AutoTokenizer uses to pick the tokenizer class. Our ids must equal
``AutoTokenizer.from_pretrained(dir)(s).input_ids`` for 20 strings, and our decode must equal
transformers' decode of the same ids both with ``skip_special_tokens=False`` (what the app
shows for a whole sequence: BOS included) and ``True`` (the text alone).

transformers is test-only: the module under test never imports it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tokenizers import (  # noqa: E402
    AddedToken,
    Regex,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from tokenizers import Tokenizer as Backend  # noqa: E402

from gqa_viz.checkpoints.files import CheckpointDir, CheckpointError  # noqa: E402
from gqa_viz.checkpoints.tokenizer import load  # noqa: E402

MAX_BYTES = 10_000_000

CORPUS = [
    "Hello world, this is a small test of grouped-query attention.",
    "The quick brown fox jumps over the lazy dog 12345 times in 3.14159 seconds.",
    "Keys and values are shared by the query heads of a group; don't we'll I'm",
    "你好，世界！注意力机制共享键和值。日本語の文章もあります。",
    "    indented code\n\tfor x in range(10):\n\t\tprint(x)\r\n",
    "Déjà vu: naïve café résumé, Ünïcödé everywhere.",
    "Emoji are rare 🤗 but they appear ❤️ sometimes.",
] * 4

STRINGS = [
    "Hello world",
    "",
    " ",
    "   leading spaces",
    "trailing spaces   ",
    "multiple   spaces  between",
    "line one\nline two",
    "\n\nblank lines first",
    "tab\tseparated\tvalues",
    "你好，世界！注意力机制",
    "emoji 🤗🚀 and ❤️",
    "Déjà vu, naïve cafe\u0301",  # a combining accent: NFC changes it (Qwen)
    "numbers 12345 and 3.14159",
    " Hello",
    "Windows\r\nline ending",
    "mixed 日本語 and English",
    "special<s>tokens <bos> and <|endoftext|><|im_start|>x",
    "The quick brown fox jumps over the lazy dog.",
    "  \t \n  ",
    "don't won't I'm we'll",
]
assert len(STRINGS) == 20

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def _added(content: str, *, special: bool = True) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


def _decoder_of(vocab: dict[str, int], specials: list[str]) -> dict:
    """tokenizer_config.json's added_tokens_decoder for ``specials``."""
    return {str(vocab[s]): _added(s) for s in specials}


def _train(pre_tokenizer, normalizer=None, vocab_size: int = 500, byte_level: bool = False):
    """Vocabulary (tokens in id order) and merges of a BPE trained on CORPUS."""
    tok = Backend(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return sorted(model["vocab"], key=model["vocab"].get), merges


def _vocab(*groups: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for group in groups:
        for token in group:
            vocab.setdefault(token, len(vocab))
    return vocab


def _save(directory: Path, tok: Backend, tokenizer_config: dict | None, model_type: str, **extra):
    directory.mkdir()
    tok.save(str(directory / "tokenizer.json"))
    if tokenizer_config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (directory / "config.json").write_text(json.dumps({"model_type": model_type}))
    for name, content in extra.items():
        (directory / f"{name}.json").write_text(json.dumps(content))


def _sentencepiece_bpe(specials: list[str], *, prepend: bool):
    """Llama 2 / Mistral / Gemma: byte-fallback BPE over "▁"-joined words, specials first."""
    learned, merges = _train(
        pre_tokenizers.Metaspace(prepend_scheme="always" if prepend else "never")
    )
    vocab = _vocab(specials, BYTE_TOKENS, learned)
    return vocab, merges


def _llama2_style(directory: Path, model_type: str, tokenizer_config: dict, *, post=True):
    vocab, merges = _sentencepiece_bpe(["<unk>", "<s>", "</s>"], prepend=True)
    tok = Backend(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    # What transformers' LlamaConverter writes (Llama 2, TinyLlama, Mistral 7B).
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    if post:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
        )
    _save(directory, tok, tokenizer_config, model_type)


def _llama2(directory: Path):
    # meta-llama/Llama-2-7b-hf: the old config format (no added_tokens_decoder; tokens as
    # AddedToken objects), plus special_tokens_map.json.
    def token(content):
        fields = {k: v for k, v in _added(content).items() if k != "special"}
        return {"__type": "AddedToken", **fields}

    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": token("<s>"),
        "clean_up_tokenization_spaces": False,
        "eos_token": token("</s>"),
        "legacy": False,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": token("<unk>"),
    }
    _llama2_style(directory, "llama", config)
    special_map = {
        "bos_token": _added("<s>"),
        "eos_token": _added("</s>"),
        "unk_token": _added("<unk>"),
    }
    (directory / "special_tokens_map.json").write_text(json.dumps(special_map))


def _mistral(directory: Path):
    # mistralai/Mistral-7B-v0.1.
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {"0": _added("<unk>"), "1": _added("<s>"), "2": _added("</s>")},
        "additional_special_tokens": [],
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": True,
        "pad_token": None,
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    _llama2_style(directory, "mistral", config)


def _tinyllama_no_post(directory: Path):
    # A Llama-2-style file without a post-processor, config asking for BOS: transformers 5
    # drops add_bos_token when tokenizer.json exists, so no BOS is added.
    config = {
        "add_bos_token": True,
        "add_eos_token": True,
        "added_tokens_decoder": {"0": _added("<unk>"), "1": _added("<s>"), "2": _added("</s>")},
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "legacy": False,
        "tokenizer_class": "LlamaTokenizerFast",
    }
    _llama2_style(directory, "llama", config, post=False)


def _byte_level_bpe(pre_tokenizer, normalizer=None):
    return _train(pre_tokenizer, normalizer, byte_level=True)


def _llama3(directory: Path):
    # meta-llama/Llama-3.2-1B: byte-level BPE (ignore_merges), a template adding
    # <|begin_of_text|>, tokenizer_class PreTrainedTokenizerFast.
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    learned, merges = _byte_level_bpe(pre)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    vocab = _vocab(learned)
    tok = Backend(models.BPE(vocab, merges, ignore_merges=True))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in specials])
    vocab = tok.get_vocab()
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A",
                pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                special_tokens=[("<|begin_of_text|>", vocab["<|begin_of_text|>"])],
            ),
        ]
    )
    config = {
        "added_tokens_decoder": _decoder_of(vocab, specials),
        "bos_token": "<|begin_of_text|>",
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|end_of_text|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    _save(directory, tok, config, "llama")


def _smollm2(directory: Path):
    # HuggingFaceTB/SmolLM2-135M: byte-level BPE with single digits, specials at ids 0..,
    # tokenizer_class GPT2Tokenizer, no BOS. transformers' GPT2Tokenizer rebuilds the backend
    # without the file's Digits step; training without it gives the vocabulary multi-digit
    # tokens, so the numbers string shows which of the two pipelines is followed.
    learned, merges = _byte_level_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False))
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = _vocab(specials, learned)
    tok = Backend(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in specials])
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": _decoder_of(vocab, specials),
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": "<|im_start|>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "model_max_length": 8192,
        "pad_token": "<|im_end|>",
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "<|endoftext|>",
        "vocab_size": 49152,
    }
    _save(directory, tok, config, "llama")


def _qwen(directory: Path, model_type: str, eos: str):
    # Qwen/Qwen2.5-0.5B and Qwen/Qwen3-0.6B: NFC + regex split + byte-level, specials after
    # the vocabulary, no BOS (bos_token null).
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    learned, merges = _byte_level_bpe(pre, normalizers.NFC())
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Backend(models.BPE(_vocab(learned), merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in specials])
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": _decoder_of(tok.get_vocab(), specials),
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": eos,
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    _save(directory, tok, config, model_type)


def _gemma(directory: Path, model_type: str):
    # google/gemma-2b / gemma-2-2b: "▁" for every space (no prefix), byte fallback, specials
    # <pad> <eos> <bos> <unk> <mask> at ids 0-4, a template adding <bos>.
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    turns = ["<start_of_turn>", "<end_of_turn>"]
    vocab, merges = _sentencepiece_bpe(specials + turns, prepend=False)
    tok = Backend(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in specials + turns])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": _decoder_of(vocab, specials + turns),
        "additional_special_tokens": turns,
        "bos_token": "<bos>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>",
        "legacy": None,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<pad>",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    _save(directory, tok, config, model_type)


def _gpt2(directory: Path):
    # openai-community/gpt2: byte-level BPE, <|endoftext|> last, tokenizer_config.json holds
    # only model_max_length, so the class comes from model_type.
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    learned, merges = _byte_level_bpe(pre)
    tok = Backend(models.BPE(_vocab(learned, ["<|endoftext|>"]), merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken("<|endoftext|>", normalized=True)])
    _save(directory, tok, {"model_max_length": 1024}, "gpt2")


def _variant(build, *, config: dict | None = None, model_type: str | None = None):
    """``build``'s directory with tokenizer_config.json fields changed (None: file removed)."""

    def build_variant(directory: Path):
        build(directory)
        path = directory / "tokenizer_config.json"
        if config is None:
            path.unlink()
        else:
            path.write_text(json.dumps(json.loads(path.read_text()) | config))
        if model_type is not None:
            (directory / "config.json").write_text(json.dumps({"model_type": model_type}))

    return build_variant


def _qwen_stripping_specials(directory: Path):
    """Qwen2 whose added_tokens_decoder asks to strip spaces around specials: Qwen2Tokenizer
    adds its special tokens once more as plain AddedTokens, which strip nothing."""
    _qwen(directory, "qwen2", "<|endoftext|>")
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    for token in config["added_tokens_decoder"].values():
        token.update(lstrip=True, rstrip=True)
    path.write_text(json.dumps(config))


FAMILIES = {
    "llama2": _llama2,
    "llama2-no-post-processor": _tinyllama_no_post,
    "llama3": _llama3,
    "smollm2": _smollm2,
    "mistral": _mistral,
    "qwen2": lambda d: _qwen(d, "qwen2", "<|endoftext|>"),
    "qwen3": lambda d: _qwen(d, "qwen3", "<|im_end|>"),
    "gemma": lambda d: _gemma(d, "gemma"),
    "gemma2": lambda d: _gemma(d, "gemma2"),
    "gpt2": _gpt2,
    # Config fields the rebuilt classes read, and how AutoTokenizer picks a class.
    "llama2-legacy": _variant(_llama2, config={"legacy": True}),
    "llama2-no-prefix-space": _variant(_llama2, config={"add_prefix_space": False}),
    "mistral-file-llama-model": _variant(_mistral, config={}, model_type="llama"),
    "llama3-declared-llama": _variant(_llama3, config={"tokenizer_class": "LlamaTokenizerFast"}),
    "qwen2-split-special-tokens": _variant(
        lambda d: _qwen(d, "qwen2", "<|endoftext|>"), config={"split_special_tokens": True}
    ),
    "qwen2-stripping-specials": _qwen_stripping_specials,
    "gpt2-add-prefix-space": _variant(_gpt2, config={"add_prefix_space": True}),
    "gemma-no-tokenizer-config": _variant(lambda d: _gemma(d, "gemma"), config=None),
}


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    dirs = {}
    for name, build in FAMILIES.items():
        build(root / name)
        dirs[name] = root / name
    return dirs


@pytest.fixture(scope="session")
def pairs(family_dirs):
    """(ours, transformers') tokenizer per family, each loaded once."""
    transformers = pytest.importorskip("transformers")
    out = {}
    for name, directory in family_dirs.items():
        ours = load(CheckpointDir(directory), max_bytes=MAX_BYTES)
        out[name] = ours, transformers.AutoTokenizer.from_pretrained(str(directory))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_ids_and_decoding_match_transformers(pairs, family):
    ours, theirs = pairs[family]
    for text in STRINGS:
        ids = ours.encode(text)
        assert ids == theirs(text).input_ids, (family, text)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(
                ids, skip_special_tokens=skip
            ), (family, text, skip)


@pytest.mark.parametrize("family", FAMILIES)
def test_special_ids_and_vocab_size_match_transformers(pairs, family):
    ours, theirs = pairs[family]
    assert ours.bos_id == theirs.bos_token_id
    assert ours.eos_id == theirs.eos_token_id
    assert ours.vocab_size == len(theirs)


def test_bos_handling_per_family(pairs):
    """BOS comes from tokenizer.json's post-processor: add_bos_token in the config is ignored."""
    first = {name: pair[0].encode("Hello world")[0] for name, pair in pairs.items()}
    bos = {name: pair[0].bos_id for name, pair in pairs.items()}
    for name in ("llama2", "llama3", "mistral", "gemma", "gemma2"):
        assert first[name] == bos[name] is not None, name
    for name in ("qwen2", "qwen3", "gpt2", "smollm2", "llama2-no-post-processor"):
        assert first[name] != bos[name], name
    assert pairs["qwen2"][0].bos_id is None
    # add_eos_token true in that config adds no EOS either.
    ours = pairs["llama2-no-post-processor"][0]
    assert ours.encode("Hello world")[-1] != ours.eos_id


def test_leading_space_follows_transformers_rebuild(pairs):
    """LlamaTokenizer rebuilds Metaspace(prepend_scheme="first"): " Hello" gets one "▁"; the
    same file read as it is (Mistral's class) keeps its Prepend normalizer: two."""
    llama, mistral = pairs["llama2"][0], pairs["mistral"][0]
    assert llama.token_strings(llama.encode(" Hello"))[1] == " Hello"
    assert mistral.token_strings(mistral.encode(" Hello"))[1:3] == [" ", " Hello"]


def test_token_strings_are_readable(pairs):
    gpt2 = pairs["gpt2"][0]
    ids = gpt2.encode("Hello world\n\tx")
    assert "".join(gpt2.token_strings(ids)) == "Hello world↵⇥x"
    assert gpt2.token_strings(ids)[1].startswith(" w")  # "Ġw..." shown with a space
    # A character split over byte-level tokens shows its bytes; a whole one shows itself.
    shown = gpt2.token_strings(gpt2.encode("🚀"))
    assert "".join(shown) == "<0xF0><0x9F><0x9A><0x80>"
    assert gpt2.token_strings(gpt2.encode("你好")) == ["你好"]  # merged in training
    assert gpt2.token_strings(gpt2.encode("<|endoftext|>")) == ["<|endoftext|>"]

    llama = pairs["llama2"][0]
    ids = llama.encode("Hello\n🚀")
    shown = llama.token_strings(ids)
    assert shown[0] == "<s>"
    assert "↵" in shown  # byte-fallback <0x0A>
    assert shown[-4:] == ["<0xF0>", "<0x9F>", "<0x9A>", "<0x80>"]
    assert "".join(shown[1:-5]) == " Hello"
    assert llama.token_strings([10**9]) == ["[id 1000000000]"]


def test_no_tokenizer_json_gives_none(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert load(CheckpointDir(tmp_path), max_bytes=MAX_BYTES) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "tokenizer.json is not valid JSON"),
        ("[1, 2]", "'model' object"),
        ('{"model": {"type": "Nonsense"}}', "not a tokenizer the `tokenizers` library can read"),
    ],
)
def test_malformed_tokenizer_json_is_refused(tmp_path, text, message):
    (tmp_path / "tokenizer.json").write_text(text)
    with pytest.raises(CheckpointError, match=message):
        load(CheckpointDir(tmp_path), max_bytes=MAX_BYTES)


def test_malformed_tokenizer_config_is_refused(family_dirs, tmp_path):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "tokenizer.json").write_bytes(
        (family_dirs["gpt2"] / "tokenizer.json").read_bytes()
    )
    (directory / "tokenizer_config.json").write_text('{"bos_token": 5}')
    with pytest.raises(CheckpointError, match="bos_token"):
        load(CheckpointDir(directory), max_bytes=MAX_BYTES)
    (directory / "tokenizer_config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="tokenizer_config.json is not valid JSON"):
        load(CheckpointDir(directory), max_bytes=MAX_BYTES)


def test_merges_of_unknown_tokens_are_refused(family_dirs, tmp_path):
    """GPT2Tokenizer's rebuild reads vocab and merges itself: a bad merge is still refused."""
    spec = json.loads((family_dirs["gpt2"] / "tokenizer.json").read_text())
    spec["model"]["merges"].append(["not-a-token", "nor-this"])
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(CheckpointError, match="tokenizer.json could not be built"):
        load(CheckpointDir(tmp_path), max_bytes=MAX_BYTES)


def test_size_limit_names_the_limit(family_dirs):
    size = (family_dirs["gpt2"] / "tokenizer.json").stat().st_size
    with pytest.raises(
        CheckpointError, match=f"tokenizer.json is {size:,} bytes; the limit is 1,000"
    ):
        load(CheckpointDir(family_dirs["gpt2"]), max_bytes=1_000)
    assert load(CheckpointDir(family_dirs["gpt2"]), max_bytes=size) is not None


def test_link_outside_the_root_is_refused(family_dirs, tmp_path):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "tokenizer.json").symlink_to(family_dirs["gpt2"] / "tokenizer.json")
    with pytest.raises(CheckpointError, match="outside"):
        load(CheckpointDir(directory), max_bytes=MAX_BYTES)
    # The same link is followed when its target is inside the root (the HF cache layout).
    assert load(
        CheckpointDir(directory, root=family_dirs["gpt2"].parent.parent), max_bytes=MAX_BYTES
    )
