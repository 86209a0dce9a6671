"""Colours and figure styling: the one place they are defined.

Every figure takes its colours from here, so a KV group has the same colour on every page.
"""

from __future__ import annotations

from plotly.colors import sample_colorscale

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

# Text on figures: titles and labels, and secondary notes.
TEXT_DARK = "#1F2933"
TEXT_MUTED = "#52606D"

FONT_FAMILY = "Inter, 'Source Sans Pro', 'Helvetica Neue', Arial, sans-serif"
PAPER_BG = "white"


def group_color(kv_head: int) -> str:
    """The colour of KV head ``kv_head`` (and of every query head that reads it)."""
    return GROUP_COLORS[kv_head % len(GROUP_COLORS)]


# --- Mask Lab: boolean mask grids and their annotations. ---------------------------------------
# Two colours for a boolean mask: a pair the query may attend to, and a masked pair (the same
# grey as masked cells of the attention maps).
ATTEND_COLOR = "#2B6CB0"
MASK_OFF_COLOR = MASKED_COLOR
# Query rows marked beside a mask: no allowed key at all, and exactly one allowed key.
FULLY_MASKED_ROW_COLOR = "#D55E00"
SINGLE_KEY_ROW_COLOR = "#E69F00"
# Causal alignment difference (T != S): pairs only one of the two alignments allows.
ONLY_TOP_LEFT_COLOR = "#CC79A7"
ONLY_BOTTOM_RIGHT_COLOR = "#009E73"
# Block-sparse view: blocks a kernel skips, computes with a mask, and computes in full.
EMPTY_BLOCK_COLOR = "#9AA5B1"  # dotted outline of an empty tile
EMPTY_BLOCK_FILL = "#E4E7EB"  # an empty tile drawn as one cell
PARTIAL_BLOCK_COLOR = "#E69F00"
FULL_BLOCK_COLOR = "#1F2933"
EMPTY_BLOCK_FADE = "rgba(255,255,255,0.6)"  # laid over an empty tile's cells
# Neutral badge (settings, Keras' own masks) and the final mask's badge.
NEUTRAL_BADGE_COLOR = "#52606D"
FINAL_MASK_COLOR = "#1F2933"
# Grid and axis lines of the Mask Lab's side panels.
GRID_LINE_COLOR = "#E4E7EB"
AXIS_LINE_COLOR = "#CBD2D9"
# One colour per Mask Lab component (title badge of its panel); the final mask is dark.
MASK_COMPONENT_COLORS = {
    "settings": NEUTRAL_BADGE_COLOR,
    "causal_bottom_right": "#009E73",
    "causal_window": "#0072B2",
    "prefix_lm": "#CC79A7",
    "document": "#D55E00",
    "dilated_window": "#56B4E9",
    "block_sparse": "#882255",
    "uploaded": "#E69F00",
    "final": FINAL_MASK_COLOR,
}
# Panel and line colours of the window-semantics comparison (Keras, JAX, FlexAttention).
WINDOW_COLORS = ("#0072B2", "#56B4E9", "#E69F00", "#D55E00", "#009E73", "#CC79A7")

# --- Walkthrough. ------------------------------------------------------------------------------
# The "attend" colour of its mask figure: a mid tone of the probability scale.
STEPS_ATTEND_COLOR = sample_colorscale(PROB_COLORSCALE, [0.6])[0]

# --- KV sharing. -------------------------------------------------------------------------------
# The KV cache of the three head layouts: MHA vermilion, as configured blue, MQA green.
VARIANT_COLORS = {"mha": GROUP_COLORS[4], "configured": GROUP_COLORS[0], "mqa": GROUP_COLORS[2]}
# The two drift measures against K: JS divergence and relative output error.
DRIFT_COLORS = {"js": GROUP_COLORS[0], "rel_error": GROUP_COLORS[4]}
GPU_LINE_COLOR = TEXT_DARK  # the GPU memory left for the cache
TRANSPARENT = "rgba(0,0,0,0)"  # the fill of a ring marker

# --- KV calculator. ----------------------------------------------------------------------------
# Layers by what they cache: global (full attention) blue, as the configured cache above; local
# (sliding window) orange, and further windows in the next group colours; MLA reddish purple.
LAYER_KIND_COLORS = {"full": GROUP_COLORS[0], "sliding": GROUP_COLORS[1], "mla": GROUP_COLORS[3]}
EXTRA_WINDOW_COLORS = (GROUP_COLORS[5], GROUP_COLORS[6], GROUP_COLORS[8])
# The model's max_position_embeddings on the context axis: wine, a limit (not the vermilion of
# the MHA curve beside it).
POSITION_LIMIT_COLOR = GROUP_COLORS[6]

# --- Trained heads. -----------------------------------------------------------------------------
# The right key's outline: vermilion stands out on the white-to-blue probability scale at both
# ends.
RIGHT_KEY_COLOR = FULLY_MASKED_ROW_COLOR
# Right and wrong predictions: the Okabe-Ito green / vermilion pair (colour-blind safe).
RIGHT_COLOR, WRONG_COLOR = GROUP_COLORS[2], GROUP_COLORS[4]
ANSWER_FILL = EMPTY_BLOCK_FILL  # answer positions: the light grey of the Mask Lab's empty tiles
# One colour per MHA -> GQA conversion method.
METHOD_COLORS = {"mean": GROUP_COLORS[0], "first": GROUP_COLORS[1], "random": GROUP_COLORS[3]}

# --- Real models. -------------------------------------------------------------------------------
# One sequential scale per head statistic of the overview (entropy: dark = focused on few keys;
# distance and first-token share: dark = more), and one for the drift (JS divergence) a
# grouping causes.
HEAD_STAT_COLORSCALES = {"entropy": "Viridis", "distance": "Blues", "sink": "Oranges"}
DRIFT_COLORSCALE = "Reds"
# Loss on the prompt and on the shipped passage; the KV-cache bytes behind them, in light grey.
LOSS_COLORS = {"prompt": GROUP_COLORS[0], "passage": GROUP_COLORS[4]}
KV_BYTES_COLOR = "#CBD2D9"
# Token chips: their fill, border, the visible-space dot, and the chosen position's outline.
CHIP_FILL = "#F3F6FA"
CHIP_BORDER = "#CBD2D9"
CHIP_SPACE = "#9AA5B1"
CHIP_CHOSEN = "#E69F00"


def component_color(kind: str) -> str:
    """The badge colour of a Mask Lab component kind (grey for unknown kinds)."""
    return MASK_COMPONENT_COLORS.get(kind, NEUTRAL_BADGE_COLOR)


def text_color(hex_color: str) -> str:
    """Dark text on light fills, white on dark ones (WCAG relative luminance)."""
    rgb = [int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return TEXT_DARK if lum > 0.3 else "white"


def base_layout(fig, title: str, subtitle: str, height: int, margin: dict | None = None) -> None:
    """The layout every figure of the app shares: title and subtitle at the top left, the
    app's font and background, left-aligned hover labels, no drag-to-zoom."""
    fig.update_layout(base_layout_dict(title, subtitle, height, margin))


def base_layout_dict(title: str, subtitle: str, height: int, margin: dict | None = None) -> dict:
    """:func:`base_layout` as a layout dict, for figures assembled from plain dicts."""
    layout = dict(
        template="none",
        title=dict(
            text=title,
            x=0.0,
            xref="container",
            xanchor="left",
            pad=dict(l=12, t=10),
            yref="container",
            y=1.0,
            yanchor="top",
            font=dict(size=16, color=TEXT_DARK),
            subtitle=dict(text=subtitle, font=dict(size=12, color=TEXT_MUTED)),
        ),
        height=height,
        font=dict(family=FONT_FAMILY, size=12, color=TEXT_DARK),
        paper_bgcolor=PAPER_BG,
        plot_bgcolor=PAPER_BG,
        hoverlabel=dict(font=dict(family=FONT_FAMILY, size=12), align="left"),
        dragmode=False,
    )
    if margin is not None:
        layout["margin"] = margin
    return layout


# The app's own colours, which .streamlit/config.toml's [theme] repeats (a TOML file cannot
# import them; a test checks that the two agree).
STREAMLIT_THEME = {
    "primaryColor": "#2E6FD8",
    "backgroundColor": "#FFFFFF",
    "secondaryBackgroundColor": "#F3F6FA",
    "textColor": TEXT_DARK,
}
