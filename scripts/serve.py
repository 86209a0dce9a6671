"""Serve the app as ``make run`` does: W Streamlit workers on loopback behind haproxy, one URL.

    python -m scripts.serve                              # one worker per core, port 8501
    python -m scripts.serve --workers 2 --port 8501 --address 127.0.0.1

One Streamlit process runs the Python side of every session it holds on about one core (its
sessions' script threads share one interpreter lock), so a classroom needs several. Each
worker is ``streamlit run app.py`` bound to 127.0.0.1 on a port the OS picks; haproxy
(Debian's package, ``make serve-deps``) is the only thing on the public address, with the
configuration rendered from ``deploy/haproxy.cfg.in``: round robin for new visitors, a
``SRV`` cookie that keeps each visitor on its worker, health checks on ``/_stcore/health``.

The workers share one JAX compilation cache (``GQA_VIZ_JAX_CACHE_DIR``, default
``.jax_cache`` beside the app): JAX takes a file lock around every read and write of it, and a
read or write that fails is a warning and a compile, never an error. Every worker prewarms its
own programs (each process needs them in its own memory), but not all at once: the supervisor
opens a first session on the first worker as soon as haproxy runs, which starts its
prewarming, and on the others once that has ended, so they load what it compiled (see
:meth:`Supervisor.warm`; ``--no-warm`` leaves start-up to each worker's first visitor).

Memory: every worker keeps its own results cache. Each is told how many workers there are
(``GQA_VIZ_WORKERS``), and with several ``gqa_viz.app.limits`` gives each a smaller one.

The supervisor restarts nothing. A worker that exits is reported on stderr and haproxy's
health check takes it out of the rotation; its visitors reconnect to another worker and get
their view back from the URL. When every worker is gone, or haproxy is, it stops the rest and
exits 1. SIGINT or SIGTERM stops everything (SIGTERM to each child; SIGKILL after
``--grace`` seconds) and exits 0 once every child has stopped in time. The children die with
the supervisor even when it is killed outright (``PR_SET_PDEATHSIG``, SIGKILL).

What it prints: ``serve: worker w1 pid 1234 on 127.0.0.1:40001`` per worker, ``serve:
haproxy pid 1240 ...`` once every worker answers its health check (so haproxy never starts
with them DOWN), ``serve: ready on http://localhost:8501`` once haproxy sees every worker
healthy; every child's own output follows, each line prefixed with ``w1 |`` or ``haproxy |``.
``--state FILE`` also writes all of it as JSON (pids, ports, the stats socket), rewritten when
the stack is ready or a worker exits, for ``bench/load.py`` and ``tests/test_serving.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import ctypes
import io
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "haproxy.cfg.in"
BACKEND = "streamlit"  # the backend's name in the template
HAPROXY_CANDIDATES = ("/usr/sbin/haproxy", "/usr/bin/haproxy")  # /usr/sbin: not on a user's PATH
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# What gqa_viz.app.runtime prints when prewarming ends, finished or stopped.
PREWARM_END = re.compile(r"^gqa-viz: prewarm (done|stopped)")
FIRST_SESSION_TIMEOUT_S = 120.0
# The other workers' first sessions wait this long at most for the first worker's prewarming.
PREWARM_WAIT_S = 300.0
PREWARM_ENV = "GQA_VIZ_PREWARM"  # as gqa_viz.app.runtime reads it ("0": no prewarming)


def default_workers() -> int:
    """The cores this process may run on (what ``nproc`` prints)."""
    return len(os.sched_getaffinity(0))


def find_haproxy() -> str | None:
    """$HAPROXY, else haproxy on PATH, else Debian's /usr/sbin/haproxy; None when absent."""
    for candidate in (os.environ.get("HAPROXY"), shutil.which("haproxy"), *HAPROXY_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def render_config(bind: str, ports: list[int], stats_socket: str) -> str:
    """The haproxy configuration for workers w1..wW on 127.0.0.1:``ports``."""
    servers = "\n".join(
        f"    server w{i} 127.0.0.1:{port} check cookie w{i}" for i, port in enumerate(ports, 1)
    )
    text = TEMPLATE.read_text()
    for name, value in (("BIND", bind), ("STATS_SOCKET", stats_socket), ("SERVERS", servers)):
        if text.count(f"@{name}@") != 1:
            raise ValueError(f"{TEMPLATE} must hold @{name}@ exactly once")
        text = text.replace(f"@{name}@", value)
    return text


def haproxy_stats(stats_socket: str | os.PathLike, timeout_s: float = 5.0) -> dict[str, dict]:
    """``show stat`` of the workers' backend: {"w1": row, ...}, each row haproxy's CSV fields
    (``status`` "UP"/"DOWN"/..., ``stot`` sessions sent to it so far, ``scur`` open ones)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(stats_socket))
        s.sendall(b"show stat\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    text = b"".join(chunks).decode().removeprefix("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {
        row["svname"]: row
        for row in rows
        if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _public_port_problem(address: str, port: int) -> str | None:
    """Why haproxy could not bind ``address:port``, or None."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as haproxy does
        try:
            s.bind((address or "0.0.0.0", port))
        except OSError as error:
            return f"cannot serve on {address or '*'}:{port}: {error.strerror}"
    return None


def _die_with_parent(libc, parent: int):
    """A ``preexec_fn``: the child is killed when the supervisor dies, however it dies.

    SIGKILL, not SIGTERM: with the supervisor gone, the child's output pipe has no reader, and
    a Streamlit worker told to stop then fails writing "Stopping..." inside its signal handler
    and keeps running (seen here, as an orphan that no later SIGTERM ended)."""

    def setup() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)

    return setup


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
            return r.read().strip() == b"ok"
    except OSError:
        return False


async def _first_session(port: int) -> None:
    """Open one session on the worker at ``port`` and run its default page to the end, as a
    browser's first visit does (Streamlit's websocket protocol, no browser)."""
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    url = f"http://127.0.0.1:{port}"
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/_stcore/stream",
        subprotocols=["streamlit"],
        origin=url,
        max_size=None,
        open_timeout=30,
    ) as ws:
        msg = BackMsg()
        msg.rerun_script.query_string = ""
        await ws.send(msg.SerializeToString())
        async with asyncio.timeout(FIRST_SESSION_TIMEOUT_S):
            while True:
                fwd = ForwardMsg()
                fwd.ParseFromString(await ws.recv())
                if fwd.WhichOneof("type") == "script_finished":
                    return


def _open_first_session(child: Child, stopping: Callable[[], bool]) -> None:
    """A thread's body: :func:`_first_session`, its failure reported (unless the stack is
    stopping, which ends it), never raised."""
    try:
        asyncio.run(_first_session(child.port))
    except Exception as error:
        if not stopping():
            _say(f"first session on {child.name} failed: {type(error).__name__}: {error}")


def _say(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)


@dataclass
class Child:
    name: str  # "w1" ... or "haproxy"
    proc: subprocess.Popen
    port: int | None = None
    reported: bool = False  # its exit was reported
    partial: bytes = b""  # output after its last newline
    prewarmed: bool = False  # it printed the end of its prewarming
    warming: threading.Thread | None = None  # its first session, opened by the supervisor

    def info(self) -> dict:
        return {"name": self.name, "pid": self.proc.pid, "port": self.port}

    def alive(self) -> bool:
        return self.proc.poll() is None


class Supervisor:
    """A single thread: the children's output is relayed from a selector loop, which
    also keeps ``preexec_fn`` safe (it runs between fork and exec, safe only while the
    process has a single thread)."""

    def __init__(self, args: argparse.Namespace, haproxy: str):
        self.args = args
        self.haproxy = haproxy
        self.runtime = Path(tempfile.mkdtemp(prefix="gqa-serve-"))
        self.stats_socket = str(self.runtime / "haproxy.sock")
        self.config = self.runtime / "haproxy.cfg"
        self.workers: list[Child] = []
        self.proxy: Child | None = None
        self.stop_signal: int | None = None
        self.ready = False
        self.warm_started = 0.0
        self.url = f"http://{args.address or 'localhost'}:{args.port}"
        self.selector = selectors.DefaultSelector()
        self.libc = ctypes.CDLL(None, use_errno=True)

    # -- children and their output ----------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str], env: dict | None, port: int | None) -> Child:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # A session of their own: a terminal's Ctrl-C reaches the supervisor only, which
            # then stops the children in order.
            start_new_session=True,
            preexec_fn=_die_with_parent(self.libc, os.getpid()),
        )
        child = Child(name, proc, port)
        os.set_blocking(proc.stdout.fileno(), False)
        self.selector.register(proc.stdout, selectors.EVENT_READ, child)
        return child

    def pump(self, timeout_s: float) -> None:
        """Relay the children's output for up to ``timeout_s``, each line prefixed."""
        for key, _ in self.selector.select(timeout_s):
            child: Child = key.data
            data = os.read(key.fd, 65536)
            if not data:  # the child closed its output: it is ending
                self.selector.unregister(key.fileobj)
                data = b"\n" if child.partial else b""
            *lines, child.partial = (child.partial + data).split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                sys.stderr.write(f"{child.name} | {text}\n")
                child.prewarmed |= PREWARM_END.search(text) is not None
            sys.stderr.flush()

    def _children(self) -> list[Child]:
        return [c for c in [self.proxy, *self.workers] if c is not None]

    def _report_exits(self) -> None:
        for w in self.workers:
            if not w.reported and not w.alive():
                w.reported = True
                _say(
                    f"worker {w.name} (pid {w.proc.pid}) exited with code {w.proc.returncode}; "
                    "not restarted: haproxy's health check takes it out, and its visitors "
                    "reconnect to another worker"
                )
                self.write_state()

    # -- state ------------------------------------------------------------------------------

    def write_state(self) -> None:
        if not self.args.state:
            return
        state = {
            "url": self.url,
            "ready": self.ready,
            "supervisor": os.getpid(),
            "haproxy": self.proxy.info() if self.proxy else None,
            "stats_socket": self.stats_socket,
            "cache_dir": str(self.args.cache_dir),
            "workers": [{**w.info(), "alive": w.alive()} for w in self.workers],
        }
        path = Path(self.args.state)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)  # readers never see half a file

    # -- start ------------------------------------------------------------------------------

    def start_workers(self) -> None:
        env = dict(os.environ)
        env["GQA_VIZ_JAX_CACHE_DIR"] = str(self.args.cache_dir)
        env.setdefault("MALLOC_ARENA_MAX", "2")  # per-thread heaps kept freed memory
        env.setdefault("PYTHONUNBUFFERED", "1")  # worker lines reach the relay as written
        env["GQA_VIZ_WORKERS"] = str(self.args.workers)  # limits.py sizes caches by it
        # One cookie-signing secret for all workers, as Streamlit asks of replicas; from the
        # environment rather than argv, where every local user could read it.
        env.setdefault("STREAMLIT_SERVER_COOKIE_SECRET", secrets.token_hex(32))
        for i in range(1, self.args.workers + 1):
            port = _free_port()
            cmd = [
                sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
                "--server.headless=true", "--server.address=127.0.0.1",
                f"--server.port={port}", "--browser.gatherUsageStats=false",
            ]  # fmt: skip
            w = self._spawn(f"w{i}", cmd, env, port)
            self.workers.append(w)
            _say(f"worker {w.name} pid {w.proc.pid} on 127.0.0.1:{port}")
        self.write_state()

    def wait_for_workers(self) -> None:
        """Until every worker answers its health check, has exited, or the start-up time
        is over: haproxy starts after, so it never marks a worker that is starting DOWN."""
        pending = list(self.workers)
        deadline = time.monotonic() + self.args.start_timeout
        while pending and self.stop_signal is None and time.monotonic() < deadline:
            self.pump(0.25)
            self._report_exits()
            pending = [w for w in pending if w.alive() and not _healthy(w.port)]
        if pending and self.stop_signal is None:
            names = ", ".join(w.name for w in pending)
            _say(f"{names} not healthy after {self.args.start_timeout:g} s; starting anyway")

    def start_proxy(self) -> None:
        ports = [w.port for w in self.workers]
        bind = f"{self.args.address}:{self.args.port}"
        self.config.write_text(render_config(bind, ports, self.stats_socket))
        check = subprocess.run(
            [self.haproxy, "-c", "-f", str(self.config)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejected {self.config}:\n{check.stdout}{check.stderr}")
        self.proxy = self._spawn(
            "haproxy", [self.haproxy, "-db", "-f", str(self.config)], None, None
        )
        _say(f"haproxy pid {self.proxy.proc.pid} on {bind}, config {self.config}")
        self.write_state()

    def _check_ready(self) -> None:
        try:
            stats = haproxy_stats(self.stats_socket, timeout_s=1.0)
        except OSError:
            return  # haproxy is still starting
        live = {w.name for w in self.workers if w.alive()}
        if live and all(stats.get(name, {}).get("status") == "UP" for name in live):
            self.ready = True
            _say(f"ready on {self.url} ({len(live)} worker{'s' * (len(live) > 1)})")
            self.write_state()

    # -- warming ----------------------------------------------------------------------------

    def warm(self) -> None:
        """Open a first session on each worker, so that its start-up (JAX, the compilation
        cache, prewarming) runs now rather than on a visitor's first request.

        The first worker goes alone; the others follow once it has prewarmed and then load
        from the shared cache what it compiled. Started together on an empty cache, two
        workers on two cores each compiled every program, 70 s instead of 41 s for one.
        """
        if not self.args.warm:
            return
        first, rest = self.workers[0], [w for w in self.workers[1:] if w.warming is None]
        if first.warming is None:
            self.warm_started = time.monotonic()
            self._start_first_session(first)
        elif rest and (
            first.prewarmed
            or not first.alive()
            or os.environ.get(PREWARM_ENV, "1") == "0"
            or time.monotonic() - self.warm_started > PREWARM_WAIT_S
        ):
            for w in rest:
                self._start_first_session(w)

    def _start_first_session(self, child: Child) -> None:
        # A thread, where no child is spawned any more: haproxy already runs.
        child.warming = threading.Thread(
            target=_open_first_session,
            args=(child, lambda: self.stop_signal is not None),
            daemon=True,
        )
        if child.alive():
            child.warming.start()

    # -- run --------------------------------------------------------------------------------

    def run(self) -> int:
        """Start, then watch the children until a signal asks to stop or nothing can serve."""
        try:
            self.start_workers()
            self.wait_for_workers()
            if self.stop_signal is None and not any(w.alive() for w in self.workers):
                _say("no worker started; stopping")
                return self.stop(failed=True)
            if self.stop_signal is None:
                self.start_proxy()
        except Exception as error:
            _say(f"start failed: {error}")
            return self.stop(failed=True)
        while self.stop_signal is None:
            self.pump(0.2)
            if not self.proxy.alive():
                _say(f"haproxy exited with code {self.proxy.proc.returncode}; stopping")
                return self.stop(failed=True)
            self._report_exits()
            if not any(w.alive() for w in self.workers):
                _say("no worker left; stopping")
                return self.stop(failed=True)
            if not self.ready:
                self._check_ready()
            self.warm()
        _say(f"{signal.Signals(self.stop_signal).name}: stopping")
        return self.stop(failed=False)

    def stop(self, failed: bool) -> int:
        """SIGTERM to haproxy (no new requests) and every worker; SIGKILL after the grace
        period. 0 when asked to stop and every child stopped in time, else 1."""
        for child in self._children():
            if child.alive():
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.args.grace
        # Keep relaying while they stop: a child blocked on a full pipe would never exit.
        while any(c.alive() for c in self._children()) and time.monotonic() < deadline:
            self.pump(0.1)
        late = [c for c in self._children() if c.alive()]
        for child in late:
            _say(f"{child.name} (pid {child.proc.pid}) ignored SIGTERM for {self.args.grace:g} s")
            child.proc.kill()
        for child in self._children():
            child.proc.wait()
        self.pump(0)
        shutil.rmtree(self.runtime, ignore_errors=True)
        if self.args.state:
            Path(self.args.state).unlink(missing_ok=True)
        code = 1 if failed or late else 0
        _say(f"stopped (exit {code})")
        return code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WORKERS") or default_workers()),
        help="Streamlit workers (default: $WORKERS, else the cores, as nproc)",
    )
    parser.add_argument("--port", type=int, default=8501, help="the public port (8501)")
    parser.add_argument(
        "--address",
        default="",
        help="the public address haproxy binds (default: every interface, as `streamlit run`; "
        "127.0.0.1 keeps the app to this machine)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("GQA_VIZ_JAX_CACHE_DIR") or ROOT / ".jax_cache"),
        help="JAX compilation cache shared by the workers (default: $GQA_VIZ_JAX_CACHE_DIR, "
        "else .jax_cache)",
    )
    parser.add_argument("--state", help="write pids, ports and readiness here as JSON")
    parser.add_argument(
        "--grace", type=float, default=30.0, help="seconds a child gets to stop (30)"
    )
    parser.add_argument(
        "--no-warm",
        dest="warm",
        action="store_false",
        help="leave each worker's start-up to its first visitor (default: the supervisor "
        "opens a first session on each, the first worker alone, then the others)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the workers before haproxy starts anyway (120)",
    )
    args = parser.parse_args(argv)
    # Bounded: each worker is a Python process of a few hundred MiB and more.
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be 1-64")
    args.cache_dir = args.cache_dir.expanduser().resolve()

    haproxy = find_haproxy()
    if haproxy is None:
        _say("haproxy not found; `make serve-deps` installs Debian's package (or set $HAPROXY)")
        return 2
    problem = _public_port_problem(args.address, args.port)
    if problem:  # found now, not after the workers' start-up
        _say(problem)
        return 2
    supervisor = Supervisor(args, haproxy)

    def on_signal(signum, _frame) -> None:
        supervisor.stop_signal = signum

    # Before any child exists, so a signal during start-up still stops them all.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
