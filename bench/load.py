"""A classroom at once: many sessions against one server on loopback, for a few minutes.

    python -m bench.load                                  # 30 light + 3 browser sessions, 3 min
    python -m bench.load --sessions 30 --browsers 3 --minutes 3 --think 3 10
    python -m bench.load --stack 2                        # what `make run` runs, 2 workers
    python -m bench.load --stack 2 --kill-worker-after 60 # ... and one worker dies at 60 s
    python -m bench.load --url http://127.0.0.1:8501 --state serve.json   # a running stack
    python -m bench.load --capacity 10,20,40,60,80 --minutes 1   # 1 worker, then 2: capacity

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

``--stack W`` starts what ``make run`` runs instead: ``scripts/serve.py`` with W workers behind
haproxy, its public port on loopback; the supervisor opens a first session on each worker and
load begins once every worker has prewarmed. Sessions behave as a browser does behind the
proxy: a request for ``/_stcore/health`` first (haproxy's ``SRV`` cookie names the worker),
then the websocket with every cookie they were given. Reported on top: CPU seconds and
resident memory of each worker and of haproxy (from ``/proc``, the pids the supervisor writes
to its state file), and the finished reruns each worker served. ``--url`` drives a server or
stack that is already running; with ``--state`` (``scripts/serve.py --state FILE``) its workers
are measured too.

``--kill-worker-after S`` kills the first worker (SIGKILL) S seconds into the load. Its
sessions see their websocket close, as a browser tab does, and reconnect through the proxy,
which sends them to a live worker; each then reruns its page with the URL of the last view it
had finished, and no widget values, so what comes back comes from the URL only. Reported: the
errors the switch caused (counted apart, not failures), the time from the kill to each
session's view being back, and every session whose view (the values its widgets show) or URL
settings differ from before the switch: a lost setting, which fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

from bench.interactive import CHROMIUM, HEATMAP_ROWS_JS, _free_port, _server, _wait_health

ROOT = Path(__file__).resolve().parent.parent
SHARED_LINK = "n=8&k=2&mode=sentence"  # what the teacher put on the board
PAGES = ("mask-lab", "kv-sharing", "trained", "walkthrough", "")  # "" is Home
N_CHOICES = (4, 8, 12, 16, 32)
RERUN_TIMEOUT_S = 60.0
RECONNECT_TRIES = 20  # a browser keeps retrying; these are 0.5 s apart
STACK_START_TIMEOUT_S = 300.0  # a stack's start-up and prewarming, on an empty cache


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Tally:
    """What every session reports: latencies per action, and every error with its reason."""

    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # process name -> CPU s over the load
    client_cpu_s: float = 0.0  # this process: the light clients
    wall_s: float = 0.0
    reruns: Counter = field(default_factory=Counter)  # worker (SRV cookie) -> finished reruns
    # Failover: the worker killed and when (time.monotonic()); what its sessions went through.
    failover: bool = False  # a worker is to be killed during this run
    killed: tuple[str, float] | None = None
    switch_errors: list[str] = field(default_factory=list)  # what the switch cost, counted
    back_after_s: list[float] = field(default_factory=list)  # kill -> a session's view back
    lost: list[str] = field(default_factory=list)  # sessions whose view or URL changed

    def add(self, action: str, ms: float) -> None:
        self.latency_ms[action].append(ms)


def _shown(proto) -> object:
    """What a widget's proto makes a browser show on its first run, or whenever the server sets
    the value (``set_value``): a select box's or radio's option, a slider's or number's value,
    a checkbox's state, a text; None for elements without a value (buttons, charts)."""
    fields = proto.DESCRIPTOR.fields_by_name
    if "set_value" not in fields or "default" not in fields:
        return None
    by_option = "raw_value" in fields and not fields["raw_value"].is_repeated  # box, radio
    by_options = "raw_values" in fields  # multiselect, pills, segmented control
    if proto.set_value:
        value = proto.raw_value if by_option else proto.raw_values if by_options else proto.value
    else:
        value = proto.default
        if by_option:
            value = proto.options[value] if proto.options else ""
        elif by_options:
            value = [proto.options[i] for i in value]
    return value if isinstance(value, str | bool | int | float) else list(value)


def _sent(state) -> object:
    """The value a ``WidgetState`` this client sent gives its widget, as :func:`_shown`."""
    kind = state.WhichOneof("value")
    value = getattr(state, kind)
    return list(value.data) if kind.endswith("_array_value") else value


def _settings(query_string: str) -> dict[str, list[str]]:
    return parse_qs(query_string, keep_blank_values=True)


class ConnectionLost(ConnectionError):
    """The session's websocket closed under it (its worker is gone)."""


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
        self.fragments: dict[str, str] = {}  # user key -> id of the fragment drawing it, or ""
        self.values: dict[str, object] = {}  # user key -> WidgetState set by this student
        self.page = "playground"
        self.page_hashes: dict[str, str] = {}  # url path -> page script hash
        self.query_string = ""  # the page's URL parameters, as the app last set them
        self.cookies: dict[str, str] = {}  # what the server (and a proxy) set, sent back
        # The last finished run: what its widgets showed, and the URL then.
        self.view: dict[str, object] = {}
        self.view_query = ""
        self.ws = None

    @property
    def worker(self) -> str | None:
        """The worker haproxy's cookie names, or None without a proxy."""
        return self.cookies.get("SRV")

    def _keep_cookies(self, headers) -> None:
        for header in headers:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value

    def _cookie_header(self) -> dict[str, str]:
        if not self.cookies:
            return {}
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def _health(self) -> None:
        request = urllib.request.Request(
            f"{self.url}/_stcore/health", headers=self._cookie_header()
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            self._keep_cookies(response.headers.get_all("Set-Cookie") or [])

    async def connect(self) -> None:
        """As the browser's frontend does: ``/_stcore/health`` first, then the websocket,
        both with the cookies given so far (behind haproxy, the first answer sets ``SRV``)."""
        import websockets

        await asyncio.to_thread(self._health)
        host = self.url.removeprefix("http://")
        self.ws = await websockets.connect(
            f"ws://{host}/_stcore/stream",
            subprotocols=["streamlit"],
            origin=self.url,
            max_size=None,
            open_timeout=30,
            additional_headers=self._cookie_header(),
        )
        self._keep_cookies(self.ws.response.headers.get_all("Set-Cookie"))

    async def pause(self, seconds: float) -> None:
        """Think for ``seconds``; raises :class:`ConnectionLost` as soon as the websocket
        closes meanwhile (a browser notices at once, not at its next action)."""
        try:
            await asyncio.wait_for(self.ws.wait_closed(), seconds)
        except TimeoutError:
            return
        raise ConnectionLost("the websocket closed")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    async def rerun(self, action: str, query_string: str = "", widget: str = "") -> None:
        """Send one rerun request and read the server's answer up to ``script_finished``.

        ``widget``: the key of the widget the student changed. When a fragment draws it, only
        that fragment reruns, as the browser asks (the page's other widgets stay as they were).
        """
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = query_string
        state.page_name = self.page
        state.page_script_hash = self.page_hashes.get(self.page, "")
        state.fragment_id = fragment = self.fragments.get(widget, "")
        for key, value in self.values.items():
            if key in self.widgets:
                widget = state.widget_states.widgets.add()
                widget.CopyFrom(value)
                widget.id = self.widgets[key].id
        self.widgets = dict(self.widgets) if fragment else {}
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
                    if status not in (
                        "FINISHED_SUCCESSFULLY",
                        "FINISHED_FRAGMENT_RUN_SUCCESSFULLY",
                    ):
                        self.tally.errors.append(f"{self.name} {action}: {status}")
                    break
        self.tally.add(action, 1000 * (time.perf_counter() - t0))
        self.tally.reruns[self.worker] += 1
        self._update_view()

    def _update_view(self) -> None:
        """What the page shows now, as a browser's frontend decides it: the value the server
        set, else the value this student sent, else what the widget showed before."""
        before, self.view = self.view, {}
        for key, proto in self.widgets.items():
            if getattr(proto, "set_value", False) or key not in self.values | before:
                value = _shown(proto)
            elif key in self.values:
                value = _sent(self.values[key])
            else:
                value = before[key]
            if value is not None:
                self.view[key] = value
        self.view_query = self.query_string

    async def switch(self, error: Exception) -> None:
        """After the websocket closed under this session: reconnect, through the proxy, to
        whichever worker it picks, rerun the page with the URL of the last finished view and
        no widget values, and check that the same view comes back."""
        import websockets

        killed_at = self.tally.killed[1]
        self.tally.switch_errors.append(f"{self.name} on {self.worker}: {type(error).__name__}")
        before, before_query, old = dict(self.view), self.view_query, self.worker
        for _ in range(RECONNECT_TRIES):
            try:
                await self.close()
                await self.connect()
                self.widgets = {}  # the URL only: nothing from the old session's widgets
                await self.rerun("after the switch", before_query)
                break
            except (OSError, TimeoutError, websockets.ConnectionClosed) as again:
                self.tally.switch_errors.append(f"{self.name} retry: {type(again).__name__}")
                await asyncio.sleep(0.5)
        else:
            raise ConnectionLost(f"no worker took the session back in {RECONNECT_TRIES} tries")
        self.tally.back_after_s.append(time.monotonic() - killed_at)
        changed = sorted(k for k in before if self.view.get(k) != before[k])
        if changed or _settings(self.query_string) != _settings(before_query):
            self.tally.lost.append(
                f"{self.name} ({old} -> {self.worker}): widgets {changed}, "
                f"URL {before_query!r} -> {self.query_string!r}"
            )

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
                key = widget_id.rsplit("-", 1)[-1]
                self.widgets[key] = proto
                self.fragments[key] = delta.fragment_id

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
        widget = ""
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
                widget = "w_t"  # drawn by the Playground's fragment: only it reruns
        else:
            self.page = rng.choice(PAGES)
            action = f"open {self.page or 'home'}"
        await self.rerun(action, widget=widget)


async def light_session(url: str, name: str, tally: Tally, stop_at: float, seed: int, think):
    import websockets

    rng = random.Random(seed)
    session = LightSession(url, name, tally)
    await asyncio.sleep(rng.uniform(0, 5))  # students do not all press enter in one instant
    try:
        await session.connect()
        await session.rerun("open", SHARED_LINK)
        while time.monotonic() < stop_at:
            try:
                await session.pause(rng.uniform(*think))
                await session.act(rng)
            except (ConnectionLost, websockets.ConnectionClosed) as error:
                # Only the killed worker's sessions may lose their connection.
                if tally.killed is None or session.worker != tally.killed[0]:
                    raise
                await session.switch(error)
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


async def _worker_cookie(page) -> str | None:
    cookies = await page.context.cookies()
    return next((c["value"] for c in cookies if c["name"] == "SRV"), None)


async def _back_after_switch(page, name: str, tally: Tally, t: int, worker: str, t_new=None):
    """Wait until the page is back on another worker (haproxy gave it a new SRV cookie) with
    its heatmap painted; check the query length it shows (``t``, or ``t_new`` when the lost
    action may have reached the old worker) and return (length shown, new worker)."""
    deadline = time.monotonic() + 60
    while (now := await _worker_cookie(page)) == worker and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await page.wait_for_function(f"() => ({HEATMAP_ROWS_JS})() > 0", timeout=60_000)
    rows = await page.evaluate(f"({HEATMAP_ROWS_JS})()")
    tally.back_after_s.append(time.monotonic() - tally.killed[1])
    if now == worker:
        tally.lost.append(f"{name}: still on {worker} a minute after the kill")
    elif rows not in (t, t_new):
        tally.lost.append(f"{name}: T was {t}, shows {rows} after the switch")
    return rows, now


async def browser_session(
    browser, url: str, name: str, tally: Tally, stop_at: float, seed: int, think
):
    rng = random.Random(seed)
    # In a failover run a lost action is waited for less long: the switch takes a second.
    wait_ms = 20_000 if tally.failover else 60_000
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    action = "open"
    try:
        t0 = time.perf_counter()
        await page.goto(f"{url}/playground?mode=random&t=64", timeout=120_000)
        await page.wait_for_function(
            f"() => ({HEATMAP_ROWS_JS})() === 64", timeout=120_000, polling="raf"
        )
        tally.add("browser: open", 1000 * (time.perf_counter() - t0))
        t, worker, switched = 64, await _worker_cookie(page), False
        # The page's first action on its new worker is not applied: the frontend reconnects
        # without a rerun, and a session's first run takes its settings from the URL, not
        # from the widget values sent with it (the app's rule on arriving at a page).
        first_after_switch = False
        while time.monotonic() < stop_at:
            await asyncio.sleep(rng.uniform(*think))
            if tally.killed is not None and worker == tally.killed[0] and not switched:
                t, worker = await _back_after_switch(page, name, tally, t, worker)
                switched = first_after_switch = True
            shown = t
            timeout = 5_000 if first_after_switch else wait_ms
            try:
                if rng.random() < 0.75:
                    action = "slider"
                    thumb = page.locator("[data-testid='stSidebar'] [data-testid='stSlider']")
                    thumb = thumb.filter(has_text="Query length T").locator("input[type=range]")
                    left = t > 40 and rng.random() < 0.5 or t >= 90
                    t += -1 if left else 1
                    t0 = time.perf_counter()
                    await thumb.first.press("ArrowLeft" if left else "ArrowRight")
                    await page.wait_for_function(
                        f"() => ({HEATMAP_ROWS_JS})() === {t}", timeout=timeout, polling="raf"
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
                        timeout=timeout,
                        polling="raf",
                    )
                    await nav.filter(has_text="Playground").click()
                    await page.wait_for_function(
                        f"() => location.pathname.endsWith('/playground') && "
                        f"({HEATMAP_ROWS_JS})() === {t}",
                        timeout=timeout,
                        polling="raf",
                    )
                    tally.add("browser: to Mask Lab and back", 1000 * (time.perf_counter() - t0))
                first_after_switch = False
            except Exception:
                if tally.killed is not None and worker == tally.killed[0] and not switched:
                    # Under way when the page's worker died: lost; the page must come back.
                    tally.switch_errors.append(f"{name} on {worker} {action}: lost")
                    t, worker = await _back_after_switch(page, name, tally, shown, worker, t)
                    switched = first_after_switch = True
                elif first_after_switch:
                    tally.switch_errors.append(
                        f"{name} {action}: first after the switch, not applied"
                    )
                    first_after_switch = False
                    t = await page.evaluate(f"({HEATMAP_ROWS_JS})()")
                    if t != shown:
                        tally.lost.append(f"{name}: T was {shown}, shows {t} after the switch")
                else:
                    raise
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


@dataclass
class Target:
    """What the load runs against: its URL, the processes measured (name -> pid; "server", or
    "w1".. and "haproxy" for a stack) and, for a stack, the supervisor's state file."""

    url: str
    pids: dict[str, int]
    state: Path | None = None


def _stack_state(path: Path) -> dict:
    return json.loads(path.read_text())


def _stack_pids(state: dict) -> dict[str, int]:
    pids = {w["name"]: w["pid"] for w in state["workers"] if w["alive"]}
    if state.get("haproxy"):
        pids["haproxy"] = state["haproxy"]["pid"]
    return pids


async def _sample(pids: dict[str, int], samples, cpu: dict[str, float], stop: asyncio.Event):
    """Each second: every process's resident memory into ``samples`` and its CPU seconds so
    far into ``cpu`` (so a process that dies keeps its last reading)."""
    t0 = time.monotonic()
    while not stop.is_set():
        for name, pid in pids.items():
            try:
                rss = _rss_mib(pid)  # NaN for a zombie: killed, not yet reaped
                if not math.isnan(rss):
                    samples[name].append((time.monotonic() - t0, rss))
                cpu[name] = _cpu_s(pid)
            except OSError:
                continue  # gone: a killed worker
        _renice_browsers()  # new renderer processes appear as pages load
        await asyncio.sleep(1.0)


async def _kill_worker_later(target: Target, tally: Tally, after_s: float) -> None:
    await asyncio.sleep(after_s)
    victim = next(w for w in _stack_state(target.state)["workers"] if w["alive"])
    tally.killed = (victim["name"], time.monotonic())  # before the kill: sessions check it
    os.kill(victim["pid"], signal.SIGKILL)
    print(f"killed worker {victim['name']} (pid {victim['pid']}) {after_s:g} s into the load")


async def _first_visit(url: str, page: str = "playground", query: str = SHARED_LINK) -> None:
    """One new session's first run of ``page`` ("" is Home) with ``query`` in its URL."""
    tally = Tally()
    session = LightSession(url, "first visit", tally)
    await session.connect()
    session.page = page
    await session.rerun("open", query)
    await session.close()
    if tally.errors:
        raise RuntimeError(f"the first visit failed: {tally.errors}")


async def run_load(target: Target, args) -> tuple[Tally, dict[str, list[tuple[float, float]]]]:
    tally = Tally()
    cpu0 = {name: _cpu_s(pid) for name, pid in target.pids.items()}
    cpu = dict(cpu0)
    client0, wall0 = time.process_time(), time.monotonic()
    samples: dict[str, list[tuple[float, float]]] = defaultdict(list)
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(target.pids, samples, cpu, stop))
    killer = None
    if args.kill_worker_after is not None:
        tally.failover = True
        killer = asyncio.create_task(_kill_worker_later(target, tally, args.kill_worker_after))
    stop_at = time.monotonic() + 60 * args.minutes
    think = tuple(args.think)
    url = target.url
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
    if killer is not None and not killer.done():
        killer.cancel()
        print(f"no worker killed: the load ended before {args.kill_worker_after:g} s")
    for name, pid in target.pids.items():
        with contextlib.suppress(OSError):  # gone: its last reading stands
            cpu[name] = _cpu_s(pid)
    tally.cpu = {name: cpu[name] - cpu0[name] for name in cpu0}
    tally.client_cpu_s = time.process_time() - client0
    tally.wall_s = time.monotonic() - wall0
    return tally, samples


def _memory_report(name: str, samples: list[tuple[float, float]]) -> None:
    end = samples[-1][0]
    half = [(t, m) for t, m in samples if t >= end / 2]
    per_min = 60 * (half[-1][1] - half[0][1]) / max(half[-1][0] - half[0][0], 1e-9)
    print(f"\n{name} memory (resident), MiB")
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


def report(tally: Tally, samples, args) -> None:
    where = f"a {args.stack}-worker stack (scripts/serve.py)" if args.stack else "one server"
    if args.url:
        where = args.url
    print(
        f"# gqa-viz load test: {args.sessions} light + {args.browsers} browser sessions, "
        f"{args.minutes:g} min, think time {args.think[0]:g}-{args.think[1]:g} s, {where}\n"
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
    wall = tally.wall_s
    if wall and tally.cpu:
        print(f"\nCPU over {wall:.0f} s, s (cores)")
        for name, seconds in tally.cpu.items():
            print(f"  {name:10s} {seconds:7.1f} ({seconds / wall:.2f})")
        print(
            f"  {'clients':10s} {tally.client_cpu_s:7.1f} ({tally.client_cpu_s / wall:.2f})"
            "   the light clients; the browsers use the rest"
        )
    if any(tally.reruns):
        served = ", ".join(f"{w} {n}" for w, n in sorted(tally.reruns.items()) if w)
        print(f"\nlight reruns finished per worker: {served}")
    for name, values in samples.items():
        if values and name != "haproxy":
            killed = tally.killed is not None and tally.killed[0] == name
            _memory_report(f"{name} (until killed)" if killed else name, values)
    if "haproxy" in samples and samples["haproxy"]:
        peak = max(m for _, m in samples["haproxy"])
        print(f"\nhaproxy memory (resident): peak {peak:.0f} MiB")
    if args.kill_worker_after is not None and tally.killed:
        back = tally.back_after_s
        print(f"\nfailover: {tally.killed[0]} killed at {args.kill_worker_after:g} s")
        print(
            f"  sessions moved: {len(back)}; errors during the switch: {len(tally.switch_errors)}"
        )
        for error in tally.switch_errors[:10]:
            print(f"    {error}")
        if back:
            print(
                f"  kill -> view back, s: p50 {statistics.median(back):.1f}, "
                f"max {max(back):.1f} (including the time a session was thinking)"
            )
        print(f"  sessions that lost a setting: {len(tally.lost)}")
        for lost in tally.lost[:10]:
            print(f"    {lost}")


def _start_stack(workers: int, work: Path) -> tuple[subprocess.Popen, Target, Path]:
    """``scripts/serve.py`` with ``workers`` workers on a free loopback port, once every
    worker has prewarmed; (supervisor, target, its output)."""
    state, log = work / "serve.json", work / "serve.log"
    env = {**os.environ, "GQA_VIZ_JAX_CACHE_DIR": str(ROOT / ".jax_cache")}
    env["GQA_VIZ_PREWARM"] = "1"
    cmd = [
        sys.executable, "-m", "scripts.serve", "--workers", str(workers),
        "--port", str(_free_port()), "--address", "127.0.0.1", "--state", str(state),
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STACK_START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        ready = state.exists() and _stack_state(state)["ready"]
        if ready and log.read_text().count("gqa-viz: prewarm done") >= workers:
            break
        time.sleep(0.5)
    else:
        proc.terminate()
        proc.wait(60)
        raise RuntimeError(f"the stack did not get ready and prewarmed; see {log}")
    for line in log.read_text().splitlines():
        if "prewarm done" in line or line.startswith("serve: ready"):
            print(line)
    return proc, Target(_stack_state(state)["url"], _stack_pids(_stack_state(state)), state), log


def capacity(args) -> int:
    """``--capacity``: for 1 worker, then for ``--stack`` W (default 2), each in its own
    stack, load steps of more and more light sessions (``--minutes`` each) until the p95 of
    all reruns passes 1 s or an error occurs. A stack's capacity is the rerun rate of its
    last step under 1 s; printed with the ratio of W workers' to 1 worker's."""
    steps = [int(n) for n in args.capacity.split(",")]
    found: dict[int, float] = {}
    for workers in (1, args.stack or 2):
        print(
            f"\n{workers} worker{'s' if workers > 1 else ''}: sessions, reruns/s, p50, p95, errors"
        )
        proc, target, _ = _start_stack(workers, Path(tempfile.mkdtemp(prefix="gqa-capacity-")))
        found[workers] = 0.0
        try:
            for n in steps:
                step = argparse.Namespace(**{**vars(args), "sessions": n, "browsers": 0})
                tally, _ = asyncio.run(run_load(target, step))
                light = [ms for values in tally.latency_ms.values() for ms in values]
                if not light:
                    print(f"  {n:4d} no rerun finished: {tally.errors[:3]}")
                    break
                rate, p95 = len(light) / tally.wall_s, _percentile(light, 0.95)
                p50 = statistics.median(light)
                print(
                    f"  {n:4d} {rate:8.2f} {p50:7.0f} ms {p95:7.0f} ms {len(tally.errors):4d}",
                    flush=True,
                )
                if p95 > 1000 or tally.errors:
                    break
                found[workers] = rate
        finally:
            proc.terminate()
            proc.wait(timeout=90)
    many = args.stack or 2
    rate_w = found[many]
    ratio = rate_w / found[1] if found[1] else float("nan")
    print(
        f"\ncapacity (reruns/s with p95 <= 1 s): 1 worker {found[1]:.2f}, {many} workers "
        f"{rate_w:.2f}: {ratio:.2f}x"
    )
    return 0


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
    parser.add_argument(
        "--stack", type=int, metavar="W", help="start `make run`'s stack with W workers (1-8)"
    )
    parser.add_argument("--url", help="drive a server or stack that is already running")
    parser.add_argument(
        "--state", type=Path, help="with --url: that stack's `scripts/serve.py --state` file"
    )
    parser.add_argument(
        "--kill-worker-after",
        type=float,
        metavar="S",
        help="SIGKILL the first worker S seconds into the load (--stack, or --url with --state)",
    )
    parser.add_argument(
        "--capacity",
        metavar="N,N,...",
        help="capacity steps: light sessions per step, for 1 worker and --stack W (default 2)",
    )
    args = parser.parse_args(argv)
    # Bounded, so a typo cannot turn a benchmark into a denial of service of this machine.
    if not (1 <= args.sessions <= 100 and 0 <= args.browsers <= 5 and 0.1 <= args.minutes <= 15):
        parser.error("sessions must be 1-100, browsers 0-5, minutes 0.1-15")
    if args.stack is not None and not 1 <= args.stack <= 8:
        parser.error("--stack must be 1-8 workers")
    if args.capacity:
        if args.url or args.kill_worker_after is not None or args.stack == 1:
            parser.error("--capacity starts its own stacks (1 and --stack W >= 2 workers)")
        if not all(p.isdigit() and 1 <= int(p) <= 300 for p in args.capacity.split(",")):
            parser.error("--capacity takes session counts of 1-300, e.g. 10,20,40")
        return capacity(args)
    if args.stack and args.url:
        parser.error("--stack starts a stack; --url drives a running one: not both")
    if args.state and not args.url:
        parser.error("--state goes with --url")
    if args.kill_worker_after is not None and not (args.stack or args.state):
        parser.error("--kill-worker-after needs a stack: --stack, or --url with --state")

    work = Path(tempfile.mkdtemp(prefix="gqa-load-"))
    proc, log = None, None
    if args.url:
        state = _stack_state(args.state) if args.state else None
        target = Target(args.url, _stack_pids(state) if state else {}, args.state)
    elif args.stack:
        proc, target, log = _start_stack(args.stack, work)
    else:
        log = work / "server.log"
        proc, url = _server(str(ROOT / ".jax_cache"), str(log))
        target = Target(url, {"server": proc.pid})
    code = None
    try:
        if proc is not None and not args.stack:
            _wait_health(target.url, proc)
            asyncio.run(_first_visit(target.url))  # start-up and prewarming run on it
            deadline = time.monotonic() + 300
            while "prewarm done" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.5)
            lines = log.read_text().splitlines()
            print("server: " + next((x for x in lines if "prewarm done" in x), "?"))
        tally, samples = asyncio.run(run_load(target, args))
    finally:
        if proc is not None:
            proc.terminate()
            code = proc.wait(timeout=60)
    report(tally, samples, args)
    failed = bool(tally.errors or tally.lost)
    if log is not None:
        tracebacks = log.read_text().count("Traceback")
        print(f"\nserver log: {tracebacks} tracebacks ({log})")
        failed |= tracebacks > 0
    if args.stack:
        print(f"supervisor exit code after SIGTERM: {code}")
        failed |= code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
