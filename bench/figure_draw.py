"""What plotly.js spends drawing the Playground's heads figure, part by part, in chromium.

    python -m bench.figure_draw                 # N = 8 (K = 2), T = S = 64, 24 redraws a part
    python -m bench.figure_draw --n 32 --k 8

The Playground's default heads figure on random vectors (T = 64, 63, 62, 61, as a length
slider moves it) is drawn in a blank page of headless Debian chromium by the plotly.js inside
the plotly Python package, with nothing else on the page: no server, no Streamlit. Each
redraw goes to the next length, timed from the call to the next animation frame, both ways a
chart can be redrawn: ``Plotly.react`` on the drawn chart and ``Plotly.newPlot`` after
``Plotly.purge`` (what a new Streamlit chart element does).

Then the same with one part of the figure left out, to say what each part costs: the grey
layers of masked cells, the colour bar, the annotations (head badges, group labels, the
legend line), the shapes (panel outlines, group frames), the title, the tick labels; and
all of those at once (the heatmaps and their axes alone). Last, the peer
page's figure (``bench/peer_page.py``: one T x T heatmap), the floor of ``bench.coldstart``.
Printed: the median ms of each, and its ratio to the whole figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import plotly
import plotly.io as pio

from bench.interactive import CHROMIUM

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
LENGTHS = (64, 63, 62, 61)
REDRAWS = 24

# (name, what is left out): the JavaScript below reads these names.
PARTS = (
    ("the whole figure", ""),
    ("without the grey layers", "mask"),
    ("without the colour bar", "colorbar"),
    ("without the annotations", "annotations"),
    ("without the shapes", "shapes"),
    ("without the title", "title"),
    ("without the tick labels", "ticks"),
    ("heatmaps and axes alone", "mask colorbar annotations shapes title"),
)

DRAW_JS = """async ([figures, leftOut, method, redraws]) => {
  const div = document.getElementById("plot");
  const without = new Set(leftOut.split(" ").filter(Boolean));
  const prepare = (figure) => {
    const f = JSON.parse(JSON.stringify(figure));  // plotly.js decodes typed arrays in place
    const L = f.layout;
    L.width = div.clientWidth;
    if (without.has("mask")) f.data = f.data.filter((t) => !(t.meta && t.meta[0].role === "mask"));
    if (without.has("colorbar")) L.coloraxis.showscale = false;
    if (without.has("annotations")) L.annotations = [];
    if (without.has("shapes")) L.shapes = [];
    if (without.has("title")) delete L.title;
    if (without.has("ticks"))
      for (const k in L) if (/^[xy]axis/.test(k)) L[k].showticklabels = false;
    return f;
  };
  const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const draw = async (f) => {
    if (method === "react") await Plotly.react(div, f.data, f.layout, {});
    else { Plotly.purge(div); await Plotly.newPlot(div, f.data, f.layout, {}); }
  };
  Plotly.purge(div);
  await draw(prepare(figures[0]));
  const times = [];
  for (let i = 1; i <= redraws; i++) {
    const f = prepare(figures[i % figures.length]);  // a fresh copy, as a new message would be
    const t0 = performance.now();
    await draw(f);
    await frame();
    times.push(performance.now() - t0);
  }
  return times;
}"""


def figures(n: int, k: int) -> list[dict]:
    """The Playground's heads figure, as its page sends it, at each of LENGTHS."""
    os.environ.setdefault("GQA_VIZ_PREWARM", "0")
    from gqa_viz.app import playground
    from gqa_viz.app.settings import DEFAULTS

    out = []
    for t in LENGTHS:
        s = replace(DEFAULTS, mode="random", n=n, k=k, t=t)
        playground.cached_run(s)
        fig = playground.heads_chart(s, s.view, s.scale, s.pool)
        out.append(json.loads(pio.to_json(fig.to_dict(), validate=False)))  # as the page sends it
    return out


def peer_figures() -> list[dict]:
    """The peer page's heatmap at each of LENGTHS."""
    from bench.peer_page import figure

    return [json.loads(figure(t).to_json()) for t in LENGTHS]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="query heads (1-64)")
    parser.add_argument("--k", type=int, default=2, help="K/V heads (a divisor of N)")
    args = parser.parse_args(argv)
    if not (1 <= args.n <= 64 and 1 <= args.k <= args.n and args.n % args.k == 0):
        parser.error("--n must be 1-64 and --k a divisor of it")
    from playwright.sync_api import sync_playwright

    figs = figures(args.n, args.k)
    size = len(json.dumps(figs[0])) / 1e3
    print(
        f"# the Playground's heads figure: N = {args.n}, K = {args.k}, T = S = 64 ({size:.0f} kB)"
    )
    with open(PLOTLY_JS) as f:
        version = re.search(r"plotly\.js v(\S+)", f.read(200)).group(1)
    print(
        f"# plotly.js {version}, {REDRAWS} redraws each, median ms from the call to the next frame\n"
    )
    chromium = next(p for p in CHROMIUM if os.access(p, os.X_OK))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_content("<div id='plot' style='width: 1000px'></div>")
        page.add_script_tag(path=str(PLOTLY_JS))
        whole = {}
        print(f"  {'':<28} {'react':>7} {'newPlot':>9}")
        for name, drawn, left_out in [
            *((name, figs, left_out) for name, left_out in PARTS),
            ("the peer page's heatmap", peer_figures(), ""),
        ]:
            ms = {
                method: statistics.median(
                    page.evaluate(DRAW_JS, [drawn, left_out, method, REDRAWS])
                )
                for method in ("react", "newPlot")
            }
            whole = whole or ms
            ratios = "  ".join(f"{ms[m] / whole[m]:4.2f}x" for m in ms)
            print(f"  {name:<28} {ms['react']:7.1f} {ms['newPlot']:9.1f}   {ratios}")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
