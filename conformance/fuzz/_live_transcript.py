"""A live-fuzzer finding written as a transcript the replay runner accepts.

This module owns the shape of a finding's transcript (format 1 of
``conformance/transcripts/README.md``). The steps say what a correct server does with the
input, so replaying the file against the faulty server fails and against a fixed one passes:

1. ``conn 0`` (the bystander) runs the sentinel round on its own queue, exact replies;
2. ``conn 1`` writes the input (and the marker command when the input ends at a value
   boundary); each reply the model expects is one step with ``expect_pattern`` ``.*`` (any
   single well-formed RESP reply), then the marker's exact reply, or ``expect_close`` when
   the server must close the connection silently;
3. ``conn 0`` runs the sentinel round again (the server is up, the bystander undisturbed);
4. ``conn 2`` sends ``PING`` (new connections are still accepted); ``conn 1`` is closed.

It opens no sockets; `build` validates its result with ``parse_scenario``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Final

from conformance._resp import encode_command
from conformance._transcripts import parse_scenario

from ._live_model import Ending, Expectation

__all__ = ["build", "save"]

_PING: Final = encode_command(b"PING")


def _field(step: dict[str, object], name: str, data: bytes) -> None:
    """Put ``data`` in ``name`` as UTF-8 text, or in ``name_b64``."""
    try:
        step[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        step[name + "_b64"] = base64.b64encode(data).decode("ascii")


def _queue(name: bytes) -> object:
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(name).decode("ascii")}


def build(
    *,
    name: str,
    description: str,
    data: bytes,
    expectation: Expectation,
    marker: tuple[bytes, bytes] | None,
    sentinel: tuple[tuple[bytes, bytes], tuple[bytes, bytes]],
    queues: set[bytes],
    timeout_s: float,
) -> dict[str, object]:
    """The transcript document for one finding.

    Args:
        name: the scenario name (the file's stem).
        description: what was found.
        data: the (minimised) input.
        expectation: the model's expectation for ``data``.
        marker: the marker request and its exact reply, appended when the input is COMPLETE.
        sentinel: two sentinel rounds, each (request bytes, exact reply bytes).
        queues: every queue the input and the sentinel touch (flushed by the replayer).
        timeout_s: the read timeout of the input's steps (the reply is due by then).

    Returns:
        The JSON document (already checked by ``parse_scenario``).
    """
    timeout = round(max(timeout_s + expectation.block_s, 0.5), 3)
    steps: list[dict[str, object]] = []
    first: dict[str, object] = {"conn": 0}
    _field(first, "send", sentinel[0][0])
    _field(first, "expect", sentinel[0][1])
    steps.append(first)
    send: dict[str, object] = {"conn": 1, "note": "the fuzzer's input"}
    payload = data
    if expectation.ending is Ending.COMPLETE and marker is not None:
        payload += marker[0]
    _field(send, "send", payload)
    reads: list[dict[str, object]] = []
    for _ in range(expectation.replies):
        reads.append({"conn": 1, "expect_pattern": ".*", "timeout": timeout})
    if expectation.ending is Ending.COMPLETE and marker is not None:
        marker_step: dict[str, object] = {"conn": 1, "timeout": timeout}
        _field(marker_step, "expect", marker[1])
        marker_step["note"] = "the marker command after the input is answered next"
        reads.append(marker_step)
    elif expectation.ending is Ending.CLOSE:
        reads.append(
            {
                "conn": 1,
                "expect": "",
                "expect_close": True,
                "timeout": timeout,
                "note": f"the server closes the connection: {expectation.reason}",
            }
        )
    if reads:
        send.update(reads[0])
        send["note"] = "the fuzzer's input" + (
            f"; {reads[0]['note']}" if "note" in reads[0] else ""
        )
        reads = reads[1:]
    steps.append(send)
    steps.extend(reads)
    again: dict[str, object] = {"conn": 0, "sleep_before": 0.2}
    _field(again, "send", sentinel[1][0])
    _field(again, "expect", sentinel[1][1])
    again["note"] = "the bystander connection is undisturbed"
    steps.append(again)
    steps.append(
        {
            "conn": 2,
            "send": _PING.decode(),
            "expect": "+PONG\r\n",
            "note": "the server still accepts connections",
        }
    )
    steps.append({"conn": 1, "close": True})
    document: dict[str, object] = {
        "name": name,
        "description": description,
        "format_version": 1,
        "requires_redis": False,
        "needs_empty_server": False,
        "queues": [_queue(q) for q in sorted(queues)],
        "connections": 3,
        "steps": steps,
    }
    parse_scenario(json.loads(json.dumps(document)), source=name)
    return document


def save(directory: Path, document: dict[str, object]) -> Path:
    """Write ``document`` to ``directory/<name>.json`` (the folder is created)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{document['name']}.json"
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
