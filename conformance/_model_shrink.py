"""Shrinking a failing command sequence, and writing it out as a transcript.

Owns: `ddmin` (Zeller's delta debugging: a 1-minimal sublist on which a predicate still
holds, within a budget of predicate calls), `shrink` (ddmin over a sequence's steps, then over
its connections, then over the steps again) and the transcript writer (`to_transcript`,
`write_transcript`): the steps as a format-1 transcript (``conformance/transcripts/README.md``)
whose expectations are the reference model's replies, so replaying it passes against a
conforming server and fails against the one the sequence caught.  Where the live run polls
the server until it has finished work of its own (a NOBLOCK push stored, a closed consumer
deregistered), the transcript waits 0.3 s (as the recorded transcripts do) and then checks
``QSTATUS`` of every queue on a connection of its own; a pipeline is one write followed by one
read step per reply; a wake-up is the QNOTIFY written, the push 0.25 s later, then the
QNOTIFY's reply read.

Must not know: sockets, clocks.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Final, TypeVar

from ._model_exec import QNOTIFY_AT_ONCE_S, QNOTIFY_EARLY_S, WAKE_DELAY_S
from ._model_gen import ModelStep
from ._model_ref import Expected, ReferenceModel
from ._resp import encode_command

__all__ = [
    "SETTLE_PAUSE_S",
    "STEP_TIMEOUT_S",
    "WAKE_PAUSE_S",
    "ddmin",
    "shrink",
    "to_transcript",
    "write_transcript",
]

T = TypeVar("T", bound=Hashable)

#: ``sleep_before`` of the QSTATUS check after a NOBLOCK push or a consumer's close.
SETTLE_PAUSE_S: Final = 0.3
#: ``sleep_before`` of the push that wakes a QNOTIFY: long enough for okq to have subscribed a
#: queue registered just before (okq-protocol.md §6), on a loaded machine too.
WAKE_PAUSE_S: Final = 0.25
#: Read timeout of each step (beyond a blocking QNOTIFY's own timeout): a wrong reply shorter
#: than the expected one is only seen as wrong once this has passed.
STEP_TIMEOUT_S: Final = 3.0


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool], *, max_tests: int = 400) -> list[T]:
    """A small sublist of ``items`` (order kept) on which ``fails`` still holds.

    Args:
        items: a list ``fails`` holds on (not checked).
        fails: the predicate; called at most ``max_tests`` times, never twice on the same
            sublist, never on the empty one.
        max_tests: the budget; when it runs out the smallest failing sublist so far is returned.

    Returns:
        A 1-minimal sublist (removing any one element makes ``fails`` false) when the budget
        allowed finishing.
    """
    current = list(items)
    seen: dict[tuple[T, ...], bool] = {tuple(current): True}
    budget = [max_tests]

    def test(candidate: list[T]) -> bool:
        key = tuple(candidate)
        if key not in seen:
            if budget[0] <= 0 or not candidate:
                return False
            budget[0] -= 1
            seen[key] = fails(candidate)
        return seen[key]

    granularity = 2
    while len(current) >= 2 and budget[0] > 0:
        size = -(-len(current) // granularity)
        chunks = [current[i : i + size] for i in range(0, len(current), size)]
        reduced = False
        if len(chunks) > 2:
            for chunk in chunks:
                if test(chunk):
                    current, granularity, reduced = chunk, 2, True
                    break
        if not reduced:
            for i in range(len(chunks)):
                complement = [x for j, c in enumerate(chunks) if j != i for x in c]
                if test(complement):
                    current, granularity, reduced = complement, max(granularity - 1, 2), True
                    break
        if not reduced:
            if granularity >= len(current):
                break
            granularity = min(granularity * 2, len(current))
    return current


def shrink(
    steps: Sequence[ModelStep],
    fails: Callable[[list[ModelStep]], bool],
    *,
    max_tests: int = 400,
) -> list[ModelStep]:
    """Delta-debug a failing sequence over its steps, then its connections, then its steps.

    Args:
        steps: a sequence on which ``fails`` holds.
        fails: runs a candidate sequence and says whether it still fails.
        max_tests: the budget of ``fails`` calls for each of the three passes.
    """
    current = ddmin(steps, fails, max_tests=max_tests)
    conns = sorted({c for s in current for c in s.conns})
    if len(conns) > 1:
        kept = ddmin(
            conns,
            lambda keep: fails([s for s in current if s.conns <= set(keep)]),
            max_tests=max_tests,
        )
        fewer = [s for s in current if s.conns <= set(kept)]
        if len(fewer) < len(current):
            current = ddmin(fewer, fails, max_tests=max_tests)
    return current


# -- transcripts ------------------------------------------------------------------------------


def _text_or_b64(data: bytes) -> str | dict[str, str]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode("ascii")}


def _put_bytes(step: dict[str, object], field: str, data: bytes) -> None:
    value = _text_or_b64(data)
    if isinstance(value, str):
        step[field] = value
    else:
        step[f"{field}_b64"] = value["b64"]


def to_transcript(
    name: str,
    description: str,
    queues: Sequence[bytes],
    steps: Sequence[ModelStep],
    *,
    notes: dict[int, str] | None = None,
) -> dict[str, object]:
    """The transcript document (a JSON-ready dict) of a sequence.

    Args:
        name: the scenario name (and file stem).
        description: one or two sentences.
        queues: every queue the steps use.
        steps: the sequence; connections are renumbered 0, 1, ... in order of first use.
        notes: free-text notes by step index (what the faulty server answered).
    """
    model = ReferenceModel()
    numbers: dict[int, int] = {}
    out: list[dict[str, object]] = []
    observer = 1 + max((c for s in steps for c in s.conns), default=0)
    status = (b"QSTATUS", *queues)

    def entry(conn: int, **fields: object) -> dict[str, object]:
        made: dict[str, object] = {"conn": numbers.setdefault(conn, len(numbers))}
        made.update(fields)
        out.append(made)
        return made

    def settle(needed: bool, longer_s: float = 0.0) -> None:
        # What the executor polls for, checked once after a pause, on a connection of its own.
        if needed:
            made = entry(observer, sleep_before=SETTLE_PAUSE_S + longer_s, timeout=STEP_TIMEOUT_S)
            _put_bytes(made, "send", encode_command(*status))
            _put_bytes(made, "expect", model.status_reply(tuple(queues)))
            made["note"] = "the server has finished the work of the step before"

    def read(conn: int, expected: Expected, note: str | None) -> None:
        made = entry(conn, timeout=STEP_TIMEOUT_S + expected.blocks_s)
        exact = expected.exact
        if exact is not None:
            _put_bytes(made, "expect", exact)
        else:
            made["expect_any_of"] = [_text_or_b64(r) for r in sorted(expected.replies)]
        if note:
            made["note"] = note

    for index, step in enumerate(steps):
        note = (notes or {}).get(index)
        if step.argv is None:
            entry(step.conn, close=True)
            settle(model.close(step.conn).settle)
            continue
        if step.abandon:
            expected = model.send(step.conn, step.argv)
            _put_bytes(
                entry(step.conn, note=note or "not read: the client closes"),
                "send",
                encode_command(*step.argv),
            )
            entry(step.conn, sleep_before=WAKE_DELAY_S, close=True)
            before = model.status_reply(tuple(queues))
            gone = model.close(step.conn).settle
            if gone and expected.blocks_s > 0:
                made = entry(observer, sleep_before=WAKE_DELAY_S, timeout=STEP_TIMEOUT_S)
                _put_bytes(made, "send", encode_command(*status))
                _put_bytes(made, "expect", before)
                made["note"] = "the closed consumer counts until its QNOTIFY's wait is over"
            settle(gone, expected.blocks_s)
            continue
        if step.waker is not None:
            waker, push = step.waker
            expected, pushed = model.send_and_wake(step.conn, step.argv, waker, push)
            _put_bytes(entry(step.conn), "send", encode_command(*step.argv))
            made = entry(waker, sleep_before=WAKE_PAUSE_S, timeout=STEP_TIMEOUT_S)
            _put_bytes(made, "send", encode_command(*push))
            _put_bytes(made, "expect", min(pushed.replies))
            read(step.conn, expected, note)
            continue
        requests = step.requests
        expectations = [model.send(step.conn, argv) for argv in requests]
        data = b"".join(encode_command(*argv) for argv in requests)
        if len(requests) == 1:
            made = entry(step.conn, timeout=STEP_TIMEOUT_S + expectations[0].blocks_s)
            _put_bytes(made, "send", data)
            exact = expectations[0].exact
            if exact is not None:
                _put_bytes(made, "expect", exact)
            else:
                made["expect_any_of"] = [_text_or_b64(r) for r in sorted(expectations[0].replies)]
            if requests[0][0].upper() == b"QNOTIFY":  # waits exactly when the model waits
                blocks = expectations[0].blocks_s
                if blocks > 0:
                    made["elapsed_min"] = blocks - QNOTIFY_EARLY_S
                else:
                    made["elapsed_max"] = QNOTIFY_AT_ONCE_S
            if note:
                made["note"] = note
        else:
            _put_bytes(entry(step.conn, note="pipelined"), "send", data)
            for expected in expectations:
                read(step.conn, expected, note)
        settle(any(e.settle for e in expectations))
    return {
        "name": name,
        "description": description,
        "format_version": 1,
        "requires_redis": False,
        "needs_empty_server": False,
        "queues": [_text_or_b64(q) for q in queues],
        "connections": len(numbers),
        "steps": out,
    }


def write_transcript(
    directory: str | Path,
    name: str,
    description: str,
    queues: Sequence[bytes],
    steps: Sequence[ModelStep],
    *,
    notes: dict[int, str] | None = None,
) -> Path:
    """Write `to_transcript` to ``<directory>/<name>.json`` (the folder is created).

    Returns:
        The file's path.

    Raises:
        OSError: the file cannot be written.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    document = to_transcript(name, description, queues, steps, notes=notes)
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
