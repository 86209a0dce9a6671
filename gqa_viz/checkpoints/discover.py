"""Which checkpoints are on this machine: the Hugging Face cache and the operator's directories.

Nothing is downloaded and nothing a visitor typed is opened: the list is built from

* the Hugging Face hub cache (``huggingface_hub.scan_cache_dir``, offline): one entry per
  cached model repository, the snapshot its ``refs/main`` points to (or, without one, the
  most recently modified snapshot), named by its repo id (``HuggingFaceTB/SmolLM2-135M``);
* directories the operator names: each is a checkpoint (it holds ``config.json``) or a folder
  of checkpoints (its subfolders that do), named by folder name.

Each :class:`Entry` is checked from its config and safetensors headers alone
(:func:`gqa_viz.checkpoints.inspect`); one that cannot be used stays in the list with the
reason (too large, unsupported family, pickled weights), so the operator sees why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gqa_viz import checkpoints
from gqa_viz.checkpoints.files import default_root


@dataclass(frozen=True)
class Entry:
    """One model a visitor may pick: its name, where it is, and what it is or why not."""

    name: str
    path: Path
    root: Path  # where its symlinks may lead (the cache's models--ORG--NAME folder)
    source: str  # "cache" or "directory"
    summary: checkpoints.Summary | None
    problem: str | None  # why it cannot be opened, short: "too large: 7.2B parameters ..."
    reason: str | None = None  # the whole explanation, for the message when it is chosen

    @property
    def usable(self) -> bool:
        return self.problem is None

    @property
    def label(self) -> str:
        """The name with its size, or with the reason it cannot be opened."""
        if self.problem is not None:
            return f"{self.name} ({self.problem})"
        s = self.summary
        return f"{self.name} ({s.arch.family}, {_count(s.params)} parameters)"


def _count(n: int) -> str:
    """135M, 1.2B, 70K: parameters at a glance."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    return f"{n / 1e6:.0f}M" if n >= 1e6 else f"{max(n, 1) / 1e3:.0f}K"


def _check(name: str, path: Path, root: Path, source: str, max_params: int, max_layers) -> Entry:
    try:
        summary = checkpoints.inspect(path, root=root, max_layers=max_layers)
    except checkpoints.CheckpointError as err:
        return Entry(name, path, root, source, None, _short(str(err)), str(err))
    problem = None
    if summary.params > max_params:
        problem = (
            f"too large: {_count(summary.params)} parameters, the limit is {_count(max_params)}"
        )
    return Entry(name, path, root, source, summary, problem)


def _short(message: str) -> str:
    """The first sentence of ``message``, at most 120 characters: a list's label."""
    first = message.split(". ")[0].rstrip(".")
    return first if len(first) <= 120 else first[:117] + "..."


def hub_cache_dir(environ=os.environ) -> Path:
    """The hub cache as huggingface_hub finds it: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache."""
    if environ.get("HF_HUB_CACHE"):
        return Path(environ["HF_HUB_CACHE"]).expanduser()
    home = environ.get("HF_HOME") or os.path.join(
        environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def from_cache(cache_dir: Path, *, max_params: int, max_layers: int | None = None) -> list[Entry]:
    """One entry per cached model repository holding a ``config.json`` (see the module)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    if not Path(cache_dir).is_dir():
        return []
    try:
        info = scan_cache_dir(cache_dir)
    except (CacheNotFound, OSError, ValueError):
        return []
    entries = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        main = [r for r in repo.revisions if "main" in r.refs]
        revision = main[0] if main else max(repo.revisions, key=lambda r: r.last_modified)
        snapshot = Path(revision.snapshot_path)
        if not (snapshot / "config.json").exists():
            continue
        entries.append(
            _check(repo.repo_id, snapshot, Path(repo.repo_path), "cache", max_params, max_layers)
        )
    return entries


def from_directories(directories, *, max_params: int, max_layers: int | None = None) -> list[Entry]:
    """Entries for operator-named directories: checkpoints, or folders of checkpoints."""
    found: list[Path] = []
    for d in directories:
        d = Path(d).expanduser()
        if (d / "config.json").is_file():
            found.append(d)
        elif d.is_dir():
            found.extend(sorted(p for p in d.iterdir() if (p / "config.json").is_file()))
    names = [p.name for p in found]
    entries = []
    for path in found:
        name = path.name if names.count(path.name) == 1 else f"{path.parent.name}/{path.name}"
        # A folder that is itself a cache snapshot may link into its models--* folder.
        root = default_root(path)
        entries.append(_check(name, path, root, "directory", max_params, max_layers))
    return entries


def find(
    *, cache_dir: Path | None, directories=(), max_params: int, max_layers: int | None = None
) -> list[Entry]:
    """The operator's models: cache entries first, then directories; names made unique."""
    entries = []
    if cache_dir is not None:
        entries += from_cache(cache_dir, max_params=max_params, max_layers=max_layers)
    entries += from_directories(directories, max_params=max_params, max_layers=max_layers)
    seen: set[str] = set()
    unique = []
    for e in entries:
        name, i = e.name, 2
        while name in seen:
            name, i = f"{e.name} ({i})", i + 1
        seen.add(name)
        unique.append(e if name == e.name else Entry(name, *_rest(e)))
    return unique


def _rest(e: Entry):
    return e.path, e.root, e.source, e.summary, e.problem, e.reason
