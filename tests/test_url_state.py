"""The URL/widget reader the KV calculator and Decode pages share (gqa_viz/app/url_state.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gqa_viz.app import url_state


@dataclass(frozen=True)
class Toy:
    n: int = 4
    mode: str = "a"


def _check(name, value):
    if name == "mode":
        if value not in ("a", "b"):
            raise ValueError("expected one of a, b")
        return value, None
    return url_state.clamp(url_state.number(int, value), 1, 8, "toy count (n)")


def test_numbers_are_read_strictly():
    assert url_state.number(int, "12") == 12 and url_state.number(int, 3.0) == 3
    assert url_state.number(float, "2.5") == 2.5
    for kind, bad in ((int, "1.5"), (int, True), (float, "nan"), (float, "inf"), (int, "9" * 31)):
        with pytest.raises(ValueError):
            url_state.number(kind, bad)


def test_clamp_names_the_limit():
    assert url_state.clamp(5, 1, 8, "n") == (5, None)
    assert url_state.clamp(100, 1, 8, "n") == (8, "n must be between 1 and 8; got 100")
    assert url_state.clamp(0, 1, None, "n") == (1, "n must be at least 1; got 0")
    assert url_state.fmt(16_777_216) == "16,777,216" and url_state.fmt(2.5) == "2.5"


def test_url_values_are_checked_and_every_change_reported():
    values, messages = url_state.read_params(
        {"n": ["3", "20"], "mode": "zzz", "other": "x"}, Toy(), ["n", "mode"], _check
    )
    assert values == {"n": 8}  # the last of the repeated values, clamped; mode ignored
    assert messages == [
        "URL parameter n is given 2 times; only one is allowed, using the last, '20'.",
        "toy count (n) must be between 1 and 8; got 20, using 8.",
        "URL parameter mode='zzz' ignored (expected one of a, b); using 'a'.",
    ]


def test_bad_widget_values_keep_the_current_setting():
    changed, messages = url_state.sanitize({"n": "7", "mode": "c"}, Toy(n=2, mode="b"), _check)
    assert changed == {"n": 7, "mode": "b"}  # "7" typed as 7; "c" falls back to the current
    assert messages == ["mode: 'c' is not valid (expected one of a, b); kept 'b'."]
