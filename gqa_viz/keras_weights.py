"""Read a GroupQueryAttention layer's weights from a file a visitor uploads. No Streamlit here.

Axis letters as in :mod:`gqa_viz.core`: D model dim (Dk, Dv for key and value inputs),
N query heads, K kv heads, H head_dim.

Two formats, both read without unpickling anything:

* Keras' ``.weights.h5`` (``model.save_weights(...)``): every group holding the sublayers
  ``_query_dense``, ``_key_dense``, ``_value_dense`` and ``_output_dense`` (and
  ``_gate_dense`` with ``use_gate``), each with ``vars/0`` (kernel) and ``vars/1`` (bias), is
  one layer. A model with several attention layers gives several.
* ``.npz`` (``np.load(..., allow_pickle=False)``): either named arrays as
  :mod:`gqa_viz.weights_io` writes them (``query/kernel``, ``attention_output/bias``, ...,
  optionally under a prefix such as ``layers/0/attention/``), or ``arr_0``, ``arr_1``, ... in
  the order of Keras' ``layer.get_weights()`` (``np.savez(path, *layer.get_weights())``).

Everything is checked before use: shapes agree with one another (kernels [D, N, H],
[Dk, K, H], [Dv, K, H], output [N, H, D]), N is divisible by K, values are finite floats,
and sizes are within the caller's :class:`UploadLimits`. HDF5 links to other files, external
storage and virtual datasets are refused: a file must not make the server read anything but
itself.
"""

from __future__ import annotations

import contextlib
import io
import re
import zipfile
from dataclasses import dataclass

import numpy as np

from gqa_viz.core import WEIGHT_ORDER, GQASpec, Params, param_shapes

FORMATS = (".weights.h5", ".h5", ".npz")
_KERAS_SUBLAYERS = {
    "query": "_query_dense",
    "key": "_key_dense",
    "gate": "_gate_dense",
    "value": "_value_dense",
    "attention_output": "_output_dense",
}
_REQUIRED = ("query", "key", "value", "attention_output")
_HELP = (
    "Save a Keras model holding a GroupQueryAttention layer with model.save_weights("
    "'name.weights.h5'), or the layer's weights with np.savez('name.npz', "
    "*layer.get_weights())."
)


class WeightsUploadError(ValueError):
    """An uploaded file that cannot be used; the message says why and what would work."""


@dataclass(frozen=True)
class UploadLimits:
    """The most an uploaded file may be and hold. A small file can unpack to far more
    (compression, aliases), so the value counts bound what reading it may allocate."""

    mb: int  # the file's size, in MB (2**20 bytes)
    array_values: int  # values in one array
    total_values: int  # values in all arrays together
    layers: int  # attention layers in one file
    query_heads: int  # N of a layer
    head_dim: int  # H
    model_dim: int  # D


@dataclass(frozen=True)
class UploadedLayer:
    """One attention layer found in a file: where, its hyperparameters, its weights."""

    name: str
    spec: GQASpec
    params: Params  # NumPy float32 arrays in core's layout
    query_dim: int  # D
    value_dim: int  # Dv
    key_dim: int  # Dk

    def describe(self) -> str:
        s = self.spec
        parts = [
            f"N = {s.num_query_heads} query heads",
            f"K = {s.num_key_value_heads} K/V heads",
            f"H = {s.head_dim}",
            f"D = {self.query_dim}",
        ]
        if not s.use_bias:
            parts.append("no bias")
        if s.use_gate:
            parts.append("gated")
        return f"{self.name}: " + ", ".join(parts)


def read_upload(filename: str, data: bytes, limits: UploadLimits) -> list[UploadedLayer]:
    """Every GroupQueryAttention layer in an uploaded file, checked against ``limits``; raises
    WeightsUploadError."""
    limit = limits.mb * 2**20
    if len(data) > limit:
        raise WeightsUploadError(
            f"{filename} is {len(data) / 2**20:.1f} MB; the upload limit is {limits.mb} MB."
        )
    lower = filename.lower()
    if not lower.endswith((".npz", ".h5")):
        raise WeightsUploadError(
            f"{filename}: weights must be a Keras .weights.h5 or a NumPy .npz file. {_HELP}"
        )
    try:
        read = _read_npz if lower.endswith(".npz") else _read_h5
        layers = read(filename, data, limits)
    except WeightsUploadError:
        raise
    except Exception as e:  # a damaged file can fail anywhere inside the parsers
        raise WeightsUploadError(
            f"{filename} is damaged or not what it claims to be ({type(e).__name__}). {_HELP}"
        ) from None
    if not layers:
        raise WeightsUploadError(f"{filename} holds no GroupQueryAttention weights. {_HELP}")
    return layers


# ---------------------------------------------------------------------------------------------
# Formats.


def _read_npz(filename: str, data: bytes, limits: UploadLimits) -> list[UploadedLayer]:
    if not data.startswith(b"PK\x03\x04"):  # NumPy would try anything else as a pickle
        raise WeightsUploadError(f"{filename} is not a valid .npz file (not a zip archive).")
    _check_zip(filename, data, limits)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            names = list(npz.files)
            if len(names) > 200:
                raise WeightsUploadError(f"{filename} holds {len(names)} arrays; at most 200.")
            arrays = {name: _array(filename, name, npz[name], limits) for name in names}
    except WeightsUploadError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower() or "object arrays" in str(e).lower():
            raise WeightsUploadError(
                f"{filename} holds Python objects (pickled data), which is never loaded. {_HELP}"
            ) from None
        raise WeightsUploadError(f"{filename} is not a valid .npz file ({e}).") from None
    except (OSError, EOFError, KeyError) as e:
        raise WeightsUploadError(f"{filename} is not a valid .npz file ({e}).") from None

    if names and all(re.fullmatch(r"arr_\d+", n) for n in names):
        ordered = [arrays[f"arr_{i}"] for i in range(len(names))]
        return [_from_list(filename, "the layer", ordered, limits)]
    groups: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    for name, array in arrays.items():
        match = re.fullmatch(
            r"(?:(.*)/)?(query|key|value|gate|attention_output)/(kernel|bias)", name
        )
        if match:
            prefix = match.group(1) or "the layer"
            groups.setdefault(prefix, {})[(match.group(2), match.group(3))] = array
    return [
        _from_named(filename, prefix, found, limits) for prefix, found in sorted(groups.items())
    ]


def _check_zip(filename: str, data: bytes, limits: UploadLimits) -> None:
    """Refuse an archive whose members would unpack to more than the app reads, before
    unpacking anything: a 2 MB .npz (savez_compressed) can inflate to gigabytes."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise WeightsUploadError(f"{filename} is not a valid .npz file ({e}).") from None
    if len(members) > 200:
        raise WeightsUploadError(f"{filename} holds {len(members)} arrays; at most 200.")
    # zipfile never returns more than a member's declared size, so checking it is enough.
    limit = limits.array_values * 8 + 4096  # float64 values plus the .npy header
    total = sum(member.file_size for member in members)
    if total > limits.total_values * 8:
        raise WeightsUploadError(
            f"{filename} unpacks to {total:,} bytes; the limit is {limits.total_values:,} values "
            "in all."
        )
    for member in members:
        if member.file_size > limit:
            raise WeightsUploadError(
                f"{filename}: {member.filename} unpacks to {member.file_size:,} bytes; the "
                f"limit is {limits.array_values:,} values per array."
            )
        with _archive_member(data, member) as f:  # the header says what np.load would allocate
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else (np.lib.format.read_array_header_2_0)
            )
            shape, _, dtype = read(f)
        if dtype.hasobject:
            raise WeightsUploadError(
                f"{filename} holds Python objects (pickled data), which is never loaded. {_HELP}"
            )
        if int(np.prod(shape)) * dtype.itemsize > member.file_size:
            raise WeightsUploadError(
                f"{filename}: {member.filename} declares {shape} {dtype} values, which it does "
                "not hold."
            )


@contextlib.contextmanager
def _archive_member(data: bytes, member):
    with zipfile.ZipFile(io.BytesIO(data)) as archive, archive.open(member) as f:
        yield f


def _read_h5(filename: str, data: bytes, limits: UploadLimits) -> list[UploadedLayer]:
    try:
        import h5py
    except ImportError:  # a deployment may leave the HDF5 parser out (SECURITY.md)
        raise WeightsUploadError(
            f"{filename}: this server does not read .h5 files; upload the weights as .npz "
            "(np.savez('name.npz', *layer.get_weights()))."
        ) from None
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except (OSError, ValueError) as e:
        raise WeightsUploadError(f"{filename} is not a valid HDF5 file ({e}). {_HELP}") from None
    layers: list[UploadedLayer] = []
    values = 0
    with f:
        for path, group in _groups(filename, f, set()):
            children = set(group.keys())
            if not {_KERAS_SUBLAYERS[n] for n in _REQUIRED} <= children:
                continue
            found: dict[tuple[str, str], np.ndarray] = {}
            for ours, keras_name in _KERAS_SUBLAYERS.items():
                if keras_name not in children:
                    continue
                variables = _child(filename, group, f"{keras_name}/vars")
                for index, what in (("0", "kernel"), ("1", "bias")):
                    if variables is not None and index in variables:
                        dataset = _child(filename, variables, index)
                        where = f"{path}/{keras_name}/vars/{index}"
                        found[(ours, what)] = _dataset(filename, where, dataset, limits)
                        values += found[(ours, what)].size
                        if values > limits.total_values:
                            raise WeightsUploadError(
                                f"{filename} holds more than {limits.total_values:,} values in "
                                "all; that is the limit."
                            )
            layers.append(_from_named(filename, path or "the layer", found, limits))
            if len(layers) > limits.layers:
                raise WeightsUploadError(
                    f"{filename} holds more than {limits.layers} attention layers; that is "
                    "the limit."
                )
    return layers


def _groups(filename: str, root, seen: set, path: str = "", depth: int = 0):
    """Every group under ``root`` reached through hard links only, each once (a group linked
    from two places, or from inside itself, is not walked again); depth and count bounded."""
    import h5py

    if depth > 12:
        raise WeightsUploadError(f"{filename} nests groups more than 12 deep.")
    if root.id in seen:
        return
    seen.add(root.id)
    if len(seen) > 1000:
        raise WeightsUploadError(f"{filename} holds more than 1,000 groups.")
    yield path, root
    for name in root:
        link = root.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise WeightsUploadError(
                f"{filename} links {path}/{name} to another file or path; links are refused."
            )
        child = root[name]
        if isinstance(child, h5py.Group):
            yield from _groups(filename, child, seen, f"{path}/{name}".strip("/"), depth + 1)


def _child(filename: str, group, name: str):
    import h5py

    node = group
    for part in name.split("/"):
        if part not in node:
            return None
        if not isinstance(node.get(part, getlink=True), h5py.HardLink):
            raise WeightsUploadError(f"{filename} links {name} elsewhere; links are refused.")
        node = node[part]
    return node


def _dataset(filename: str, where: str, dataset, limits: UploadLimits) -> np.ndarray:
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        raise WeightsUploadError(f"{filename}: {where} is not an array.")
    if dataset.external or dataset.is_virtual:
        raise WeightsUploadError(
            f"{filename}: {where} stores its data in another file; that is refused."
        )
    if dataset.size > limits.array_values:
        raise WeightsUploadError(
            f"{filename}: {where} has {dataset.size:,} values; the limit is "
            f"{limits.array_values:,}."
        )
    # Keras writes plain arrays: floats, stored whole, no compression. Anything else could
    # make a small file unpack (or fill in) far more than it holds, so it is refused unread.
    dtype, plist = dataset.dtype, dataset.id.get_create_plist()
    if dtype.kind != "f" or dtype.subdtype is not None or dtype.itemsize not in (2, 4, 8):
        raise WeightsUploadError(
            f"{filename}: {where} holds {dtype} values; weights must be floating point."
        )
    if (
        dataset.ndim > 3
        or plist.get_layout() != h5py.h5d.CONTIGUOUS
        or plist.get_nfilters() != 0
        or dataset.id.get_storage_size() != dataset.nbytes
    ):
        raise WeightsUploadError(
            f"{filename}: {where} is stored compressed, chunked or partly unwritten; weights "
            "saved by Keras are plain arrays."
        )
    return _array(filename, where, dataset[()], limits)


def _array(filename: str, where: str, value, limits: UploadLimits) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.kind != "f":
        raise WeightsUploadError(
            f"{filename}: {where} holds {a.dtype} values; weights must be floating point."
        )
    if a.size > limits.array_values:
        raise WeightsUploadError(
            f"{filename}: {where} has {a.size:,} values; the limit is {limits.array_values:,}."
        )
    # Checked in float32, what the layer runs in: a finite float64 beyond float32's range
    # (3.4e38) would become infinite there.
    with np.errstate(over="ignore"):
        a32 = a.astype(np.float32)
    if not np.isfinite(a32).all():
        bad = int(np.size(a32) - np.isfinite(a32).sum())
        raise WeightsUploadError(
            f"{filename}: {where} holds {bad} NaN or infinite values in float32 (the layer's "
            f"dtype, whose range ends at ±{np.finfo(np.float32).max:.1e})."
        )
    return a32


# ---------------------------------------------------------------------------------------------
# Checking and assembling one layer.


def _from_list(
    filename: str, name: str, weights: list[np.ndarray], limits: UploadLimits
) -> UploadedLayer:
    """Arrays in Keras' get_weights() order: kernel (and bias) of query, key, [gate], value,
    output. Bias and gate are told apart by the count: 4, 5, 8 or 10 arrays."""
    layouts = {4: (False, False), 5: (False, True), 8: (True, False), 10: (True, True)}
    if len(weights) not in layouts:
        raise WeightsUploadError(
            f"{filename} holds {len(weights)} unnamed arrays; a GroupQueryAttention layer has "
            f"4, 5, 8 or 10 (kernels, biases, gate) in the order of get_weights()."
        )
    use_bias, use_gate = layouts[len(weights)]
    names = [
        (layer, what)
        for layer in WEIGHT_ORDER
        if layer != "gate" or use_gate
        for what in (("kernel", "bias") if use_bias else ("kernel",))
    ]
    return _from_named(filename, name, dict(zip(names, weights, strict=True)), limits)


def _from_named(
    filename: str, name: str, found: dict[tuple[str, str], np.ndarray], limits: UploadLimits
) -> UploadedLayer:
    missing = [f"{layer}/kernel" for layer in _REQUIRED if (layer, "kernel") not in found]
    if missing:
        raise WeightsUploadError(f"{filename}: {name} has no {', '.join(missing)}. {_HELP}")
    q, k, o = (found[(n, "kernel")] for n in ("query", "key", "attention_output"))
    for what, kernel in (("query", q), ("key", k), ("value", found[("value", "kernel")])):
        if kernel.ndim != 3:
            raise WeightsUploadError(
                f"{filename}: {name} {what}/kernel has shape {kernel.shape}; expected 3 axes "
                f"[D, heads, head_dim]."
            )
    D, N, H = q.shape
    K = k.shape[1]
    Dk, Dv = k.shape[0], found[("value", "kernel")].shape[0]
    sizes = {"D": D, "N": N, "H": H, "K": K, "key input size": Dk, "value input size": Dv}
    empty = [what for what, size in sizes.items() if size == 0]
    if empty:
        raise WeightsUploadError(
            f"{filename}: {name} has an empty axis ({', '.join(empty)} = 0); every size of a "
            "layer is at least 1."
        )
    if N > limits.query_heads or H > limits.head_dim or D > limits.model_dim:
        raise WeightsUploadError(
            f"{filename}: {name} has N = {N}, H = {H}, D = {D}; the limits are "
            f"N <= {limits.query_heads}, H <= {limits.head_dim}, D <= {limits.model_dim}."
        )
    if N % K:
        raise WeightsUploadError(
            f"{filename}: {name} has {N} query heads and {K} K/V heads; num_query_heads must "
            f"be divisible by num_key_value_heads."
        )
    if Dv != D:
        raise WeightsUploadError(
            f"{filename}: {name} takes values of {Dv} features and queries of {D}: "
            "GroupQueryAttention needs both of the same size (Keras: 'The last dimension of "
            "query_shape and value_shape must be equal'), so this layer cannot run here."
        )
    use_bias = any(what == "bias" for _, what in found)
    spec = GQASpec(N, K, H, use_bias=use_bias, use_gate=("gate", "kernel") in found)
    expected = param_shapes(spec, D, Dv, Dk)
    if o.ndim != 3 or o.shape[2] != D:
        raise WeightsUploadError(
            f"{filename}: {name} attention_output/kernel has shape {o.shape}; expected "
            f"{expected[('attention_output', 'kernel')]} for {N} heads of {H} and D = {D}."
        )
    if set(found) != set(expected):
        extra = sorted(f"{a}/{b}" for a, b in set(found) ^ set(expected))
        raise WeightsUploadError(
            f"{filename}: {name} has an incomplete set of biases ({', '.join(extra)}): "
            f"either every sublayer has a bias (use_bias=True) or none does."
        )
    for key, shape in expected.items():
        if tuple(found[key].shape) != tuple(shape):
            raise WeightsUploadError(
                f"{filename}: {name} {key[0]}/{key[1]} has shape {found[key].shape}; expected "
                f"{tuple(shape)} (N = {N}, K = {K}, H = {H}, D = {D})."
            )
    params: Params = {}
    for (layer, what), array in found.items():
        params.setdefault(layer, {})[what] = array
    return UploadedLayer(name, spec, params, D, Dv, Dk)
