"""gqa_viz: grouped-query attention in JAX, faithful to Keras 3, built to be looked at.

``GroupedQueryAttention`` (alias ``GroupQueryAttention``) is Keras 3's layer API;
:mod:`gqa_viz.core` is the functional, jitted core it runs on; :mod:`gqa_viz.masks` holds the
composable mask predicates. Nothing here imports Streamlit.
"""

from gqa_viz.core import AttentionTrace, GQASpec, attention, attention_trace, init_params
from gqa_viz.layer import GroupedQueryAttention, GroupQueryAttention

__all__ = [
    "AttentionTrace",
    "GQASpec",
    "GroupQueryAttention",
    "GroupedQueryAttention",
    "attention",
    "attention_trace",
    "init_params",
]
