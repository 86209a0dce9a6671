"""Cold start and slider repaint in a real browser: `make run`'s stack beside a peer page.

    python -m bench.coldstart                 # 2 workers, 3 rounds (about 4 minutes on 2 cores)
    python -m bench.coldstart --workers 1 --rounds 2

In each round, one after the other, on loopback, Debian chromium through Playwright:

* the peer: ``streamlit run bench/peer_page.py`` (one slider, one heatmap; the smallest figure
  page Streamlit serves);
* the app as ``make run`` serves it: ``python -m scripts.serve --workers W`` (haproxy in front
  of W workers). Its JAX compilation cache is a fresh directory in round 1 (a first start on a
  new machine) and the same directory afterwards (a restart).

Measured: **cold start**, from launching the server process to the first figure painted in the
browser (the peer's heatmap; Home's diagram for the app), the browser opening the URL as soon
as its health check answers; **slider repaint**, from an arrow key on the query-length slider
to the heatmap redrawn with one row fewer (the peer's; the Playground's on random vectors,
N = 8, once the workers have prewarmed), 20 presses per round. Targets: cold start <= max(8 s,
1.5x the peer's), slider <= 1.5x the peer's.

The peer's slider is also timed under the app's own sidebar (whole-page reruns, as the
Playground's) and with the slider in a fragment (``bench/peer_page.py``): what a page with
that sidebar costs before drawing anything of its own.

**Where a press goes**: each press is also split, from timestamps taken in the page itself
(:data:`PROBE_JS`): when the first message of the rerun reached the page's websocket
handler, when the figure's message (the largest) did, when plotly.js was called to draw it,
when that call returned, and the repaint. Medians, plain peer against the Playground.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.interactive import CHROMIUM, _free_port, _wait_health, rows_js, wait_prewarmed

ROOT = Path(__file__).resolve().parent.parent
PRESSES = 20

# The first figure of the page is drawn: Plotly has data and its SVG.
PAINTED_JS = """() => {
    const plot = document.querySelector('.js-plotly-plot');
    return !!(plot && plot.data && plot.data.length && plot.querySelector('.main-svg'));
}"""


# Installed in every page before its scripts: timestamps (performance.now()) of each websocket
# message as the page's handler gets it ([time, bytes]) and of each plotly.js draw call
# ([name, called, returned]); Streamlit's front end puts plotly.js on window.Plotly.
PROBE_JS = """(() => {
  const probe = (window.__probe = { messages: [], draws: [] });
  const stamp = (e) => probe.messages.push([performance.now(), e.data.byteLength || e.data.size || 0]);
  const add = WebSocket.prototype.addEventListener;
  WebSocket.prototype.addEventListener = function (type, fn, options) {
    const inner = fn;
    if (type === "message") fn = function (e) { stamp(e); return inner.call(this, e); };
    return add.call(this, type, fn, options);
  };
  const onmessage = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage");
  Object.defineProperty(WebSocket.prototype, "onmessage", {
    get() { return onmessage.get.call(this); },
    set(fn) { onmessage.set.call(this, function (e) { stamp(e); return fn.call(this, e); }); },
  });
  let plotly;
  Object.defineProperty(window, "Plotly", {
    configurable: true,
    get() { return plotly; },
    set(value) {
      plotly = value;
      for (const name of ["newPlot", "react"]) {
        const draw = value && value[name];
        if (typeof draw !== "function" || draw.__probed) continue;
        value[name] = Object.assign(function (...args) {
          const called = performance.now();
          const out = draw.apply(this, args);
          window.__probe.draws.push([name, called, performance.now()]);
          return out;
        }, { __probed: true });
      }
    },
  });
})()"""

# The phases of a press, from the probe: (label, ms after the key press) for one press.
PHASES = (
    "the rerun's first message",
    "the figure's message",
    "plotly.js called",
    "plotly.js returned",
    "repainted",
)


def _phases(probe: dict, start: float, total_ms: float) -> tuple[float, ...]:
    nan = float("nan")
    messages = probe["messages"]
    first = messages[0][0] - start if messages else nan
    figure = max(messages, key=lambda m: m[1])[0] - start if messages else nan
    draw = probe["draws"][0] if probe["draws"] else None
    called, returned = (draw[1] - start, draw[2] - start) if draw else (nan, nan)
    return first, figure, called, returned, total_ms


def _new_page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.add_init_script(PROBE_JS)
    return page


def _first_paint(browser, url: str, path: str, proc, t0: float):
    _wait_health(url, proc, timeout_s=180)
    page = _new_page(browser)
    page.goto(f"{url}{path}", timeout=180_000)
    page.wait_for_function(PAINTED_JS, timeout=180_000, polling="raf")
    return time.perf_counter() - t0, page


def _slider(page, slider, min_images: int, phases: list | None = None) -> list[float]:
    """Press times in ms; each press's :data:`PHASES` appended to ``phases`` when given."""
    thumb = slider.locator("input[type=range]").first
    thumb.focus()
    times = []
    for t in range(63, 63 - PRESSES, -1):  # one step down each time, from T = 64
        start = page.evaluate("() => { __probe.messages = []; __probe.draws = []; "
                              "return performance.now(); }")  # fmt: skip
        t0 = time.perf_counter()
        thumb.press("ArrowLeft")
        page.wait_for_function(
            f"() => ({rows_js(min_images)})() === {t}", timeout=60_000, polling="raf"
        )
        times.append(1000 * (time.perf_counter() - t0))
        if phases is not None:
            phases.append(_phases(page.evaluate("() => __probe"), start, times[-1]))
    return times


# The peer page's views (bench/peer_page.py), slider label and location: the plain peer, then
# the same heatmap under the Playground's own sidebar (full reruns), then with its slider and
# heatmap in a fragment. The last two say how much of the app's slider time is its sidebar.
PEER_VIEWS = (
    ("peer page", "/", "Query length T", ""),
    ("peer + the app's sidebar", "/?mode=random&sidebar=1", "Peer length T", "stSidebar"),
    ("  the same, slider in a fragment", "/?mode=random&sidebar=1&fragment=1", "Peer length T",
     "stSidebar"),
)  # fmt: skip


def peer_round(browser, work: Path, phases: list) -> tuple[float, dict[str, list[float]]]:
    """(cold start of the plain peer, slider times of each of PEER_VIEWS); the plain peer's
    press phases are appended to ``phases``."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "bench" / "peer_page.py"),
        "--server.headless=true", "--server.address=127.0.0.1", f"--server.port={port}",
        "--browser.gatherUsageStats=false",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GQA_VIZ_PREWARM": "0"}
    with open(work / "peer.log", "ab") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    times = {}
    try:
        cold, page = _first_paint(browser, url, "/", proc, t0)
        for name, path, label, where in PEER_VIEWS:
            if path != "/":
                page.close()
                page = _new_page(browser)
                page.goto(f"{url}{path}", timeout=60_000)
            page.wait_for_function(f"() => ({rows_js(1)})() === 64", timeout=60_000, polling="raf")
            scope = f"[data-testid='{where}'] " if where else ""
            slider = page.locator(f"{scope}[data-testid='stSlider']").filter(has_text=label)
            times[name] = _slider(page, slider, 1, phases if path == "/" else None)
        page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return cold, times


def app_round(
    browser, work: Path, workers: int, cache: Path, phases: list
) -> tuple[float, list[float]]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work / f"serve-{time.monotonic_ns()}.log"
    env = {**os.environ, "GQA_VIZ_PREWARM": "1"}
    cmd = [
        sys.executable, "-m", "scripts.serve", "--workers", str(workers), "--port", str(port),
        "--address", "127.0.0.1", "--cache-dir", str(cache),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        cold, page = _first_paint(browser, url, "/", proc, t0)
        wait_prewarmed(log_path, workers)  # the slider is timed on a settled stack
        page.goto(f"{url}/playground?mode=random&t=64&n=8&k=2", timeout=120_000)
        # N = 8 in 2 K/V groups: 4 heatmap images (each group's scores and its mask layer).
        page.wait_for_function(f"() => ({rows_js(4)})() === 64", timeout=120_000, polling="raf")
        slider = page.locator("[data-testid='stSidebar'] [data-testid='stSlider']").filter(
            has_text="Query length T"
        )
        times = _slider(page, slider, 4, phases)
        page.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    tracebacks = log_path.read_text().count("Traceback")
    if tracebacks:
        raise RuntimeError(f"{tracebacks} tracebacks in {log_path}")
    return cold, times


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="the stack's workers (1-8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (2-10)")
    args = parser.parse_args(argv)
    if not (1 <= args.workers <= 8 and 2 <= args.rounds <= 10):
        parser.error("--workers must be 1-8 and --rounds 2-10")
    from playwright.sync_api import sync_playwright

    chromium = next(p for p in CHROMIUM if os.access(p, os.X_OK))
    work = Path(tempfile.mkdtemp(prefix="gqa-coldstart-"))
    cache = work / "jax_cache"  # empty in round 1, kept for the restarts
    peer_cold, app_cold, app_slider = [], [], []
    peer_sliders: dict[str, list[float]] = {name: [] for name, *_ in PEER_VIEWS}
    peer_phases, app_phases = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--disable-gpu"])
        for r in range(args.rounds):
            cold, views = peer_round(browser, work, peer_phases)
            peer_cold.append(cold)
            for name, times in views.items():
                peer_sliders[name] += times
            cold, times = app_round(browser, work, args.workers, cache, app_phases)
            app_cold.append(cold)
            app_slider += times
            print(
                f"round {r + 1}: peer {peer_cold[-1]:.1f} s, app {app_cold[-1]:.1f} s", flush=True
            )
        browser.close()
    peer = statistics.median(peer_cold)
    restarts = statistics.median(app_cold[1:])
    target = max(8.0, 1.5 * peer)
    print(
        f"\nCold start to the first figure painted ({args.workers} workers, {args.rounds} rounds)"
    )
    print(f"  peer page (median)                   {peer:6.1f} s")
    print(
        f"  app, empty compilation cache         {app_cold[0]:6.1f} s   {app_cold[0] / peer:5.2f}x"
    )
    print(f"  app, restart (median)                {restarts:6.1f} s   {restarts / peer:5.2f}x")
    print(f"  target: <= max(8 s, 1.5x peer) = {target:.1f} s")
    ps = statistics.median(peer_sliders[PEER_VIEWS[0][0]])
    print(f"\nSlider to repainted heatmap ({len(app_slider)} presses each)")
    for name, times in [*peer_sliders.items(), ("Playground (N = 8, K = 2)", app_slider)]:
        med, p95 = statistics.median(times), sorted(times)[round(0.95 * (len(times) - 1))]
        print(f"  {name:<34} median {med:5.0f} ms   p95 {p95:5.0f} ms   {med / ps:5.2f}x peer")
    print("  target (Playground): <= 1.5x peer")
    print("\nWhere a press goes (median ms after the key press, timestamps taken in the page)")
    print(f"  {'':<28} {'peer':>6} {'Playground':>11}")
    for i, label in enumerate(PHASES):
        peer_ms, app_ms = (
            statistics.median(p[i] for p in phases) for phases in (peer_phases, app_phases)
        )
        print(f"  {label:<28} {peer_ms:6.0f} {app_ms:11.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
