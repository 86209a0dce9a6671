"""Uploaded Keras weights: files Keras itself wrote load exactly, and bad files are refused
with a message that says why (never unpickled, never following links to other files)."""

from __future__ import annotations

import io
import os
import tomllib
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is imported

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gqa_viz import core  # noqa: E402
from gqa_viz.app.limits import MAX_UPLOAD_MB  # noqa: E402
from gqa_viz.app.trained_heads import UPLOAD_LIMITS  # noqa: E402
from gqa_viz.keras_weights import WeightsUploadError, read_upload  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _keras_model(n=4, k=2, h=8, d=16, use_bias=True, use_gate=False, layers=1, seed=0):
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((5, d))
    gqa = []
    for _ in range(layers):
        layer = keras.layers.GroupQueryAttention(
            head_dim=h, num_query_heads=n, num_key_value_heads=k, use_bias=use_bias,
            use_gate=use_gate,
        )  # fmt: skip
        x = layer(x, x)
        gqa.append(layer)
    return keras.Model(inp, x), gqa


def _h5_bytes(model, tmp_path) -> bytes:
    path = tmp_path / "m.weights.h5"
    model.save_weights(str(path))
    return path.read_bytes()


@pytest.mark.parametrize(
    ("use_bias", "use_gate", "n", "k"),
    [(True, False, 4, 2), (False, False, 8, 1), (True, True, 6, 3)],
)
def test_keras_weights_h5_loads_and_matches_keras(tmp_path, use_bias, use_gate, n, k):
    model, (layer,) = _keras_model(n=n, k=k, use_bias=use_bias, use_gate=use_gate)
    (found,) = read_upload("m.weights.h5", _h5_bytes(model, tmp_path), UPLOAD_LIMITS)
    spec = found.spec
    assert (spec.num_query_heads, spec.num_key_value_heads, spec.head_dim) == (n, k, 8)
    assert (spec.use_bias, spec.use_gate, found.query_dim) == (use_bias, use_gate, 16)
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype("float32")
    ours = core.attention(found.params, x, x, spec=spec)
    theirs = np.asarray(layer(x, x))
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=2e-5, atol=2e-5)


def test_every_attention_layer_of_a_model_is_found(tmp_path):
    model, layers = _keras_model(layers=2)
    found = read_upload("two.weights.h5", _h5_bytes(model, tmp_path), UPLOAD_LIMITS)
    assert len(found) == 2 and found[0].name != found[1].name
    assert all("N = 4 query heads" in f.describe() for f in found)


@pytest.mark.parametrize(("use_bias", "use_gate"), [(True, False), (False, True), (True, True)])
def test_npz_of_get_weights_loads(use_bias, use_gate):
    _, (layer,) = _keras_model(use_bias=use_bias, use_gate=use_gate)
    buf = io.BytesIO()
    np.savez(buf, *layer.get_weights())
    (found,) = read_upload("w.npz", buf.getvalue(), UPLOAD_LIMITS)
    assert (found.spec.use_bias, found.spec.use_gate) == (use_bias, use_gate)
    x = np.random.default_rng(1).standard_normal((1, 5, 16)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(core.attention(found.params, x, x, spec=found.spec)), np.asarray(layer(x, x)),
        rtol=2e-5, atol=2e-5,
    )  # fmt: skip


def test_npz_written_by_gqa_viz_loads():
    from gqa_viz import GroupedQueryAttention

    layer = GroupedQueryAttention(head_dim=8, num_query_heads=4, num_key_value_heads=2, seed=3)
    x = np.ones((1, 3, 16), "float32")
    layer(x, x)
    buf = io.BytesIO()
    np.savez(
        buf, **{n.split("/", 1)[1]: w for n, w in zip(layer.weight_names, layer.get_weights())}
    )
    (found,) = read_upload("ours.npz", buf.getvalue(), UPLOAD_LIMITS)
    for name, w in zip(layer.weight_names, layer.get_weights()):
        sub, what = name.split("/")[1:]
        np.testing.assert_array_equal(found.params[sub][what], w)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _good(n=4, k=2, h=8, d=16) -> dict[str, np.ndarray]:
    spec = core.GQASpec(n, k, h)
    params = core.init_params(spec, d, seed=0)
    return {f"{a}/{b}": np.asarray(w) for a, ws in params.items() for b, w in ws.items()}


def _pickled() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, arr_0=np.array([{"x": 1}], dtype=object))
    return buf.getvalue()


def _linked_h5(tmp_path) -> bytes:
    path = tmp_path / "link.h5"
    with h5py.File(path, "w") as f:
        f["layers/x"] = h5py.ExternalLink("/etc/passwd", "/")
    return path.read_bytes()


def _external_h5(tmp_path) -> bytes:
    path = tmp_path / "ext.h5"
    with h5py.File(path, "w") as f:
        for sub in ("_query_dense", "_key_dense", "_value_dense", "_output_dense"):
            f.create_dataset(
                f"layers/a/{sub}/vars/0",
                shape=(4,),
                dtype="f4",
                external=[("/etc/hostname", 0, 16)],
            )
    return path.read_bytes()


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{"query/kernel": np.zeros((64, 64, 1100), "f8")})  # 36 MB of zeros
    return buf.getvalue()


def _keras_like_h5(tmp_path, name: str, **dataset_kwargs) -> tuple[Path, h5py.File]:
    path = tmp_path / name
    f = h5py.File(path, "w")
    for sub, shape in (("_query_dense", (16, 4, 8)), ("_key_dense", (16, 2, 8)),
                       ("_value_dense", (16, 2, 8)), ("_output_dense", (4, 8, 16))):  # fmt: skip
        f.create_dataset(f"layers/a/{sub}/vars/0", shape=shape, dtype="f4", **dataset_kwargs)
    return path, f


def _compressed_h5(tmp_path) -> bytes:
    path, f = _keras_like_h5(tmp_path, "gz.h5", compression="gzip", data=None)
    f.close()
    return path.read_bytes()


def _unwritten_h5(tmp_path) -> bytes:
    path, f = _keras_like_h5(tmp_path, "empty.h5")  # datasets created, never written
    f.close()
    return path.read_bytes()


def _array_dtype_h5(tmp_path) -> bytes:
    path = tmp_path / "sub.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "layers/a/_query_dense/vars/0", shape=(4,), dtype=np.dtype(("f4", (64, 64)))
        )
        for sub in ("_key_dense", "_value_dense", "_output_dense"):
            f.create_dataset(f"layers/a/{sub}/vars/0", data=np.zeros((2, 2, 2), "f4"))
    return path.read_bytes()


def _aliased_h5(tmp_path) -> bytes:
    model, _ = _keras_model()
    path = tmp_path / "alias.weights.h5"
    model.save_weights(str(path))
    with h5py.File(path, "a") as f:
        group = f["layers/grouped_query_attention"]
        for i in range(40):  # the same layer reachable from 40 more places
            f[f"copy{i}"] = group
        group["self"] = group  # and from inside itself
    return path.read_bytes()


def _huge_header_npz() -> bytes:
    inner = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        inner, {"descr": "<f4", "fortran_order": False, "shape": (2**37,)}
    )
    buf = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("query/kernel.npy", inner.getvalue())
    return buf.getvalue()


def _corrupted_h5(tmp_path) -> bytes:
    model, _ = _keras_model()
    path = tmp_path / "bad.weights.h5"
    model.save_weights(str(path))
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    return bytes(data)


BAD = [
    ("wrong extension", "w.pt", lambda t: b"\x80\x04junk", ".weights.h5 or a NumPy .npz"),
    ("too big", "w.npz", lambda t: b"0" * (MAX_UPLOAD_MB * 2**20 + 1), f"limit is {MAX_UPLOAD_MB} MB"),
    ("garbage npz", "w.npz", lambda t: b"not a zip", "not a valid .npz"),
    ("garbage h5", "w.weights.h5", lambda t: b"\x89HDF junk", "not a valid HDF5"),
    ("pickled npz", "w.npz", lambda t: _pickled(), "pickled data"),
    ("no attention", "w.npz", lambda t: _npz(foo=np.zeros(3, "f4")), "no GroupQueryAttention"),
    ("int weights", "w.npz", lambda t: _npz(**{**_good(), "query/kernel": np.zeros((16, 4, 8), "i4")}), "floating point"),
    ("nan weights", "w.npz", lambda t: _npz(**{**_good(), "key/bias": np.full((2, 8), np.nan, "f4")}), "NaN or infinite"),
    ("beyond float32", "w.npz", lambda t: _npz(**{**_good(), "query/kernel": np.full((16, 4, 8), 1e300)}), "512 NaN or infinite values in float32"),
    ("empty model dim", "w.npz", lambda t: _npz(**{k: v[:0] if k.endswith("/kernel") and k != "attention_output/kernel" else v for k, v in _good().items()} | {"attention_output/kernel": np.zeros((4, 8, 0), "f4"), "attention_output/bias": np.zeros(0, "f4")}), "empty axis (D, key input size, value input size = 0)"),
    ("value size differs", "w.npz", lambda t: _npz(**{**_good(), "value/kernel": np.zeros((12, 2, 8), "f4")}), "takes values of 12 features and queries of 16"),
    ("non-divisible", "w.npz", lambda t: _npz(**_good(n=4, k=4) | {"key/kernel": np.zeros((16, 3, 8), "f4"), "key/bias": np.zeros((3, 8), "f4"), "value/kernel": np.zeros((16, 3, 8), "f4"), "value/bias": np.zeros((3, 8), "f4")}), "divisible"),
    ("wrong shape", "w.npz", lambda t: _npz(**{**_good(), "attention_output/kernel": np.zeros((4, 8, 15), "f4")}), "expected"),
    ("half the biases", "w.npz", lambda t: _npz(**{k: v for k, v in _good().items() if k != "key/bias"}), "either every sublayer has a bias"),
    ("too many heads", "w.npz", lambda t: _npz(**_good(n=128, k=1, h=4, d=8)), "N <= 64"),
    ("2-axis kernel", "w.npz", lambda t: _npz(**{**_good(), "query/kernel": np.zeros((16, 32), "f4")}), "3 axes"),
    ("unnamed, wrong count", "w.npz", lambda t: _npz(arr_0=np.zeros(3, "f4"), arr_1=np.zeros(3, "f4")), "4, 5, 8 or 10"),
    ("external link", "w.weights.h5", _linked_h5, "links are refused"),
    ("external storage", "w.weights.h5", _external_h5, "another file"),
    ("compressed bomb", "w.npz", lambda t: _zip_bomb(), "unpacks to"),
    ("huge npz header", "w.npz", lambda t: _huge_header_npz(), "does not hold"),
    ("compressed h5", "w.weights.h5", _compressed_h5, "compressed, chunked or partly unwritten"),
    ("unwritten h5", "w.weights.h5", _unwritten_h5, "compressed, chunked or partly unwritten"),
    ("array dtype h5", "w.weights.h5", _array_dtype_h5, "floating point"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "name", "make", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_files_are_refused_with_a_reason(tmp_path, case, name, make, message):
    with pytest.raises(WeightsUploadError, match=None) as info:
        read_upload(name, make(tmp_path), UPLOAD_LIMITS)
    assert message in str(info.value), str(info.value)


def test_an_aliased_layer_is_read_once(tmp_path):
    """Hard links to one group (even a cycle) do not multiply the work or the layers."""
    (found,) = read_upload("alias.weights.h5", _aliased_h5(tmp_path), UPLOAD_LIMITS)
    assert found.spec.num_query_heads == 4


def test_a_damaged_file_gets_a_message(tmp_path):
    with pytest.raises(WeightsUploadError) as info:
        read_upload("bad.weights.h5", _corrupted_h5(tmp_path), UPLOAD_LIMITS)
    assert "bad.weights.h5" in str(info.value)


def test_upload_limit_matches_the_server_setting():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == MAX_UPLOAD_MB
