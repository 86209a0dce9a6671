"""A classroom at once: many sessions against one server on loopback, for a few minutes.

    python -m bench.load                                  # 30 light + 3 browser sessions, 3 min
    python -m bench.load --sessions 30 --browsers 3 --minutes 3 --think 3 10

Most sessions are light clients: they speak Streamlit's own websocket protocol (the
``BackMsg``/``ForwardMsg`` protobufs on ``/_stcore/stream``) as the browser's frontend does,
so the server does exactly the work a browser would cause (every rerun, every figure
serialised and sent) without 30 browsers measuring themselves on a 2-core machine. A few
sessions are real pages in Debian chromium (Playwright), to prove the app paints under load.

Each session follows a student's script: open the Playground from a shared link, then, with a
random pause of ``--think`` seconds between actions, change the query heads, change the K/V
heads, toggle the causal mask, switch to random vectors and move the length slider, and visit
another page (Mask Lab, KV sharing, Walkthrough, Home) and come back. Browser sessions move
the length slider and switch pages through the sidebar.

Reported: errors (a refused or broken connection, a rerun that does not finish in 60 s, an
exception or an error box on the page; target 0), rerun latency p50/p95 per action (a light
rerun: the request sent to ``script_finished`` received; a browser action: key press or click
to the repainted page), and the server's resident memory sampled every second, with the
growth over the second half of the run (bounded caches: it should plateau).

The server is started here (``streamlit run app.py`` on a free loopback port, with its start-up
prewarming on) and load begins once prewarming is done, as on a server that has been up a
while. Not part of ``make test``: ``make load`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.interactive import CHROMIUM, HEATMAP_ROWS_JS, _server, _wait_health

ROOT = Path(__file__).resolve().parent.parent
SHARED_LINK = "n=8&k=2&mode=sentence"  # what the teacher put on the board
PAGES = ("mask-lab", "kv-sharing", "trained", "walkthrough", "")  # "" is Home
N_CHOICES = (4, 8, 12, 16, 32)
RERUN_TIMEOUT_S = 60.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Tally:
    """What every session reports: latencies per action, and every error with its reason."""

    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    cpu_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)  # server s, light clients s, wall s

    def add(self, action: str, ms: float) -> None:
        self.latency_ms[action].append(ms)


# ---------------------------------------------------------------------------------------------
# Light clients: Streamlit's websocket protocol.


class LightSession:
    """One browser tab's worth of protocol, without the browser.

    It keeps what the frontend keeps: the widgets of the last run (found by their ``key``,
    which Streamlit puts at the end of each widget id) and the values this student has set.
    Unchanged widgets are not sent; the server keeps their last values, as for a tab that
    sends only what changed since the previous run.
    """

    def __init__(self, url: str, name: str, tally: Tally):
        self.url, self.name, self.tally = url, name, tally
        self.widgets: dict[str, object] = {}  # user key -> element proto of the last run
        self.values: dict[str, object] = {}  # user key -> WidgetState set by this student
        self.page = "playground"
        self.page_hashes: dict[str, str] = {}  # url path -> page script hash
        self.query_string = ""  # the page's URL parameters, as the app last set them
        self.ws = None

    async def connect(self) -> None:
        import websockets

        host = self.url.removeprefix("http://")
        self.ws = await websockets.connect(
            f"ws://{host}/_stcore/stream",
            subprotocols=["streamlit"],
            origin=self.url,
            max_size=None,
            open_timeout=30,
        )

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def rerun(self, action: str, query_string: str = "") -> None:
        """Send one rerun request and read the server's answer up to ``script_finished``."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = query_string
        state.page_name = self.page
        state.page_script_hash = self.page_hashes.get(self.page, "")
        for key, value in self.values.items():
            if key in self.widgets:
                widget = state.widget_states.widgets.add()
                widget.CopyFrom(value)
                widget.id = self.widgets[key].id
        self.widgets = {}
        t0 = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        async with asyncio.timeout(RERUN_TIMEOUT_S):
            while True:
                fwd = ForwardMsg()
                fwd.ParseFromString(await self.ws.recv())
                kind = fwd.WhichOneof("type")
                if kind == "delta":
                    self._read_delta(fwd.delta, action)
                elif kind == "page_info_changed":
                    self.query_string = fwd.page_info_changed.query_string
                elif kind == "navigation":
                    for page in fwd.navigation.app_pages:
                        self.page_hashes[page.url_pathname] = page.page_script_hash
                elif kind == "page_not_found":
                    self.tally.errors.append(f"{self.name} {action}: page not found")
                elif kind == "session_event" and fwd.session_event.HasField(
                    "script_compilation_exception"
                ):
                    self.tally.errors.append(f"{self.name} {action}: script did not compile")
                elif kind == "script_finished":
                    status = ForwardMsg.ScriptFinishedStatus.Name(fwd.script_finished)
                    if status != "FINISHED_SUCCESSFULLY":
                        self.tally.errors.append(f"{self.name} {action}: {status}")
                    break
        self.tally.add(action, 1000 * (time.perf_counter() - t0))

    def _read_delta(self, delta, action: str) -> None:
        if delta.WhichOneof("type") != "new_element":
            return
        element = delta.new_element
        kind = element.WhichOneof("type")
        if kind == "exception":
            self.tally.errors.append(f"{self.name} {action}: exception {element.exception.message}")
        elif kind == "alert" and element.alert.format == element.alert.ERROR:
            self.tally.errors.append(f"{self.name} {action}: error box {element.alert.body!r}")
        elif kind is not None:
            proto = getattr(element, kind)
            widget_id = getattr(proto, "id", "")
            if widget_id.startswith("$$ID-"):
                self.widgets[widget_id.rsplit("-", 1)[-1]] = proto

    # The student's actions. Each sets a widget the way the frontend would, then reruns.

    def _set(self, key: str, **value) -> None:
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        state = WidgetState()
        for name, v in value.items():
            if name == "double_array_value":
                state.double_array_value.data.extend(v)
            else:
                setattr(state, name, v)
        self.values[key] = state

    def _choose(self, key: str, rng: random.Random, allowed=None) -> str | None:
        proto = self.widgets.get(key)
        if proto is None:
            return None
        options = [o for o in proto.options if allowed is None or o in allowed]
        return rng.choice(options) if options else None

    async def act(self, rng: random.Random) -> None:
        if self.page != "playground":
            self.page = "playground"
            await self.rerun("back to the Playground")
            return
        action = rng.choices(
            ("query heads", "kv heads", "causal", "length", "switch page"), (3, 3, 2, 3, 2)
        )[0]
        if action == "query heads":
            choice = self._choose("w_n", rng, {str(n) for n in N_CHOICES})
            if choice:
                self._set("w_n", string_value=choice)
        elif action == "kv heads":
            choice = self._choose("w_k", rng)
            if choice:
                self._set("w_k", string_value=choice)
        elif action == "causal":
            current = self.widgets.get("w_causal")
            if current is not None:
                now = self.values["w_causal"].bool_value if "w_causal" in self.values else True
                self._set("w_causal", bool_value=not now)
        elif action == "length":
            if "w_t" not in self.widgets:  # the slider shows with random vectors
                self._set("w_mode", string_value="random vectors")
                action = "random vectors"
            else:
                self._set("w_t", double_array_value=[rng.randint(8, 256)])
        else:
            self.page = rng.choice(PAGES)
            action = f"open {self.page or 'home'}"
        await self.rerun(action)


async def light_session(url: str, name: str, tally: Tally, stop_at: float, seed: int, think):
    rng = random.Random(seed)
    session = LightSession(url, name, tally)
    await asyncio.sleep(rng.uniform(0, 5))  # students do not all press enter in one instant
    try:
        await session.connect()
        await session.rerun("open", SHARED_LINK)
        while time.monotonic() < stop_at:
            await asyncio.sleep(rng.uniform(*think))
            await session.act(rng)
    except TimeoutError:
        tally.errors.append(f"{name}: no script_finished within {RERUN_TIMEOUT_S:.0f} s")
    except Exception as error:  # a closed socket or refused connection is an error to report
        tally.errors.append(f"{name}: {type(error).__name__}: {error}")
    finally:
        await session.close()


# ---------------------------------------------------------------------------------------------
# Browser sessions: Debian chromium through Playwright.

ERRORS_JS = """() => document.querySelectorAll(
    "[data-testid='stException'], [data-testid='stAlertContentError']").length"""


async def browser_session(
    browser, url: str, name: str, tally: Tally, stop_at: float, seed: int, think
):
    rng = random.Random(seed)
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        t0 = time.perf_counter()
        await page.goto(f"{url}/playground?mode=random&t=64", timeout=120_000)
        await page.wait_for_function(
            f"() => ({HEATMAP_ROWS_JS})() === 64", timeout=120_000, polling="raf"
        )
        tally.add("browser: open", 1000 * (time.perf_counter() - t0))
        t, action = 64, "open"
        while time.monotonic() < stop_at:
            await asyncio.sleep(rng.uniform(*think))
            if rng.random() < 0.75:
                action = "slider"
                thumb = page.locator("[data-testid='stSidebar'] [data-testid='stSlider']")
                thumb = thumb.filter(has_text="Query length T").locator("input[type=range]")
                key = "ArrowLeft" if t > 40 and rng.random() < 0.5 or t >= 90 else "ArrowRight"
                t += -1 if key == "ArrowLeft" else 1
                t0 = time.perf_counter()
                await thumb.first.press(key)
                await page.wait_for_function(
                    f"() => ({HEATMAP_ROWS_JS})() === {t}", timeout=60_000, polling="raf"
                )
                tally.add("browser: slider", 1000 * (time.perf_counter() - t0))
            else:
                action = "to Mask Lab and back"
                t0 = time.perf_counter()
                nav = page.locator("[data-testid='stSidebarNav'] a")
                await nav.filter(has_text="Mask Lab").click()
                await page.wait_for_function(
                    "() => !document.querySelector(\"[data-testid='stStatusWidget']\") && "
                    "document.querySelectorAll('.js-plotly-plot').length > 0 && "
                    "location.pathname.endsWith('/mask-lab')",
                    timeout=60_000,
                    polling="raf",
                )
                await nav.filter(has_text="Playground").click()
                await page.wait_for_function(
                    f"() => location.pathname.endsWith('/playground') && "
                    f"({HEATMAP_ROWS_JS})() === {t}",
                    timeout=60_000,
                    polling="raf",
                )
                tally.add("browser: to Mask Lab and back", 1000 * (time.perf_counter() - t0))
            if await page.evaluate(ERRORS_JS):
                tally.errors.append(f"{name} {action}: an exception or error box on the page")
                break
    except Exception as error:
        tally.errors.append(f"{name} {action}: {type(error).__name__}: {str(error)[:200]}")
    finally:
        await page.close()


# ---------------------------------------------------------------------------------------------
# The run.


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _renice_browsers() -> None:
    """Lower the priority of every chromium process: on 30 laptops the browsers would not take
    the server's cores, and here they share its two."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"chromium" in (entry / "cmdline").read_bytes().split(b"\0")[0]:
                os.setpriority(os.PRIO_PROCESS, int(entry.name), 15)
        except (OSError, IndexError):
            continue  # gone, or not ours


async def _sample_memory(pid: int, samples: list[tuple[float, float]], stop: asyncio.Event):
    t0 = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - t0, _rss_mib(pid)))
        _renice_browsers()  # new renderer processes appear as pages load
        await asyncio.sleep(1.0)


async def _first_visit(url: str) -> None:
    tally = Tally()
    session = LightSession(url, "first visit", tally)
    await session.connect()
    await session.rerun("open", SHARED_LINK)
    await session.close()
    if tally.errors:
        raise RuntimeError(f"the first visit failed: {tally.errors}")


async def run_load(url: str, pid: int, args) -> tuple[Tally, list[tuple[float, float]]]:
    tally = Tally()
    tally.cpu_start = (_cpu_s(pid), time.process_time(), time.monotonic())
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_memory(pid, samples, stop))
    stop_at = time.monotonic() + 60 * args.minutes
    think = tuple(args.think)
    tasks = [
        light_session(url, f"light-{i:02d}", tally, stop_at, seed=i, think=think)
        for i in range(args.sessions)
    ]
    if args.browsers:
        from playwright.async_api import async_playwright

        chromium = next(p for p in CHROMIUM if os.access(p, os.X_OK))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--disable-gpu"])
            tasks += [
                browser_session(browser, url, f"browser-{i}", tally, stop_at, 100 + i, think)
                for i in range(args.browsers)
            ]
            await asyncio.gather(*tasks)
            await browser.close()
    else:
        await asyncio.gather(*tasks)
    stop.set()
    await sampler
    server0, client0, wall0 = tally.cpu_start
    tally.cpu = (_cpu_s(pid) - server0, time.process_time() - client0, time.monotonic() - wall0)
    return tally, samples


def report(tally: Tally, samples, args) -> None:
    print(
        f"# gqa-viz load test: {args.sessions} light + {args.browsers} browser sessions, "
        f"{args.minutes:g} min, think time {args.think[0]:g}-{args.think[1]:g} s\n"
    )
    print(f"errors: {len(tally.errors)}")
    for error in tally.errors[:20]:
        print(f"  {error}")
    everything = [
        ms for action, v in tally.latency_ms.items() if "browser" not in action for ms in v
    ]
    print("\nrerun latency, ms      count     p50     p95     max")
    rows = sorted(tally.latency_ms.items(), key=lambda kv: ("browser" in kv[0], kv[0]))
    if everything:
        rows.insert(0, ("all light reruns", everything))
    for action, values in rows:
        print(
            f"  {action:30s} {len(values):5d} {statistics.median(values):7.0f} "
            f"{_percentile(values, 0.95):7.0f} {max(values):7.0f}"
        )
    server, client, wall = tally.cpu
    if wall:
        print(
            f"\nCPU over {wall:.0f} s: server {server:.0f} s ({server / wall:.2f} cores), "
            f"light clients {client:.0f} s ({client / wall:.2f} cores); the browsers use the rest"
        )
    if samples:
        end = samples[-1][0]
        half = [(t, m) for t, m in samples if t >= end / 2]
        per_min = 60 * (half[-1][1] - half[0][1]) / max(half[-1][0] - half[0][0], 1e-9)
        print("\nserver memory (resident), MiB")
        for t, m in samples[:: max(1, len(samples) // 12)] + [samples[-1]]:
            print(f"  t = {t:5.0f} s  {m:7.0f}")
        print(
            f"  start {samples[0][1]:.0f}, peak {max(m for _, m in samples):.0f}, "
            f"end {samples[-1][1]:.0f}; second half: {half[0][1]:.0f} -> {half[-1][1]:.0f} "
            f"({per_min:+.1f} MiB/min)"
        )
        # Bounded caches fill, then evict (and the compiled programs are emptied now and then:
        # a sawtooth), so the plateau shows in each minute's peak, not in the last sample.
        peaks = [
            max(m for t, m in samples if 60 * i <= t < 60 * (i + 1))
            for i in range(int(end // 60) + 1)
            if any(60 * i <= t < 60 * (i + 1) for t, _ in samples)
        ]
        print("  peak of each minute: " + ", ".join(f"{p:.0f}" for p in peaks))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30, help="light sessions (1-100)")
    parser.add_argument("--browsers", type=int, default=3, help="browser sessions (0-5)")
    parser.add_argument("--minutes", type=float, default=3.0, help="load duration (0.1-15)")
    parser.add_argument(
        "--think",
        type=float,
        nargs=2,
        default=(3.0, 10.0),
        metavar=("MIN", "MAX"),
        help="seconds between a student's actions, drawn uniformly (default 3-10)",
    )
    args = parser.parse_args(argv)
    # Bounded, so a typo cannot turn a benchmark into a denial of service of this machine.
    if not (1 <= args.sessions <= 100 and 0 <= args.browsers <= 5 and 0.1 <= args.minutes <= 15):
        parser.error("sessions must be 1-100, browsers 0-5, minutes 0.1-15")

    work = Path(tempfile.mkdtemp(prefix="gqa-load-"))
    log = work / "server.log"
    proc, url = _server(str(ROOT / ".jax_cache"), str(log))
    try:
        _wait_health(url, proc)
        asyncio.run(_first_visit(url))  # start-up (and its prewarming) runs on the first visit
        deadline = time.monotonic() + 300
        while "prewarm done" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        print("server: " + next((x for x in log.read_text().splitlines() if "prewarm" in x), "?"))
        tally, samples = asyncio.run(run_load(url, proc.pid, args))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    report(tally, samples, args)
    tracebacks = log.read_text().count("Traceback")
    print(f"\nserver log: {tracebacks} tracebacks ({log})")
    return 1 if tally.errors or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
