"""What a length-slider press costs the browser: main-thread CPU per press, beside the peer page.

    python -m bench.press_cpu                  # 20 presses each, about 3 minutes on 2 cores
    python -m bench.press_cpu --presses 40

A press's latency on a shared 2-core machine moves by 10-20 ms between runs of the same code
(``bench.coldstart``); the work the browser does for it moves far less. Here one
``streamlit run`` serves the peer page (``bench/peer_page.py``: one slider, one heatmap) and
then one serves the app, each in headless Debian chromium under Chrome's sampling CPU profiler
(through CDP, 100 µs samples), while its query-length slider is pressed from T = 64 down, one
step a press, each press on a length not drawn before (the Playground: random vectors, N = 8,
K = 2, once its chart has been drawn at its column's width). Between the two, the Playground's
skeleton (``bench/peer_page.py?playground=1``): its sidebar, its length fragment and its layer
run, with the peer's heatmap in place of everything the Playground shows: what a press costs
this page's structure before the heads figure, the view toolbar, the summary and the downloads,
so the last line can say which part of the Playground's ratio is theirs.

Printed for each: the median press (key press to the heatmap redrawn with one row fewer), the
main thread's busy time per press (every sample but idle), and that time by script: Streamlit's
chart bundle (plotly.js and Streamlit's Plotly element), React, layout queries
(getBoundingClientRect), the garbage collector and the rest.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import bench.coldstart as coldstart
from bench.interactive import CHROMIUM, _free_port, _wait_health, rows_js

ROOT = Path(__file__).resolve().parent.parent
SHOWN = 8  # scripts listed per page

# (name, script, path, slider label, where the slider is, heatmap images when drawn)
PAGES = (
    ("peer page", "bench/peer_page.py", "/", "Query length T", "", 1),
    ("Playground skeleton", "bench/peer_page.py", "/?playground=1&mode=random&t=64&n=8&k=2",
     "Query length T", "stSidebar", 1),
    ("Playground", "app.py", "/playground?mode=random&t=64&n=8&k=2", "Query length T",
     "stSidebar", 4),
)  # fmt: skip

# The heads chart has been drawn at its column's width (app_pages/_column_width.py): the
# presses then measure the steady state, not the first report.
SETTLED_JS = """() => {
    const chart = document.querySelector('.st-key-heads_chart');
    const gd = chart && chart.querySelector('.js-plotly-plot');
    return !chart || (gd && gd.layout && Math.abs(gd.layout.width -
        Math.floor(chart.parentElement.getBoundingClientRect().width)) < 1);
}"""


def _profile(browser, script: str, path: str, label: str, where: str, images: int, presses: int):
    """(press times in ms, {script: µs of main-thread samples}) for one page."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / script), "--server.headless=true",
        "--server.address=127.0.0.1", f"--server.port={port}", "--browser.gatherUsageStats=false",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GQA_VIZ_PREWARM": "0"}
    log = Path(tempfile.mkdtemp(prefix="gqa-press-")) / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_health(url, proc, timeout_s=180)
        page = coldstart._new_page(browser)  # with the press timer's probe, as bench.coldstart
        page.goto(f"{url}{path}", timeout=180_000)
        page.wait_for_function(f"() => ({rows_js(images)})() === 64", timeout=180_000)
        page.wait_for_function(SETTLED_JS, timeout=60_000)
        page.wait_for_timeout(500)
        scope = f"[data-testid='{where}'] " if where else ""
        slider = page.locator(f"{scope}[data-testid='stSlider']").filter(has_text=label)
        cdp = page.context.new_cdp_session(page)
        cdp.send("Profiler.enable")
        cdp.send("Profiler.setSamplingInterval", {"interval": 100})
        cdp.send("Profiler.start")
        coldstart.PRESSES = presses
        times = coldstart._slider(page, slider, images)
        profile = cdp.send("Profiler.stop")["profile"]
        page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    nodes = {n["id"]: n["callFrame"] for n in profile["nodes"]}
    by_script: collections.Counter = collections.Counter()
    for node, dt in zip(profile["samples"], profile["timeDeltas"], strict=True):
        frame = nodes[node]
        by_script[frame["url"].rsplit("/", 1)[-1] or frame["functionName"] or "(native)"] += dt
    return times, by_script


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presses", type=int, default=20, help="presses per page (5-60)")
    args = parser.parse_args(argv)
    if not 5 <= args.presses <= 60:
        parser.error("--presses must be 5-60")
    from playwright.sync_api import sync_playwright

    chromium = next(p for p in CHROMIUM if os.access(p, os.X_OK))
    busy = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--disable-gpu"])
        for name, script, path, label, where, images in PAGES:
            times, by_script = _profile(browser, script, path, label, where, images, args.presses)
            n = len(times)
            busy[name] = sum(us for s, us in by_script.items() if s != "(idle)") / 1e3 / n
            print(
                f"\n{name}: median press {statistics.median(times):.0f} ms, "
                f"main thread busy {busy[name]:.1f} ms a press ({n} presses, profiled)"
            )
            for s, us in by_script.most_common(SHOWN + 1):
                if s != "(idle)":
                    print(f"  {us / 1e3 / n:7.1f} ms  {s}")
        browser.close()
    peer, floor, app = busy["peer page"], busy["Playground skeleton"], busy["Playground"]
    print(
        f"\nMain-thread CPU a press: Playground {app:.1f} ms, peer {peer:.1f} ms: {app / peer:.2f}x"
        f"\n  the Playground's skeleton {floor:.1f} ms: {floor / peer:.2f}x the peer; what the"
        f" Playground shows adds {app - floor:.1f} ms ({(app - floor) / peer:.2f}x the peer)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
