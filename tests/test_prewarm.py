"""Start-up prewarming (gqa_viz/app/prewarm.py): it computes exactly what each page's first
visit reads, so that visit finds it done instead of computing it."""

from __future__ import annotations

import threading

import pytest

from gqa_viz.app import prewarm
from gqa_viz.app.cache import RESULTS
from gqa_viz.app.figure_cache import FIGURES
from tests.apptest_pages import open_page, page_files

FILES = page_files()


def test_every_prewarmed_first_visit_is_a_page_of_the_app():
    names = [name for name, _ in prewarm.FIRST_VISITS]
    assert len(set(names)) == len(names) and set(names) <= set(FILES)


@pytest.fixture
def cold():
    """Nothing computed yet, as on a server just started (the caches are process-wide)."""
    RESULTS.clear()
    FIGURES.clear()
    yield
    RESULTS.clear()


@pytest.mark.parametrize(
    "page", ["playground", "mask-lab", "kv-sharing", "decode", "trained", "walkthrough"]
)
def test_a_first_visit_after_prewarming_computes_and_draws_nothing(page, cold):
    dict(prewarm.FIRST_VISITS)[page]()
    misses, drawn = RESULTS.misses, FIGURES.misses
    open_page(FILES[page], timeout=300)
    assert RESULTS.misses == misses, "the page computed what prewarming should have"
    assert FIGURES.misses == drawn, "the page drew what prewarming should have"


def test_without_prewarming_the_first_visit_does_compute(cold):
    # The check above can fail: a page opened cold computes its results.
    misses = RESULTS.misses
    open_page(FILES["kv-sharing"], timeout=300)
    assert RESULTS.misses > misses


def test_a_page_that_fails_to_prewarm_is_reported_and_skipped(monkeypatch, capsys):
    monkeypatch.setattr(prewarm.playground, "prewarm_programs", lambda: [])

    def broken():
        raise OSError("assets/trained is missing")

    ran = []
    visits = (("a", broken), ("b", lambda: ran.append("b")))
    monkeypatch.setattr(prewarm, "FIRST_VISITS", visits)
    assert prewarm.prewarm() == "0 programs, 1 pages"
    assert ran == ["b"]
    assert "prewarming a failed: OSError('assets/trained is missing')" in capsys.readouterr().err


def test_prewarming_stops_between_items_when_asked(monkeypatch):
    ran, stop = [], threading.Event()
    monkeypatch.setattr(prewarm.playground, "prewarm_programs", lambda: [])

    def visit(name):
        def run():
            ran.append(name)
            stop.set()  # the server stops while this page is being prewarmed

        return run

    monkeypatch.setattr(prewarm, "FIRST_VISITS", (("a", visit("a")), ("b", visit("b"))))
    assert prewarm.prewarm(stop) == "0 programs, 1 pages"
    assert ran == ["a"]
