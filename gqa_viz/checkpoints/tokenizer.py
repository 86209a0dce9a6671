"""Token ids <-> text for a checkpoint, with the ``tokenizers`` library alone.

What is read, all through :class:`~gqa_viz.checkpoints.files.CheckpointDir` (plain names,
links only inside the root, each file at most ``max_bytes``):

* ``tokenizer.json``: the vocabulary, merges, normalizer, pre-tokenizer, post-processor (which
  adds BOS/EOS) and decoder, in the ``tokenizers`` library's own serialization.
* ``tokenizer_config.json`` (optional): ``tokenizer_class``, the named special tokens
  (``bos_token``, ``eos_token``, ``unk_token``, ... as a string or an ``{"content": ...}``
  object), ``added_tokens_decoder``, ``additional_special_tokens``/``extra_special_tokens``,
  ``add_prefix_space``, ``legacy`` and ``split_special_tokens``.
* ``special_tokens_map.json`` (optional): the named special tokens, used only when
  ``tokenizer_config.json`` has no ``added_tokens_decoder`` (transformers' legacy path).
* ``config.json`` (optional): ``model_type`` (and ``tokenizer_class``), which pick the
  tokenizer class below.

Why transformers is not needed at run time: ``AutoTokenizer`` in transformers 5 (5.23 is the
reference the tests check against) is a thin layer over this library, and this module
reproduces the few decisions it takes:

1. The class. transformers picks a class from ``tokenizer_class`` and ``model_type``. Four
   classes of the supported families do not use ``tokenizer.json``'s pipeline but rebuild the
   backend from its vocabulary and merges with a pipeline of their own (:data:`_REBUILT`):
   ``LlamaTokenizer`` (Llama 2, TinyLlama: a ``Metaspace`` pre-tokenizer with
   ``prepend_scheme="first"`` instead of the file's ``Prepend("▁")`` normalizer, so a text
   starting with a space gets one "▁" where sentencepiece gives two), ``GemmaTokenizer``,
   ``Qwen2Tokenizer`` and ``GPT2Tokenizer`` (also SmolLM2, whose file asks for a ``Digits``
   pre-tokenizer that the rebuild drops). Every other class, e.g. ``PreTrainedTokenizerFast``
   (Llama 3) and Mistral's (``model_type`` "mistral" maps to the plain backend when
   ``mistral-common`` is not installed), uses ``tokenizer.json`` as it is, as does a
   ``LlamaTokenizer`` whose file is byte-level. A class outside these is read as the plain
   backend too.
2. BOS/EOS. When ``tokenizer.json`` is present transformers 5 drops ``add_bos_token`` and
   ``add_eos_token`` from ``tokenizer_config.json``: BOS/EOS come from the file's
   post-processor alone (Llama 2/3, Mistral, Gemma: a template adding BOS; Qwen, GPT-2,
   SmolLM2: none). A file without a post-processor adds nothing.
3. Added tokens. The named special tokens, ``added_tokens_decoder`` and the extra special
   tokens are added to the backend (as special tokens where they are named), in
   transformers' order, so a text that contains e.g. ``<|im_start|>`` splits the same way.

Decoding is the backend's ``decode``: transformers 5 ignores ``clean_up_tokenization_spaces``
for BPE models, which every supported family is. Truncation and padding stored in
``tokenizer.json`` are switched off, as transformers does for a plain call.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as _Backend
from tokenizers.models import BPE

from gqa_viz.checkpoints.files import CheckpointDir, CheckpointError

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CONFIG_FILE = "config.json"

# transformers' TOKENIZER_MAPPING_NAMES for the model types this package knows ("llama" maps
# to nothing there: a Llama checkpoint's class comes from its tokenizer_config.json).
_CLASS_OF_MODEL_TYPE = {
    "mistral": "TokenizersBackend",
    "mixtral": "TokenizersBackend",
    "qwen2": "Qwen2Tokenizer",
    "qwen3": "Qwen2Tokenizer",
    "gemma": "GemmaTokenizer",
    "gemma2": "GemmaTokenizer",
    "gemma3": "GemmaTokenizer",
    "gemma3_text": "GemmaTokenizer",
    "gpt2": "GPT2Tokenizer",
    "phi3": "TokenizersBackend",
}
# transformers' MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS, restricted to the types above.
_HUB_CLASS_IGNORED = {"qwen2", "phi3"}
_BACKEND = "TokenizersBackend"
_REBUILT = ("LlamaTokenizer", "GemmaTokenizer", "Qwen2Tokenizer", "GPT2Tokenizer")
# The named special tokens of transformers' PreTrainedTokenizerBase, in its order.
_NAMED = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
# Defaults of the rebuilt classes' __init__ for tokens tokenizer_config.json does not name.
_CLASS_DEFAULTS = {
    "LlamaTokenizer": {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"},
    "GemmaTokenizer": {
        "unk_token": "<unk>",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    },
    "Qwen2Tokenizer": {
        "unk_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    },
    "GPT2Tokenizer": {
        "unk_token": "<|endoftext|>",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
    },
}
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Sentencepiece's byte-fallback tokens, <0x00> ... <0xFF>.
_BYTE_TOKEN = re.compile(r"<0x([0-9A-F]{2})>")
# How token_strings shows characters that would be invisible or break a one-line label.
_VISIBLE = {"\n": "↵", "\t": "⇥", "\r": "␍"}
# transformers' update_post_processor() with add_bos_token and add_eos_token off: what a file
# without a post-processor gets (no BOS, no EOS).
_NO_SPECIALS = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])


class Tokenizer:
    """A checkpoint's tokenizer: ``encode`` gives the ids transformers 5's ``AutoTokenizer``
    gives for the same directory (BOS included where the checkpoint adds one).

    ``bos_id`` and ``eos_id`` are the ids of the configured BOS/EOS tokens (None when there is
    none); whether ``encode`` adds them is the post-processor's business, not theirs.
    """

    def __init__(self, backend: _Backend, *, bos_token: str | None, eos_token: str | None):
        self._backend = backend
        self._vocab_size = backend.get_vocab_size(with_added_tokens=True)
        self.bos_id = _id_of(backend, bos_token)
        self.eos_id = _id_of(backend, eos_token)
        self._special_ids = {
            i for i, tok in backend.get_added_tokens_decoder().items() if tok.special
        }
        decoder = repr(backend.decoder)
        self._byte_level = "ByteLevel" in decoder
        self._metaspace = not self._byte_level and "▁" in decoder

    @property
    def vocab_size(self) -> int:
        """How many tokens the tokenizer knows, added tokens included (transformers' ``len``)."""
        return self._vocab_size

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, with the BOS/EOS the checkpoint's post-processor adds."""
        return self._backend.encode(text).ids

    def decode(self, ids, *, skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (any iterable of ints), as transformers' ``decode``."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_strings(self, ids) -> list[str]:
        """A one-line label per id, for display.

        Special tokens show as written (``<s>``, ``<|im_start|>``). Otherwise the token's text
        is shown: byte-level BPE's "Ġ" and sentencepiece's "▁" become a space; a byte token
        (``<0x0A>``, or a byte-level token holding part of a UTF-8 character) shows the
        character when the byte is ASCII and ``<0xNN>`` when it is only part of one. A
        newline shows as "↵", a tab as "⇥", a carriage return as "␍", other control
        characters as ``<0xNN>`` (``<U+NNNN>`` above ASCII); spaces stay spaces, so a label
        needs ``white-space: pre`` to show them. An id the tokenizer does not know shows as
        ``[id N]``.
        """
        return [self._token_string(int(i)) for i in ids]

    def _token_string(self, i: int) -> str:
        token = self._backend.id_to_token(i)
        if token is None:
            return f"[id {i}]"
        if i in self._special_ids:
            return token
        if self._byte_level and all(ch in _BYTE_OF_CHAR for ch in token):
            token = _show_bytes(bytes(_BYTE_OF_CHAR[ch] for ch in token))
        elif self._metaspace:
            token = token.replace("▁", " ")
            byte = _BYTE_TOKEN.fullmatch(token)
            if byte:
                token = _show_bytes(bytes([int(byte[1], 16)]))
        return "".join(_visible(ch) for ch in token)


def load(cdir: CheckpointDir, *, max_bytes: int) -> Tokenizer | None:
    """The checkpoint's tokenizer, or None when the directory has no ``tokenizer.json``.

    ``max_bytes`` bounds each file read. Raises :class:`CheckpointError` for a file over it, a
    malformed file, or a tokenizer the ``tokenizers`` library refuses.
    """
    if not cdir.has(TOKENIZER_FILE):
        return None
    text = _read_text(cdir, TOKENIZER_FILE, max_bytes)
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{TOKENIZER_FILE} is not valid JSON: {err}.") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise CheckpointError(f"{TOKENIZER_FILE} must hold a JSON object with a 'model' object.")
    tc = _optional_json(cdir, TOKENIZER_CONFIG_FILE, max_bytes)
    config = _optional_json(cdir, CONFIG_FILE, max_bytes)
    if "added_tokens_decoder" not in tc:
        # transformers' legacy path: special_tokens_map.json overrides the config's tokens.
        tc = {**tc, **_optional_json(cdir, SPECIAL_TOKENS_MAP_FILE, max_bytes)}

    cls = _class_name(tc, config, text, spec)
    try:
        if cls == _BACKEND:
            file_backend = _Backend.from_str(text)
        else:
            # The class keeps only the file's post-processor: read the file without its
            # vocabulary (as transformers does), which the rebuild reads from ``spec``.
            model = {**spec["model"], "vocab": {}, "merges": []}
            file_backend = _Backend.from_str(
                json.dumps({**spec, "model": model, "added_tokens": []})
            )
    except Exception as err:  # the library raises plain Exceptions for a bad file
        raise CheckpointError(
            f"{TOKENIZER_FILE} is not a tokenizer the `tokenizers` library can read: {err}"
        ) from None
    try:
        backend, added = _backend_for(cls, file_backend, spec, tc)
        named = _named_tokens(cls, tc)
        extra = _extra_tokens(tc)
        _add_tokens(backend, added, named, extra)
        if cls == "Qwen2Tokenizer":
            # Qwen2Tokenizer.__init__ adds every special token once more as a plain AddedToken,
            # which resets lstrip/rstrip/normalized that the config may have set.
            specials = dict.fromkeys(_content(t) for t in [*named.values(), *extra])
            backend.add_tokens([AddedToken(t, special=True) for t in specials])
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(
            f"{TOKENIZER_CONFIG_FILE} or {TOKENIZER_FILE} has a malformed field: {err}"
        ) from None
    except Exception as err:  # the Rust side's errors (e.g. a merge of unknown tokens)
        raise CheckpointError(f"{TOKENIZER_FILE} could not be built: {err}") from None
    backend.encode_special_tokens = bool(tc.get("split_special_tokens", False))
    backend.no_truncation()
    backend.no_padding()
    return Tokenizer(
        backend,
        bos_token=_content(named.get("bos_token")),
        eos_token=_content(named.get("eos_token")),
    )


def _read_text(cdir: CheckpointDir, name: str, max_bytes: int) -> str:
    path = cdir.path(name)
    size = path.stat().st_size
    if size > max_bytes:
        raise CheckpointError(f"{name} is {size:,} bytes; the limit is {max_bytes:,} bytes.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{name} is not UTF-8 text: {err}.") from None


def _optional_json(cdir: CheckpointDir, name: str, max_bytes: int) -> dict:
    return cdir.read_json(name, max_bytes=max_bytes) if cdir.has(name) else {}


def _class_name(tc: dict, config: dict, text: str, spec: dict) -> str:
    """The class transformers 5's AutoTokenizer picks (its models/auto/tokenization_auto.py)."""
    model_type = config.get("model_type")
    hub = tc.get("tokenizer_class") or config.get("tokenizer_class")
    hub = hub.removesuffix("Fast") if isinstance(hub, str) else None
    registered = _CLASS_OF_MODEL_TYPE.get(model_type) if isinstance(model_type, str) else None
    if hub == "LlamaTokenizer" and model_type not in _HUB_CLASS_IGNORED and '"ByteLevel"' in text:
        # LlamaTokenizer hardcodes Metaspace, so a byte-level file (Llama 3 style) keeps its own.
        return _BACKEND
    if hub and registered and registered != hub:
        if registered != _BACKEND:
            name = registered if model_type in _HUB_CLASS_IGNORED else hub
            cls = name if name in _REBUILT else _BACKEND
        else:
            cls = _BACKEND
    elif hub:
        cls = hub if hub in _REBUILT else _BACKEND
    else:
        cls = registered or _BACKEND
    if cls != _BACKEND and spec["model"].get("type") != "BPE":
        # The rebuilt classes are BPE-only; read any other model as the file says.
        return _BACKEND
    return cls


def _backend_for(cls: str, file_backend: _Backend, spec: dict, tc: dict):
    """The backend transformers builds for ``cls``, and the tokens it then adds by id order.

    A rebuilt class starts from the file's vocabulary and merges alone (no added tokens),
    keeping only its post-processor; the plain backend keeps the whole file.
    """
    decoder = tc.get("added_tokens_decoder")
    if decoder is not None:
        if not isinstance(decoder, dict):
            raise TypeError("added_tokens_decoder must be an object of id -> token")
        added = [_added_token(decoder[k]) for k in sorted(decoder, key=int)]
    else:
        # Legacy configs: transformers re-adds the file's own added tokens.
        added = [
            AddedToken(**{k: v for k, v in t.items() if k != "id"})
            for t in sorted(spec.get("added_tokens") or [], key=lambda t: t["id"])
        ]
    if cls == _BACKEND:
        if file_backend.post_processor is None:
            file_backend.post_processor = _NO_SPECIALS
        return file_backend, added

    model = spec["model"]
    vocab = model.get("vocab")
    if isinstance(vocab, list):
        vocab = {t[0] if isinstance(t, list) else t: i for i, t in enumerate(vocab)}
    merges = [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])
    ]
    if cls == "LlamaTokenizer":
        add_prefix_space = tc.get("add_prefix_space")
        add_prefix_space = True if add_prefix_space is None else add_prefix_space
        backend = _Backend(BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True))
        if add_prefix_space:
            scheme = "always" if tc.get("legacy", False) else "first"
        else:
            scheme = "never"
        backend.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme=scheme, split=False)
        steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        if add_prefix_space:
            steps.append(decoders.Strip(content=" ", left=1))
        backend.decoder = decoders.Sequence(steps)
    elif cls == "GemmaTokenizer":
        unk = _content(tc.get("unk_token", "<unk>"))
        backend = _Backend(
            BPE(vocab=vocab, merges=merges, fuse_unk=True, unk_token=unk, byte_fallback=True)
        )
        backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
        backend.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        )
        backend.normalizer = normalizers.Replace(" ", "▁")
    elif cls == "Qwen2Tokenizer":
        backend = _Backend(
            BPE(
                vocab=vocab,
                merges=merges,
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
                byte_fallback=False,
            )
        )
        backend.decoder = decoders.ByteLevel()
        backend.normalizer = normalizers.NFC()
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_QWEN2_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(
                    add_prefix_space=bool(tc.get("add_prefix_space") or False), use_regex=False
                ),
            ]
        )
    else:  # GPT2Tokenizer
        backend = _Backend(
            BPE(
                vocab=vocab,
                merges=merges,
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
            )
        )
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(
            add_prefix_space=bool(tc.get("add_prefix_space", False))
        )
        backend.decoder = decoders.ByteLevel()
    post = file_backend.post_processor
    backend.post_processor = _NO_SPECIALS if post is None else post
    return backend, added


def _named_tokens(cls: str, tc: dict) -> dict[str, str | AddedToken]:
    """bos/eos/unk/... then model-specific ``*_token`` keys, in transformers' order."""
    found: dict[str, Any] = dict(_CLASS_DEFAULTS.get(cls, {}))
    for key, value in tc.items():
        if key in _NAMED or (key.endswith("_token") and isinstance(value, (str, dict))):
            found[key] = value
    extra = tc.get("extra_special_tokens")
    if isinstance(extra, dict):
        found.update(extra)
    out = {}
    for key in sorted(found, key=lambda k: _NAMED.index(k) if k in _NAMED else len(_NAMED)):
        value = found[key]
        if value is None:
            continue
        if isinstance(value, dict):
            value = _added_token(value, special=True)
        elif not isinstance(value, str):
            raise TypeError(f"{key} must be a string or an object with 'content'")
        out[key] = value
    return out


def _extra_tokens(tc: dict) -> list[str | AddedToken]:
    extra = tc.get("additional_special_tokens") or tc.get("extra_special_tokens") or []
    if isinstance(extra, dict):
        return []  # named tokens, in _named_tokens
    if not isinstance(extra, list):
        raise TypeError("additional_special_tokens must be a list")
    return [_added_token(t, special=True) if isinstance(t, dict) else _content(t) for t in extra]


def _add_tokens(backend: _Backend, added: list, named: dict, extra: list[str]) -> None:
    """TokenizersBackend.__init__'s additions: ``added`` first, then missing named/extra ones."""
    known = {t.content for t in backend.get_added_tokens_decoder().values()}
    known |= {t.content for t in added}
    tokens = list(added)
    for value in [*named.values(), *extra]:
        content = _content(value)
        if content in known:
            continue
        known.add(content)
        tokens.append(AddedToken(value, special=True) if isinstance(value, str) else value)
    if tokens:
        backend.add_tokens(tokens)


def _added_token(value, *, special: bool | None = None) -> AddedToken:
    if not isinstance(value, dict) or not isinstance(value.get("content"), str):
        raise TypeError(f"a special token must be an object with a string 'content', got {value!r}")
    fields = {
        k: v
        for k, v in value.items()
        if k in ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
    }
    if special is not None:
        fields["special"] = special
    return AddedToken(**fields)


def _content(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, AddedToken):
        return value.content
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TypeError(f"a special token must be a string or an object with 'content', got {value!r}")


def _id_of(backend: _Backend, token: str | None) -> int | None:
    return None if token is None else backend.token_to_id(token)


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's map of the 256 bytes onto printable characters (inverted: char -> byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {ch: b for b, ch in chars.items()}


_BYTE_OF_CHAR = _byte_level_alphabet()


def _show_bytes(raw: bytes) -> str:
    """UTF-8 text of ``raw``, with each byte that is only part of a character as ``<0xNN>``."""
    text = raw.decode("utf-8", errors="surrogateescape")
    return "".join(
        f"<0x{ord(ch) - 0xDC00:02X}>" if 0xDC80 <= ord(ch) <= 0xDCFF else ch for ch in text
    )


def _visible(ch: str) -> str:
    if ch in _VISIBLE:
        return _VISIBLE[ch]
    if unicodedata.category(ch) == "Cc":
        return f"<0x{ord(ch):02X}>" if ord(ch) < 0x80 else f"<U+{ord(ch):04X}>"
    return ch
