"""The peer page of ``bench.coldstart``: one slider and one heatmap, nothing else.

What the smallest Streamlit page with a Plotly heatmap costs on this machine, measured the same
way and in the same run as the app: the floor a figure page cannot go below.

Two variants, by query parameter, tell where the app's slider time goes (``bench.coldstart``
runs them in the same run):

* ``?sidebar=1``: the same heatmap, its slider at the end of the app's own sidebar controls
  (:func:`app_pages._controls.settings_controls`: some twenty widgets; add the Playground's
  query, e.g. ``mode=random``, for its view), every slider move rerunning the whole page, as
  in the Playground. The floor of any page with that sidebar.
* ``?sidebar=1&fragment=1``: the same, with the slider and heatmap in one ``st.fragment`` (the
  slider drawn into the sidebar from inside it), so a move reruns only the fragment and the
  browser redraws only its two elements.
* ``?playground=1``: the Playground's skeleton: its sidebar with the length sliders in their
  fragment, exactly as the Playground draws them (:mod:`app_pages._lengths`), the same layer run
  for every length (:func:`gqa_viz.app.playground.cached_run`, shared with the app), and the
  peer's heatmap at the computed T where the Playground draws its figures. Everything a press
  costs the Playground before it shows anything of its own: the floor of ``bench.press_cpu``.

Run with the repository root on ``PYTHONPATH`` for the variants (``app_pages`` is imported).
"""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

LABEL = "Query length T"
SIDEBAR_LABEL = "Peer length T"  # the app's sidebar has a "Query length T" of its own


def figure(t: int) -> go.Figure:
    """The peer's heatmap at query length ``t`` (also drawn alone by ``bench.figure_draw``)."""
    z = np.random.default_rng(0).random((t, t)).astype(np.float32)
    axis = list(range(t))
    return go.Figure(go.Heatmap(z=z, x=axis, y=axis))


def heatmap(t: int) -> None:
    st.plotly_chart(figure(t), theme=None)


def skeleton() -> None:
    """The Playground page without what it shows (``?playground=1``, see above)."""
    from app_pages._controls import compute_key, settings_controls
    from app_pages._lengths import LengthSlots, length_controls
    from gqa_viz.app.playground import cached_run

    slots = LengthSlots()
    settings_controls(slots)

    @st.fragment
    def _body() -> None:
        result = cached_run(compute_key(length_controls(slots)))
        heatmap(len(result.q_labels))

    _body()


def page() -> None:
    # Read once: the app's controls rewrite the URL from their settings, dropping these.
    variant = st.session_state.setdefault(
        "peer_variant",
        tuple(st.query_params.get(name) == "1" for name in ("sidebar", "fragment", "playground")),
    )
    if variant[2]:
        skeleton()
    elif variant[0]:
        from app_pages._controls import settings_controls

        settings_controls()
        if variant[1]:
            slot = st.sidebar.container()

            @st.fragment
            def _slider_and_heatmap() -> None:
                with slot:
                    t = st.slider(SIDEBAR_LABEL, 1, 128, 64, key="peer_t")
                heatmap(t)

            _slider_and_heatmap()
        else:
            heatmap(st.sidebar.slider(SIDEBAR_LABEL, 1, 128, 64, key="peer_t"))
    else:
        heatmap(st.slider(LABEL, 1, 128, 64))


if __name__ == "__main__":  # `streamlit run` runs its script as __main__; an import draws nothing
    page()
