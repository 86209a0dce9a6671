"""Plotly figure builders: plain functions returning go.Figure, no Streamlit."""

# Plotly imports pandas lazily, inside Figure.to_dict. In a server where several sessions
# draw their first figure at once, two threads can meet that first import and one sees a
# half-initialised module ("partially initialized module 'pandas' has no attribute
# 'Series'"). Importing it here, once, with the figures, closes that window.
import pandas  # noqa: F401
