"""Side-by-side blocks that stack when the page is too narrow for them: :func:`wrapping_row`.

``st.columns`` keeps its proportions down to a 640 px window, so on a laptop split screen or a
projector at 768 px a figure planned for half a page is squeezed into a third and a summary
table into a sliver. Here each block has a least width (for a figure planned at a width, 80%
of it, where its ticks still fit; for text or a table, what it needs to read well): while the
row has room for all of them they sit side by side and share what is left in proportion to
their weights; when it has not, the later ones wrap below, each as wide as the row (or as
its most width, where it has one: a figure planned for half a page keeps its proportions).
Plain CSS does it in the browser, with no rerun and no width probe, so nothing can loop: Streamlit's
horizontal container (``st.container(horizontal=True)``, which wraps) and one style rule per
block, addressed through the ``st-key-`` class a keyed container carries.
"""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator


def wrapping_row(
    key: str,
    *blocks: tuple[float, int] | tuple[float, int, int],
    gap: str = "medium",
    align: str = "top",
) -> list[DeltaGenerator]:
    """One container per ``(weight, least_px)`` in ``blocks``, side by side in a row keyed
    ``key`` while each gets ``least_px`` (the rest shared by ``weight``), else wrapped below.

    A block is never wider than the row, so a least width above the row's makes it the row's
    width rather than overflow. A third number, ``(weight, least_px, most_px)``, caps the
    block's width, side by side or wrapped (what is left of the row stays empty, on the right):
    a chart stretched to its block is then drawn at most that wide. ``key`` must be unique on
    the page, like a widget's; ``gap`` as ``st.columns`` takes it; ``align``: the blocks'
    vertical alignment in the row (``"top"``, ``"center"`` or ``"bottom"``).
    """
    # Streamlit wraps each child of a horizontal container in a flex item of its own; the rule
    # sets that item's flex (its basis is the least width), min-width and max-width, found by the
    # keyed container it holds. Blocks wrapped below are as far apart as any two elements of a
    # page (1rem), whatever ``gap`` puts between blocks side by side.
    rules = [f".st-key-{key} {{ row-gap: 1rem; }}"]
    for i, (weight, least, *most) in enumerate(blocks):
        cap = f" max-width: {most[0]}px;" if most else ""
        rules.append(
            f"div:has(> .st-key-{key}-{i}) {{ flex: {weight:g} 1 {least}px; "
            f"min-width: min(100%, {least}px);{cap} }}"
        )
    st.html(f"<style>{''.join(rules)}</style>")  # a style-only st.html takes no room on the page
    row = st.container(horizontal=True, gap=gap, vertical_alignment=align, key=key)
    return [row.container(key=f"{key}-{i}") for i in range(len(blocks))]
