"""Plotly figure builders: plain functions returning go.Figure, no Streamlit."""
