"""The dashboard's one sampler per process: every server's ``QSTATUS`` at a steady pace, the
recent history of each queue, and a snapshot any number of page views can read.

Owns: `History` (the last samples of one server's queues in fixed-size rings: a bounded
memory whatever the number of queues), `ServerState` (reachable or not, since when, the
round-trip time), `Sampler` (a thread that polls each server with the public sync `Client`
and wakes the page streams on every new sample) and the JSON-ready views of them.
Must not know: HTTP, HTML.

The sampling cost is bounded: one ``QSTATUS`` per server per interval, the interval
stretched to four times the last sample's duration when a server is slow (a server with
many queues is never polled back to back), and the history rings hold `HISTORY_SAMPLES`
samples per queue, dropped once a queue has been gone for a whole ring.
"""

from __future__ import annotations

import base64
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from okq_proto import OkqError, QueueStatus, parse_address
from okq_transports.sync import Client

__all__ = ["HISTORY_SAMPLES", "History", "Sampler", "ServerState", "name_key", "show_name"]

#: Samples kept per queue (at the default 2 s interval: the last five minutes).
HISTORY_SAMPLES: Final = 150
#: The window the rates are computed over, in samples.
RATE_WINDOW: Final = 5


def name_key(name: str) -> str:
    """A queue name as a URL-safe token of its exact bytes (names are any bytes)."""
    raw = name.encode("utf-8", "surrogateescape")
    return base64.urlsafe_b64encode(raw).decode("ascii")


def show_name(name: str) -> str:
    """A queue name for display: its text, bytes that are not UTF-8 as ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class _Ring:
    total: array[int] = field(default_factory=lambda: array("q", bytes(8 * HISTORY_SAMPLES)))
    processing: array[int] = field(default_factory=lambda: array("q", bytes(8 * HISTORY_SAMPLES)))
    absent: int = 0  # samples in a row without the queue


class History:
    """The last `HISTORY_SAMPLES` samples of one server's queues.  Not thread-safe: the
    `Sampler` holds its lock around every use."""

    def __init__(self) -> None:
        self.times = array("d", bytes(8 * HISTORY_SAMPLES))
        self.count = 0  # samples taken so far
        self.queues: dict[str, _Ring] = {}
        self.latest: list[QueueStatus] = []

    def add(self, now: float, entries: Sequence[QueueStatus]) -> None:
        """Record one ``QSTATUS`` taken at ``now`` (seconds)."""
        slot = self.count % HISTORY_SAMPLES
        self.times[slot] = now
        seen = set()
        for entry in entries:
            ring = self.queues.get(entry.name)
            if ring is None:
                ring = self.queues[entry.name] = _Ring()
            ring.total[slot] = entry.total
            ring.processing[slot] = entry.processing
            ring.absent = 0
            seen.add(entry.name)
        for name in [n for n in self.queues if n not in seen]:
            ring = self.queues[name]
            ring.total[slot] = ring.processing[slot] = 0
            ring.absent += 1
            if ring.absent >= HISTORY_SAMPLES:
                del self.queues[name]
        self.count += 1
        self.latest = sorted(entries, key=lambda e: e.name.encode("utf-8", "surrogateescape"))

    def _order(self) -> list[int]:
        n = min(self.count, HISTORY_SAMPLES)
        first = self.count - n
        return [(first + i) % HISTORY_SAMPLES for i in range(n)]

    def series(self, name: str) -> dict[str, list[float]]:
        """``{"t": seconds before the last sample, "total": ..., "processing": ...}``."""
        ring = self.queues.get(name)
        order = self._order()
        if ring is None or not order:
            return {"t": [], "total": [], "processing": []}
        last = self.times[order[-1]]
        return {
            "t": [round(self.times[i] - last, 3) for i in order],
            "total": [float(ring.total[i]) for i in order],
            "processing": [float(ring.processing[i]) for i in order],
        }

    def rate(self, name: str) -> float | None:
        """How fast the queue's total changed over the last `RATE_WINDOW` samples (events per
        second; negative: draining), or None before there are two samples."""
        ring = self.queues.get(name)
        order = self._order()[-RATE_WINDOW:]
        if ring is None or len(order) < 2:
            return None
        elapsed = self.times[order[-1]] - self.times[order[0]]
        if elapsed <= 0:
            return None
        return (ring.total[order[-1]] - ring.total[order[0]]) / elapsed


@dataclass
class ServerState:
    """What the page says of one server."""

    address: str
    up: bool | None = None  # None: not sampled yet
    error: str | None = None
    down_since: float | None = None  # wall-clock seconds
    rtt_ms: float | None = None
    sample_s: float = 0.0  # how long the last QSTATUS took
    history: History = field(default_factory=History)


class Sampler:
    """Polls every server's ``QSTATUS`` from one thread; page streams wait for `version`.

    Args:
        addresses: the servers (``okq://HOST:PORT`` or ``HOST:PORT``), each shown on its own.
        interval_s: the pace of sampling (stretched for a slow server, see the module).
        client: makes a client for one address (tests may pass their own; defaults to a
            `Client` with no retries and a short read timeout).
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        interval_s: float = 2.0,
        client: Callable[[str], Client] | None = None,
    ) -> None:
        for address in addresses:
            parse_address(address)  # LocalProtocolError now, not in the thread
        self.interval_s = interval_s
        self.servers = [ServerState(address) for address in addresses]
        self._make_client = client or (
            lambda address: Client(address, retries=0, read_timeout_s=5.0, connect_timeout_s=2.0)
        )
        self.clients = [self._make_client(address) for address in addresses]
        self.lock = threading.Condition()
        self.version = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="okq-dashboard-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.lock:
            self.lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(10)
        for client in self.clients:
            client.close()

    def wait_for(self, version: int, timeout_s: float) -> int:
        """Block until a sample newer than ``version`` (or `timeout_s`); the current version."""
        with self.lock:
            self.lock.wait_for(
                lambda: self.version != version or self._stop.is_set(), timeout=timeout_s
            )
            return self.version

    def sample_once(self) -> None:
        """Take one sample of every server now (the thread's step; tests call it too)."""
        for state, client in zip(self.servers, self.clients, strict=True):
            started = time.monotonic()
            try:
                entries = client.status()
                took = time.monotonic() - started
                rtt = _rtt_ms(client)
            except OkqError as exc:
                with self.lock:
                    if state.up is not False:
                        state.down_since = time.time()
                    state.up, state.error, state.rtt_ms = (
                        False,
                        str(exc) or type(exc).__name__,
                        None,
                    )
                continue
            with self.lock:
                state.up, state.error, state.down_since = True, None, None
                state.rtt_ms, state.sample_s = rtt, took
                state.history.add(time.monotonic(), entries)
        with self.lock:
            self.version += 1
            self.lock.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():  # bounded by stop()
            self.sample_once()
            slowest = max((s.sample_s for s in self.servers), default=0.0)
            self._stop.wait(max(self.interval_s, 4 * slowest))

    # -- views ----------------------------------------------------------------------------------

    def view(
        self, *, page: int = 0, per_page: int = 50, match: str = "", plot: str | None = None
    ) -> dict[str, Any]:
        """A JSON-ready picture of every server: its state, one page of its queues (those
        whose name contains ``match``), and the history of the queue whose `name_key` is
        ``plot``."""
        with self.lock:
            return {
                "version": self.version,
                "servers": [
                    _server_view(s, page=page, per_page=per_page, match=match, plot=plot)
                    for s in self.servers
                ],
            }

    def find(self, server: int, key: str) -> str | None:
        """The queue name of ``key`` on server number ``server``, if it is known."""
        with self.lock:
            if not 0 <= server < len(self.servers):
                return None
            for entry in self.servers[server].history.latest:
                if name_key(entry.name) == key:
                    return entry.name
        return None


def _rtt_ms(client: Client) -> float:
    started = time.perf_counter()
    client.ping()
    return round((time.perf_counter() - started) * 1000, 3)


def _server_view(
    state: ServerState, *, page: int, per_page: int, match: str, plot: str | None
) -> dict[str, Any]:
    history = state.history
    entries = [e for e in history.latest if match in show_name(e.name)]
    pages = max(1, -(-len(entries) // per_page))
    page = min(max(page, 0), pages - 1)
    shown = entries[page * per_page : (page + 1) * per_page]
    plotted = None
    if plot is not None:
        for name in history.queues:
            if name_key(name) == plot:
                plotted = {"key": plot, "name": show_name(name), **history.series(name)}
                break
    return {
        "address": state.address,
        "up": state.up,
        "error": state.error,
        "down_since": state.down_since,
        "rtt_ms": state.rtt_ms,
        "queue_count": len(history.latest),
        "matching": len(entries),
        "page": page,
        "pages": pages,
        "queues": [
            {
                "key": name_key(e.name),
                "name": show_name(e.name),
                "total": e.total,
                "processing": e.processing,
                "waiting": e.waiting,
                "consumers": e.consumers,
                "rate": _rounded(history.rate(e.name)),
            }
            for e in shown
        ],
        "plot": plotted,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
