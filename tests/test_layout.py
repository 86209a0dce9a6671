"""The project's layout rules, checked on the source (AST), so a change that breaks one fails here.

Three layers, imports in one direction (README, "Where things are"):

* ``gqa_viz/`` (the library) imports nothing of ``gqa_viz.app``, ``gqa_viz.figures`` or
  Streamlit;
* ``gqa_viz/figures/`` imports the library only (no ``gqa_viz.app``, no Streamlit);
* ``gqa_viz/app/`` imports the library and the figures, never Streamlit;
* ``app.py`` and ``app_pages/`` are thin: no ``jax``, at most 300 lines each.

And one home per rule: no import cycle anywhere, a ``GQASpec`` from settings only through
``Settings.spec()``, every limit (a name with ``MAX`` in it) in ``gqa_viz/app/limits.py``,
every hex colour in ``gqa_viz/figures/theme.py``.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("gqa_viz", "app_pages", "bench", "scripts")
PAGE_MAX_LINES = 300
LIMITS = ROOT / "gqa_viz/app/limits.py"
THEME = ROOT / "gqa_viz/figures/theme.py"
HEX = re.compile(r"#[0-9A-Fa-f]{6}\b|#[0-9A-Fa-f]{3}\b")
LIMIT_NAME = re.compile(r"(^|_)MAX(_|$)")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source_files() -> list[Path]:
    files = [ROOT / "app.py"]
    for folder in SOURCE_DIRS:
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


FILES = {_module_name(p): p for p in _source_files()}
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in FILES.items()}


def _imports(name: str) -> set[str]:
    """Every module ``name`` imports, anywhere in the file (function-level imports too)."""
    package = name if FILES[name].name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            # `from gqa_viz import core` imports the module gqa_viz.core.
            out.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in FILES)
    return out


def _project_imports(name: str) -> set[str]:
    return {m for m in _imports(name) if m in FILES and m != name}


def _layer(name: str) -> str:
    if name == "app" or name.startswith("app_pages"):
        return "pages"
    if name.startswith("gqa_viz.app"):
        return "app"
    if name.startswith("gqa_viz.figures"):
        return "figures"
    if name.startswith("gqa_viz"):
        return "library"
    return "tools"  # bench/, scripts/


def _imports_any(name: str, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        m for m in _imports(name) if any(m == p or m.startswith(p + ".") for p in prefixes)
    )


def test_the_checker_sees_the_whole_project():
    layers = {_layer(n) for n in FILES}
    assert layers == {"pages", "app", "figures", "library", "tools"}
    assert "gqa_viz.app.settings" in _project_imports("gqa_viz.app.playground")
    assert "gqa_viz.core" in _project_imports("gqa_viz.app.settings")


def test_no_import_cycles():
    graph = {name: _project_imports(name) for name in FILES}
    # A package's __init__ re-exporting its modules is not a cycle of the modules themselves.
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("library", ("gqa_viz.app", "gqa_viz.figures", "streamlit", "app_pages")),
        ("figures", ("gqa_viz.app", "streamlit", "app_pages")),
        ("app", ("streamlit", "app_pages")),
        ("pages", ("jax", "jaxlib")),
    ],
)
def test_imports_go_one_way(layer, forbidden):
    bad = {
        name: _imports_any(name, forbidden)
        for name in FILES
        if _layer(name) == layer and _imports_any(name, forbidden)
    }
    assert not bad, f"{layer} modules import what they must not: {bad}"


def test_pages_are_short():
    pages = [ROOT / "app.py", *sorted((ROOT / "app_pages").glob("*.py"))]
    long = {p.name: n for p in pages if (n := len(p.read_text().splitlines())) > PAGE_MAX_LINES}
    assert not long, f"pages over {PAGE_MAX_LINES} lines: {long}"


def _calls_named(tree: ast.AST, name: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == name) or (
                isinstance(f, ast.Attribute) and f.attr == name
            ):
                yield node


def test_a_spec_from_settings_is_made_in_one_place():
    bad = []
    for name, tree in TREES.items():
        if _layer(name) == "library":
            continue
        allowed: set[int] = set()
        if name == "gqa_viz.app.settings":
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef) and node.name == "spec":
                    allowed |= {id(c) for c in _calls_named(node, "GQASpec")}
        bad += [f"{name}:{c.lineno}" for c in _calls_named(tree, "GQASpec") if id(c) not in allowed]
    assert not bad, f"GQASpec( outside the library and Settings.spec(): {bad}"


def _assigned_names(tree: ast.AST):
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name):
                    yield n.id, node.lineno


def test_limits_are_defined_in_one_module():
    defined = [n for n, _ in _assigned_names(TREES["gqa_viz.app.limits"])]
    assert "MAX_LEN" in defined and "MAX_SCORE_CELLS" in defined
    bad = [
        f"{name}:{line} {ident}"
        for name, tree in TREES.items()
        if FILES[name] != LIMITS
        for ident, line in _assigned_names(tree)
        if ident.isupper() and LIMIT_NAME.search(ident.lstrip("_"))
    ]
    assert not bad, f"limits defined outside gqa_viz/app/limits.py: {bad}"


def test_colours_are_defined_in_the_theme():
    bad = []
    for name, tree in TREES.items():
        if FILES[name] == THEME:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                bad += [f"{name}:{node.lineno} {h}" for h in HEX.findall(node.value)]
    assert not bad, f"hex colours outside gqa_viz/figures/theme.py: {bad}"


def test_streamlit_theme_uses_the_figures_colours():
    """.streamlit/config.toml cannot import theme.py: its colours must be the theme's."""
    from gqa_viz.figures.theme import STREAMLIT_THEME

    theme = tomllib.loads((ROOT / ".streamlit/config.toml").read_text())["theme"]
    colours = {key: value for key, value in theme.items() if HEX.fullmatch(str(value))}
    assert colours == STREAMLIT_THEME
