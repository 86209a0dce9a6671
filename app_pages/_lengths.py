"""The length sliders of the sidebar, drawn by a page's fragment.

A length is what a student drags most. The Playground passes a :class:`LengthSlots` to
:func:`app_pages._controls.settings_controls`, which leaves the sliders' places in the sidebar
empty, and calls :func:`length_controls` at the top of a fragment holding everything a length
changes: a drag then reruns that fragment alone, not the sidebar's twenty other widgets nor the
page around it. (Streamlit clears and redraws a fragment's writes into outside containers on
each of its reruns.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import streamlit as st

from app_pages._controls import _KEY, LENGTHS, _w
from gqa_viz.app import limits
from gqa_viz.app import settings as cfg
from gqa_viz.app.settings import Settings


@dataclass
class LengthSlots:
    """What ``settings_controls`` leaves to the fragment: the sliders' places in the sidebar
    (by field, "t" and for cross-attention "s"; none for sentences or a chosen layer), and the
    messages of its full run, which the fragment shows once."""

    places: dict = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def length_controls(slots: LengthSlots) -> Settings:
    """Draw the length sliders into their places; return the settings with their values.

    The settings and the URL are brought up to date here, since the sidebar does not rerun. A
    fragment rerun reuses the ``slots`` of the last full run: its messages, shown by the first
    call, are gone from the next (a drag clears them, as a full rerun did).
    """
    ss = st.session_state
    for name, place in slots.places.items():
        place.slider(LENGTHS[name], 1, limits.MAX_LEN, key=_w(name))
    messages, slots.messages = slots.messages, []
    current = replace(ss[_KEY], **{name: ss[_w(name)] for name in slots.places})
    if current != ss[_KEY]:
        ss[_KEY], more = cfg.validate(current)
        messages += more
        st.query_params.from_dict(cfg.to_query_params(ss[_KEY]))
    for message in messages:
        st.warning(message, icon="⚠️")
    return ss[_KEY]
