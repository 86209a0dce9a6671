"""Colours and figure styling: the one place they are defined.

Every figure takes its colours from here, so a KV group has the same colour on every page.
"""

from __future__ import annotations

# Attention probabilities: white (0) to deep blue (max). Sequential, colour-blind safe.
PROB_COLORSCALE = "Blues"
# Logits are signed: diverging, centred on 0.
LOGIT_COLORSCALE = "RdBu_r"
# Differences between two attention maps (signed).
DIFF_COLORSCALE = "RdBu_r"
# Masked cells are drawn in this colour, never as a low score.
MASKED_COLOR = "#9e9e9e"
MASKED_PATTERN_COLOR = "#6d6d6d"

# One colour per KV head / group (Okabe-Ito, then Tableau for more groups); cycles past 16.
GROUP_COLORS = [
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#D55E00",
    "#56B4E9",
    "#882255",
    "#000000",
    "#4E79A7",
    "#F28E2B",
    "#59A14F",
    "#B07AA1",
    "#EDC948",
    "#76B7B2",
    "#FF9DA7",
    "#9C755F",
]

FONT_FAMILY = "Inter, 'Source Sans Pro', 'Helvetica Neue', Arial, sans-serif"
PAPER_BG = "white"


def group_color(kv_head: int) -> str:
    """The colour of KV head ``kv_head`` (and of every query head that reads it)."""
    return GROUP_COLORS[kv_head % len(GROUP_COLORS)]
