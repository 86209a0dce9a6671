"""Presets: published ``config.json`` files of real decoder models, read like an upload.

Every file of ``assets/configs/`` listed in ``assets/configs/SOURCES.json`` (``{file: {name,
repo, url, read, read_from, note}}``: where the config was published and when it was read) is
read by :func:`gqa_viz.kv_cache.from_config`, the same path as a visitor's upload, so a preset
holds exactly what its published file says (and what transformers' config class defaults for
the fields it leaves out, listed in the model's ``defaulted``). Nothing here is typed by hand.

:data:`PRESETS` maps each preset's name (from SOURCES.json, in its order) to its
:class:`~gqa_viz.kv_cache.ModelConfig`, :data:`SOURCES` the same names to their
:class:`PresetSource`. Without the folder both are empty.

Pure Python: no JAX, no Streamlit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gqa_viz.kv_cache import ModelConfig, from_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "assets" / "configs"
SOURCES_FILE = "SOURCES.json"


@dataclass(frozen=True)
class PresetSource:
    """Where a preset's config was published and read: ``repo`` (the Hugging Face repository),
    ``url`` (the file), ``read`` (the date it was read), ``read_from`` (how: the hub page, a
    revision, a mirror), ``note`` (anything a reader should know)."""

    file: str
    name: str
    repo: str
    url: str
    read: str
    read_from: str
    note: str = ""


def load_presets(
    directory: Path = CONFIG_DIR,
) -> tuple[dict[str, ModelConfig], dict[str, PresetSource]]:
    """(models, sources) of every config listed in ``directory``'s SOURCES.json.

    Empty when the folder or SOURCES.json does not exist. Raises ValueError, naming the file,
    for a listed file that is missing, not JSON or refused by ``from_config``, and for a
    source entry without a name or repository: the repository's own files must all read.
    """
    sources_path = Path(directory) / SOURCES_FILE
    if not sources_path.is_file():
        return {}, {}
    listing = json.loads(sources_path.read_text(encoding="utf-8"))
    models: dict[str, ModelConfig] = {}
    sources: dict[str, PresetSource] = {}
    for file, meta in listing.items():
        path = Path(directory) / (file if file.endswith(".json") else f"{file}.json")
        try:
            source = PresetSource(
                file=path.name,
                name=str(meta["name"]),
                repo=str(meta["repo"]),
                url=str(meta.get("url", "")),
                read=str(meta.get("read", "")),
                read_from=str(meta.get("read_from", "")),
                note=str(meta.get("note") or ""),
            )
            config = json.loads(path.read_text(encoding="utf-8"))
            # The repository's own files: no upload cap (max_layers=None).
            model = from_config(config, name=source.name, max_layers=None)
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"Preset {path.name}: {type(error).__name__}: {error}") from error
        if source.name in models:
            raise ValueError(f"Preset {path.name}: the name {source.name!r} is used twice.")
        models[source.name] = model
        sources[source.name] = source
    return models, sources


PRESETS, SOURCES = load_presets()
