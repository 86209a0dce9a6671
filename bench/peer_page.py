"""The peer page of ``bench.coldstart``: one slider and one heatmap, nothing else.

What the smallest Streamlit page with a Plotly heatmap costs on this machine, measured the same
way and in the same run as the app: the floor a figure page cannot go below.
"""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

t = st.slider("Query length T", 1, 128, 64)
z = np.random.default_rng(0).random((t, t)).astype(np.float32)
axis = list(range(t))
st.plotly_chart(go.Figure(go.Heatmap(z=z, x=axis, y=axis)), theme=None)
