"""Home: what grouped-query attention is, with one interactive wiring diagram."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_pages._chart import chart
from gqa_viz.app.settings import DEFAULTS
from gqa_viz.core import divisors, nearest_divisor
from gqa_viz.figures.diagram import describe, gqa_diagram

ROOT = Path(__file__).resolve().parent.parent
N_CHOICES = (1, 2, 4, 8, 12, 16, 32, 64)
N_KEY, K_KEY = "home_n", "home_k"


def _gqa_preset(n: int) -> int | None:
    """A K strictly between 1 and N, with G as close to 4 as possible (None if there is none)."""
    inner = [k for k in divisors(n) if 1 < k < n]
    return min(inner, key=lambda k: (abs(n // k - 4), -k)) if inner else None


def _fit_k() -> None:
    """Move K to the divisor of N nearest to it, if N no longer allows it."""
    k = nearest_divisor(st.session_state[N_KEY], st.session_state[K_KEY])
    if k != st.session_state[K_KEY]:
        st.session_state[K_KEY] = k


def _set_k(k: int) -> None:
    st.session_state[K_KEY] = k


st.session_state.setdefault(N_KEY, DEFAULTS.n)
st.session_state.setdefault(K_KEY, DEFAULTS.k)
if st.session_state[N_KEY] not in N_CHOICES:
    st.session_state[N_KEY] = DEFAULTS.n
_fit_k()

st.title("Grouped-query attention")
st.markdown(
    """
A multi-head attention layer has **N query heads**, each with its own key head and value
head. **Grouped-query attention (GQA)** keeps the N query heads but computes only
**K key/value heads**: the query heads are split into K groups of **G = N / K** consecutive
heads, and all heads of a group read the same K/V head (query head *n* reads K/V head
⌊*n* / G⌋). **K = N** is ordinary multi-head attention (**MHA**); **K = 1** is multi-query
attention (**MQA**).
"""
)

col_n, col_k, col_preset = st.columns([1, 1, 1.4], vertical_alignment="bottom")
with col_n:
    n = st.selectbox(
        "num_query_heads (N)",
        N_CHOICES,
        key=N_KEY,
        on_change=_fit_k,
        help="Number of query heads.",
    )
with col_k:
    k = st.selectbox(
        "num_key_value_heads (K)",
        divisors(n),
        key=K_KEY,
        format_func=lambda d: f"{d}   (G = {n // d})",
        help="Must divide N: only the divisors of N are offered.",
    )
with col_preset, st.container(horizontal=True, gap="small"):
    gqa_k = _gqa_preset(n)
    kind = "MHA" if k == n else ("MQA" if k == 1 else "GQA")
    for label, target, tip in (
        ("MHA", n, "K = N: one K/V head per query head."),
        ("GQA", gqa_k, "1 < K < N: groups of query heads share a K/V head."),
        ("MQA", 1, "K = 1: all query heads share one K/V head."),
    ):
        st.button(
            label,
            key=f"home_preset_{label}",
            on_click=_set_k,
            args=(target,),
            type="primary" if label == kind else "secondary",
            disabled=target is None,
            help=tip if target is not None else f"No K strictly between 1 and {n} divides {n}.",
        )

chart(gqa_diagram(n, k), config={"displayModeBar": False})
st.markdown(describe(n, k))

st.subheader("Why share K/V heads?")
st.markdown(
    """
- Each query head still computes its own attention weights, so the layer still produces
  N attention patterns; the query and output projections are those of MHA.
- Only K key and K value heads are computed and stored. While a model generates text, its
  **K/V cache** keeps 2·K·H numbers per token and layer instead of 2·N·H (H = head_dim):
  **N / K times less** memory to hold, and to read at every generated token.
- GQA was introduced by [Ainslie et al. (2023)](https://arxiv.org/abs/2305.13245), who also
  turn an MHA checkpoint into GQA by mean-pooling the K/V heads of each group; MQA is due to
  [Shazeer (2019)](https://arxiv.org/abs/1911.02150). Keras provides the layer as
  `keras.layers.GroupQueryAttention(head_dim, num_query_heads, num_key_value_heads)`; this
  app re-implements it in JAX and shows what happens inside.
"""
)

st.subheader("Where to go next")
NEXT = (
    (
        "app_pages/playground.py",
        "Playground",
        ":material/tune:",
        "Run the layer on a sentence and compare the attention maps of every head and group.",
    ),
    (
        "app_pages/walkthrough.py",
        "Walkthrough",
        ":material/school:",
        "Follow one forward pass step by step, from the projections to the output.",
    ),
    (
        "app_pages/real_models.py",
        "Real models",
        ":material/neurology:",
        "Open a real checkpoint on this server (SmolLM2, Llama, Qwen, GPT-2, ...): every head "
        "grouped by its K/V head, then its K/V heads grouped further, as in the GQA paper.",
    ),
)
for path, label, icon, line in NEXT:
    st.page_link(path, label=label, icon=icon)
    st.caption(line)
