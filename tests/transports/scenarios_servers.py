"""Scripted loopback servers for the scenarios (`scenarios`, `scenarios_faults`,
`scenarios_links`): tiny threads-and-sockets servers on 127.0.0.1 port 0 that misbehave on
purpose, each wait in them bounded.

- `DribbleServer`: the first connection's reply is cut after ``k`` bytes (the rest waits);
- `MalformedServer`: replies that are not RESP2 until healed;
- `DropProxy`: the first ``drops`` connections read their request and are closed (after a
  part of a reply, or none); later ones are forwarded to a real server;
- `dead_address`: a loopback port nobody listens on.
"""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from okq_proto import Event

if TYPE_CHECKING:
    from .scenarios import Harness

#: The longest any scripted server waits for anything.
DEADLINE_S = 20.0

GOOD_PEEK = b"*2\r\n$2\r\nid\r\n$4\r\nbody\r\n"
#: Not RESP2; a bulk string and an array of absurd sizes (beyond okq's `Limits`).
MALFORMED = [b"?what\r\n", b"$2147483647\r\n", b"*2147483648\r\n"]
VICTIM_REPLY = b"*2\r\n$6\r\nvictim\r\n$5\r\nfirst\r\n"
OTHER_REPLY = b"*2\r\n$5\r\nother\r\n$6\r\nsecond\r\n"
#: The start of a reply (a bulk string announced, three of its ten bytes sent).
CUT_REPLY = b"*2\r\n$2\r\nid\r\n$10\r\nabc"


def dead_address() -> str:
    """``"127.0.0.1:port"`` of a port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


class DribbleServer:
    """A scripted server on loopback: the first connection gets `reply` cut after `k` bytes
    (the rest only once `release` is set); later connections get `other` at once."""

    def __init__(self, reply: bytes, other: bytes, k: int) -> None:
        self.reply, self.other, self.k = reply, other, k
        self.sent_part = threading.Event()
        self.release = threading.Event()
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self._listener.accept()
                self.connections += 1
                threading.Thread(
                    target=self._one, args=(sock, self.connections == 1), daemon=True
                ).start()

    def _one(self, sock: socket.socket, victim: bool) -> None:
        with sock, contextlib.suppress(OSError):
            while sock.recv(65536):
                if victim:
                    sock.sendall(self.reply[: self.k])
                    self.sent_part.set()
                    self.release.wait(DEADLINE_S)
                    sock.sendall(self.reply[self.k :])
                else:
                    sock.sendall(self.other)

    def close(self) -> None:
        self.release.set()
        self._listener.close()


class MalformedServer:
    """A scripted server on loopback: every request is answered with `bad` (and the
    connection left open) until `healed` is set, then with `good`.  It counts connections, and
    requests that came on a connection after it had sent `bad` (a broken connection reused).

    Args:
        heal_after: set `healed` by itself once `bad` was sent this many times.
    """

    def __init__(self, bad: bytes, good: bytes, heal_after: int | None = None) -> None:
        self.bad, self.good, self.heal_after = bad, good, heal_after
        self.healed = threading.Event()
        self.connections = 0
        self.bad_sent = 0
        self.reused = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self._listener.accept()
                self.connections += 1
                threading.Thread(target=self._one, args=(sock,), daemon=True).start()

    def _one(self, sock: socket.socket) -> None:
        broken = False
        with sock, contextlib.suppress(OSError):
            while sock.recv(65536):
                if broken:
                    self.reused += 1
                if self.healed.is_set():
                    sock.sendall(self.good)
                    continue
                broken = True
                self.bad_sent += 1
                if self.bad_sent == self.heal_after:
                    self.healed.set()  # before sending: the retry may come at once
                sock.sendall(self.bad)

    def close(self) -> None:
        self._listener.close()


class DropProxy:
    """A loopback proxy in front of `upstream` whose first `drops` connections each read one
    request, send `cut` (the start of a reply, or nothing) and close: a connection failure
    in mid-request.  Later connections are forwarded both ways.

    `connections` counts every connection accepted (each attempt of a client whose pool
    starts empty); `dropped` the requests that were read and never answered.
    """

    def __init__(self, upstream: tuple[str, int], drops: int, cut: bytes = b"") -> None:
        self.upstream, self.drops, self.cut = upstream, drops, cut
        self.connections = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self._listener.accept()
                with self._lock:
                    self.connections += 1
                    drop = self.connections <= self.drops
                threading.Thread(target=self._one, args=(sock, drop), daemon=True).start()

    def _one(self, sock: socket.socket, drop: bool) -> None:
        with sock, contextlib.suppress(OSError):
            sock.settimeout(DEADLINE_S)
            if drop:
                if sock.recv(65536):
                    with self._lock:
                        self.dropped += 1
                    sock.sendall(self.cut)
                return
            with socket.create_connection(self.upstream, timeout=DEADLINE_S) as up:
                self._pump(sock, up)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        """Forward bytes both ways until either side ends (or the proxy closes)."""
        peer = {a: b, b: a}
        while not self._stop.is_set():
            readable, _, _ = select.select([a, b], [], [], 0.05)
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                peer[sock].sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


async def cancelled_at_every_byte(h: Harness, make_client: Callable[[str], Any]) -> None:
    """A request cancelled after its bytes left and before its whole reply came back poisons
    its connection: the next request never reads the victim's reply (CVE-2023-28858)."""
    assert h.cancellable_requests, "a blocking call cannot be cancelled mid-request"
    for k in range(len(VICTIM_REPLY)):
        server = DribbleServer(VICTIM_REPLY, OTHER_REPLY, k)
        try:
            async with make_client(server.address) as client:

                async def ready(server: DribbleServer = server) -> None:
                    await h.run_sync(lambda: server.sent_part.wait(DEADLINE_S))
                    await h.sleep(0.005)  # let the k bytes land in the client

                cancelled = await h.cancel_when(functools.partial(client.peek_next, "q"), ready)
                assert cancelled, f"k={k}: the request finished"
                server.release.set()  # the rest of the victim's reply is now on the wire
                await h.sleep(0.005)
                event = await client.peek_next("q")
                assert event == Event("q", "other", b"second"), f"k={k}: got {event!r}"
                assert server.connections == 2
        finally:
            server.close()
