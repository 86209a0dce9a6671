"""The width of a chart's column in the visitor's browser, so that the chart is drawn once.

Streamlit draws a new chart twice when its figure has no width of its own: once at Plotly's
automatic size, hidden, then again at the column's width. For the Playground's heads figure
that second draw was a fifth of a length-slider press. A figure that already has the column's
width, shown with ``width="content"``, is drawn once.

Only the browser knows that width. :func:`column_width` mounts a small component with no
visible content (Streamlit's components v2, no iframe) just above the chart, which measures
the column they share and reports it, in whole pixels, when it changes: on the first visit and
when the window or the sidebar changes size (once the resize has settled). Each report reruns
the calling fragment. Until the first report (and where no browser runs the component, as in
AppTest) it returns None, and the page shows its chart as before: stretched to the column.
"""

from __future__ import annotations

import streamlit as st

# Measures the block of the column the probe itself sits in (the chart's column: the probe is
# drawn just above the chart, so it exists whenever this runs), floored to whole pixels so that
# a chart of that width fits. Reports only a width the server does not have yet (``data.px``)
# and was not sent already, so a report cannot loop, and only once a resize has settled for
# 150 ms. Streamlit calls this
# again whenever ``data`` changes, without the cleanup of the previous call: the one observer
# per chart lives on ``window`` and is replaced each time.
_JS = """
export default function ({ data, parentElement, setStateValue }) {
  const host = parentElement.host || parentElement;
  const column = host.closest('[data-testid="stVerticalBlock"]');
  const probes = (window.__gqaColumnWidth = window.__gqaColumnWidth || {});
  const old = probes[data.chart];
  if (old) { old.observer.disconnect(); clearTimeout(old.timer); }
  if (!column) return;
  const probe = { timer: null, sent: data.px };
  const report = () => {
    const px = Math.floor(column.getBoundingClientRect().width);
    if (px > 0 && px !== probe.sent) {
      probe.sent = px;
      setStateValue("px", px);
    }
  };
  probe.observer = new ResizeObserver(() => {
    clearTimeout(probe.timer);
    probe.timer = setTimeout(report, 150);
  });
  probe.observer.observe(column);
  probes[data.chart] = probe;
  report();
  return () => {  // the probe leaves the page
    probe.observer.disconnect();
    clearTimeout(probe.timer);
    if (probes[data.chart] === probe) delete probes[data.chart];
  };
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
