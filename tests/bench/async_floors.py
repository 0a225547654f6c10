"""The async bench's floors and shared pieces: bare clients, samples, timers.

* ``bare-asyncio``: an asyncio Protocol with a ``hiredis.Reader`` (`_HiredisProtocol`), sending
  commands encoded before the timed loop, or when consuming each ``QACK`` in the same write
  as the next ``QRPOP``;
* ``bare-enc-asyncio``: the same Protocol shape with okq_proto's encoder (id and command made
  inside the loop) and its pure decoder (`_BareProtocol`);
* ``bare-trio``: trio streams with okq_proto's codec.

A lost connection raises ``ConnectionError`` at once; a consumer past its count `Overrun`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import hiredis
import trio

from okq_proto import NEED_DATA, Decoder, encode_command

PAYLOAD = b"x" * 64


BATCH = 100


PRODUCERS = 50


#: Consumer connections of the consume8 benchmarks.
CONSUMERS = 8


class Overrun(RuntimeError):
    """A run went past its time budget or its count of tries."""


@dataclass
class Sample:
    """One timed run: operations, wall seconds, client CPU seconds."""

    ops: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.ops / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.ops * 1e6


class Timer:
    """Wall and process-CPU time of the block."""

    def __enter__(self) -> Timer:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def queue() -> str:
    return "bench-" + uuid.uuid4().hex[:8]


def new_id() -> bytes:
    """An event id, made inside the timed loop as every client does (uuid4 text)."""
    return str(uuid.uuid4()).encode()


class _BareProtocol(asyncio.Protocol):
    """The asyncio floor: a Protocol, okq_proto's encoder and decoder, nothing else."""

    def __init__(self) -> None:
        self.decoder = Decoder()
        self.waiter: asyncio.Future[None] | None = None
        self.lost: ConnectionError | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = ConnectionError(f"the server closed the connection ({exc or 'EOF'})")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    async def request(self, args: list[bytes]) -> object:
        assert self.transport is not None
        self.transport.write(encode_command(args))
        while (reply := self.decoder.next_reply()) is NEED_DATA:
            if self.lost is not None:
                raise self.lost
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return reply


class _HiredisProtocol(asyncio.Protocol):
    """The asyncio floor: a Protocol and a ``hiredis.Reader``; the caller sends the bytes."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiter: asyncio.Future[None] | None = None
        self.lost: ConnectionError | None = None
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = ConnectionError(f"the server closed the connection ({exc or 'EOF'})")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    async def reply(self) -> object:
        """The next reply (``None`` for a nil)."""
        while (reply := self.reader.gets()) is False:
            if self.lost is not None:
                raise self.lost
            self.waiter = self.loop.create_future()
            await self.waiter
        return reply

    async def request(self, wire: bytes) -> object:
        assert self.transport is not None
        self.transport.write(wire)
        return await self.reply()

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()


async def hiredis_connect(host: str, port: int) -> _HiredisProtocol:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_HiredisProtocol, host, port)
    return protocol


def push_wires(q: bytes, n: int) -> list[bytes]:
    """n ``QLPUSH`` commands with fresh ids, encoded (before a floor's timed loop)."""
    return [encode_command([b"QLPUSH", q, new_id(), PAYLOAD]) for _ in range(n)]


async def bare_asyncio_push(host: str, port: int, n: int) -> Sample:
    conn = await hiredis_connect(host, port)
    wires = push_wires(queue().encode(), n)
    try:
        with Timer() as t:
            for wire in wires:
                await conn.request(wire)
    finally:
        conn.close()
    return Sample(n, t.wall, t.cpu)


async def bare_asyncio_producers(host: str, port: int, n: int) -> Sample:
    conns = [await hiredis_connect(host, port) for _ in range(PRODUCERS)]
    q = queue().encode()
    per = n // PRODUCERS

    async def produce(conn: _HiredisProtocol, wires: list[bytes]) -> None:
        for wire in wires:
            await conn.request(wire)

    work = [(conn, push_wires(q, per)) for conn in conns]
    try:
        with Timer() as t:
            await asyncio.gather(*(produce(c, w) for c, w in work))
    finally:
        for conn in conns:
            conn.close()
    return Sample(per * PRODUCERS, t.wall, t.cpu)


async def prefill(host: str, port: int, q: bytes, n: int) -> None:
    conn = await hiredis_connect(host, port)
    try:
        for start in range(0, n, BATCH):
            count = min(BATCH, n - start)
            conn.transport.write(b"".join(push_wires(q, count)))  # type: ignore[union-attr]
            for _ in range(count):
                if await conn.reply() != b"OK":
                    raise RuntimeError("prefill: QLPUSH did not reply +OK")
    finally:
        conn.close()


async def bare_asyncio_consume(host: str, port: int, n: int, concurrency: int = 1) -> Sample:
    """`concurrency` connections drain n prefilled events, each QACK in the write of the next
    QRPOP; past n events `Overrun`, a lost one leaves the count short (also `Overrun`)."""
    q = queue().encode()
    await prefill(host, port, q, n)
    pop = encode_command([b"QRPOP", q, b"EX", b"30"])
    ack_head = b"*3\r\n$4\r\nQACK\r\n$%d\r\n%s\r\n$" % (len(q), q)
    done = [0]

    async def consumer(conn: _HiredisProtocol) -> None:
        event = await conn.request(pop)
        write = conn.transport.write  # type: ignore[union-attr]
        while event is not None:
            if done[0] == n:
                raise Overrun(f"consume/bare-asyncio: more than the {n} events pushed")
            done[0] += 1
            assert isinstance(event, list)
            event_id = event[0]
            write(b"%s%d\r\n%s\r\n%s" % (ack_head, len(event_id), event_id, pop))
            await conn.reply()
            event = await conn.reply()

    conns: list[_HiredisProtocol] = []
    try:
        with Timer() as t:
            conns.extend(
                await asyncio.gather(*(hiredis_connect(host, port) for _ in range(concurrency)))
            )
            await asyncio.gather(*(consumer(c) for c in conns))
    finally:
        for conn in conns:
            conn.close()
    if done[0] != n:
        raise Overrun(f"consume/bare-asyncio: the queue ran dry after {done[0]} of {n} events")
    return Sample(n, t.wall, t.cpu)


async def bare_enc_asyncio_connect(host: str, port: int) -> _BareProtocol:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_BareProtocol, host, port)
    return protocol


async def bare_enc_asyncio_push(host: str, port: int, n: int) -> Sample:
    conn = await bare_enc_asyncio_connect(host, port)
    q = queue().encode()
    try:
        with Timer() as t:
            for _ in range(n):
                await conn.request([b"QLPUSH", q, new_id(), PAYLOAD])
    finally:
        assert conn.transport is not None
        conn.transport.close()
    return Sample(n, t.wall, t.cpu)


async def bare_enc_asyncio_producers(host: str, port: int, n: int) -> Sample:
    conns = [await bare_enc_asyncio_connect(host, port) for _ in range(PRODUCERS)]
    q = queue().encode()
    per = n // PRODUCERS

    async def produce(conn: _BareProtocol) -> None:
        for _ in range(per):
            await conn.request([b"QLPUSH", q, new_id(), PAYLOAD])

    try:
        with Timer() as t:
            await asyncio.gather(*(produce(c) for c in conns))
    finally:
        for conn in conns:
            assert conn.transport is not None
            conn.transport.close()
    return Sample(per * PRODUCERS, t.wall, t.cpu)


async def bare_trio_push(host: str, port: int, n: int) -> Sample:
    decoder = Decoder()
    q = queue().encode()
    async with await trio.open_tcp_stream(host, port) as stream:
        with Timer() as t:
            for _ in range(n):
                await stream.send_all(encode_command([b"QLPUSH", q, new_id(), PAYLOAD]))
                while decoder.next_reply() is NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise ConnectionError("the server closed the connection (EOF)")
                    decoder.feed(data)
    return Sample(n, t.wall, t.cpu)
