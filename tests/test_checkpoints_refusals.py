"""What ``gqa_viz.checkpoints.load`` refuses, and that it says why in words a user can act on.

Each test breaks one thing in a small, valid Llama checkpoint written by ``transformers``
(pickled weights instead of safetensors, a tensor missing or misshapen, a config that is
malformed or lacks a field, a model_type we do not run, sizes over a limit, an index or a link
that leads outside the checkpoint, a safetensors file that is cut short or lies about its
offsets) and asserts that loading raises ``checkpoints.CheckpointError`` naming the file,
tensor, field or limit. A pickle is never unpickled: the tests plant one that would leave a
mark if it were, and make Python's unpicklers fail loudly.
"""

from __future__ import annotations

import json
import os
import pickle
import struct

os.environ.setdefault("KERAS_BACKEND", "jax")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from gqa_viz import checkpoints  # noqa: E402
from tests import checkpoint_fixtures as cf  # noqa: E402

BASE = "llama_llama3"  # L = 2, N = 4, K = 2, H = 16, D = 48
K_PROJ = "model.layers.1.self_attn.k_proj.weight"


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    return cf.write_checkpoint(BASE, tmp_path_factory.mktemp("refusals") / BASE)


@pytest.fixture
def ckpt(base_dir, tmp_path):
    """A fresh copy of the valid checkpoint, to break."""
    return cf.copy_checkpoint(base_dir, tmp_path / "ckpt")


def refused(path, **kwargs) -> str:
    """The message of the CheckpointError that loading ``path`` raises."""
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load(path, **kwargs)
    return str(err.value)


def test_the_unbroken_checkpoint_loads(ckpt):
    assert checkpoints.load(ckpt).arch.num_layers == 2


# ----------------------------------------------------------------------------------------------
# Pickled weights: refused, never unpickled.
# ----------------------------------------------------------------------------------------------


class _Trap:
    """Unpickling this creates ``marker``: proof that something unpickled the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make every unpickler in reach fail the test if called."""

    def boom(*args, **kwargs):
        raise AssertionError("the loader unpickled a file")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, boom)
    monkeypatch.setattr(torch, "load", boom)


def _pickled_dir(ckpt, tmp_path, file_name: str, *, real: bool):
    """``ckpt`` with its safetensors replaced by ``file_name``: torch.save'd or a trap."""
    marker = tmp_path / "unpickled"
    state = load_file(ckpt / "model.safetensors")
    (ckpt / "model.safetensors").unlink()
    if real:
        torch.save(state, ckpt / file_name)
    else:
        (ckpt / file_name).write_bytes(pickle.dumps(_Trap(marker)))
    return marker


@pytest.mark.parametrize("real", [True, False], ids=["torch_save", "trap"])
@pytest.mark.parametrize("file_name", ["pytorch_model.bin", "model.pt", "model.pth"])
def test_pickled_weights_are_refused_unopened(ckpt, tmp_path, file_name, real, no_unpickling):
    marker = _pickled_dir(ckpt, tmp_path, file_name, real=real)
    msg = refused(ckpt)
    assert file_name in msg and "safetensors" in msg and "pickle" in msg.lower()
    assert not marker.exists()


def test_sharded_pickled_weights_are_refused(ckpt, tmp_path, no_unpickling):
    marker = tmp_path / "unpickled"
    (ckpt / "model.safetensors").unlink()
    shard = "pytorch_model-00001-of-00001.bin"
    (ckpt / shard).write_bytes(pickle.dumps(_Trap(marker)))
    index = {"metadata": {}, "weight_map": {K_PROJ: shard}}
    (ckpt / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    msg = refused(ckpt)
    assert shard in msg and "safetensors" in msg
    assert not marker.exists()


def test_safetensors_are_read_when_a_pickle_sits_next_to_them(ckpt, tmp_path, no_unpickling):
    marker = tmp_path / "unpickled"
    (ckpt / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    assert checkpoints.load(ckpt).arch.family == "llama"
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# Tensors that are missing or do not fit the config.
# ----------------------------------------------------------------------------------------------


def _edit_tensors(ckpt, edit) -> None:
    path = ckpt / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_tensor_is_named(ckpt):
    _edit_tensors(ckpt, lambda t: t.pop(K_PROJ))
    assert K_PROJ in refused(ckpt)


def test_missing_untied_lm_head_is_named(ckpt):
    _edit_tensors(ckpt, lambda t: t.pop("lm_head.weight"))
    assert "lm_head.weight" in refused(ckpt)


def test_tensor_with_the_wrong_shape_is_named(ckpt):
    def widen(t):
        t[K_PROJ] = torch.zeros(t[K_PROJ].shape[0] + 16, t[K_PROJ].shape[1])

    _edit_tensors(ckpt, widen)
    msg = refused(ckpt)
    assert K_PROJ in msg and "shape" in msg


def test_config_disagreeing_with_the_tensors_names_a_tensor(ckpt):
    cfg = cf.read_config(ckpt)
    cfg["num_key_value_heads"] = 4  # the tensors were written for K = 2
    cf.write_config(ckpt, cfg)
    msg = refused(ckpt)
    assert "k_proj.weight" in msg and "shape" in msg


def test_index_naming_a_shard_that_lacks_the_tensor(ckpt):
    names = cf.shard(ckpt, 2)
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    wrong = names[0] if index["weight_map"][K_PROJ] == names[1] else names[1]
    index["weight_map"][K_PROJ] = wrong
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    msg = refused(ckpt)
    assert K_PROJ in msg and wrong in msg


def test_unsupported_tensor_dtype_is_named(ckpt):
    _edit_tensors(ckpt, lambda t: t.update({K_PROJ: t[K_PROJ].to(torch.int8)}))
    msg = refused(ckpt)
    assert K_PROJ in msg and "I8" in msg


# ----------------------------------------------------------------------------------------------
# config.json
# ----------------------------------------------------------------------------------------------


def test_unsupported_model_type_lists_the_supported_ones(ckpt):
    cfg = cf.read_config(ckpt)
    cfg["model_type"] = "mamba"
    cf.write_config(ckpt, cfg)
    msg = refused(ckpt)
    assert "mamba" in msg
    for family in checkpoints.FAMILIES:
        assert family in msg


@pytest.mark.parametrize(
    "text",
    [b"{not json", b"", b"[1, 2, 3]", b'"llama"', b"\xff\xfe{}", b'{"model_type": "llama",'],
    ids=["syntax", "empty", "list", "string", "not_utf8", "cut_short"],
)
def test_malformed_config_json(ckpt, text):
    (ckpt / "config.json").write_bytes(text)
    assert "config.json" in refused(ckpt)


def test_missing_config_json(ckpt):
    (ckpt / "config.json").unlink()
    assert "config.json" in refused(ckpt)


@pytest.mark.parametrize(
    "field",
    ["num_attention_heads", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size"],
)
def test_config_missing_a_required_field_names_it(ckpt, field):
    cfg = cf.read_config(ckpt)
    del cfg[field]
    cf.write_config(ckpt, cfg)
    assert field in refused(ckpt)


def test_config_without_model_type(ckpt):
    cfg = cf.read_config(ckpt)
    del cfg["model_type"]
    cf.write_config(ckpt, cfg)
    assert "model_type" in refused(ckpt)


@pytest.mark.parametrize(
    "field,value",
    [
        ("num_attention_heads", "4"),
        ("num_attention_heads", 0),
        ("hidden_size", -48),
        ("num_hidden_layers", 2.5),
        ("num_key_value_heads", 3),  # N = 4 heads cannot be grouped over 3 kv heads
        ("head_dim", True),
    ],
)
def test_config_field_with_an_impossible_value_names_it(ckpt, field, value):
    cfg = cf.read_config(ckpt)
    cfg[field] = value
    cf.write_config(ckpt, cfg)
    assert field in refused(ckpt)


# ----------------------------------------------------------------------------------------------
# Limits
# ----------------------------------------------------------------------------------------------


def _param_count(ckpt) -> int:
    return sum(t.numel() for t in load_file(ckpt / "model.safetensors").values())


def test_parameter_limit_names_count_and_limit(ckpt):
    count = _param_count(ckpt)
    msg = refused(ckpt, max_params=10_000)
    assert "parameters" in msg
    assert f"{count:,}" in msg or str(count) in msg
    assert "10,000" in msg or "10000" in msg


def test_parameter_limit_is_inclusive(ckpt):
    assert checkpoints.load(ckpt, max_params=_param_count(ckpt)).arch.num_layers == 2


def test_layer_limit_names_count_and_limit(ckpt):
    msg = refused(ckpt, max_layers=1)
    assert "layers" in msg and "2" in msg and "1" in msg


# ----------------------------------------------------------------------------------------------
# Where files may come from: index entries and symlinks.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["parent", "absolute", "subdir"])
def test_index_shard_outside_the_directory(ckpt, where):
    names = cf.shard(ckpt, 2)
    # A valid shard really is there, so a loader that followed the name would succeed.
    if where == "parent":
        bad = "../evil.safetensors"
        (ckpt / names[1]).rename(ckpt.parent / "evil.safetensors")
    elif where == "absolute":
        bad = str(ckpt.parent / "evil.safetensors")
        (ckpt / names[1]).rename(bad)
    else:
        bad = "sub/evil.safetensors"
        (ckpt / "sub").mkdir()
        (ckpt / names[1]).rename(ckpt / bad)
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: bad if v == names[1] else v for k, v in index["weight_map"].items()}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    msg = refused(ckpt)
    assert bad in msg and "plain file name" in msg


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_symlink_out_of_the_directory_is_refused(ckpt, tmp_path, name):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (ckpt / name).rename(outside / name)
    (ckpt / name).symlink_to(outside / name)  # a valid file, just not inside the root
    msg = refused(ckpt)
    assert name in msg and "outside" in msg


def test_symlink_out_of_the_hf_cache_repository_is_refused(base_dir, tmp_path):
    snapshot = cf.hf_cache_layout(tmp_path, "org/model", base_dir)
    assert checkpoints.load(snapshot).arch.family == "llama"  # links into blobs/ are fine
    stray = tmp_path / "stray.safetensors"
    stray.write_bytes((base_dir / "model.safetensors").read_bytes())
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(os.path.relpath(stray, snapshot))
    msg = refused(snapshot)
    assert "model.safetensors" in msg and "outside" in msg


def test_explicit_root_allows_a_link_inside_it(ckpt, tmp_path):
    elsewhere = tmp_path / "store"
    elsewhere.mkdir()
    (ckpt / "model.safetensors").rename(elsewhere / "model.safetensors")
    (ckpt / "model.safetensors").symlink_to(elsewhere / "model.safetensors")
    assert "outside" in refused(ckpt)
    assert checkpoints.load(ckpt, root=tmp_path).arch.num_layers == 2


# ----------------------------------------------------------------------------------------------
# Safetensors files that are cut short or lie about their contents.
# ----------------------------------------------------------------------------------------------


def _split(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), n, raw[8 + n :]


def _write(path, header: dict, data: bytes, *, length: int | None = None) -> None:
    text = json.dumps(header, separators=(",", ":")).encode()
    if length is not None:  # keep the original length so the data offsets stay put
        assert len(text) <= length
        text = text.ljust(length)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_truncated_safetensors(ckpt):
    path = ckpt / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    msg = refused(ckpt)
    assert "model.safetensors" in msg and "truncated" in msg


@pytest.mark.parametrize("keep", [0, 5, 8, 200], ids=["empty", "5_bytes", "8_bytes", "200_bytes"])
def test_safetensors_cut_inside_the_header(ckpt, keep):
    path = ckpt / "model.safetensors"
    path.write_bytes(path.read_bytes()[:keep])
    assert "model.safetensors" in refused(ckpt)


def test_header_length_beyond_the_file(ckpt):
    path = ckpt / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 2**40) + raw[8:])
    assert "model.safetensors" in refused(ckpt)


@pytest.mark.parametrize(
    "offsets", ["past_end", "wrong_size", "reversed", "negative"], ids=lambda s: s
)
def test_header_lying_about_offsets_names_the_tensor(ckpt, offsets):
    path = ckpt / "model.safetensors"
    header, length, data = _split(path)
    begin, end = header[K_PROJ]["data_offsets"]
    header[K_PROJ]["data_offsets"] = {
        "past_end": [len(data) - 4, len(data) - 4 + (end - begin)],
        "wrong_size": [begin, end - 4],
        "reversed": [end, begin],
        "negative": [-8, end - begin - 8],
    }[offsets]
    _write(path, header, data, length=length)
    msg = refused(ckpt)
    assert "model.safetensors" in msg and K_PROJ in msg


def test_header_that_is_not_json(ckpt):
    path = ckpt / "model.safetensors"
    _, length, data = _split(path)
    path.write_bytes(struct.pack("<Q", length) + b"{" * length + data)
    msg = refused(ckpt)
    assert "model.safetensors" in msg and "header" in msg
