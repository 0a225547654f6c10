"""What the ``okq`` command's subcommands share: exit codes, errors, argument types, output.

Owns: the exit-code contract, `CliError`, the argument types (`int_at_least`, `positive_int`,
`positive_seconds`...: a bad value is one line, never a traceback), the server address resolution
(``--server`` / ``OKQ_SERVER``) and the embedded server used when none is named
(`embedded_or_given`), showing events and names on a terminal, a one-line progress bar and the
status table.
Must not know: the parser's layout, what each subcommand does.  Every other CLI module imports
this one; it imports none of them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Final, TypeVar

from okq_proto import (
    Event,
    OkqError,
    QueueStatus,
    parse_addresses,
)

__all__ = [
    "DEFAULT_SERVER",
    "ENV_SERVER",
    "ENV_URL",
    "EXIT_EMPTY",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "Progress",
    "claim_seconds",
    "embedded_or_given",
    "event_json",
    "event_line",
    "int_at_least",
    "one_line",
    "percentile",
    "port_number",
    "positive_int",
    "positive_seconds",
    "record_json",
    "resolve_server",
    "show",
    "status_json",
    "status_table",
]

T = TypeVar("T")

#: Exit status: success.
EXIT_OK: Final = 0
#: Exit status: the command failed (connection refused, unknown host, error reply...).
EXIT_ERROR: Final = 1
#: Exit status: bad command line (unknown option, bad number, bad address).
EXIT_USAGE: Final = 2
#: Exit status: nothing there (``peek``/``pop`` of an empty queue, ``ack`` of an unknown id).
EXIT_EMPTY: Final = 3

#: The server used when neither ``-u/--url`` nor ``OKQ_URL`` nor ``OKQ_SERVER`` names one.
DEFAULT_SERVER: Final = "okq://127.0.0.1:4777"
#: The environment variable naming the server (a URL, or a comma-separated list of them).
ENV_URL: Final = "OKQ_URL"
#: Its older spelling, read when ``OKQ_URL`` is not set.
ENV_SERVER: Final = "OKQ_SERVER"


class CliError(Exception):
    """A failure to report as one line on stderr, exiting with `code`.

    Args:
        message: what went wrong, one line.
        code: the exit status (`EXIT_ERROR` unless said otherwise).
    """

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def one_line(text: object) -> str:
    """`text` as a single line (newlines and runs of spaces collapsed)."""
    return " ".join(str(text).split())


# -- argument types: each failure is one line, never a traceback ------------------------------


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number, at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, not {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def positive_seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


#: An argparse type: a claim length in seconds, -1 (at-most-once) allowed.
claim_seconds: Final = int_at_least(-1)
#: An argparse type: a TCP port, 0 (pick a free one) allowed.
port_number: Final = int_at_least(0)
#: An argparse type: a count of one or more.
positive_int: Final = int_at_least(1)


def resolve_server(given: str | None) -> tuple[str, bool]:
    """The server address to use and whether the user chose it.

    ``-u/--url`` (or ``--server``) wins, then ``OKQ_URL``, then ``OKQ_SERVER``, then
    `DEFAULT_SERVER`; each may list several servers (failover order).  ``demo`` and ``bench``
    start an embedded server unless the user chose one.

    Raises:
        CliError: (usage) for an address that does not parse.
    """
    chosen = given
    if chosen is None:
        chosen = os.environ.get(ENV_URL) or os.environ.get(ENV_SERVER) or None
    address = chosen if chosen is not None else DEFAULT_SERVER
    try:
        parse_addresses(address)
    except OkqError as exc:
        raise CliError(one_line(exc), EXIT_USAGE) from None
    return address, chosen is not None


@contextlib.contextmanager
def embedded_or_given(
    given: str | None, *, sweep_interval_s: float = 10.0
) -> Iterator[tuple[str, bool]]:
    """Yield ``(address, embedded)``: the server the user chose, or a fresh embedded one
    (in a background thread, stopped on exit)."""
    address, chosen = resolve_server(given)
    if chosen:
        yield address, False
        return
    from okq_transports.server import ThreadedServer

    with ThreadedServer(port=0, sweep_interval_s=sweep_interval_s) as server:
        yield server.address, True


def show(data: bytes | str) -> str:
    """Bytes or a name made safe for one terminal line: UTF-8, other bytes and control
    characters escaped (``\\n``, ``\\x00``...)."""
    text = data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
    out = []
    for char in text:
        if char == "\\" or char.isprintable():
            out.append(char)
        else:
            out.append(char.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def event_line(event: Event, *, with_queue: bool = False) -> str:
    """``[QUEUE<TAB>]ID<TAB>CONTENTS`` with every field made safe by `show`."""
    fields = [show(event.queue)] if with_queue else []
    return "\t".join([*fields, show(event.id), show(event.contents)])


def event_json(event: Event) -> str:
    """One JSON object: ``queue``, ``id`` and ``contents`` (text when the contents are UTF-8,
    else ``contents_base64``)."""
    record: dict[str, str] = {"queue": event.queue, "id": event.id}
    try:
        record["contents"] = event.contents.decode("utf-8")
    except UnicodeDecodeError:
        record["contents_base64"] = base64.b64encode(event.contents).decode("ascii")
    return json.dumps(record, ensure_ascii=False)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value at `fraction` (0..1) of an already sorted list (nearest rank); 0.0 if empty."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class Progress:
    """A one-line progress bar redrawn in place on a terminal (``\\r``).

    On a stream that is not a terminal it prints nothing until `close`, which writes the final
    state once, so logs and tests get one clean line.

    Args:
        label: shown before the bar.
        total: the count that means done.
        stream: where to draw (stderr by default).
        width: the bar's width in characters.
    """

    def __init__(self, label: str, total: int, stream: IO[str] | None = None, width: int = 30):
        self.label = label
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._live = self.stream.isatty()
        self._last_draw = 0.0
        self._done = 0
        self._note = ""

    def update(self, done: int, note: str = "", *, force: bool = False) -> None:
        """Record progress; redraws at most 20 times a second (always when `force`)."""
        self._done, self._note = done, note
        now = time.monotonic()
        if self._live and (force or now - self._last_draw >= 0.05):
            self._last_draw = now
            self.stream.write("\r" + self._render())
            self.stream.flush()

    def _render(self) -> str:
        fraction = min(1.0, self._done / self.total)
        filled = int(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        note = f"  {self._note}" if self._note else ""
        return f"{self.label} [{bar}] {self._done}/{self.total} {fraction:4.0%}{note}"

    def close(self) -> None:
        """Draw the final state and end the line."""
        prefix = "\r" if self._live else ""
        self.stream.write(prefix + self._render() + "\n")
        self.stream.flush()


_COLUMNS: Final = ("QUEUE", "TOTAL", "PROCESSING", "WAITING", "CONSUMERS")


def status_table(entries: Sequence[QueueStatus]) -> list[str]:
    """`entries` as aligned lines: a header, then one line per queue (names left, numbers
    right); ``(no queues)`` when there are none."""
    rows = [
        (show(s.name), str(s.total), str(s.processing), str(s.waiting), str(s.consumers))
        for s in entries
    ]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(_COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return [line(_COLUMNS), *(line(r) for r in rows)] if rows else [line(_COLUMNS), "(no queues)"]


def _json_name(name: str) -> dict[str, str]:
    """A queue name for JSON: as text when it is UTF-8; otherwise its bytes escaped in
    ``queue`` and exact in ``queue_base64`` (JSON text cannot hold them)."""
    raw = name.encode("utf-8", "surrogateescape")
    try:
        return {"queue": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            "queue": raw.decode("utf-8", "backslashreplace"),
            "queue_base64": base64.b64encode(raw).decode("ascii"),
        }


def record_json(queue: str | None = None, **fields: object) -> str:
    """One JSON object of a command's result: the ``queue`` (as `status_json` names queues)
    and ``fields``."""
    record: dict[str, object] = {}
    if queue is not None:
        record.update(_json_name(queue))
    record.update(fields)
    return json.dumps(record, ensure_ascii=False)


def status_json(entries: Sequence[QueueStatus]) -> str:
    """`entries` as a JSON array of objects."""
    return json.dumps(
        [
            {
                **_json_name(s.name),
                "total": s.total,
                "processing": s.processing,
                "waiting": s.waiting,
                "consumers": s.consumers,
            }
            for s in entries
        ],
        ensure_ascii=False,
    )
