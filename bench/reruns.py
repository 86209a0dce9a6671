"""Server CPU per rerun, per action, through Streamlit's websocket: what a class costs.

    python -m bench.reruns                  # N = 8 and 32, T = S = 64, 20 reruns per action
    python -m bench.reruns --reruns 40

One ``streamlit run app.py`` on loopback (start-up prewarming on; measured once it is done)
and one light client speaking the browser frontend's protocol (:class:`bench.load.LightSession`:
``BackMsg`` rerun requests with the changed widget values, every ``ForwardMsg`` read up to
``script_finished``). Actions run one at a time, so the server's CPU time over R reruns of an
action (user + system, every thread, from ``/proc``) divided by R is that action's cost.

The view is the Playground on random vectors at T = S = 64, with N = 8 (K = 2) and N = 32
(K = 8). Actions, each warmed up first (so shared caches hold what a class would have seen):

* no change: a rerun with the same widget values; Streamlit's floor, the peer of the others;
* open: a new session's first run of the link (a student opening it);
* heads change: K moved between two values, back and forth (both results cached);
* view change: probabilities <-> logits (the toolbar's fragment reruns, as in the browser);
* length change: T 64 <-> 63 (the length slider's fragment reruns, as in the browser), and the
  same change as a whole-page rerun, its peer (how every length change ran before);
* seed change: a new seed every time, so it computes and draws (no cache can answer).

First, before any of that, every page's first visit since the server started (a new session
opening it) beside a second visit in another new session: what prewarming leaves for a
page's first visitor.

Printed per action: server CPU ms per rerun, its ratio to the no-change rerun, the client's
wall time (median), and the bytes the server sent per rerun. Targets: open and heads change
<= 60 ms and <= 2x no change.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.interactive import _server, _wait_health, wait_prewarmed
from bench.load import LightSession, Tally, _cpu_s, _first_visit

VIEWS = {8: 2, 32: 8}  # N -> K of the link
OTHER_K = {8: 4, 32: 4}  # the other K a heads change moves to


def _link(n: int, k: int) -> str:
    return f"mode=random&t=64&n={n}&k={k}"


class Metered(LightSession):
    """A light session that also counts the bytes the server sends it."""

    received = 0

    async def rerun(self, action: str, query_string: str = "", widget: str = "") -> None:
        recv = self.ws.recv

        async def counted():
            data = await recv()
            Metered.received += len(data)
            return data

        self.ws.recv = counted
        try:
            await super().rerun(action, query_string, widget)
        finally:
            self.ws.recv = recv


async def _measure(pid: int, name: str, reruns: int, step, warmup: int = 2) -> dict:
    for i in range(warmup):
        await step(i)
    cpu0, bytes0, walls = _cpu_s(pid), Metered.received, []
    for i in range(reruns):
        t0 = time.perf_counter()
        await step(warmup + i)
        walls.append(1000 * (time.perf_counter() - t0))
    return {
        "action": name,
        "cpu_ms": 1000 * (_cpu_s(pid) - cpu0) / reruns,
        "wall_ms": statistics.median(walls),
        "kb": (Metered.received - bytes0) / reruns / 1000,
    }


async def bench_view(url: str, pid: int, n: int, reruns: int) -> list[dict]:
    tally = Tally()
    k, other = VIEWS[n], OTHER_K[n]
    s = Metered(url, f"n{n}", tally)
    await s.connect()
    await s.rerun("open", _link(n, k))
    rows = []

    async def no_change(i):
        await s.rerun("no change")

    async def open_link(i):
        fresh = Metered(url, f"open-{i}", tally)
        await fresh.connect()
        await fresh.rerun("open", _link(n, k))
        await fresh.close()

    async def heads(i):
        s._set("w_k", string_value=str(other if i % 2 == 0 else k))
        await s.rerun("heads change")

    async def view(i):
        options = list(s.widgets["w_view"].options)
        s._set("w_view", string_value=options[(i + 1) % 2])
        await s.rerun("view change", widget="w_view")

    def length(fragment: bool):
        async def step(i):
            s._set("w_t", double_array_value=[63 if i % 2 == 0 else 64])
            await s.rerun("length change", widget="w_t" if fragment else "")

        return step

    first_seed = random.randrange(10_000, 1_000_000_000)  # unseen: no cache has it

    async def seed(i):
        s._set("w_seed", int_value=first_seed + i)
        await s.rerun("seed change")

    rows.append(await _measure(pid, "no change", reruns, no_change))
    rows.append(await _measure(pid, "open", reruns, open_link))
    rows.append(await _measure(pid, "heads change", reruns, heads))
    s._set("w_k", string_value=str(k))
    await s.rerun("back to K")
    rows.append(await _measure(pid, "view change", reruns, view))
    s._set("w_view", string_value=list(s.widgets["w_view"].options)[0])
    await s.rerun("back to probabilities", widget="w_view")
    rows.append(await _measure(pid, "length (fragment)", reruns, length(True)))
    rows.append(await _measure(pid, "length (whole page)", reruns, length(False)))
    rows.append(await _measure(pid, "seed change (computes)", max(4, reruns // 4), seed, 0))
    await s.close()
    if tally.errors:
        raise RuntimeError(f"reruns failed: {tally.errors[:3]}")
    return rows


# Every page but Home, which starts the app (and its prewarming) in this benchmark.
PAGES = ("playground", "mask-lab", "kv-sharing", "kv-calculator", "trained", "walkthrough",
         "decode", "real-models")  # fmt: skip


async def _visit(url: str, pid: int, page: str, tally: Tally) -> tuple[float, float]:
    """A new session's first run of ``page``: (wall ms, server CPU ms)."""
    s = Metered(url, f"visit {page}", tally)
    await s.connect()
    s.page = page
    cpu0, t0 = _cpu_s(pid), time.perf_counter()
    await s.rerun(f"open {page}")
    wall, cpu = 1000 * (time.perf_counter() - t0), 1000 * (_cpu_s(pid) - cpu0)
    await s.close()
    return wall, cpu


async def bench_first_visits(url: str, pid: int) -> list[dict]:
    """Each page's first visit since the server started, beside a later visit to it."""
    tally, rows = Tally(), []
    for page in PAGES:
        first = await _visit(url, pid, page, tally)
        later = await _visit(url, pid, page, tally)
        rows.append({"page": page, "first": first, "later": later})
    if tally.errors:
        raise RuntimeError(f"visits failed: {tally.errors[:3]}")
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reruns", type=int, default=20, help="reruns per action (4-200)")
    args = parser.parse_args(argv)
    if not 4 <= args.reruns <= 200:
        parser.error("--reruns must be 4-200")
    work = Path(tempfile.mkdtemp(prefix="gqa-reruns-"))
    log = work / "server.log"
    proc, url = _server(str(work / "jax_cache"), str(log))
    try:
        _wait_health(url, proc)
        asyncio.run(_first_visit(url, page="", query=""))  # Home: the app starts, prewarms
        print(f"server: {wait_prewarmed(log)[0]}")
        visits = asyncio.run(bench_first_visits(url, proc.pid))
        table = {n: asyncio.run(bench_view(url, proc.pid, n, args.reruns)) for n in VIEWS}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    print(f"\nServer CPU per rerun, Playground, random vectors, T = S = 64 ({args.reruns} reruns)")
    print(
        f"{'view':>14}  {'action':<24}{'CPU ms':>8}{'x no change':>13}{'wall ms':>9}{'kB sent':>9}"
    )
    for n, rows in table.items():
        floor = rows[0]["cpu_ms"]
        for r in rows:
            print(
                f"{f'N={n}, K={VIEWS[n]}':>14}  {r['action']:<24}{r['cpu_ms']:8.1f}"
                f"{r['cpu_ms'] / floor:12.2f}x{r['wall_ms']:9.1f}{r['kb']:9.1f}"
            )
    print("\nFirst visit of each page after prewarming, beside a later visit (new sessions)")
    print(
        f"{'page':<15}{'first ms':>10}{'later ms':>10}{'ratio':>8}{'first CPU ms':>14}{'later CPU ms':>14}"
    )
    for r in visits:
        (fw, fc), (lw, lc) = r["first"], r["later"]
        print(f"{r['page']:<15}{fw:10.0f}{lw:10.0f}{fw / lw:7.2f}x{fc:14.0f}{lc:14.0f}")
    tracebacks = log.read_text().count("Traceback")
    print(f"\nserver log: {tracebacks} tracebacks ({log})")
    return 1 if tracebacks else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
