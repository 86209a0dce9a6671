"""Figures of the Trained heads page: what a tiny trained model's heads do. No Streamlit.

Axis letters as in :mod:`gqa_viz.tiny`: L sequence length (T = S = L), N query heads, K kv
heads, G = N // K, V vocab. Query head n reads K/V head n // G.

* :func:`trained_heads_figure`: one layer's heads (:func:`gqa_viz.figures.heads.heads_figure`)
  with the right key of every answer position outlined in every head;
* :func:`right_key_attention` and :func:`right_key_figure`: how much probability each head
  puts on the right key, on average over the answer positions, as bars coloured by K/V head
  (and :func:`previous_token_attention`, the same for the token just before the query);
* :func:`layer_sentence`: what the strongest heads of a layer do on a prompt, in words;
* :func:`prediction_figure`: the prompt, the model's next token at each answer position and
  the right answer, right ones and wrong ones in two colours;
* :func:`experiment_figure` and :func:`experiment_summary`: the MHA -> GQA conversion and
  uptraining results (``assets/trained/experiment.json``) of one task, against K: every run
  of each cell, their mean and spread, and sentences that call a method better only where
  its worst run beats the other's best.

"The right key" of an answer position t is :func:`gqa_viz.tasks.answer_keys` [t]: the earlier
position whose token is the answer, where a lookup or induction head should look.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from gqa_viz.figures.heads import NOMINAL_WIDTH, POSITION_TICKS_NOTE, head_maps, heads_figure
from gqa_viz.figures.sharing import k_label
from gqa_viz.figures.theme import (
    ANSWER_FILL,
    AXIS_LINE_COLOR,
    GRID_LINE_COLOR,
    METHOD_COLORS,
    RIGHT_COLOR,
    RIGHT_KEY_COLOR,
    TEXT_DARK,
    TEXT_MUTED,
    WRONG_COLOR,
    base_layout,
    group_color,
)
from gqa_viz.trained import Comparison, Spread, beats, compare, spread

METHODS = ("mean", "first", "random")
METHOD_NAMES = {"mean": "mean-pool", "first": "first head", "random": "random head"}
PHASES = {"before": "right after conversion", "after": "after uptraining"}


def _answers(answer_keys, L: int) -> tuple[np.ndarray, np.ndarray]:
    """(answer positions t, their right keys answer_keys[t]), checked against length L."""
    keys = np.asarray(answer_keys, dtype=np.int64)
    if keys.shape != (L,):
        raise ValueError(f"answer_keys must have shape [L] = ({L},), got {keys.shape}.")
    t = np.flatnonzero(keys >= 0)
    if (keys[t] > t).any():
        raise ValueError("A right key lies after its answer position: a causal head cannot see it.")
    return t, keys[t]


# ---------------------------------------------------------------------------------------------
# Heads with the right key outlined.


def right_key_attention(probs, answer_keys) -> np.ndarray:
    """[N]: each head's probability on the right key, averaged over the answer positions.

    ``probs``: [N, L, L] one layer's attention; ``answer_keys``: [L] (-1 where no answer).
    NaN for every head when the prompt has no answer position.
    """
    probs = np.asarray(probs, dtype=np.float64)
    N, T, S = probs.shape
    t, k = _answers(answer_keys, T)
    if t.size == 0:
        return np.full(N, np.nan)
    return probs[:, t, k].mean(axis=1)  # [N, answers] -> [N]


def previous_token_attention(probs) -> np.ndarray:
    """[N]: each head's probability on the token just before the query (key t - 1), averaged
    over queries 1..L-1: high for a previous-token head."""
    probs = np.asarray(probs, dtype=np.float64)
    N, T, S = probs.shape
    if T < 2:
        return np.full(N, np.nan)
    t = np.arange(1, T)
    return probs[:, t, t - 1].mean(axis=1)  # [N, T - 1] -> [N]


def uniform_baseline(answer_keys) -> float:
    """What a causal head spreading evenly over every visible key puts on the right key.

    Query t sees t + 1 keys, so 1 / (t + 1), averaged over the answer positions.
    """
    keys = np.asarray(answer_keys)
    t = np.flatnonzero(keys >= 0)
    return float(np.mean(1.0 / (t + 1))) if t.size else float("nan")


def layer_sentence(probs, answer_keys, layer: int, last: bool) -> str:
    """What the strongest heads of one layer do on this prompt, from the numbers (Markdown).

    ``probs``: [N, L, L] the layer's attention; ``last``: it is the model's top layer, where a
    previous-token head serves no layer above.
    """
    keys = np.asarray(answer_keys)
    if not (keys >= 0).any():
        return "This prompt has no answer position, so no head has a right key to find."
    right = right_key_attention(probs, keys)  # [N]
    prev = previous_token_attention(probs)  # [N]
    n, v = int(np.argmax(right)), float(np.max(right))
    m, w = int(np.argmax(prev)), float(np.max(prev))
    even = uniform_baseline(keys)
    if v >= 0.5:
        text = (
            f"**q{n} finds the answer**: on average it puts {v:.0%} of its attention on the "
            f"right key (spread evenly it would be {even:.0%})."
        )
    else:
        text = (
            f"No head of layer {layer} looks at the right key much: the most is q{n} with "
            f"{v:.0%} (spread evenly: {even:.0%})."
        )
    if w >= 0.5 and not last:  # it matters only to a layer above
        text += (
            f" **q{m} is a previous-token head**: it puts {w:.0%} on the token just before the "
            "query, which lets a head of the next layer find a token by what came before it."
        )
    return text


def trained_heads_figure(
    probs,
    tokens: list[str],
    answer_keys,
    num_key_value_heads: int,
    title: str,
    answers: list[str] | None = None,
    row_px: float = 11.0,
    *,
    max_cells: int,
) -> go.Figure:
    """One layer's causal attention [N, L, L] per query head, grouped by K/V head, with the
    right key of each answer position outlined in every head.

    ``tokens``: [L] token names, written on both axes; ``answer_keys``: [L]; ``answers``: [L]
    the right answer at each position (for the hover text; default: the token at the right
    key). The figure is :func:`gqa_viz.figures.heads.heads_figure` made taller, so that each
    query row is at least ``row_px`` high and can carry its token. The outlines are one
    scatter trace per head (``meta["role"] == "right key"``), on the axes of the head's row
    of panels, at (key answer_keys[t] of its panel, query t). ``max_cells``: heads_figure's
    cap on drawn cells.
    """
    probs = np.asarray(probs, dtype=np.float32)
    N, L, _ = probs.shape
    t_idx, k_idx = _answers(answer_keys, L)
    if answers is None:
        answers = [tokens[k] if k >= 0 else "" for k in np.asarray(answer_keys).tolist()]
    mask = np.tril(np.ones((L, L), bool))  # causal: query t sees keys 0..t
    fig = heads_figure(
        probs, mask, tokens, tokens, num_key_value_heads, title=title, max_cells=max_cells
    )
    G = N // num_key_value_heads
    panels = head_maps(fig)  # head -> its panel: axes of its row, its key categories

    # Taller: every vertical length inside the plot area grows by `grow` (panels, gaps and
    # labels alike, since heads_figure places them as fractions), margins stay; room below
    # for the outline's legend.
    margin = fig.layout.margin
    plot_h = float(fig.layout.height - margin.t - margin.b)
    first = fig.layout[panels[0].yaxis.replace("y", "yaxis")].domain
    panel_h = (first[1] - first[0]) * plot_h
    grow = max(1.0, row_px * L / panel_h)
    legend_h = 26
    # Its ticks are tokens (below), not the positions heads_figure may have announced.
    subtitle = fig.layout.title.subtitle.text or ""
    top = margin.t
    head, _, note = subtitle.partition(f"<br>{POSITION_TICKS_NOTE.partition(':')[0]}")
    if note:  # the note and its lines (one, or two in a narrow figure)
        fig.layout.title.subtitle.text = head
        top -= 16 * (1 + note.count("<br>"))
    fig.update_layout(
        height=round(plot_h * grow + top + margin.b + legend_h),
        margin=dict(t=top, b=margin.b + legend_h),
    )
    row = panel_h * grow / L
    plot_w = NOMINAL_WIDTH - margin.l - margin.r
    # A row's x axis spans its panels and the key columns between them, all equally wide: at
    # the planned width (the least it gets), a column is this wide.
    row_x = fig.layout[panels[0].xaxis.replace("x", "xaxis")]
    col = (row_x.domain[1] - row_x.domain[0]) * plot_w / len(row_x.categoryarray)
    longest = max(len(t) for t in tokens)
    x_step = max(1, int(np.ceil((longest * 5.6 + 3) / col)))  # ~5.6 px a character at size 9
    names = [html.escape(t) for t in tokens]
    for xaxis in dict.fromkeys(p.xaxis for p in panels.values()):
        mine = [p for p in panels.values() if p.xaxis == xaxis]
        xa = fig.layout[xaxis.replace("x", "xaxis")]
        ya = fig.layout[mine[0].yaxis.replace("y", "yaxis")]
        xa.update(
            tickvals=[c for p in mine for c in p.x[::x_step]],
            ticktext=names[::x_step] * len(mine),
            tickfont=dict(size=9),
            tickangle=0,
        )
        ya.update(tickvals=mine[0].y, ticktext=names, tickfont=dict(size=9))

    for n in range(N):
        panel = panels[n]
        p = probs[n, t_idx, k_idx]  # [answers]
        fig.add_trace(
            go.Scatter(
                x=[panel.x[k] for k in k_idx],
                y=[panel.y[t] for t in t_idx],
                xaxis=panel.xaxis,
                yaxis=panel.yaxis,
                mode="markers",
                marker=dict(
                    symbol="square-open",
                    size=max(5.0, min(row, col) - 0.5),
                    color=RIGHT_KEY_COLOR,
                    line=dict(width=1.8),
                ),
                customdata=[
                    [int(t), int(k), html.escape(tokens[t]), html.escape(answers[t]), float(v)]
                    for t, k, v in zip(t_idx, k_idx, p)
                ],
                hovertemplate=f"q head {n} (K/V head {n // G})<br>"
                "query %{customdata[0]} '%{customdata[2]}': the next token should be "
                "'%{customdata[3]}'<br>right key: position %{customdata[1]}<br>"
                "p = %{customdata[4]:.3f} on it<extra></extra>",
                name=f"q{n} right keys",
                meta={"role": "right key", "head": n},
                showlegend=False,
            )
        )
    count = t_idx.size
    fig.add_annotation(
        x=0.0,
        y=0.0,
        xref="paper",
        yref="paper",
        yshift=-8,
        xanchor="left",
        yanchor="top",
        showarrow=False,
        align="left",
        font=dict(size=12, color=TEXT_MUTED),
        text=(
            f"<span style='color:{RIGHT_KEY_COLOR}'><b>□</b></span> right key: for each of "
            f"the {count} answer row{'s' if count != 1 else ''}, the earlier token that holds "
            "the answer"
            if count
            else "This prompt has no answer position, so no right key to mark."
        ),
        name="right key legend",
    )
    return fig


def right_key_figure(
    probs, answer_keys, num_key_value_heads: int, title: str, height: int = 300
) -> go.Figure:
    """Bars: each query head's mean probability on the right key [N], coloured by K/V head.

    One bar trace per K/V head (``meta["role"] == "right key bars"``, its G heads in order),
    in the colours of the heads figure's frames; a dashed line marks what a head spreading
    evenly over the visible keys would get (:func:`uniform_baseline`).
    """
    probs = np.asarray(probs, dtype=np.float32)
    N = probs.shape[0]
    K = int(num_key_value_heads)
    if K <= 0 or N % K:
        raise ValueError(f"num_key_value_heads must divide the {N} query heads, got {K}.")
    G = N // K
    values = right_key_attention(probs, answer_keys)  # [N]
    count = int((np.asarray(answer_keys) >= 0).sum())
    fig = go.Figure()
    labels = [f"q{n}" for n in range(N)]
    for j in range(K):
        heads = range(j * G, (j + 1) * G)
        fig.add_trace(
            go.Bar(
                x=[labels[n] for n in heads],
                y=[float(values[n]) for n in heads],
                name=f"K/V head {j}",
                marker=dict(color=group_color(j), line=dict(width=0)),
                text=[f"{values[n]:.2f}" if count else "" for n in heads],
                textposition="outside",
                textfont=dict(size=10, color=TEXT_DARK),
                cliponaxis=False,
                customdata=[[n, j] for n in heads],
                hovertemplate="q head %{customdata[0]} (reads K/V head %{customdata[1]})<br>"
                f"mean p on the right key = %{{y:.3f}}<br>over {count} answer position"
                f"{'s' if count != 1 else ''}<extra></extra>",
                meta={"role": "right key bars", "kv_head": j, "heads": list(heads)},
            )
        )
    chance = uniform_baseline(answer_keys)
    if count:
        fig.add_hline(y=chance, line=dict(color=TEXT_MUTED, width=1.2, dash="dash"))
    subtitle = (
        f"mean over {count} answer position{'s' if count != 1 else ''}<br>"
        f"dashed: even spread ({chance:.2f})"
        if count
        else "no answer position in this prompt"
    )
    base_layout(
        fig, title, subtitle, height, dict(l=52, r=10, t=100 if "<br>" in title else 78, b=44)
    )
    fig.update_layout(title_font_size=14)  # a narrow column beside the heads
    fig.update_layout(bargap=0.25, showlegend=False)
    fig.update_xaxes(
        type="category",
        categoryorder="array",
        categoryarray=labels,
        title=dict(text="query head", font=dict(size=11), standoff=6),
        showline=True,
        linecolor=AXIS_LINE_COLOR,
        fixedrange=True,
        tickfont=dict(size=10),
    )
    fig.update_yaxes(
        range=[0, 1.12],
        tickvals=[0, 0.25, 0.5, 0.75, 1],
        title=dict(text="probability", font=dict(size=11)),
        gridcolor=GRID_LINE_COLOR,
        zeroline=False,
        fixedrange=True,
    )
    return fig


# ---------------------------------------------------------------------------------------------
# What the model predicts.


def prediction_figure(
    tokens: list[str],
    answer_keys,
    predicted: list[str],
    confidence,
    answers: list[str] | None = None,
) -> go.Figure:
    """The prompt in a row of boxes; under each answer position the model's next token (green
    when right, vermilion when wrong) and the right answer.

    ``tokens``, ``predicted``: [L] token names (the argmax next token at every position);
    ``confidence``: [L] its softmax probability; ``answers``: [L] the right next token at each
    answer position (default: the token at its right key). Traces carry ``meta["role"]``
    "prompt", "prediction" and "answer"; the prediction trace's ``meta["right"]`` lists
    whether each answer position was right.
    """
    L = len(tokens)
    t_idx, k_idx = _answers(answer_keys, L)
    if answers is None:
        answers = [tokens[k] if k >= 0 else "" for k in np.asarray(answer_keys).tolist()]
    confidence = np.asarray(confidence, dtype=np.float64)
    right = [predicted[t] == answers[t] for t in t_idx]
    rows = {"prompt": 2, "prediction": 1, "answer": 0}  # y of each row (top: prompt)
    row_names = {
        "prompt": "prompt",
        "prediction": "model's next token",
        "answer": "right answer",
    }
    fig = go.Figure()
    is_answer = np.zeros(L, bool)
    is_answer[t_idx] = True
    # Prompt: answer positions on a grey tile, the others plain.
    fig.add_trace(
        go.Scatter(
            x=list(range(L)),
            y=[rows["prompt"]] * L,
            mode="markers+text",
            marker=dict(
                symbol="square",
                size=26,
                color=[ANSWER_FILL if a else "white" for a in is_answer],
                line=dict(color=AXIS_LINE_COLOR, width=1),
            ),
            text=[html.escape(t) for t in tokens],
            textfont=dict(size=13, color=TEXT_DARK),
            customdata=[
                [i, "an answer position: the next token follows from the prompt" if a else ""]
                for i, a in enumerate(is_answer)
            ],
            hovertemplate="position %{customdata[0]}: '%{text}'<br>%{customdata[1]}<extra></extra>",
            meta={"role": "prompt"},
            name="prompt",
        )
    )
    colors = [RIGHT_COLOR if r else WRONG_COLOR for r in right]
    fig.add_trace(
        go.Scatter(
            x=t_idx.tolist(),
            y=[rows["prediction"]] * len(t_idx),
            mode="markers+text",
            marker=dict(symbol="square", size=26, color=colors, line=dict(width=0)),
            text=[html.escape(predicted[t]) for t in t_idx],
            textfont=dict(size=13, color="white"),
            customdata=[
                [
                    int(t),
                    html.escape(tokens[t]),
                    float(confidence[t]),
                    html.escape(answers[t]),
                    "right" if r else "wrong",
                    int(k),
                ]
                for t, k, r in zip(t_idx, k_idx, right)
            ],
            hovertemplate="after position %{customdata[0]} '%{customdata[1]}' the model writes "
            "'%{text}' (p = %{customdata[2]:.3f})<br>right answer: '%{customdata[3]}' "
            "(the token at position %{customdata[5]}): %{customdata[4]}<extra></extra>",
            meta={"role": "prediction", "right": right, "positions": t_idx.tolist()},
            name="prediction",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=t_idx.tolist(),
            y=[rows["answer"]] * len(t_idx),
            mode="text",
            text=[html.escape(answers[t]) for t in t_idx],
            textfont=dict(size=13, color=TEXT_MUTED),
            customdata=[[int(t), int(k)] for t, k in zip(t_idx, k_idx)],
            hovertemplate="right next token after position %{customdata[0]}: '%{text}', "
            "held at position %{customdata[1]}<extra></extra>",
            meta={"role": "answer"},
            name="right answer",
        )
    )
    n_right = sum(right)
    subtitle = (
        f"Green: right, vermilion: wrong. {n_right} of {len(right)} answers right on this "
        "prompt; the grey tiles are the answer positions."
        if right
        else "This prompt has no answer position: nothing follows from it."
    )
    base_layout(fig, "What the model writes next at each answer position", subtitle, 230,
          dict(l=140, r=16, t=70, b=36))  # fmt: skip
    fig.update_layout(showlegend=False)
    fig.update_xaxes(
        range=[-0.6, L - 0.4],
        tickvals=list(range(L)),
        ticktext=[str(i) for i in range(L)],
        tickfont=dict(size=10, color=TEXT_MUTED),
        title=dict(text="position", font=dict(size=11), standoff=4),
        showgrid=False,
        zeroline=False,
        fixedrange=True,
    )
    fig.update_yaxes(
        range=[-0.6, 2.6],
        tickvals=[rows[r] for r in rows],
        ticktext=[row_names[r] for r in rows],
        showgrid=False,
        zeroline=False,
        fixedrange=True,
    )
    return fig


# ---------------------------------------------------------------------------------------------
# The GQA paper in miniature: conversion and uptraining, several runs per cell.


def experiment_rows(experiment: dict, task: str) -> dict[tuple[str, int], dict]:
    """{(method, K): row} of ``experiment["rows"]`` for ``task``."""
    rows = {(r["method"], int(r["K"])): r for r in experiment["rows"] if r["task"] == task}
    if not rows:
        raise ValueError(f"The experiment has no rows for task {task!r}.")
    return rows


def _ks(experiment: dict, task: str) -> list[int]:
    """Every K of the task, MHA first: the keys of its from-scratch results."""
    return sorted((int(k) for k in experiment["tasks"][task]["scratch"]), reverse=True)


def _seeds(experiment: dict, rows: dict) -> list:
    """The runs' seeds, in the runs' order (one unnamed run for a one-run experiment)."""
    row = next(iter(rows.values()))
    if "runs" in row:
        return [r.get("seed") for r in row["runs"]]
    return [experiment.get("training", {}).get("seed")]


# x inside each K's slot (ticks at 0, 1, ...): a column per method, the from-scratch diamond
# last; right after conversion just left of after uptraining, so their bars stay apart.
SLOT = {"mean": -0.3, "first": -0.1, "random": 0.1, "scratch": 0.3}
PHASE_SHIFT = {"before": -0.045, "after": 0.045}


def experiment_figure(experiment: dict, task: str, height: int = 520) -> go.Figure:
    """Answer-token accuracy against K for each conversion method, right after conversion
    (dashed, open dots) and after uptraining (solid, filled dots), beside the models trained
    with K from scratch (diamonds).

    Each cell has several runs (one per uptraining seed): the line joins their means (a short
    horizontal tick), the error bar spans their min to max and a dot marks every run. Every
    method's lines start at the MHA model itself (K = N: conversion changes nothing). The x
    axis is numeric, K's tick at 0, 1, ... and each method in its own column beside it
    (:data:`SLOT`). Traces: per (method, phase) one ``meta = {"role": "conversion", "method",
    "phase", "K"}`` (the means, ``error_y`` to the min and max) and one ``"runs"`` (every run,
    ``meta["seeds"]`` and ``meta["K"]`` per dot); one ``"scratch"``.
    """
    info = experiment["tasks"][task]
    rows = experiment_rows(experiment, task)
    ks = _ks(experiment, task)
    N = ks[0]
    labels = [k_label(k, N) for k in ks]
    mha = float(info["mha_token_accuracy"])
    seeds = _seeds(experiment, rows)
    n = len(seeds)
    steps = info.get("uptrain_steps")
    fig = go.Figure()
    for method in METHODS:
        color = METHOD_COLORS[method]
        for phase in ("before", "after"):
            cells = [spread(rows[(method, k)], phase) for k in ks[1:]]
            seq = [spread(rows[(method, k)], phase, "sequence") for k in ks[1:]]
            x = [i + SLOT[method] + PHASE_SHIFT[phase] for i in range(len(ks))]
            what = PHASES[phase] + (f" ({steps} steps)" if phase == "after" and steps else "")
            after = phase == "after"
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[mha] + [c.mean for c in cells],
                    mode="lines+markers",
                    name=f"{METHOD_NAMES[method]}, {PHASES[phase]}",
                    legendgroup=method,
                    line=dict(color=color, width=2.2 if after else 1.6, dash=_DASH[phase]),
                    # The mean as a short horizontal tick across the bar of runs.
                    marker=dict(symbol="line-ew", size=13, line=dict(color=color, width=2.4)),
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=[0.0] + [c.high - c.mean for c in cells],
                        arrayminus=[0.0] + [c.mean - c.low for c in cells],
                        color=color,
                        thickness=2.0 if after else 1.4,
                        width=0,
                    ),
                    customdata=[["the MHA model itself", ""]]
                    + [
                        [
                            f"{n} runs: {_pct(c.low)} to {_pct(c.high)}",
                            f"<br>whole sequences right: {_pct(s.mean)} on average",
                        ]
                        for c, s in zip(cells, seq)
                    ],
                    text=labels,
                    hovertemplate=f"{METHOD_NAMES[method]}, {what}<br>K = %{{text}}<br>"
                    "answer tokens right: %{y:.1%}"
                    + (" on average" if n > 1 else "")
                    + "<br>%{customdata[0]}%{customdata[1]}<extra></extra>",
                    meta={"role": "conversion", "method": method, "phase": phase, "K": ks},
                )
            )
            dots = [  # (K's tick, K, seed, accuracy) of every run
                (i, k, s, v)
                for i, (k, c) in enumerate(zip(ks[1:], cells), 1)
                for s, v in zip(seeds, c.runs)
            ]
            fig.add_trace(
                go.Scatter(
                    x=[i + SLOT[method] + PHASE_SHIFT[phase] for i, *_ in dots],
                    y=[v for *_, v in dots],
                    mode="markers",
                    name=f"{METHOD_NAMES[method]}, {PHASES[phase]}: each run",
                    legendgroup=method,
                    showlegend=False,
                    marker=dict(
                        symbol="circle",
                        size=6.5,
                        color=color if after else "white",
                        line=dict(color="white" if after else color, width=1.2),
                    ),
                    customdata=[
                        [k_label(k, N), "" if s is None else f"seed {s}"] for _, k, s, _ in dots
                    ],
                    hovertemplate=f"{METHOD_NAMES[method]}, {what}<br>K = %{{customdata[0]}}, "
                    "%{customdata[1]}<br>answer tokens right: %{y:.1%}<extra></extra>",
                    meta={
                        "role": "runs",
                        "method": method,
                        "phase": phase,
                        "K": [k for _, k, _, _ in dots],
                        "seeds": [s for _, _, s, _ in dots],
                    },
                )
            )
    scratch = [float(info["scratch"][str(k)]["token"]) for k in ks]
    fig.add_trace(
        go.Scatter(
            x=[i + SLOT["scratch"] for i in range(len(ks))],
            y=scratch,
            mode="markers",
            name="trained with K K/V heads from scratch (one run)",
            marker=dict(
                symbol="diamond", size=12, color="white", line=dict(color=TEXT_DARK, width=2)
            ),
            text=labels,
            customdata=[info["scratch"][str(k)].get("steps", info.get("steps")) for k in ks],
            hovertemplate="trained from scratch with K = %{text}<br>answer tokens right: "
            "%{y:.1%}<br>%{customdata} training steps, one run<extra></extra>",
            meta={"role": "scratch", "K": ks},
        )
    )
    frac = experiment.get("uptraining", {}).get("fraction")
    up = f"{steps} steps = {frac:.0%} of training" if steps and frac else "a few steps"
    runs = (
        f"{n} runs per point (seeds {', '.join(str(s) for s in seeds)}): a dot each, the bar "
        f"from the worst to the best, tick and line at their mean."
        if n > 1
        else "One run per point."
    )
    base_layout(
        fig,
        f"{task}: accuracy after converting the MHA model to K K/V heads",
        f"Dashed, open dots: right after conversion. Solid, filled: after uptraining ({up}).<br>"
        f"{runs}<br>Diamonds: trained with that K from scratch ({info.get('steps', '?')} "
        f"steps, one run).",
        height,
        dict(l=64, r=16, t=112, b=50),
    )
    fig.update_layout(
        # Two entries a row, so each row is one method: dashed beside solid.
        legend=dict(
            orientation="h",
            x=0.0,
            y=-0.16,
            xanchor="left",
            yanchor="top",
            entrywidth=0.5,
            entrywidthmode="fraction",
            font=dict(size=11),
            traceorder="normal",
        ),
        margin=dict(b=140),
    )
    fig.update_xaxes(
        range=[-0.5, len(ks) - 0.5],
        tickvals=list(range(len(ks))),
        ticktext=labels,
        title=dict(text=f"K (K/V heads shared by the {N} query heads)", font=dict(size=11)),
        showline=True,
        linecolor=AXIS_LINE_COLOR,
        showgrid=False,
        zeroline=False,
        fixedrange=True,
    )
    for i in range(1, len(ks)):  # a light rule between the K columns
        fig.add_vline(x=i - 0.5, line=dict(color=GRID_LINE_COLOR, width=1))
    fig.update_yaxes(
        range=[0, 1.04],
        tickformat=".0%",
        title=dict(text="held-out answer tokens right", font=dict(size=11)),
        gridcolor=GRID_LINE_COLOR,
        zeroline=False,
        fixedrange=True,
    )
    return fig


_DASH = {"before": "dash", "after": "solid"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _range(s: Spread) -> str:
    """ "73.9–85.0%", or "85.0%" when every run gives the same (to the digit shown)."""
    lo, hi = f"{100 * s.low:.1f}", f"{100 * s.high:.1f}"
    return f"{hi}%" if lo == hi else f"{lo}–{hi}%"


def _digits(a: float, b: float) -> int:
    """The fewest decimals (1 to 4) at which a and b, in percent, print differently."""
    return next((d for d in (1, 2, 3) if f"{100 * a:.{d}f}" != f"{100 * b:.{d}f}"), 4)


def _names(methods) -> str:
    names = [METHOD_NAMES[m] for m in methods]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def comparison_sentence(c: Comparison) -> str:
    """Which method is better, from :func:`gqa_viz.trained.compare`: one is called better
    only where its worst run beats the other's best; otherwise the text says the runs
    overlap."""
    s, top = c.spreads, c.top
    if c.best:
        # As many decimals as it takes to show the worst run above each best (99.96 > 99.94).
        d = max(_digits(s[top].low, s[m].high) for m in c.beaten)
        others = " and ".join(f"{METHOD_NAMES[m]} ({100 * s[m].high:.{d}f}%)" for m in c.beaten)
        return (
            f"**{METHOD_NAMES[top]}** is best: its worst run ({100 * s[top].low:.{d}f}%) beats "
            f"the best of {others}"
        )
    ranges = {m: _range(v) for m, v in s.items()}
    if not c.beaten:
        if len(set(ranges.values())) == 1:
            return f"the runs overlap (every method {ranges[top]})"
        listed = ", ".join(f"{METHOD_NAMES[m]} {ranges[m]}" for m in s)
        return f"the runs overlap: {listed}"
    listed = ", ".join(f"{METHOD_NAMES[m]} {ranges[m]}" for m in (top, *c.overlapping))
    return (
        f"{METHOD_NAMES[top]} beats {_names(c.beaten)} in every run, but its runs overlap "
        f"with {_names(c.overlapping)}'s ({listed})"
    )


def experiment_summary(experiment: dict, task: str) -> str:
    """What the task's conversion results show, computed from the runs (Markdown).

    A method is called better than another only where its worst run beats the other's best
    (:func:`gqa_viz.trained.compare`); otherwise the text says the runs overlap.
    """
    info = experiment["tasks"][task]
    rows = experiment_rows(experiment, task)
    ks = _ks(experiment, task)[1:]  # the converted Ks, e.g. 4, 2, 1
    n = len(_seeds(experiment, rows))
    mha = float(info["mha_token_accuracy"])
    runs = f"{n} runs" if n > 1 else "one run"

    def hull(k: int, phase: str) -> Spread:
        values = [v for m in METHODS for v in spread(rows[(m, k)], phase).runs]
        return Spread(tuple(values), float(np.mean(values)), min(values), max(values))

    parts = [
        f"The MHA model gets {_pct(mha)} of the held-out answers right. Grouping its K/V heads "
        f"breaks it at once: right after conversion K = {ks[0]} keeps "
        f"{_range(hull(ks[0], 'before'))} and K = {ks[-1]} {_range(hull(ks[-1], 'before'))}, "
        f"over the {len(METHODS)} methods and {runs} each."
    ]
    close_all = close_some = 0
    for m in METHODS:
        for k in ks:
            target = float(info["scratch"][str(k)]["token"]) - 0.01
            s = spread(rows[(m, k)], "after")
            close_all += s.low >= target
            close_some += s.low < target <= s.high
    steps, frac = info.get("uptrain_steps"), experiment.get("uptraining", {}).get("fraction")
    how = (
        f"{steps} steps of uptraining ({frac:.0%} of the training run)"
        if steps and frac
        else "uptraining"
    )
    every = f"in all {n} runs" if n > 1 else ""
    some = f", {close_some} more in some of them" if n > 1 and close_some else ""
    parts.append(
        f"{how[0].upper()}{how[1:]} bring {close_all} of the {len(METHODS) * len(ks)} "
        f"converted models within 1 point of the model trained with the same K from scratch"
        f"{' ' + every if every else ''}{some}."
    )
    bullets = []
    wins, losses = [], []
    for k in ks:
        c = compare(experiment, task, k, "after")
        scratch = float(info["scratch"][str(k)]["token"])
        bullets.append(f"- **K = {k}**: {comparison_sentence(c)}; from scratch {_pct(scratch)}.")
        if c.best == "mean":
            wins.append(k)
        if any(beats(c.spreads[m], c.spreads["mean"]) for m in c.spreads if m != "mean"):
            losses.append(k)
    if len(wins) * 2 > len(ks):
        verdict = ", as Ainslie et al. (2023) found for T5"
    elif wins:
        verdict = ", less clearly than in Ainslie et al. (2023), where mean-pooling won"
    elif losses:
        verdict = (
            f", unlike in Ainslie et al. (2023), where mean-pooling won: another start beats "
            f"it in every run at K = {', '.join(str(k) for k in losses)}"
        )
    else:
        verdict = (
            "; nor is another start better in every run anywhere, so these runs neither "
            "confirm nor contradict Ainslie et al. (2023), where mean-pooling won"
        )
    where = f" (K = {', '.join(str(k) for k in wins)})" if wins else ""
    closing = (
        f"Mean-pooling is the best starting point for uptraining, in every run, at "
        f"{len(wins)} of the {len(ks)} values of K{where}{verdict}."
    )
    head = f"After uptraining ({runs} per method; a method is **best** only where its worst "
    head += "run beats every other method's best):"
    return "\n\n".join([" ".join(parts), head + "\n\n" + "\n".join(bullets), closing])
