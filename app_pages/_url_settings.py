"""Session state of a page whose settings live in its URL (the KV calculator, Decode).

The settings are read from the URL once per session and kept in ``st.session_state``; each
widget is seeded from them when a page switch dropped it, and a value a browser sent that is
not valid falls back to the saved setting (the page's ``sanitize`` says why).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import streamlit as st


def load(key: str, messages_key: str, from_query_params: Callable[[dict], tuple[Any, list]]):
    """The session's settings, read from the URL on its first run (messages under
    ``messages_key``)."""
    ss = st.session_state
    if key not in ss:
        # Every value of a repeated parameter (to_dict() keeps only the last): one is allowed.
        params = {name: st.query_params.get_all(name) for name in st.query_params}
        ss[key], ss[messages_key] = from_query_params(params)
    return ss[key]


def seed(
    widgets: dict[str, str],
    settings: Any,
    sanitize: Callable[[dict, Any], tuple[dict, list[str]]],
    skip: Iterable[str] = (),
) -> list[str]:
    """Widgets (field name -> widget key) missing from the session take ``settings``; invalid
    widget values fall back to them. Returns the messages. ``skip``: fields the page checks
    itself."""
    ss = st.session_state
    names = [name for name in widgets if name not in set(skip)]
    for name in names:
        ss.setdefault(widgets[name], getattr(settings, name))
    changed, messages = sanitize({name: ss[widgets[name]] for name in names}, settings)
    for name, value in changed.items():
        ss[widgets[name]] = value
    return messages
