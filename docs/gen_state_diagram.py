"""Draw the consumer's state diagram from its transition table: never by hand.

Reads `okq_proto.CONSUMER_MOVES` and writes, into ``docs/_generated/``:

* ``consumer_states.svg``: the states as boxes, ranked by distance from the first state, the
  end states (no way out but to themselves) on the last row; one arrow per (state, next state)
  pair labelled with its inputs, replies in blue, method calls in orange.  Arrows that carry
  the same inputs into a state that nothing else enters (the failures into ERROR) are drawn
  dashed and explained once in a legend.
* ``consumer_transitions.md``: the same table as Markdown, one row per legal move.

Pure Python, no Graphviz.  The docs build runs this at start-up (``docs/conf.py``) and
``tests/test_docs_examples.py`` runs ``--check``, so the files cannot drift from the code.

Usage: ``python docs/gen_state_diagram.py [--check]``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from okq_proto import (  # noqa: E402  # after the path fix above
    CONSUMER_MOVES,
    CONSUMER_PEER_INPUTS,
    ConsumerInput,
    ConsumerState,
)

OUT_DIR: Final = Path(__file__).resolve().parent / "_generated"
SVG_NAME: Final = "consumer_states.svg"
TABLE_NAME: Final = "consumer_transitions.md"

_BOX_W: Final = 150
_BOX_H: Final = 34
_RANK_GAP: Final = 92
_COL_GAP: Final = 300
_WIDTH: Final = 900
_MARGIN: Final = 40
_PEER_COLOR: Final = "#1f5fbf"
_USER_COLOR: Final = "#c05a00"

Move = tuple[ConsumerState, ConsumerInput, ConsumerState]


def moves(table: Mapping[tuple[ConsumerState, ConsumerInput], ConsumerState]) -> list[Move]:
    """The table as ``(state, input, next state)`` triples, in state then input order."""
    order = {state: i for i, state in enumerate(ConsumerState)}
    inputs = {inp: i for i, inp in enumerate(ConsumerInput)}
    triples = [(state, inp, nxt) for (state, inp), nxt in table.items()]
    return sorted(triples, key=lambda m: (order[m[0]], inputs[m[1]]))


def ranks(triples: Iterable[Move]) -> dict[ConsumerState, int]:
    """Breadth-first distance from the first state; end states go on one last row."""
    edges: dict[ConsumerState, set[ConsumerState]] = defaultdict(set)
    for state, _inp, nxt in triples:
        if nxt is not state:
            edges[state].add(nxt)
    ends = [s for s in ConsumerState if not edges[s]]
    first = next(iter(ConsumerState))
    rank = {first: 0}
    frontier = [first]
    while frontier:
        following = []
        for state in frontier:
            for nxt in sorted(edges[state], key=lambda s: s.value):
                if nxt not in rank and nxt not in ends:
                    rank[nxt] = rank[state] + 1
                    following.append(nxt)
        frontier = following
    last = max(rank.values(), default=0) + 1
    for state in ConsumerState:
        rank.setdefault(state, last)
    return rank


@dataclass(frozen=True)
class _Edge:
    source: ConsumerState
    target: ConsumerState
    inputs: tuple[ConsumerInput, ...]
    dashed: bool


def _edges(triples: list[Move]) -> tuple[list[_Edge], list[tuple[tuple[ConsumerInput, ...], str]]]:
    grouped: dict[tuple[ConsumerState, ConsumerState], list[ConsumerInput]] = defaultdict(list)
    for state, inp, nxt in triples:
        grouped[state, nxt].append(inp)
    incoming: dict[ConsumerState, set[tuple[ConsumerInput, ...]]] = defaultdict(set)
    fan_in: dict[tuple[ConsumerState, tuple[ConsumerInput, ...]], int] = defaultdict(int)
    for (state, nxt), inputs in grouped.items():
        if state is not nxt:
            incoming[nxt].add(tuple(inputs))
            fan_in[nxt, tuple(inputs)] += 1
    edges, legend = [], []
    for (state, nxt), inputs in grouped.items():
        key = tuple(inputs)
        dashed = state is not nxt and len(incoming[nxt]) == 1 and fan_in[nxt, key] >= 3
        edges.append(_Edge(state, nxt, key, dashed))
        entry = (key, nxt.name)
        if dashed and entry not in legend:
            legend.append(entry)
    return edges, legend


def _clip(cx: float, cy: float, tx: float, ty: float) -> tuple[float, float]:
    """Where the ray from a box's centre towards (tx, ty) leaves the box."""
    dx, dy = tx - cx, ty - cy
    if dx == 0 and dy == 0:
        return cx, cy
    scale = min(
        (_BOX_W / 2) / abs(dx) if dx else math.inf, (_BOX_H / 2) / abs(dy) if dy else math.inf
    )
    return cx + dx * scale, cy + dy * scale


def _label(inputs: Iterable[ConsumerInput], x: float, y: float, anchor: str) -> str:
    spans = []
    for i, inp in enumerate(inputs):
        color = _PEER_COLOR if inp in CONSUMER_PEER_INPUTS else _USER_COLOR
        sep = " / " if i else ""
        spans.append(f'{sep}<tspan fill="{color}">{inp.name}</tspan>')
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="label">'
        + "".join(spans)
        + "</text>"
    )


def render_svg(table: Mapping[tuple[ConsumerState, ConsumerInput], ConsumerState]) -> str:
    """The diagram as a standalone SVG document."""
    triples = moves(table)
    rank = ranks(triples)
    rows: dict[int, list[ConsumerState]] = defaultdict(list)
    for state in ConsumerState:
        rows[rank[state]].append(state)
    pos: dict[ConsumerState, tuple[float, float]] = {}
    for r, states in rows.items():
        for i, state in enumerate(states):
            x = _WIDTH / 2 + (i - (len(states) - 1) / 2) * _COL_GAP
            pos[state] = (x, _MARGIN + 20 + r * _RANK_GAP)
    edges, legend = _edges(triples)
    height = _MARGIN * 2 + 50 + max(rows) * _RANK_GAP + 30 * (len(legend) + 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" font-family="sans-serif" font-size="11">',
        "<title>okq consumer states (generated from okq_proto.CONSUMER_MOVES)</title>",
        "<style>.label{font-size:10px}.state{font-size:12px;font-weight:bold}</style>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#444"/></marker></defs>',
        f'<rect width="{_WIDTH}" height="{height}" fill="white"/>',
    ]
    center = _WIDTH / 2
    for edge in edges:
        sx, sy = pos[edge.source]
        tx, ty = pos[edge.target]
        label_inputs = () if edge.dashed else edge.inputs
        if edge.source is edge.target:
            x0 = sx + _BOX_W / 2
            parts.append(
                f'<path d="M{x0:.1f},{sy - 8:.1f} C{x0 + 34:.1f},{sy - 30:.1f} '
                f'{x0 + 34:.1f},{sy + 30:.1f} {x0:.1f},{sy + 8:.1f}" fill="none" '
                'stroke="#444" marker-end="url(#arrow)"/>'
            )
            parts.append(_label(label_inputs, x0 + 30, sy + 3, "start"))
            continue
        span = rank[edge.target] - rank[edge.source]
        # Bow: adjacent rows bend a little (down one way, up the other, so a pair of opposite
        # arrows never overlaps); long arrows swing out towards their target's side.
        if abs(span) <= 1 and abs(tx - sx) < 1:
            bow = 40.0 if span > 0 else -40.0
            cx, cy = (sx + tx) / 2 + bow, (sy + ty) / 2
        elif abs(span) <= 1:
            # perpendicular of the top-to-bottom direction, so opposite arrows part ways
            (ax, ay), (bx, by) = sorted([(sx, sy), (tx, ty)], key=lambda p: (p[1], p[0]))
            length = math.hypot(bx - ax, by - ay)
            bend = 26.0 if span >= 0 else -26.0
            cx = (sx + tx) / 2 - (by - ay) / length * bend
            cy = (sy + ty) / 2 + (bx - ax) / length * bend
        else:
            side = -1.0 if tx < center else 1.0 if tx > center else (-1.0 if sx <= tx else 1.0)
            reach = max(abs(tx - center), abs(sx - center)) + 60 + 28 * abs(span)
            cx, cy = center + side * reach, (sy + ty) / 2
        x0, y0 = _clip(sx, sy, cx, cy)
        x1, y1 = _clip(tx, ty, cx, cy)
        dash = ' stroke-dasharray="5,4" stroke="#999"' if edge.dashed else ' stroke="#444"'
        parts.append(
            f'<path d="M{x0:.1f},{y0:.1f} Q{cx:.1f},{cy:.1f} {x1:.1f},{y1:.1f}" fill="none"'
            f'{dash} marker-end="url(#arrow)"/>'
        )
        if label_inputs:
            mx = 0.25 * x0 + 0.5 * cx + 0.25 * x1
            my = 0.25 * y0 + 0.5 * cy + 0.25 * y1
            anchor = "end" if mx < sx - 1 or mx < center - 1 else "start"
            parts.append(_label(label_inputs, mx + (-4 if anchor == "end" else 4), my, anchor))
    for state, (x, y) in pos.items():
        fill = "#f3f3f3" if rank[state] < max(rows) else "#e6e6e6"
        parts.append(
            f'<rect x="{x - _BOX_W / 2:.1f}" y="{y - _BOX_H / 2:.1f}" width="{_BOX_W}" '
            f'height="{_BOX_H}" rx="8" fill="{fill}" stroke="#333"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle" class="state">'
            f"{escape(state.name)}</text>"
        )
    y = _MARGIN + 50 + max(rows) * _RANK_GAP + 10
    parts.append(
        f'<text x="{_MARGIN}" y="{y}" fill="{_PEER_COLOR}">blue: replies from the server</text>'
    )
    parts.append(
        f'<text x="{_MARGIN + 260}" y="{y}" fill="{_USER_COLOR}">orange: calls by the '
        "transport (the application's verdict, a stop)</text>"
    )
    for inputs, target in legend:
        y += 30
        names = " / ".join(inp.name for inp in inputs)
        parts.append(
            f'<text x="{_MARGIN}" y="{y}">dashed: {escape(names)} lead to {escape(target)} '
            "from every state with a command in flight</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def render_table(table: Mapping[tuple[ConsumerState, ConsumerInput], ConsumerState]) -> str:
    """The table as Markdown: state, input, kind (reply or call), next state."""
    lines = [
        "<!-- generated by docs/gen_state_diagram.py from okq_proto.CONSUMER_MOVES;"
        " do not edit -->",
        "",
        "| state | input | kind | next state |",
        "|---|---|---|---|",
    ]
    for state, inp, nxt in moves(table):
        kind = "reply" if inp in CONSUMER_PEER_INPUTS else "call"
        lines.append(f"| `{state.name}` | `{inp.name}` | {kind} | `{nxt.name}` |")
    return "\n".join(lines) + "\n"


def outputs() -> dict[str, str]:
    """File name -> expected contents of every generated file."""
    return {SVG_NAME: render_svg(CONSUMER_MOVES), TABLE_NAME: render_table(CONSUMER_MOVES)}


def write_all(out_dir: Path = OUT_DIR) -> list[Path]:
    """Write the generated files that changed; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in outputs().items():
        path = out_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def stale(out_dir: Path = OUT_DIR) -> list[str]:
    """Names of generated files that are missing or differ from what the table gives."""
    return [
        name
        for name, text in outputs().items()
        if not (out_dir / name).exists() or (out_dir / name).read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    """Write the files, or with ``--check`` report stale ones (exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        for name in names:
            print(f"out of date: docs/_generated/{name} (run docs/gen_state_diagram.py)")
        return 1 if names else 0
    for path in write_all():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
