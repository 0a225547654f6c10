"""Sphinx configuration for the okq for Python documentation.

Pages are Markdown (myst-parser); the API reference comes from docstrings (autodoc + napoleon,
Google style); the theme is furo.  Build strictly, as CI does::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The consumer state diagram is generated from the consumer machine's transition table by
``docs/gen_state_diagram.py`` at the start of every build (``builder-inited``), so it can never
drift from the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))
sys.path.insert(0, str(DOCS))

project = "okq for Python"
author = "the okq for Python authors"
copyright = "2026, the okq for Python authors"  # Sphinx's own setting name

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = "okq for Python"
html_static_path: list[str] = []


_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Attributes|Example|Examples"
    r"|Note|Notes|Warns|Warning|Warnings|See Also|Keyword Args|Keyword Arguments|Other"
    r" Parameters|Methods|References|Todo):\s*$"
)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def tidy_docstring(lines: list[str]) -> None:
    """Make plain-text docstrings valid reStructuredText, in place.

    The project's docstrings are read by people first: outside Google-style sections
    (``Args:`` ...) and literal blocks (``::``), a line indented deeper than the line before it
    is a wrapped continuation of that line (``NAME: text`` lists), not a block quote.  Joining it
    keeps docutils from reporting "Unexpected indentation".
    """
    out: list[str] = []
    block_indent: int | None = None  # inside a section or literal block opened at this indent
    for line in lines:
        stripped = line.strip()
        if block_indent is not None:
            if stripped and _indent(line) <= block_indent:
                block_indent = None
            else:
                out.append(line)
                continue
        previous = next((p for p in reversed(out) if p.strip()), None)
        if (
            stripped
            and out
            and out[-1].strip()
            and previous is not None
            and _indent(line) > _indent(previous)
        ):
            out[-1] = out[-1].rstrip() + " " + stripped
            continue
        out.append(line)
        if _SECTION.match(stripped) or stripped.endswith("::"):
            block_indent = _indent(line)
    lines[:] = out


def _process_docstring(
    _app: Any, _what: str, _name: str, _obj: object, _options: Any, lines: list[str]
) -> None:
    tidy_docstring(lines)


# Pages written by others land over time; the index lists those that exist, so the strict
# build never fails on a missing page nor on a page left out of every toctree.
_LISTED = {"index", "install", "concepts", "cli", "consumers", "sans-io", "server", "api"}
_GUIDES = ["sync", "asyncio", "trio", "anyio", "redis-py"]
_MORE = ["conformance", "codec"]


def _toctree(caption: str, pages: list[str]) -> str:
    if not pages:
        return ""
    body = "\n".join(pages)
    return f"```{{toctree}}\n:caption: {caption}\n:maxdepth: 2\n\n{body}\n```\n"


def _index_toctrees(_app: Any, docname: str, source: list[str]) -> None:
    if docname != "index":
        return
    present = {p.stem for p in DOCS.glob("*.md") if p.name != "README.md"}
    guides = [g for g in _GUIDES if g in present]
    known = _LISTED | set(_GUIDES)
    more = [m for m in _MORE if m in present]
    more += sorted(present - known - set(_MORE))
    text = source[0]
    text = re.sub(r"<!-- okq:guides-toctree.*?-->", _toctree("Clients", guides), text)
    text = re.sub(r"<!-- okq:more-toctree.*?-->", _toctree("More", more), text)
    source[0] = text


_DOCUMENTED: set[int] = set()


def _skip_reexports(
    _app: Any, what: str, _name: str, obj: object, skip: bool, _options: Any
) -> bool | None:
    """Document a class or function once: where it first appears (``okq_proto`` before the
    clients that re-export ``Delivery``, asyncio before trio for the shared driver types)."""
    if skip or what != "module" or not callable(obj):
        return None
    if id(obj) in _DOCUMENTED:
        return True
    _DOCUMENTED.add(id(obj))
    return None


def _reread_index(
    _app: Any, _env: Any, _added: set[str], _changed: set[str], _removed: set[str]
) -> list[str]:
    """The index's toctrees depend on which pages exist: read it again on every build."""
    return ["index"]


def _generate_diagram(_app: Any) -> None:
    import gen_state_diagram

    gen_state_diagram.write_all(DOCS / "_generated")


def setup(app: Any) -> None:
    """Regenerate the consumer state diagram before reading any page."""
    app.connect("builder-inited", _generate_diagram)
    app.connect("source-read", _index_toctrees)
    app.connect("env-get-outdated", _reread_index)
    app.connect("autodoc-skip-member", _skip_reexports)
    # before napoleon (priority 500) turns Google sections into reST
    app.connect("autodoc-process-docstring", _process_docstring, priority=400)
