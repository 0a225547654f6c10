"""The house rules a reader can rely on, checked on the source tree (no server, no I/O).

* Outside ``okq_proto``, the core is used by its public names only (``okq_proto``,
  ``okq_proto.server``, ``okq_proto.hiredis``); its white-box tests (``tests/proto``) are the
  one exemption.  Ruff's banned-api (pyproject.toml) enforces it as you type; here it is checked
  again on the syntax tree (string module paths such as ``"okq_proto._x:Name"`` included), and
  the banned list is checked against the private modules that exist.
* Imports inside ``okq_transports`` only point one way: no cycle among its modules, counting
  imports made inside functions too.
* No module of ``okq_proto`` or ``okq_transports`` is over `MAX_LINES` lines, except files
  whose first line says they are generated, and the few named in `OVERSIZE`.
* Every package under them is in ``[tool.setuptools] packages``, so the wheel ships it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
PROTO: Final = ROOT / "okq_proto"
TRANSPORTS: Final = ROOT / "okq_transports"

#: Where code must use the core's public names (tests/proto is exempt: white-box tests).
CHECKED_DIRS: Final = ("okq_transports", "conformance", "tests", "docs", "scripts")
CHECKED_FILES: Final = ("noxfile.py",)
EXEMPT_DIRS: Final = ("tests/proto",)

MAX_LINES: Final = 600

#: Modules allowed past `MAX_LINES`, each with a ceiling (its size when it was allowed) and why.
#: An entry goes once its file is back under the limit (a test below says when).
OVERSIZE: Final[Mapping[str, tuple[int, str]]] = {}

#: A string that is a whole private module path: "okq_proto._x", "okq_proto._x:Name", ...
_PRIVATE_PATH: Final = re.compile(r"okq_proto\._[A-Za-z]\w*(?:[.:][\w.]+)?")
#: One banned module in pyproject.toml: ``"okq_proto._x".msg = "..."``.
_BANNED_LINE: Final = re.compile(r'^"(okq_proto\._\w+)"\.msg\s*=', re.MULTILINE)


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _python_files(top: Path) -> Iterator[Path]:
    for path in sorted(top.rglob("*.py")):
        if not any(part.startswith(".") or part == "_build" for part in path.parts):
            yield path


def _checked_files() -> Iterator[Path]:
    for name in CHECKED_DIRS:
        for path in _python_files(ROOT / name):
            rel = _relative(path)
            if not any(rel.startswith(f"{exempt}/") for exempt in EXEMPT_DIRS):
                yield path
    for name in CHECKED_FILES:
        if (ROOT / name).exists():
            yield ROOT / name


# -- the private modules of the core ---------------------------------------------------------


def private_modules() -> set[str]:
    """``okq_proto._x`` for every ``okq_proto/_x.py``."""
    return {
        f"okq_proto.{path.stem}"
        for path in PROTO.glob("_*.py")
        if path.name != "__init__.py" and path.is_file()
    }


def banned_modules() -> set[str]:
    """The ``okq_proto._x`` modules named by the banned-api table of pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[tool.ruff.lint.flake8-tidy-imports.banned-api]", 1)[1]
    section = section.split("\n[", 1)[0]
    return set(_BANNED_LINE.findall(section))


def private_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``(line, what)`` for every use of a private core module in `tree`: ``import``,
    ``from ... import`` (``from okq_proto import _x`` too) and a string holding a module path
    (``importlib.import_module("okq_proto._x")``, ``"okq_proto._x:Name"``)."""

    def private(name: str) -> bool:
        return name.startswith("okq_proto._")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if private(alias.name):
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if private(node.module):
                yield node.lineno, f"from {node.module} import ..."
            elif node.module == "okq_proto":
                for alias in node.names:
                    if alias.name.startswith("_"):
                        yield node.lineno, f"from okq_proto import {alias.name}"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _PRIVATE_PATH.fullmatch(node.value)
        ):
            yield node.lineno, repr(node.value)


def test_banned_api_names_every_private_module() -> None:
    private, banned = private_modules(), banned_modules()
    assert private, "no okq_proto/_*.py found"
    missing = sorted(private - banned)
    assert not missing, (
        f"add to [tool.ruff.lint.flake8-tidy-imports.banned-api] in pyproject.toml: {missing}"
    )
    stale = sorted(banned - private)
    assert not stale, f"banned-api names modules that no longer exist: {stale}"


def test_no_private_core_imports_outside_the_core() -> None:
    found = [
        f"{_relative(path)}:{line}: {what}"
        for path in _checked_files()
        for line, what in private_imports(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not found, "use okq_proto's public names:\n" + "\n".join(found)


def test_private_import_finder() -> None:
    source = (
        "import okq_proto._resp\n"
        "from okq_proto._server import ServerConnection\n"
        "from okq_proto import _hiredis, Event\n"
        "def f():\n"
        "    import importlib\n"
        "    return importlib.import_module('okq_proto._engine')\n"
        "TARGET = 'okq_proto._hiredis:HiredisDecoder'\n"
        "DOC = 'see okq_proto._engine for the rules'\n"
        "from okq_proto.server import Dispatcher\n"
    )
    assert sorted(line for line, _ in private_imports(ast.parse(source))) == [1, 2, 3, 6, 7]


# -- import cycles in okq_transports -----------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(top: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports, anywhere in its body (inside
    functions and ``if TYPE_CHECKING:`` too).  ``from pkg import name`` is an edge to
    ``pkg.name`` when that is a module of the tree, else to ``pkg``."""
    paths = {module_name(path): path for path in _python_files(top)}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in paths)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                for alias in node.names:
                    if f"{target}.{alias.name}" in paths:
                        edges.add(f"{target}.{alias.name}")
                    elif target in paths:
                        edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of modules in `graph`."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan; the graph is a few dozen modules deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, group) for group in groups]


def _one_cycle(graph: Mapping[str, set[str]], group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"not a cycle: {group}")  # Tarjan groups always hold one


def test_no_import_cycles_in_okq_transports() -> None:
    graph = import_graph(TRANSPORTS)
    assert "okq_transports.cli._common" in graph  # the walk reached the subpackages
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_cycle_finder() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# -- module size -----------------------------------------------------------------------------


def _generated(path: Path) -> bool:
    with path.open(encoding="utf-8") as f:
        return "generated" in f.readline().lower()


def _sizes() -> dict[str, int]:
    return {
        _relative(path): len(path.read_text(encoding="utf-8").splitlines())
        for top in (PROTO, TRANSPORTS)
        for path in _python_files(top)
        if not _generated(path)
    }


def test_no_module_over_the_limit() -> None:
    over = []
    for rel, lines in sorted(_sizes().items()):
        ceiling, _why = OVERSIZE.get(rel, (MAX_LINES, ""))
        if lines > ceiling:
            over.append(f"{rel}: {lines} lines (limit {ceiling})")
    assert not over, "split by what each part owns (STYLE.md section 1):\n" + "\n".join(over)


def test_oversize_allowances_are_still_needed() -> None:
    sizes = _sizes()
    stale = [rel for rel in OVERSIZE if sizes.get(rel, 0) <= MAX_LINES]
    assert not stale, f"back under {MAX_LINES} lines (or gone): remove from OVERSIZE: {stale}"


# -- packaging -------------------------------------------------------------------------------


def test_every_package_ships() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    listed = re.search(r"^packages = \[(.*?)\]", text, re.MULTILINE | re.DOTALL)
    assert listed, "[tool.setuptools] packages not found in pyproject.toml"
    shipped = set(re.findall(r'"([\w.]+)"', listed.group(1)))
    packages = {
        module_name(init.parent / "__init__.py")
        for top in (PROTO, TRANSPORTS)
        for init in _python_files(top)
        if init.name == "__init__.py"
    }
    missing = sorted(packages - shipped)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
