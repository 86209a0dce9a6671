"""A page's settings from its URL and its widgets, for pages whose settings are a flat dataclass
of numbers and choices (the KV calculator, Decode). No Streamlit here.

A page gives its own ``check(name, value) -> (value, why)``: the value as its field's type and
within its limits (``why`` says what was changed, naming the limit), or ValueError when it cannot
be read at all. These functions apply it to every URL parameter or widget value the same way:
nothing raises, and every value changed or ignored gets one message. (The Playground's
:mod:`gqa_viz.app.settings` has its own reader: its settings interlock more.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

Check = Callable[[str, Any], tuple[Any, str | None]]


def fmt(x: float) -> str:
    """``16,777,216``, ``1,000,000``, ``2.5``: exact, with thousands separators."""
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e30 else f"{x:,}"


def number(kind: type, value: Any) -> int | float:
    """``value`` as an int or a finite float; ValueError saying what was expected."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got true/false")
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int | np.integer):
            return int(value)
        if not re.fullmatch(r"[+-]?\d{1,30}", str(value).strip()):
            raise ValueError("expected a whole number")
        return int(str(value))
    result = float(value) if isinstance(value, int | float) else float(str(value)[:60])
    if not math.isfinite(result):
        raise ValueError("expected a finite number")
    return result


def clamp(value: float, lo: float, hi: float | None, what: str) -> tuple[float, str | None]:
    """``value`` within [lo, hi] (hi None: no top), and what was wrong with it, naming the limit."""
    if hi is None:
        if value >= lo:
            return value, None
        return lo, f"{what} must be at least {fmt(lo)}; got {fmt(value)}"
    if lo <= value <= hi:
        return value, None
    fixed = min(max(value, lo), hi)
    return fixed, f"{what} must be between {fmt(lo)} and {fmt(hi)}; got {fmt(value)}"


def read_params(
    params: dict[str, Any],
    defaults: Any,
    names: list[str],
    check: Check,
    meanings: dict[str, str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The values of ``names`` found in URL ``params`` (a list per name, or one value), checked,
    and one message per value changed or ignored. Other parameters are ignored silently (they
    belong to other pages). ``meanings``: what an ignored value falls back to, in words, for
    defaults that stand for something else (0 for "automatic"); others are named as they are."""
    messages: list[str] = []
    values: dict[str, Any] = {}
    for name in names:
        if name not in params:
            continue
        raw = params[name]
        if isinstance(raw, list):
            if len({str(r) for r in raw}) > 1:
                messages.append(
                    f"URL parameter {name} is given {len(raw)} times; only one is allowed, "
                    f"using the last, {str(raw[-1])[:40]!r}."
                )
            raw = raw[-1] if raw else ""
        raw = str(raw)[:200]
        try:
            values[name], why = check(name, raw)
        except (ValueError, OverflowError) as error:
            default = (meanings or {}).get(name) or repr(getattr(defaults, name))
            messages.append(
                f"URL parameter {name}={raw[:40]!r} ignored ({error}); using {default}."
            )
            continue
        if why:
            messages.append(f"{why}, using {fmt(values[name])}.")
    return values, messages


def sanitize(
    values: dict[str, Any], current: Any, check: Check
) -> tuple[dict[str, Any], list[str]]:
    """Widget values checked like URL values: (the values that change, messages).

    A browser can send anything: a value that cannot be read as its field's type, or is out of
    its limits, falls back to its value in ``current``, with a message naming the limit.
    """
    changed: dict[str, Any] = {}
    messages = []
    for name, value in values.items():
        kept = getattr(current, name)
        try:
            fixed, why = check(name, value)
        except (ValueError, OverflowError) as error:
            fixed, why = kept, f"{name}: {str(value)[:40]!r} is not valid ({error})"
        if why:
            fixed = kept
            messages.append(f"{why}; kept {kept!r}.")
        if type(fixed) is not type(value) or fixed != value:
            changed[name] = fixed
    return changed, messages
