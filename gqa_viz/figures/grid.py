"""The grid kit: what :mod:`gqa_viz.figures.heads` and :mod:`gqa_viz.figures.masks` share.

Both draw rows of [T, S] panels on axes placed by hand (no ``make_subplots``): panel
positions are planned in pixels (:class:`Geometry`) and turned into paper fractions, every
panel has categorical axes (:func:`categories`, :func:`axis`) with tick labels chosen to fit
(:func:`ticks`), and titles are coloured badges (:func:`badge`). No Streamlit.

Axis letters as in :mod:`gqa_viz.core`: T query length, S key/value length.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import plotly.graph_objects as go

from gqa_viz.figures.theme import AXIS_LINE_COLOR, TEXT_MUTED, base_layout_dict, text_color

TOKEN_TICKS = 40  # tokens as tick labels up to this length, positions beyond
TICK_FONT = 10
CHAR_PX = 6.2  # average width of one tick-label character at TICK_FONT
TICK_CHARS = 12  # longer tokens are cut in tick labels (hover shows them whole)
WIDTH_SLACK = 0.8  # x tick labels are spaced for a figure drawn at 80% of its planned width


def is_positional(labels: list[str]) -> bool:
    """Whether ``labels`` are just the positions ``"0", "1", ...`` (random inputs)."""
    return list(labels) == [str(i) for i in range(len(labels))]


def categories(labels: list[str], start: int = 0) -> list[str]:
    """Unique axis categories: ``"'tok' @i"``, or ``"@i"`` for positional labels.

    ``start`` is the position of the first label (a zoomed region starts mid-sequence).
    """
    if is_positional(labels):
        return [f"@{i + start}" for i in range(len(labels))]
    return [f"'{html.escape(str(tok), quote=False)}' @{i + start}" for i, tok in enumerate(labels)]


def short(token: str) -> str:
    """``token`` cut to ``TICK_CHARS`` characters for a tick label."""
    return token if len(token) <= TICK_CHARS else token[: TICK_CHARS - 1] + "…"


def nice_step(count: int, slot_px: float, min_px: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, ... so that labels ``step`` apart are ``min_px`` apart."""
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500):
        if step * slot_px >= min_px or step >= count:
            return step
    return count


@dataclass(frozen=True)
class Ticks:
    """An axis' tick values (categories), their text and angle."""

    vals: list[str]
    text: list[str]
    angle: float
    extent_px: float  # room the labels need away from the axis
    positions: bool = False  # positions stand in for labels (too many or too little room)


def ticks(
    labels: list[str], cats: list[str], cell_px: float, axis: str, starts: list[int] | None = None
) -> Ticks:
    """Tokens when short and roomy enough, else every few positions (``starts``: block starts)."""
    n = len(cats)
    starts = list(range(n)) if starts is None else starts
    if axis == "x":  # the figure may be drawn narrower than planned; heights are exact
        cell_px *= WIDTH_SLACK
    tokens = not is_positional(labels) and len(labels) <= TOKEN_TICKS and starts == list(range(n))
    if tokens:
        text = [html.escape(short(str(t)), quote=False) for t in labels]
        longest = min(max(len(str(t)) for t in labels), TICK_CHARS)
        if axis == "y":
            if cell_px >= TICK_FONT + 1:
                return Ticks(cats, text, 0, longest * CHAR_PX + 6)
        else:
            if cell_px >= longest * CHAR_PX + 4:
                return Ticks(cats, text, 0, TICK_FONT + 8)
            if cell_px >= TICK_FONT + 0.5:  # rotated: a line of text per cell
                return Ticks(cats, text, -90, longest * CHAR_PX + 8)
    digits = len(str(max(starts)))
    min_px = (TICK_FONT + 4) if axis == "y" else digits * CHAR_PX + 10
    step = nice_step(n, max(cell_px, 1e-6), min_px)
    idx = list(range(0, n, step))
    if axis == "x" and len(idx) > 1:
        # No label at the right edge, where it would run into the next panel's first one.
        idx = [i for i in idx if (n - 0.5 - i) * cell_px >= digits * CHAR_PX / 2 + 4]
    return Ticks(
        [cats[i] for i in idx],
        [str(starts[i]) for i in idx],
        0,
        (digits * CHAR_PX + 6) if axis == "y" else TICK_FONT + 8,
        positions=True,
    )


def check_labels(q_labels, k_labels, T: int, S: int) -> tuple[list[str], list[str]]:
    """The labels as strings; ValueError unless there are T of the one and S of the other."""
    q_labels, k_labels = [str(t) for t in q_labels], [str(t) for t in k_labels]
    if len(q_labels) != T:
        raise ValueError(f"q_labels has {len(q_labels)} labels for T = {T} queries.")
    if len(k_labels) != S:
        raise ValueError(f"k_labels has {len(k_labels)} labels for S = {S} keys.")
    return q_labels, k_labels


def block_labels(length: int, f: int, start: int = 0) -> tuple[list[str], list[int]]:
    """Categories ``"@a–b"`` of an axis cut into blocks of ``f``, and the blocks' starts."""
    starts = list(range(0, length, f))
    labels = [f"@{a + start}–{min(a + f, length) - 1 + start}" for a in starts]
    return labels, [a + start for a in starts]


@dataclass
class Geometry:
    """Pixel layout of panels (top-down y, inside the plot area) and its paper conversion."""

    width: float
    height: float  # plot area
    margin: dict

    def x(self, px: float) -> float:
        return px / self.width

    def y(self, px: float) -> float:
        return 1.0 - px / self.height


def figure_base(fig: go.Figure, title: str, subtitle: str, height: float, margin: dict) -> None:
    """:func:`~gqa_viz.figures.theme.base_layout` with a larger title and no legend."""
    fig.update_layout(figure_base_dict(title, subtitle, height, margin))


def figure_base_dict(title: str, subtitle: str, height: float, margin: dict) -> dict:
    """:func:`figure_base` as a layout dict, for figures assembled from plain dicts."""
    layout = base_layout_dict(title, subtitle, int(round(height)), margin)
    layout["title"]["pad"]["t"] = 14
    layout["title"]["font"]["size"] = 17
    layout["showlegend"] = False
    return layout


def left_margin(tick_room: float) -> int:
    """px of left margin for a figure whose y tick labels (``tick_room`` px) sit inside its plot
    area, left of the first panel: what they need beyond the plot area when the figure is drawn
    at ``WIDTH_SLACK`` of its planned width (its plot area then shrinks to about 70 %, its pixel
    margins do not). Wider than planned, the room grows and the margin needs nothing."""
    return int(0.35 * tick_room) + 4


def axis(domain, anchor: str, ticks: Ticks, cats: list[str], show: bool, reverse: bool) -> dict:
    """A categorical panel axis over ``domain`` (paper fractions, clipped to [0, 1])."""
    ax = dict(
        domain=[max(0.0, min(1.0, domain[0])), max(0.0, min(1.0, domain[1]))],
        anchor=anchor,
        type="category",
        categoryorder="array",
        categoryarray=cats,
        tickmode="array",
        tickvals=ticks.vals,
        ticktext=ticks.text,
        tickangle=ticks.angle,
        showticklabels=show,
        tickfont=dict(size=TICK_FONT, color=TEXT_MUTED),
        ticks="",
        showgrid=False,
        zeroline=False,
        showline=True,
        linecolor=AXIS_LINE_COLOR,
        mirror=True,
        automargin=False,
        fixedrange=True,
    )
    # A fixed range, not autorange: markers drawn over the panels (the trained figure's
    # right-key outlines) would make autorange pad it, and the panels would slide out of the
    # frames and labels placed in paper coordinates around them.
    ax["range"] = [len(cats) - 0.5, -0.5] if reverse else [-0.5, len(cats) - 0.5]
    ax["autorange"] = False
    return ax


def badge(x, y, text, color, *, xanchor="left", size=11, name=None) -> dict:
    """A paper annotation on a ``color`` background, its bottom at (x, y)."""
    return dict(
        x=x,
        y=y,
        xref="paper",
        yref="paper",
        xanchor=xanchor,
        yanchor="bottom",
        text=text,
        showarrow=False,
        bgcolor=color,
        borderpad=2,
        font=dict(size=size, color=text_color(color)),
        name=name,
    )
