"""Shrinking a failing input: delta debugging over tokens, then over bytes.

This module owns ``minimise``: given the input that made an oracle fire and a predicate that
runs the same oracle on a candidate, it returns a smaller input on which the predicate still
holds. It works on tokens (header lines and payload lines, each ending at an LF, so whole
RESP elements go or stay together) with Zeller's ``ddmin`` (subsets, then complements, at
ever finer granularity, down to one-minimality), then lowers array counts and bulk lengths
(an array whose elements were dropped needs a smaller count to stay complete), repeats, and
ends with ``ddmin`` on single bytes. Results are
cached per candidate; the number of predicate runs and the wall time are bounded. It knows
nothing of sockets or servers: restarting a crashed server is the predicate's business.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["MinimiseStats", "StopMinimising", "ddmin", "minimise", "tokens"]

_TOKEN: Final = re.compile(rb"[^\n]*\n|[^\n]+")
# The number of an array or bulk header (at the start of the input or of a line).
_COUNT: Final = re.compile(rb"(?:^|(?<=\n))[*$]([-+]?[0-9]+)")


@dataclass(slots=True)
class MinimiseStats:
    """What a minimisation cost: predicate runs, cache hits, whether a bound stopped it."""

    runs: int = 0
    cached: int = 0
    exhausted: bool = False


class StopMinimising(Exception):
    """Raised by a predicate that cannot test any more (a server that stays down)."""


class _Budget(Exception):
    pass


def tokens(data: bytes) -> list[bytes]:
    """``data`` cut after every LF (the pieces join back to ``data``)."""
    return _TOKEN.findall(data)


def ddmin(
    units: Sequence[bytes], test: Callable[[bytes], bool], stats: MinimiseStats
) -> list[bytes]:
    """Zeller's ddmin on a list of byte pieces; ``test`` gets the joined candidate.

    Returns:
        A one-minimal sub-list (removing any single piece makes ``test`` false), or the
        smallest found when ``test`` raised the budget signal.
    """
    current = list(units)
    granularity = 2
    try:
        while len(current) >= 2:
            size = -(-len(current) // granularity)
            chunks = [current[i : i + size] for i in range(0, len(current), size)]
            reduced = False
            for chunk in chunks:
                if len(chunks) > 1 and test(b"".join(chunk)):
                    current, granularity, reduced = chunk, 2, True
                    break
            if not reduced:
                for index in range(len(chunks)):
                    rest = [u for i, c in enumerate(chunks) if i != index for u in c]
                    if test(b"".join(rest)):
                        current, reduced = rest, True
                        granularity = max(granularity - 1, 2)
                        break
            if not reduced:
                if granularity >= len(current):
                    break
                granularity = min(len(current), granularity * 2)
        if len(current) == 1 and test(b""):
            current = []
    except (_Budget, StopMinimising):
        stats.exhausted = True
    return current


def minimise(
    data: bytes,
    predicate: Callable[[bytes], bool],
    *,
    max_runs: int = 2000,
    max_seconds: float = 120.0,
) -> tuple[bytes, MinimiseStats]:
    """Shrink ``data`` while ``predicate`` holds (``predicate(data)`` is assumed true).

    Args:
        data: the failing input.
        predicate: runs the oracle on a candidate; True when it still fires. It may raise
            `StopMinimising` to end the search (the best input so far is kept).
        max_runs: most predicate runs (cache hits are free).
        max_seconds: wall-time bound; the best input so far is returned when it is reached.

    Returns:
        The smallest failing input found and what it cost.
    """
    stats = MinimiseStats()
    cache: dict[bytes, bool] = {data: True}
    deadline = time.monotonic() + max_seconds

    def test(candidate: bytes) -> bool:
        if candidate in cache:
            stats.cached += 1
            return cache[candidate]
        if stats.runs >= max_runs or time.monotonic() > deadline:
            raise _Budget
        stats.runs += 1
        result = cache[candidate] = predicate(candidate)
        return result

    best = data
    for _ in range(4):  # tokens, then smaller counts (which may free more tokens), again
        before = best
        best = b"".join(ddmin(tokens(best), test, stats))
        if not stats.exhausted:
            best = _smaller_counts(best, test, stats)
        if stats.exhausted or best == before:
            break
    if not stats.exhausted:
        best = b"".join(ddmin([best[i : i + 1] for i in range(len(best))], test, stats))
    return best, stats


def _smaller_counts(data: bytes, test: Callable[[bytes], bool], stats: MinimiseStats) -> bytes:
    """Lower array counts and bulk lengths while ``test`` holds (deleting bytes cannot)."""
    try:
        changed = True
        while changed:
            changed = False
            for match in _COUNT.finditer(data):
                number = int(match.group(1))
                for smaller in dict.fromkeys((0, 1, number // 2, number - 1)):
                    if 0 <= smaller < number:
                        start, end = match.span(1)
                        candidate = data[:start] + b"%d" % smaller + data[end:]
                        if test(candidate):
                            data, changed = candidate, True
                            break
                if changed:
                    break
    except (_Budget, StopMinimising):
        stats.exhausted = True
    return data
