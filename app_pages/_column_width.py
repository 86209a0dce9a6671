"""The width of a chart's column in the visitor's browser, so that the chart is drawn once.

Streamlit draws a new chart twice when its figure has no width of its own: once at Plotly's
automatic size, hidden, then again at the column's width. For the Playground's heads figure
that second draw was a fifth of a length-slider press. A figure that already has the column's
width, shown with ``width="content"``, is drawn once.

Only the browser knows that width. :func:`column_width` mounts a small component with no
visible content (Streamlit's components v2, no iframe) that measures the column holding the
chart with the given key, and reports it, in whole pixels, when it changes: on the first visit
and when the window or the sidebar changes size. Each report reruns the calling fragment.
Until the first report (and where no browser runs the component, as in AppTest) it returns
None, and the page shows its chart as before: stretched to the column.
"""

from __future__ import annotations

import streamlit as st

# Measures the parent of the chart's element container (the column's block), floored to whole
# pixels so that a chart of that width fits; reports only a width the server does not have
# yet (``data.px``), so that a report cannot loop.
_JS = """
export default function ({ data, setStateValue }) {
  const column = () => {
    const chart = document.querySelector(`.st-key-${data.chart}`);
    return chart && chart.parentElement;
  };
  const report = () => {
    const box = column();
    const px = box ? Math.floor(box.getBoundingClientRect().width) : 0;
    if (px > 0 && px !== data.px) setStateValue("px", px);
  };
  const observer = new ResizeObserver(report);
  const box = column();
  if (box) observer.observe(box);
  report();
  return () => observer.disconnect();
}
"""

_probe = st.components.v2.component("gqa_column_width", js=_JS)


def column_width(chart_key: str) -> int | None:
    """Whole pixels of the column the chart keyed ``chart_key`` is drawn in, as the browser
    last reported them (see the module docstring); None before its first report. Call it in
    the chart's fragment, before the chart: the probe it mounts has no height."""
    key = f"{chart_key}_column_width"
    known = (st.session_state.get(key) or {}).get("px")
    _probe(key=key, data={"chart": chart_key, "px": known}, on_px_change=_rerun, height=0)
    return known


def _rerun() -> None:
    """Nothing to do: a reported width reruns the fragment, which reads it."""
