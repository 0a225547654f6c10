"""A small fault-injecting TCP proxy for tests: threads and sockets on 127.0.0.1 only.

Each accepted connection is forwarded to `upstream` by two pump threads (one per direction).
Faults, chosen per proxy (draws from a `random.Random` seeded with ``seed``):

- ``reset_probability``: each chunk read, in a direction of ``fault_direction`` (``"both"``,
  ``"up"``: client to server, ``"down"``), cuts the connection with this probability at a
  random byte of the chunk: the bytes before it are forwarded, the rest never is, and the
  connection is reset (RST, ``SO_LINGER`` 0).  ``reset_side`` says who gets the RST:
  ``"both"``, or ``"upstream"`` only (the client's socket is left open and silent: a
  half-open connection, as after a middlebox drops its state), or ``"client"`` only (the
  server keeps a silent connection until it notices);
- ``stall_probability``: the same draw, but the connection goes silent at that byte both ways
  (a blackhole in the middle of a connection): every later byte is read and dropped, both
  sockets stay open until a peer closes its side (or the proxy stops);
- ``slice_bytes``: forward one byte per write;
- ``latency_s``: sleep this long before forwarding each chunk;
- ``blackhole``: accept and read, never forward nor answer;
- ``accept_and_close``: accept and close at once (a server that refuses to talk).

A server restart is not the proxy's: restart the `ThreadedServer` behind it (its storage is
kept); meanwhile the proxy resets the connections it cannot forward.

Every thread polls with a short timeout, so `stop` ends them all, and joins them.  Use as a
context manager::

    with FaultProxy(server.address, reset_probability=0.01, seed=1) as proxy:
        client = Client(proxy.address_text)
"""

from __future__ import annotations

import collections
import contextlib
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["FaultProxy"]

#: How often blocked threads look at the stop flag, in seconds.
POLL_S = 0.05
#: Bytes read per chunk.
CHUNK = 65536


def _reset(sock: socket.socket) -> None:
    """Close `sock` with an RST (linger 0), ignoring a socket that is already gone."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Pair:
    """One proxied connection: the client side, the upstream side, and their close."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.lock = threading.Lock()
        self.closed = False
        #: The socket left open by a one-sided reset (closed by `release`).
        self.half_open: socket.socket | None = None
        #: Gone silent both ways (a stall): bytes read are dropped.
        self.stalled = False

    def release(self) -> None:
        """Close whatever is still open (a half-open side, or everything)."""
        self.close(reset=False)
        sock, self.half_open = self.half_open, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self, *, reset: bool, side: str = "both") -> None:
        """Close both sockets; with `reset`, RST the `side` ones ("both", "upstream",
        "client").  A side not reset is left open until `close` is called again (by
        `FaultProxy.stop`)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if reset and side != "both":
                self.half_open = self.client if side == "upstream" else self.upstream
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            if reset:
                if side == "both" or (side == "upstream") == (sock is self.upstream):
                    _reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()


class FaultProxy:
    """A TCP proxy from an ephemeral port on 127.0.0.1 to `upstream`, injecting faults.

    Attributes (read after `stop`, or at any time as a rough figure):
        connections: connections accepted.
        resets: connections reset on purpose.
        stalls: connections stalled on purpose.
        faults: the faults injected, by kind and direction (``"reset-up"``, ``"stall-down"``).
        chunks: chunks forwarded (both directions).
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        reset_probability: float = 0.0,
        seed: int = 0,
        slice_bytes: bool = False,
        latency_s: float = 0.0,
        blackhole: bool = False,
        accept_and_close: bool = False,
        reset_side: str = "both",
        stall_probability: float = 0.0,
        fault_direction: str = "both",
        max_connections: int = 10_000,
    ) -> None:
        for name, value in (
            ("reset_probability", reset_probability),
            ("stall_probability", stall_probability),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {value}")
        if reset_probability + stall_probability > 1.0:
            raise ValueError("reset_probability + stall_probability must not exceed 1")
        if reset_side not in ("both", "upstream", "client"):
            raise ValueError(f"reset_side must be both, upstream or client, not {reset_side!r}")
        if fault_direction not in ("both", "up", "down"):
            raise ValueError(f"fault_direction must be both, up or down, not {fault_direction!r}")
        self.reset_side = reset_side
        self.stall_probability = stall_probability
        self.fault_direction = fault_direction
        self.upstream = upstream
        self.reset_probability = reset_probability
        self.slice_bytes = slice_bytes
        self.latency_s = latency_s
        self.blackhole = blackhole
        self.accept_and_close = accept_and_close
        self.max_connections = max_connections
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._listener: socket.socket | None = None
        self._blackout = False
        self.connections = 0
        self.resets = 0
        self.stalls = 0
        self.faults: collections.Counter[str] = collections.Counter()
        self.chunks = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect: ``("127.0.0.1", port)``."""
        if self._listener is None:
            raise RuntimeError("the proxy is not started")
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def address_text(self) -> str:
        """`address` as ``"host:port"``."""
        host, port = self.address
        return f"{host}:{port}"

    def start(self) -> FaultProxy:
        """Listen and start accepting; returns self."""
        if self._listener is not None:
            raise RuntimeError("the proxy is already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.settimeout(POLL_S)
        self._listener = listener
        self._spawn(self._accept_loop, "faultproxy-accept")
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and join every thread.  Idempotent."""
        self._stop.set()
        with self._threads_lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.release()
        # Threads spawned meanwhile see the stop flag within POLL_S; join until none is left.
        for _ in range(100):
            with self._threads_lock:
                threads = [t for t in self._threads if t.is_alive()]
            if not threads:
                break
            for thread in threads:
                thread.join(5.0)
        if self._listener is not None:
            self._listener.close()

    def set_blackout(self, on: bool) -> int:
        """While on, the path is black: connections open now go silent both ways (they stay
        stalled after it ends, as state lost in a middlebox), new ones are accepted and never
        forwarded.  Returns how many open connections it stalled."""
        self._blackout = on
        if not on:
            return 0
        stalled = 0
        with self._threads_lock:
            pairs = [p for p in self._pairs if not p.closed and not p.stalled]
        for pair in pairs:
            pair.stalled = True
            stalled += 1
        with self._rng_lock:
            self.stalls += stalled
            self.faults["blackout-stall"] += stalled
        return stalled

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def threads_alive(self) -> int:
        """Proxy threads still running (0 after `stop`)."""
        with self._threads_lock:
            return sum(t.is_alive() for t in self._threads)

    # -- threads ---------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._threads_lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            self.connections += 1
            if self.accept_and_close or self.connections > self.max_connections:
                client.close()
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.blackhole or self._blackout:
                if self._blackout:
                    with self._rng_lock:
                        self.faults["blackout-new"] += 1
                pair = _Pair(client, None)
                self._track(pair)
                self._spawn(self._swallow, "faultproxy-blackhole", pair)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5.0)
            except OSError:
                _reset(client)
                continue
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream)
            self._track(pair)
            self._spawn(self._pump, "faultproxy-up", pair, client, upstream, "up")
            self._spawn(self._pump, "faultproxy-down", pair, upstream, client, "down")

    def _track(self, pair: _Pair) -> None:
        with self._threads_lock:
            self._pairs = [p for p in self._pairs if not p.closed or p.half_open is not None]
            self._pairs.append(pair)

    def _swallow(self, pair: _Pair) -> None:
        while not self._stop.is_set() and not pair.closed:
            try:
                readable, _, _ = select.select([pair.client], [], [], POLL_S)
                if readable and not pair.client.recv(CHUNK):
                    break
            except (OSError, ValueError):
                break
        pair.close(reset=False)

    def _draw_fault(self, direction: str, size: int) -> tuple[str, int] | None:
        """None, or the fault to inject into a chunk of `size` bytes read in `direction`:
        ``("reset" | "stall", k)``, cutting it after its first k bytes (0 <= k < size)."""
        if self.fault_direction not in ("both", direction):
            return None
        if self.reset_probability <= 0.0 and self.stall_probability <= 0.0:
            return None
        with self._rng_lock:
            draw = self._rng.random()
            if draw < self.reset_probability:
                kind = "reset"
            elif draw < self.reset_probability + self.stall_probability:
                kind = "stall"
            else:
                return None
            cut = self._rng.randrange(size)
            self.faults[f"{kind}-{direction}"] += 1
            if kind == "reset":
                self.resets += 1
            else:
                self.stalls += 1
        return kind, cut

    def _forward(self, sink: socket.socket, data: bytes) -> None:
        if self.slice_bytes:
            for i in range(len(data)):
                sink.sendall(data[i : i + 1])
        else:
            sink.sendall(data)

    def _pump(
        self, pair: _Pair, source: socket.socket, sink: socket.socket, direction: str
    ) -> None:
        while not self._stop.is_set() and not pair.closed:
            try:
                readable, _, _ = select.select([source], [], [], POLL_S)
                if not readable:
                    continue
                data = source.recv(CHUNK)
            except (OSError, ValueError):
                break
            if not data:
                break
            if pair.stalled:
                continue  # silent both ways: read and dropped
            fault = self._draw_fault(direction, len(data))
            try:
                if fault is not None:
                    kind, cut = fault
                    self._forward(sink, data[:cut])
                    if kind == "reset":
                        pair.close(reset=True, side=self.reset_side)
                        return
                    pair.stalled = True
                    continue
                if self.latency_s > 0:
                    time.sleep(self.latency_s)
                self.chunks += 1
                self._forward(sink, data)
            except (OSError, ValueError):
                break
        pair.close(reset=False)
