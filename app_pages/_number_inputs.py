"""One repair to Streamlit's integer number inputs, installed by ``app.py`` for every page.

A browser never sends a number input a value that is not finite, but a modified client can:
the value travels as a double, and Streamlit 1.67 turns an integer input's value into an int
(``int(value)``) before its own range check, so NaN or ±inf raise ValueError or OverflowError
inside the ``st.number_input`` call, a traceback in place of the page. For a float input
Streamlit already falls back to the widget's default there; :func:`install` makes an integer
input do the same, in Streamlit's own deserializer, so every number input of every page and
fragment is covered. ``tests/test_bad_input.py`` sends NaN and inf to each page's inputs.
"""

from __future__ import annotations

import math

from streamlit.elements.widgets.number_input import NumberInputSerde

_deserialize = NumberInputSerde.deserialize


def _finite_or_default(self: NumberInputSerde, ui_value):
    if isinstance(ui_value, float) and not math.isfinite(ui_value):
        return self.value  # the widget's default, as Streamlit does for a float input
    return _deserialize(self, ui_value)


def install() -> None:
    """Put the repair in place (idempotent: ``app.py`` calls it on every full run)."""
    NumberInputSerde.deserialize = _finite_or_default
