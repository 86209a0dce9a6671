"""Browser-test infrastructure (used only by tests marked ``browser``).

Fixtures:
  chromium_path     -- Debian chromium binary (``make system-deps`` installs it);
                       skips when missing, fails instead when $CI is set.
  streamlit_server  -- base URL of ``streamlit run app.py`` on a free loopback port
                       (``running_streamlit`` starts one with an environment of its own).
  browser / page    -- Playwright Chromium driving that binary (``playwright install``
                       is not used: browser downloads do not work here).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

# The app prewarms its compiled programs in a background thread at start-up; in tests (and
# the servers they start) that would only compete with the tests for the two cores.
os.environ.setdefault("GQA_VIZ_PREWARM", "0")

# After every script run Streamlit "cleans" stateful modules it finds imported: it calls
# keras.backend.clear_session() (streamlit/runtime/scriptrunner/script_runner.py,
# _clean_problem_modules), and Keras' clear_session runs gc.collect(). The app never imports
# Keras, so on a server that does nothing; but this process imports Keras for the parity tests,
# and from then on every AppTest run paid a full collection of a heap of several GiB (0.5 s
# runs took 10 s; a third of CI). Tests run the pages as a server does: without that call.
from streamlit.runtime.scriptrunner import script_runner as _script_runner  # noqa: E402

assert callable(_script_runner._clean_problem_modules)  # fails loudly if Streamlit renames it
_script_runner._clean_problem_modules = lambda: None

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_PATH = REPO_ROOT / "app.py"

# Real binaries first: /usr/bin/chromium-headless-shell is a sh wrapper without
# `exec`, so Playwright would otherwise track the wrapper's pid, not the browser's.
CHROMIUM_CANDIDATES = (
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/bin/chromium-headless-shell",
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium",
)

CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

SERVER_START_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def chromium_path() -> str:
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    tried = ", ".join(CHROMIUM_CANDIDATES)
    msg = f"no chromium binary found (tried {tried}); run `make system-deps`"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as exc:
        return f"<could not read {path}: {exc}>"


def start_streamlit(log_path: Path, env: dict[str, str] | None = None):
    """Start ``streamlit run app.py`` on a free loopback port, with ``env`` added to this
    process's environment, and wait until it is healthy: (process, base URL). The caller
    stops it (:func:`running_streamlit` does)."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.headless=true",
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        "--browser.gatherUsageStats=false",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=None if env is None else {**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(
                f"streamlit exited early (rc={proc.returncode}); log tail:\n" + _log_tail(log_path)
            )
        try:
            with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=2) as resp:
                if resp.read().decode().strip() == "ok":
                    return proc, base_url
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(
                f"streamlit not healthy on {base_url} after {SERVER_START_TIMEOUT_S:.0f}s;"
                f" log tail:\n" + _log_tail(log_path)
            )
        time.sleep(0.25)


@contextlib.contextmanager
def running_streamlit(log_path: Path, env: dict[str, str] | None = None):
    """:func:`start_streamlit` as a context: yields the base URL, stops the server after."""
    proc, base_url = start_streamlit(log_path, env)
    try:
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def streamlit_server(tmp_path_factory: pytest.TempPathFactory):
    with running_streamlit(tmp_path_factory.mktemp("streamlit") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="session")
def browser(chromium_path: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()
