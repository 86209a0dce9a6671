"""Reading tensors from ``.safetensors`` files, and only from them: nothing is ever unpickled.

The format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}``, then the raw bytes. This module reads the
headers of every shard first (so sizes and names are checked before any weight is read), then
copies one tensor at a time into memory on request, in the dtype it was stored in (bf16 through
``ml_dtypes``). A checkpoint is ``model.safetensors`` or shards listed by
``model.safetensors.index.json``; shard names must be plain file names next to it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from gqa_viz.checkpoints.files import CheckpointDir, CheckpointError

DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
HEADER_BYTE_LIMIT = 100_000_000  # the safetensors library's own cap on a header


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes are: its file, byte range, stored dtype and shape."""

    file: Path
    start: int  # absolute offset in the file
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


def _header(path: Path, name: str) -> dict[str, TensorInfo]:
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{name} is too short to be a safetensors file.")
        (length,) = struct.unpack("<Q", raw)
        if length > HEADER_BYTE_LIMIT or 8 + length > file_size:
            raise CheckpointError(
                f"{name} is not a valid safetensors file (its header claims {length:,} bytes)."
            )
        try:
            header = json.loads(f.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{name} has a header that is not valid JSON.") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} has a malformed header.")
    data_start, data_size = 8 + length, file_size - 8 - length
    out = {}
    for tensor, entry in header.items():
        if tensor == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            shape = tuple(int(d) for d in shape)
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{name}: the header entry of {tensor} is malformed.") from None
        if dtype not in DTYPES:
            raise CheckpointError(
                f"{name}: tensor {tensor} is stored as {dtype}; gqa-viz reads "
                f"{', '.join(DTYPES)} weights."
            )
        info = TensorInfo(path, data_start + begin, DTYPES[dtype], shape)
        if min(shape, default=1) >= 0 and 0 <= begin <= end and end - begin != info.nbytes:
            raise CheckpointError(
                f"{name}: tensor {tensor} spans {end - begin:,} bytes, but shape {list(shape)} "
                f"in {dtype} needs {info.nbytes:,}; the file is corrupt."
            )
        if min(shape, default=1) < 0 or not (0 <= begin <= end <= data_size):
            raise CheckpointError(
                f"{name}: tensor {tensor} claims bytes {begin}..{end} for shape {shape} "
                f"{dtype}, which the file ({file_size:,} bytes) does not hold; it is truncated "
                "or corrupt."
            )
        out[tensor] = info
    return out


def pickled_files(cdir: CheckpointDir) -> list[str]:
    """Names of weight files in formats that unpickle when loaded (never opened here)."""
    return [n for n in cdir.names() if n.lower().endswith(PICKLED)]


def index(cdir: CheckpointDir, *, max_index_bytes: int = 50_000_000) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint by name, from the headers alone (no weight is read)."""
    if cdir.has(INDEX):
        weight_map = cdir.read_json(INDEX, max_bytes=max_index_bytes).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{INDEX} has no 'weight_map'.")
        shards = sorted({str(f) for f in weight_map.values()})
    elif cdir.has(SINGLE):
        weight_map, shards = None, [SINGLE]
    else:
        pickled = pickled_files(cdir)
        if pickled:
            raise CheckpointError(
                f"This checkpoint's weights are in {', '.join(pickled)}: a pickle-based format "
                "that can run code when loaded, so gqa-viz never opens it. Only .safetensors "
                "weights are read; convert the checkpoint once with Hugging Face's tools "
                "(e.g. save_pretrained(..., safe_serialization=True))."
            )
        raise CheckpointError(f"No {SINGLE} or {INDEX} in the checkpoint directory.")
    tensors: dict[str, TensorInfo] = {}
    for shard in shards:
        for tensor, info in _header(cdir.path(shard), shard).items():
            if weight_map is not None and weight_map.get(tensor) != shard:
                continue  # the index names where each tensor lives; other copies are ignored
            tensors[tensor] = info
    if weight_map is not None:
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise CheckpointError(
                f"{INDEX} lists {missing[0]} in {weight_map[missing[0]]}, which does not hold it."
            )
    return tensors


def aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an ``align``-byte boundary.

    JAX's CPU backend adopts such a buffer without copying it (``device_put(...,
    may_alias=True)``), so a loaded weight exists once in memory, not twice.
    """
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start : start + n].view(dtype).reshape(shape)


def read(info: TensorInfo) -> np.ndarray:
    """One tensor's bytes, copied into a new aligned array of its stored dtype and shape."""
    out = aligned_empty(info.shape, info.dtype)
    with open(info.file, "rb") as f:
        f.seek(info.start)
        got = f.readinto(memoryview(out.reshape(-1).view(np.uint8)))
    if got != info.nbytes:
        raise CheckpointError(f"{info.file.name} ended before a tensor's last byte.")
    return out
