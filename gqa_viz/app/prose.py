"""The pages' longer prose, kept in ``assets/text/<page>.md`` so a page reads as its layout.

A file is split into sections, each starting at a line ``<!-- name -->``. Within a section,
paragraphs are separated by a blank line and may be wrapped freely: a paragraph's lines are
joined with spaces, except that a line starting with ``- `` (a list item) starts a new line.
``{name}`` fields are left for the caller's ``str.format``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

TEXT_DIR = Path(__file__).resolve().parents[2] / "assets" / "text"


@functools.cache
def sections(page: str) -> dict[str, str]:
    """The sections of ``assets/text/{page}.md`` by name (read once per process)."""
    text = (TEXT_DIR / f"{page}.md").read_text(encoding="utf-8")
    parts = re.split(r"^<!-- (\S+) -->$", text, flags=re.M)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        paragraphs = re.split(r"\n\s*\n", body.strip())
        out[name] = "\n\n".join(re.sub(r"\n(?!- )", " ", p.strip()) for p in paragraphs)
    return out
