"""Clean shutdown while prewarming compiles: ``streamlit run`` on SIGTERM, and a plain Python
process that started the app's runtime and then ends.

Each runs with prewarming on and an empty compilation cache, so the prewarm thread is
compiling when the process is told to end. Before the fix such a process aborted (exit 134,
"terminate called ..." or "Check failed: PyGILState_Check()"). The race depends on timing,
so each case runs a few times, ending at a different moment of a compile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import start_streamlit

REPO_ROOT = Path(__file__).resolve().parent.parent
# What an aborted or crashed interpreter prints; none may appear.
CRASH_SIGNS = ("Check failed", "Fatal Python error", "Traceback", "terminate called")
EXIT_TIMEOUT_S = 30.0


def _env(cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GQA_VIZ_PREWARM="1",
        GQA_VIZ_JAX_CACHE_DIR=str(cache_dir),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _assert_clean(rc: int, log: str) -> None:
    assert rc == 0, f"exit code {rc}; output:\n{log[-4000:]}"
    for sign in CRASH_SIGNS:
        assert sign not in log, f"{sign!r} in the output:\n{log[-4000:]}"
    # The exit hook stopped prewarming part-way; it had not finished on its own.
    assert "gqa-viz: prewarm stopped" in log, log[-4000:]
    assert "gqa-viz: prewarm done" not in log, log[-4000:]


# ---------------------------------------------------------------------------------------------
# A plain Python process.

# Starts the app's runtime, waits until prewarming has written its first program to the empty
# cache (so it compiles the next one), waits a further DELAY seconds, then returns: the
# interpreter ends while the prewarm thread compiles. The hook registered first runs last,
# after the runtime's, and says how long exit waited for prewarming.
_PLAIN = """
import atexit, sys, threading, time
from pathlib import Path
from gqa_viz.app import prewarm, runtime

atexit.register(lambda: print(f"exit waited {time.monotonic() - ended:.2f} s", flush=True))
cache = Path(sys.argv[1])
runtime.start_up(cache, prewarm.prewarm)
deadline = time.monotonic() + 60
while not any(cache.glob("*-cache")) and time.monotonic() < deadline:
    time.sleep(0.02)
time.sleep(float(sys.argv[2]))
alive = any(t.name == "prewarm" and t.is_alive() for t in threading.enumerate())
print(f"prewarming at exit: {alive}", flush=True)
ended = time.monotonic()
"""


@pytest.mark.parametrize("delay_s", [0.0, 0.4, 1.1])
def test_a_process_that_started_the_app_exits_cleanly_while_prewarming(
    tmp_path: Path, delay_s: float
):
    cache = tmp_path / "jax_cache"
    proc = subprocess.run(
        [sys.executable, "-c", _PLAIN, str(cache), str(delay_s)],
        cwd=REPO_ROOT,
        env=_env(cache),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = proc.stdout + proc.stderr
    assert "prewarming at exit: True" in log, log[-4000:]
    _assert_clean(proc.returncode, log)
    # Exit waits for the program being compiled, not for the rest of prewarming (~50 s).
    waited = float(log.split("exit waited ")[1].split()[0])
    assert waited < 10, log[-4000:]


# ---------------------------------------------------------------------------------------------
# `streamlit run app.py` and SIGTERM.


def _first_visit(url: str, timeout_s: float = 60) -> None:
    """Open the app as a browser tab would (Streamlit's websocket protocol) and wait for its
    first run to finish: the app starts prewarming on its first run, not at server start."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    host = url.removeprefix("http://")
    with connect(
        f"ws://{host}/_stcore/stream", subprotocols=["streamlit"], origin=url, max_size=None
    ) as ws:
        msg = BackMsg()
        msg.rerun_script.query_string = ""
        ws.send(msg.SerializeToString())
        deadline = time.monotonic() + timeout_s
        while True:
            fwd = ForwardMsg()
            fwd.ParseFromString(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if fwd.WhichOneof("type") == "script_finished":
                status = ForwardMsg.ScriptFinishedStatus.Name(fwd.script_finished)
                assert status == "FINISHED_SUCCESSFULLY", status
                return


@pytest.mark.parametrize("delay_s", [0.0, 0.4, 1.1])
def test_streamlit_run_exits_cleanly_on_sigterm_while_prewarming(tmp_path: Path, delay_s: float):
    cache = tmp_path / "jax_cache"
    cache.mkdir()
    log_path = tmp_path / "streamlit.log"
    proc, url = start_streamlit(log_path, _env(cache))
    try:
        _first_visit(url)
        assert "gqa-viz: prewarm started" in log_path.read_text()
        time.sleep(delay_s)
        assert "gqa-viz: prewarm done" not in log_path.read_text()  # still compiling
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=EXIT_TIMEOUT_S)  # raises TimeoutExpired past it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    _assert_clean(rc, log_path.read_text())
