"""`make run`'s stack as `make run` starts it: scripts/serve.py, two Streamlit workers, haproxy.

One public URL serves the app; new visitors are spread over the workers; haproxy's SRV cookie
keeps a visitor's requests (the page, the websocket, uploads, /media) on its worker; when a
worker dies, the next request of its visitors is served by the other one and a session gets
its view back from its URL; SIGTERM to the supervisor stops everything with exit 0.

Which worker served a request is read from haproxy's own counters (``show stat`` on the stats
socket the supervisor's state file names), never from the app. Needs Debian's haproxy
(``make serve-deps``): skipped without it, failed without it when $CI is set.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from bench.load import ConnectionLost, LightSession, Tally
from scripts.serve import find_haproxy, haproxy_stats

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 45.0  # a worker may take up to 20 s to stop its prewarming
# The Playground from a shared link, then one setting changed by the student (K = 4).
LINK = "n=8&k=2&mode=random&t=24&causal=0"
WORKERS = ("w1", "w2")


@pytest.fixture(scope="module")
def haproxy_path() -> str:
    found = find_haproxy()
    if found:
        return found
    msg = "haproxy not found (not on PATH, not /usr/sbin/haproxy); run `make serve-deps`"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


class Stack:
    def __init__(self, proc: subprocess.Popen, state_path: Path, log_path: Path):
        self.proc, self.state_path, self.log_path = proc, state_path, log_path
        self.state = json.loads(state_path.read_text())
        self.url = self.state["url"]

    def pid(self, name: str) -> int:
        if name == "haproxy":
            return self.state["haproxy"]["pid"]
        (worker,) = [w for w in self.state["workers"] if w["name"] == name]
        return worker["pid"]

    def served(self) -> dict[str, int]:
        """Requests each worker has been sent so far, by haproxy's count."""
        return {n: int(row["stot"]) for n, row in haproxy_stats(self.state["stats_socket"]).items()}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(haproxy_path: str, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("serve")
    state, log = work / "state.json", work / "serve.log"
    env = {**os.environ, "HAPROXY": haproxy_path, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable, "-m", "scripts.serve", "--workers", "2", "--port", str(_free_port()),
        "--address", "127.0.0.1", "--state", str(state),
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (state.exists() and json.loads(state.read_text())["ready"]):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the stack did not get ready (rc {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.2)
        yield Stack(proc, state, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _sync(coroutine):
    """Run ``coroutine`` in a thread of its own: Playwright's sync API (the browser tests of
    this session) may keep an event loop running in the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _get(url: str, cookie: str | None = None) -> tuple[int, str, dict[str, str]]:
    """(status, body, cookies set) of one GET; an HTTP error status is returned, not raised."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, body, headers = error.code, error.read(), error.headers
    cookies = dict(c.split(";")[0].split("=", 1) for c in headers.get_all("Set-Cookie") or [])
    return status, body.decode(errors="replace"), cookies


def _listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at ``port`` (IPv4 and IPv6)."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():  # no IPv6 on this machine
            continue
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    found.add(".".join(str(b) for b in raw[::-1]))
                else:
                    found.add("ipv6:" + address)
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # a zombie: ended, its parent not yet told


async def _open_playground(url: str, cookie: str, tally: Tally) -> LightSession:
    """A session on the worker ``cookie`` names: the Playground from LINK, then K = 4."""
    session = LightSession(url, "student", tally)
    session.cookies["SRV"] = cookie
    await session.connect()
    await session.rerun("open", LINK)
    session._set("w_k", string_value="4")
    await session.rerun("kv heads")
    return session


def test_one_url_serves_the_app_and_spreads_new_visitors(stack: Stack):
    status, body, _ = _get(stack.url + "/")
    assert status == 200 and "<title>Streamlit</title>" in body and '<div id="root">' in body
    # Two new visitors (no cookie) in a row: one per worker, each told which by SRV.
    given = set()
    for _ in WORKERS:
        status, body, cookies = _get(stack.url + "/_stcore/health")
        assert (status, body) == (200, "ok")
        given.add(cookies.get("SRV"))
    assert given == set(WORKERS)
    # Only haproxy is public; the workers listen on loopback alone.
    for worker in stack.state["workers"]:
        assert _listening_addresses(worker["port"]) == {"127.0.0.1"}


@pytest.mark.parametrize("worker", WORKERS)
def test_the_cookie_keeps_a_session_on_its_worker(stack: Stack, worker: str):
    other = next(w for w in WORKERS if w != worker)
    before = stack.served()
    tally = Tally()

    async def visit() -> LightSession:
        session = await _open_playground(stack.url, worker, tally)
        await session.close()
        return session

    session = _sync(visit())
    assert tally.errors == []
    url_settings = parse_qs(session.query_string)
    assert session.view["w_k"] == "4" and url_settings["k"] == ["4"] and url_settings["t"] == ["24"]
    # Any path, the same rule: an upload and a media file of this session go where it lives.
    for path in ("/_stcore/upload_file/some-session/some-file", "/media/some-file.png", "/"):
        status, _, cookies = _get(stack.url + path, cookie=f"SRV={worker}")
        assert status in (200, 404, 405) and "SRV" not in cookies  # still valid: not set again
    after = stack.served()
    # The health request and the websocket of the session, then the three requests.
    assert after[worker] - before[worker] == 5
    assert after[other] == before[other]
    assert session.worker == worker


def test_a_dead_workers_visitors_are_served_by_the_other(stack: Stack):
    tally = Tally()

    async def failover() -> tuple[LightSession, dict]:
        session = await _open_playground(stack.url, "w1", tally)
        view = dict(session.view)
        os.kill(stack.pid("w1"), signal.SIGKILL)
        tally.killed = ("w1", time.monotonic())
        while not _gone(stack.pid("w1")):  # the kill is asynchronous
            await asyncio.sleep(0.01)
        # The very next request of a w1 visitor, before any health check has run: a
        # refused connection, retried on w2 (redispatch), which answers and sets SRV=w2.
        status, body, cookies = _get(stack.url + "/_stcore/health", cookie="SRV=w1")
        assert (status, body, cookies.get("SRV")) == (200, "ok", "w2")
        # The page's websocket closes; the session reconnects through the proxy and reruns
        # with its URL only (no widget values).
        with pytest.raises(ConnectionLost):
            await session.pause(10)
        await session.switch(ConnectionLost("w1 died"))
        await session.close()
        return session, view

    session, view = _sync(failover())
    assert tally.errors == [] and tally.lost == []
    assert session.worker == "w2" and session.view == view and session.view["w_k"] == "4"
    reported = f"serve: worker w1 (pid {stack.pid('w1')}) exited with code -9; not restarted"
    deadline = time.monotonic() + 10
    while reported not in stack.log():
        assert time.monotonic() < deadline, stack.log()[-3000:]
        time.sleep(0.2)
    assert stack.proc.poll() is None  # a dead worker does not stop the stack


def test_sigterm_stops_everything_with_exit_0(stack: Stack):
    children = [stack.pid("haproxy"), *(w["pid"] for w in stack.state["workers"])]
    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(STOP_TIMEOUT_S) == 0, stack.log()[-3000:]
    assert all(_gone(pid) for pid in children)
    assert not stack.state_path.exists()  # the state file is removed with the stack
    with pytest.raises(urllib.error.URLError):  # the public port is closed
        _get(stack.url + "/_stcore/health")
    log = stack.log()
    assert "Traceback" not in log and "first session on" not in log, log[-3000:]
    assert "serve: stopped (exit 0)" in log
