"""The sync bench's floors and shared pieces: bare clients, their workloads, run budgets.

* `HiredisBare` (the "bare" client): one blocking socket and a ``hiredis.Reader``; pushes send
  commands encoded before the timed loop, consumers send each ``QACK`` in the same write as
  the next ``QRPOP``;
* `Bare` (the "bare-enc" client): one socket, the id made and the command encoded by okq_proto
  inside the loop, okq_proto's decoder.

`Budget` bounds a run in time (checked once per event), `Overrun` reports a run past its
budget or its count; every socket has a read timeout (`IO_TIMEOUT_S`).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable

import hiredis

from okq_proto import NEED_DATA, encode_command, encode_commands, make_decoder
from okq_transports.sync import Client

PAYLOAD = b"x" * 100


#: The longest any one socket read may wait.
IO_TIMEOUT_S = 10.0


# (events, wall seconds, cpu seconds)
Sample = tuple[int, float, float]


class Overrun(RuntimeError):
    """A run went past its time budget or its count of tries, or ended without all its events."""


class Budget:
    """How long one run may take; `check` raises `Overrun` once that is up."""

    def __init__(self, what: str, seconds: float) -> None:
        self.what, self.seconds = what, seconds
        self.deadline = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise Overrun(f"{self.what}: not done within its {self.seconds:g} s budget")


def measure(fn: Callable[[], int]) -> Sample:
    cpu, wall = time.process_time(), time.perf_counter()
    events = fn()
    return events, time.perf_counter() - wall, time.process_time() - cpu


class Bare:
    """One blocking socket, our encoder, the decoder okq_proto picks (the bare-enc client)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=IO_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = make_decoder()
        self.buf = bytearray(65536)

    def replies(self, count: int) -> list[object]:
        out: list[object] = []
        while len(out) < count:
            reply = self.decoder.next_reply()
            if reply is NEED_DATA:
                n = self.sock.recv_into(self.buf)  # at most IO_TIMEOUT_S, then TimeoutError
                if n == 0:
                    raise ConnectionError(
                        f"the server closed the connection with {count - len(out)} "
                        "replies still due"
                    )
                self.decoder.feed(memoryview(self.buf)[:n])
                continue
            out.append(reply)
        return out

    def call(self, *argv: bytes) -> object:
        self.sock.sendall(encode_command(argv))
        return self.replies(1)[0]

    def close(self) -> None:
        self.sock.close()


class HiredisBare:
    """The floor: one blocking socket and a ``hiredis.Reader``; the caller sends the bytes."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=IO_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()

    def reply(self) -> object:
        """The next reply (``None`` for a nil); reads at most IO_TIMEOUT_S per recv."""
        reader, recv = self.reader, self.sock.recv
        while (reply := reader.gets()) is False:
            data = recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection with a reply still due")
            reader.feed(data)
        return reply

    def call(self, wire: bytes) -> object:
        self.sock.sendall(wire)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def push_bare(client: object, queue: str, n: int, batch: int, budget: Budget) -> Sample:
    assert isinstance(client, HiredisBare)
    q = queue.encode()
    wires = [encode_command((b"QLPUSH", q, str(uuid.uuid4()).encode(), PAYLOAD)) for _ in range(n)]
    call = client.call

    def run() -> int:
        for wire in wires:
            budget.check()
            if call(wire) != b"OK":
                raise RuntimeError("bare push: QLPUSH did not reply +OK")
        return n

    return measure(run)


def push_bare_enc(client: object, queue: str, n: int, batch: int, budget: Budget) -> Sample:
    assert isinstance(client, Bare)
    q = queue.encode()

    def run() -> int:
        for _ in range(n):
            budget.check()
            client.call(b"QLPUSH", q, str(uuid.uuid4()).encode(), PAYLOAD)
        return n

    return measure(run)


def push_many_bare(client: object, queue: str, n: int, batch: int, budget: Budget) -> Sample:
    assert isinstance(client, HiredisBare)
    q = queue.encode()
    batches = [
        (
            count,
            encode_commands(
                [(b"QLPUSH", q, str(uuid.uuid4()).encode(), PAYLOAD) for _ in range(count)]
            ),
        )
        for count in (min(batch, n - start) for start in range(0, n, batch))
    ]

    def run() -> int:
        for count, wire in batches:
            budget.check()
            client.sock.sendall(wire)
            for _ in range(count):
                client.reply()
        return n

    return measure(run)


def prefill(address: str, queue: str, n: int) -> None:
    with Client(address) as client:
        client.flush(queue)
        for start in range(0, n, 1000):
            client.push_many(queue, [PAYLOAD] * min(1000, n - start))


def bare_consumer(
    host: str, port: int, queue: str, n: int, budget: Budget, done: list[int]
) -> None:
    """Pop until the queue is empty, each QACK in the same write as the next QRPOP.

    Adds its count of events to `done`; stops with `Overrun` past n events or the budget.
    """
    q = queue.encode()
    pop = encode_command((b"QRPOP", q, b"EX", b"30"))
    ack_head = b"*3\r\n$4\r\nQACK\r\n$%d\r\n%s\r\n$" % (len(q), q)
    bare = HiredisBare(host, port)
    count = 0
    try:
        event = bare.call(pop)
        while event is not None:
            if count == n:
                raise Overrun(f"{budget.what}: more than the {n} events it pushed")
            budget.check()
            count += 1
            assert isinstance(event, list)
            event_id = event[0]
            bare.sock.sendall(b"%s%d\r\n%s\r\n%s" % (ack_head, len(event_id), event_id, pop))
            bare.reply()
            event = bare.reply()
    finally:
        bare.close()
        done.append(count)


def consume_bare(
    host: str,
    port: int,
    queue: str,
    n: int,
    address: str,
    budget: Budget,
    concurrency: int = 1,
) -> Sample:
    """`concurrency` bare consumers (threads) drain n prefilled events."""
    prefill(address, queue, n)
    done: list[int] = []
    errors: list[BaseException] = []

    def consumer() -> None:
        try:
            bare_consumer(host, port, queue, n, budget, done)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def run() -> int:
        if concurrency == 1:
            bare_consumer(host, port, queue, n, budget, done)
        else:
            threads = [threading.Thread(target=consumer) for _ in range(concurrency)]
            for thread in threads:
                thread.start()
            for thread in threads:
                # each socket read waits at most IO_TIMEOUT_S, each event checks the budget
                thread.join(budget.seconds + IO_TIMEOUT_S)
            if errors:
                raise errors[0]
        total = sum(done)
        if total != n:
            raise Overrun(f"{budget.what}: the queue ran dry after {total} of {n} events")
        return total

    return measure(run)
