"""How every page shows a Plotly figure: :func:`chart`, the same way everywhere."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from gqa_viz.figures.shipping import freeze

CONFIG = {"displaylogo": False}  # every chart's modebar: no Plotly logo


def chart(fig: go.Figure, *, key: str | None = None, config: dict | None = None, width="stretch"):
    """``st.plotly_chart`` of ``fig`` frozen in the browser's form, which Streamlit's second
    draw of a new chart finds unchanged (:mod:`gqa_viz.figures.shipping`), in the app's own
    colours (Streamlit's theme off). ``config`` is added to :data:`CONFIG`; ``width`` as
    ``st.plotly_chart`` takes it."""
    st.plotly_chart(
        freeze(fig), theme=None, key=key, config={**CONFIG, **(config or {})}, width=width
    )
