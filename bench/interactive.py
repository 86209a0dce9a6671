"""How fast the app answers: reruns on the server, repaints in a browser, bytes on the wire.

    python -m bench.interactive            # all three parts (about 5 minutes on 2 cores)
    python -m bench.interactive server     # or: payload, browser

1. server: time from a control change to the finished rerun of the Playground, through
   Streamlit's AppTest (the real script, in process), median and p95. The view is the issue's
   default (random vectors, T = S = 64, N = 8, K = 2). Every change also moves the seed, so
   no result or figure cache answers it: each one computes and draws. Peers in the same run:
   a rerun with no change (Streamlit's floor), exact shapes instead of buckets (every new
   length compiles), and head counts before they were prewarmed (every new count compiles).
2. payload: bytes of the heads figure as Streamlit sends it, at T = S in {128, 1024, 2048}
   with 32 query heads, beside what drawing every cell would take.
3. browser: Debian chromium (Playwright) against ``streamlit run`` on loopback: cold start
   from launch to the first heatmap (empty compilation cache, then a restart with it warm),
   and time from a key press on the T slider to the repainted heatmap.

The JAX compilation cache of each part is a fresh temporary directory, so "cold" is cold.
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = "app_pages/playground.py"
DEFAULT_VIEW = {"mode": "random", "t": "64", "n": "8", "k": "2"}
HEADS = [(8, 4), (8, 1), (16, 4), (4, 2), (12, 3), (32, 8), (6, 2), (16, 16), (24, 4), (2, 1)]


def _stats(ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   (n = {len(ms)})"


# ---------------------------------------------------------------------------------------------
# 1. Server-side reruns.


def _apptest():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    for name, value in DEFAULT_VIEW.items():
        at.query_params[name] = value
    at.switch_page(PAGE)
    at.run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    return at


def _timed(at, change) -> float:
    change()
    t0 = time.perf_counter()
    at.run()
    ms = 1000 * (time.perf_counter() - t0)
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    return ms


def bench_server() -> dict[str, list[float]]:
    os.environ["GQA_VIZ_PREWARM"] = "0"  # prewarmed explicitly below, once the cold peer ran
    os.environ["GQA_VIZ_JAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="gqa-bench-jax-")
    from gqa_viz import buckets
    from gqa_viz.app import playground
    from gqa_viz.app.settings import Settings

    rng = random.Random(0)
    seeds = iter(range(1000, 100000))
    out: dict[str, list[float]] = {}
    at = _apptest()

    def seed():
        at.number_input(key="w_seed").set_value(next(seeds))

    out["no change (floor)"] = [_timed(at, lambda: None) for _ in range(20)]
    out["same shape (seed)"] = [_timed(at, seed) for _ in range(30)]

    # Lengths within the prewarmed bucket of the default view (T <= 64).
    def length(t):
        def change():
            seed()
            at.slider(key="w_t").set_value(t)

        return change

    out["length change, bucketed"] = [_timed(at, length(rng.randint(33, 64))) for _ in range(30)]
    # Peer: exact shapes, as without buckets: each new length is a new program.
    exact = buckets.bucket
    buckets.bucket = lambda n: n
    try:
        fresh = rng.sample(range(33, 64), 15)
        out["length change, exact shapes (peer)"] = [_timed(at, length(t)) for t in fresh]
    finally:
        buckets.bucket = exact
    at.slider(key="w_t").set_value(64).run()

    def heads(n, k):
        def change():
            seed()
            at.selectbox(key="w_n").set_value(n)
            at.run()  # the K choices follow N
            at.selectbox(key="w_k").set_value(k)

        return change

    # Peer first: head counts never compiled in this process (nor on disk).
    out["heads change, not prewarmed (peer)"] = [_timed(at, heads(n, k)) for n, k in HEADS]
    view = Settings(mode="random")
    programs = [
        buckets.Program(n, k, view.h, view.d, 1, view.t, view.t)
        for n in sorted({n for n, _ in HEADS} | {8})
        for k in range(1, n + 1)
        if n % k == 0
    ]
    t0 = time.perf_counter()
    buckets.prewarm(programs)
    print(f"  (prewarmed {len(programs)} programs in {time.perf_counter() - t0:.1f} s)")
    cycle = [HEADS[i % len(HEADS)] for i in range(30)]
    out["heads change, prewarmed"] = [_timed(at, heads(n, k)) for n, k in cycle]
    playground.RESULTS.clear()
    return out


# ---------------------------------------------------------------------------------------------
# 2. Payload.


def bench_payload() -> list[tuple[int, int, int, float]]:
    os.environ["GQA_VIZ_PREWARM"] = "0"
    rows = []
    for T in (128, 1024, 2048):
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        for name, value in {"mode": "random", "t": str(T), "n": "32", "k": "8"}.items():
            at.query_params[name] = value
        at.switch_page(PAGE)
        t0 = time.perf_counter()
        at.run()
        seconds = time.perf_counter() - t0
        assert not at.exception and not at.error
        sent = len(at.get("plotly_chart")[0].proto.spec.encode())
        # Every cell drawn: float32 scores and the grey mask layer, base64 (4/3), per head.
        naive = int(32 * T * T * 4 * 4 / 3 * 2)
        rows.append((T, sent, naive, seconds))
    return rows


# ---------------------------------------------------------------------------------------------
# 3. Browser.

CHROMIUM = ("/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium/chromium")


def rows_js(min_images: int) -> str:
    """JavaScript: the rows of the page's last heatmap once its run has finished and at least
    ``min_images`` heatmap images are drawn; -1 before."""
    return f"""() => {{
    if (document.querySelector("[data-testid='stStatusWidget']")) return -1;
    const plot = document.querySelector('.js-plotly-plot');
    if (!plot || !plot.data || !plot.data.length) return -1;
    if (plot.querySelectorAll('.hm image').length < {min_images}) return -1;
    return plot.data[plot.data.length - 1].y.length;
}}"""


# The Playground's default view: 2 K/V groups, each one heatmap and the grey layer beneath it.
HEATMAP_ROWS_JS = rows_js(4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(cache_dir: str, log_path: str):
    port = _free_port()
    env = {**os.environ, "GQA_VIZ_JAX_CACHE_DIR": cache_dir, "GQA_VIZ_PREWARM": "1"}
    env.setdefault("MALLOC_ARENA_MAX", "2")  # as `make run` and the Dockerfile
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
        "--server.headless=true", "--server.address=127.0.0.1", f"--server.port={port}",
        "--browser.gatherUsageStats=false",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def _wait_health(url: str, proc, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("streamlit did not start")


def wait_prewarmed(log: Path, count: int = 1, timeout_s: float = 300) -> list[str]:
    """Wait until ``log`` (a server's or stack's output) says ``count`` prewarmings are done;
    their lines. RuntimeError when one stopped early or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = log.read_text().splitlines()
        done = [x for x in lines if "gqa-viz: prewarm done" in x]
        if len(done) >= count:
            return done
        if time.monotonic() > deadline or any("gqa-viz: prewarm stopped" in x for x in lines):
            raise RuntimeError(f"prewarming did not finish; see {log}")
        time.sleep(0.5)


def _first_heatmap(browser, cache_dir: str, log_path: str):
    """(seconds from launch to the first heatmap, server process, url, page)."""
    t0 = time.perf_counter()
    proc, url = _server(cache_dir, log_path)
    _wait_health(url, proc)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/playground?mode=random", timeout=120_000)
    page.wait_for_function(f"() => ({HEATMAP_ROWS_JS})() === 64", timeout=120_000, polling="raf")
    return time.perf_counter() - t0, proc, url, page


def bench_browser() -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    chromium = next(p for p in CHROMIUM if os.access(p, os.X_OK))
    out: dict[str, list[float]] = {}
    cache_dir = tempfile.mkdtemp(prefix="gqa-bench-jax-")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--disable-gpu"])
        log = Path(cache_dir) / "server.log"
        seconds, proc, _, page = _first_heatmap(browser, cache_dir, str(log))
        out["cold start, empty compilation cache (s)"] = [seconds]
        try:
            # The slider is timed on a settled server: once prewarming has finished.
            deadline = time.monotonic() + 300
            while "prewarm done" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.5)
            print("  " + next(x for x in log.read_text().splitlines() if "prewarm done" in x))
            slider = page.locator("[data-testid='stSidebar'] [data-testid='stSlider']").filter(
                has_text="Query length T"
            )
            thumb = slider.locator("input[type=range]").first
            thumb.focus()
            times = []
            for t in range(63, 33, -1):  # ArrowLeft: one step down, within bucket 64
                t0 = time.perf_counter()
                thumb.press("ArrowLeft")
                page.wait_for_function(
                    f"() => ({HEATMAP_ROWS_JS})() === {t}", timeout=60_000, polling="raf"
                )
                times.append(1000 * (time.perf_counter() - t0))
            out["slider to repainted heatmap (ms)"] = times
        finally:
            page.close()
            proc.terminate()
            proc.wait(timeout=20)
        restarts = []
        for _ in range(2):
            seconds, proc, _, page = _first_heatmap(browser, cache_dir, str(log))
            restarts.append(seconds)
            page.close()
            proc.terminate()
            proc.wait(timeout=20)
        out["cold start, restart with the cache warm (s)"] = restarts
        browser.close()
    return out


def main(argv: list[str]) -> None:
    parts = argv or ["server", "payload", "browser"]
    print(f"# gqa-viz interactive benchmark ({os.cpu_count()} cores)\n")
    if "server" in parts:
        print("## 1. Server: control change -> finished rerun (AppTest, Playground)")
        results = bench_server()
        floor = statistics.median(results["no change (floor)"])
        for name, ms in results.items():
            ratio = statistics.median(ms) / floor
            print(f"  {name:38s} {_stats(ms)}   {ratio:5.2f}x floor")
        print()
    if "payload" in parts:
        print("## 2. Payload: the heads figure as sent (32 query heads, K = 8, causal)")
        for T, sent, naive, seconds in bench_payload():
            print(
                f"  T = S = {T:5d}: {sent / 1e6:6.2f} MB sent; every cell would be "
                f"{naive / 1e6:8.1f} MB ({naive / sent:6.0f}x); first run {seconds:5.1f} s"
            )
        print()
    if "browser" in parts:
        print("## 3. Browser (Debian chromium, loopback)")
        for name, values in bench_browser().items():
            if name.endswith("(ms)"):
                print(f"  {name:42s} {_stats(values)}")
            else:
                print(f"  {name:42s} " + ", ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main(sys.argv[1:])
