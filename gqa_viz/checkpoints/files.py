"""Opening a checkpoint's files: which names are allowed, and where a symlink may lead.

A checkpoint directory is read through :class:`CheckpointDir` only. It opens plain file names
directly inside the directory (no ``/``, no ``..``) and follows a symlink only when its target
lies inside ``root``: the Hugging Face cache keeps every snapshot file as a symlink to
``../../blobs/<hash>`` of the same repository folder, so the root of a cached snapshot is its
``models--ORG--NAME`` folder. Anything else (a link out of the cache, a shard named
``../x.safetensors`` in an index) is refused with a :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says why and names the file or tensor."""


def default_root(directory: Path) -> Path:
    """The folder symlinks may point into: the enclosing ``models--*`` cache folder, else ``directory``."""
    for parent in (directory, *directory.parents):
        if parent.name.startswith("models--"):
            return parent
    return directory


class CheckpointDir:
    """A checkpoint directory whose files are opened by plain name, inside ``root``."""

    def __init__(self, directory, root=None):
        directory = Path(directory).expanduser()
        if not directory.is_dir():
            raise CheckpointError(f"{str(directory)!r} is not a directory.")
        self.directory = directory
        self.root = Path(os.path.realpath(root if root is not None else default_root(directory)))
        if not _inside(Path(os.path.realpath(directory)), self.root):
            raise CheckpointError(f"{str(directory)!r} is not inside {str(self.root)!r}.")

    def names(self) -> list[str]:
        """Plain file names directly inside the directory (links included), sorted."""
        return sorted(p.name for p in self.directory.iterdir() if not p.is_dir())

    def has(self, name: str) -> bool:
        return _plain(name) and (self.directory / name).exists()

    def path(self, name: str) -> Path:
        """The real path of file ``name``, after checking the name and where it leads."""
        if not _plain(name):
            raise CheckpointError(
                f"{name!r} is not a plain file name inside the checkpoint directory; "
                "a checkpoint may only refer to files next to its config.json."
            )
        link = self.directory / name
        if not link.exists():
            raise CheckpointError(f"{name} is missing from {str(self.directory)!r}.")
        real = Path(os.path.realpath(link))
        if not _inside(real, self.root):
            raise CheckpointError(
                f"{name} is a link to {str(real)!r}, outside {str(self.root)!r}; "
                "links are followed only inside the checkpoint's own folder (the cache root)."
            )
        if not real.is_file():
            raise CheckpointError(f"{name} is not a regular file.")
        return real

    def size(self, name: str) -> int:
        return self.path(name).stat().st_size

    def read_json(self, name: str, *, max_bytes: int) -> dict:
        """A JSON object from file ``name``, refused over ``max_bytes`` or when malformed."""
        path = self.path(name)
        size = path.stat().st_size
        if size > max_bytes:
            raise CheckpointError(f"{name} is {size:,} bytes; the limit is {max_bytes:,} bytes.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{name} is not valid JSON: {err}.") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{name} must hold a JSON object, got {type(data).__name__}.")
        return data


def _plain(name: str) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
    )


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
