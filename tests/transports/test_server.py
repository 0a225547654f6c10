"""The embedded okq server over real loopback TCP: concurrency, QNOTIFY, NOBLOCK, shutdown,
misbehaving clients, and the three ways to start it (asyncio and trio ``async with``, a thread,
the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from okq_transports.server import (
    EmbeddedServer,
    MemoryStorage,
    ServerOptions,
    ThreadedServer,
    open_server,
    run_in_thread,
)

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 10.0
LINGER_RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close sends RST


def cmd(*args: bytes) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%b\r\n" % (len(a), a)
    return out


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        await asyncio.wait_for(coro_fn(), TIMEOUT_S * 2)

    asyncio.run(guarded())


class Client:
    """A raw asyncio connection that reads exact byte counts."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, srv: EmbeddedServer) -> Client:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def expect(self, data: bytes) -> None:
        got = await asyncio.wait_for(self.reader.readexactly(len(data)), TIMEOUT_S)
        assert got == data

    async def call(self, *args: bytes) -> bytes:
        await self.send(cmd(*args))
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n"), TIMEOUT_S)

    async def expect_eof(self) -> None:
        assert await asyncio.wait_for(self.reader.read(1), TIMEOUT_S) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def consumers_of(c: Client, queue: bytes) -> int:
    await c.send(cmd(b"QSTATUS", queue))
    head = b"*1\r\n*4\r\n$%d\r\n%b\r\n" % (len(queue), queue)
    await c.expect(head)
    lines = [await c.reader.readuntil(b"\r\n") for _ in range(3)]
    return int(lines[2][1:-2])


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` (bounded) until true: the server acts on its own schedule here."""
    for _ in range(500):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


# -- basics and concurrency ---------------------------------------------------------------------


def test_concurrent_connections() -> None:
    async def main() -> None:
        async with EmbeddedServer(port=0) as srv:

            async def worker(n: int) -> None:
                c = await Client.open(srv)
                for i in range(20):
                    eid = b"%d-%d" % (n, i)
                    assert await c.call(b"QLPUSH", b"cq", eid, b"x") == b"+OK\r\n"
                await c.close()

            await asyncio.gather(*(worker(n) for n in range(25)))
            c = await Client.open(srv)
            await c.send(cmd(b"QSTATUS", b"cq"))
            await c.expect(b"*1\r\n*4\r\n$2\r\ncq\r\n:500\r\n:0\r\n:0\r\n")
            await c.close()

    run(main)


def test_pipelined_replies_in_order_large_batch() -> None:
    async def main() -> None:
        async with EmbeddedServer(port=0) as srv:
            c = await Client.open(srv)
            await c.send(cmd(b"PING") * 30000 + cmd(b"NOPE"))
            await c.expect(b"+PONG\r\n" * 30000 + b'-ERR unknown command "NOPE"\r\n')
            await c.close()

    run(main)


def test_qnotify_blocks_only_its_connection_and_wakes_all() -> None:
    async def main() -> None:
        async with EmbeddedServer(port=0, seed=1) as srv:
            waiters = [await Client.open(srv) for _ in range(3)]
            for w in waiters:
                assert await w.call(b"QREGISTER", b"nq") == b"+OK\r\n"
                await w.send(cmd(b"QNOTIFY", b"30") + cmd(b"PING"))
            other = await Client.open(srv)
            assert await other.call(b"PING") == b"+PONG\r\n"
            assert await consumers_of(other, b"nq") == 3
            await asyncio.sleep(0.05)  # let the waiters block (not a correctness wait)
            assert await other.call(b"QRPUSH", b"unrelated", b"1", b"c") == b"+OK\r\n"
            assert await other.call(b"QLPUSH", b"nq", b"1", b"c") == b"+OK\r\n"
            for w in waiters:
                await w.expect(b"$2\r\nnq\r\n+PONG\r\n")
            for c in [*waiters, other]:
                await c.close()

    run(main)


def test_qnotify_times_out_with_nil() -> None:
    async def main() -> None:
        async with EmbeddedServer(port=0) as srv:
            c = await Client.open(srv)
            start = time.monotonic()
            await c.send(cmd(b"QNOTIFY", b"1") + cmd(b"PING"))
            await c.expect(b"$-1\r\n+PONG\r\n")
            assert 0.9 <= time.monotonic() - start < 3.0
            await c.close()

    run(main)


def test_disconnect_during_qnotify_counts_until_it_ends() -> None:
    async def main() -> None:
        async with EmbeddedServer(port=0) as srv:
            w = await Client.open(srv)
            obs = await Client.open(srv)
            assert await w.call(b"QREGISTER", b"dq") == b"+OK\r\n"
            await w.send(cmd(b"QNOTIFY", b"1"))
            await w.close()
            await asyncio.sleep(0.3)  # the quirk: the close is not noticed while QNOTIFY waits
            assert await consumers_of(obs, b"dq") == 1

            async def gone() -> bool:
                return await consumers_of(obs, b"dq") == 0

            await until(gone)
            await obs.close()

    run(main)


def test_noblock_stores_shortly_after_and_too_busy() -> None:
    async def main() -> None:
        async with EmbeddedServer(port=0, noblock_workers=1) as srv:
            c = await Client.open(srv)
            # Both requests are answered before the loop runs the first background store.
            await c.send(
                cmd(b"QLPUSH", b"nb", b"a", b"1", b"NOBLOCK")
                + cmd(b"QLPUSH", b"nb", b"b", b"2", b"noblock")
            )
            await c.expect(b"+OK\r\n-ERR too busy to process NOBLOCK event\r\n")

            async def stored() -> bool:
                return await c.call(b"QACK", b"nb", b"a") == b":1\r\n"

            await until(stored)
            assert await c.call(b"QLPUSH", b"nb", b"b", b"2", b"NOBLOCK") == b"+OK\r\n"
            await c.close()

    run(main)


def test_huge_expiry_is_server_side_error() -> None:
    async def main() -> None:
        async with EmbeddedServer(port=0) as srv:
            c = await Client.open(srv)
            await c.call(b"QLPUSH", b"hx", b"a", b"1")
            reply = await c.call(b"QRPOP", b"hx", b"EX", b"9223372036854775807")
            assert reply == b"-ERR unexpected server-side error\r\n"
            await c.close()

    run(main)


# -- bad clients ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"PING\r\n", b"*x\r\n", b"*\n", b"$\n", b"+\n", b"*1\r\n$1000000000000000\r\n"],
)
def test_bad_input_closes_only_that_connection(data: bytes) -> None:
    async def main() -> None:
        async with EmbeddedServer(port=0) as srv:
            good = await Client.open(srv)
            assert await good.call(b"QREGISTER", b"bq") == b"+OK\r\n"
            bad = await Client.open(srv)
            await bad.send(cmd(b"PING") + data)
            await bad.expect(b"+PONG\r\n")
            await bad.expect_eof()
            assert await good.call(b"PING") == b"+PONG\r\n"
            assert await consumers_of(good, b"bq") == 1
            await bad.close()
            await good.close()

    run(main)


def test_client_vanishing_mid_request() -> None:
    async def main() -> None:
        async with EmbeddedServer(port=0) as srv:
            c = await Client.open(srv)
            assert await c.call(b"QREGISTER", b"vq") == b"+OK\r\n"
            await c.send(b"*4\r\n$6\r\nQLPUSH\r\n$2\r\nvq\r\n$1")
            await c.close()
            obs = await Client.open(srv)

            async def gone() -> bool:
                return await consumers_of(obs, b"vq") == 0

            await until(gone)
            assert await obs.call(b"QRPEEK", b"vq") == b"$-1\r\n"
            # a reset (RST) instead of a FIN
            raw = socket.create_connection((srv.host, srv.port))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            raw.sendall(b"*2\r\n$4\r\nPING")
            raw.close()

            async def no_conns() -> bool:
                return srv.connection_count == 1

            await until(no_conns)
            assert await obs.call(b"PING") == b"+PONG\r\n"
            await obs.close()

    run(main)


async def read_to_eof(c: Client, *, reset_ok: bool = False) -> bytes:
    """Everything the server sends until it closes (bounded by TIMEOUT_S).  ``reset_ok``: a
    close with our bytes still unread on the server's side arrives as a reset instead."""
    got = b""
    with contextlib.suppress(*((ConnectionResetError,) if reset_ok else ())):
        while chunk := await asyncio.wait_for(c.reader.read(65536), TIMEOUT_S):
            got += chunk
    return got


def test_pingxx_is_pong_then_close_byte_for_byte() -> None:
    # Real okq: "PING" then two unchecked bytes ("XX") end the request; the CR LF after them
    # starts a new value whose first byte (CR) is no RESP type: closed without a reply.
    async def main() -> None:
        async with EmbeddedServer(port=0) as srv:
            bad = await Client.open(srv)
            await bad.send(b"*1\r\n$4\r\nPINGXX\r\n")
            assert await read_to_eof(bad) == b"+PONG\r\n"
            other = await Client.open(srv)
            assert await other.call(b"PING") == b"+PONG\r\n"
            for c in (bad, other):
                await c.close()

    run(main)


def test_query_buffer_cap_closes_the_client_as_redis_does() -> None:
    cap = 64 * 1024

    async def main() -> None:
        async with EmbeddedServer(port=0, max_query_bytes=cap) as srv:
            obs = await Client.open(srv)
            fits = b"f" * (cap - 100)
            assert await obs.call(b"QLPUSH", b"capq", b"fits", fits) == b"+OK\r\n"
            # Announced past the cap: closed at the header, after the replies owed before it.
            big = await Client.open(srv)
            await big.send(cmd(b"PING") + b"*4\r\n$6\r\nQLPUSH\r\n$4\r\ncapq\r\n$1\r\nb")
            await big.send(b"\r\n$%d\r\n" % (cap + 1))
            assert await read_to_eof(big) == b"+PONG\r\n"
            # Many small arguments streamed in: closed once they hold more than the cap.
            many = await Client.open(srv)
            await many.send(b"*100000\r\n$6\r\nQLPUSH\r\n$4\r\ncapq\r\n")
            sent = 0
            with contextlib.suppress(ConnectionError):
                for _ in range(100):  # 400 KiB if never closed
                    await many.send((b"$1024\r\n" + b"m" * 1024 + b"\r\n") * 4)
                    sent += 4 * 1024
            assert await read_to_eof(many, reset_ok=True) == b""
            assert sent < 8 * cap  # cut off near the cap (the kernel buffers some of it)

            async def one_left() -> bool:
                return srv.connection_count == 1

            await until(one_left)
            await obs.send(cmd(b"QSTATUS", b"capq"))
            await obs.expect(b"*1\r\n*4\r\n$4\r\ncapq\r\n:1\r\n:0\r\n:0\r\n")
            await obs.close()
            await big.close()
            with contextlib.suppress(ConnectionResetError):
                await many.close()

    run(main)


def test_notify_wait_bound_keeps_dead_consumers_and_refuses_past_it() -> None:
    async def main() -> None:
        async with EmbeddedServer(port=0, max_notify_waits=3) as srv:
            obs = await Client.open(srv)
            dead = [await Client.open(srv) for _ in range(3)]
            for i, c in enumerate(dead):
                assert await c.call(b"QREGISTER", b"wq") == b"+OK\r\n"
                await c.send(cmd(b"QNOTIFY", b"2"))
                if i == 2:  # one is reset (RST), the others closed (FIN)
                    sock = c.writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                await c.close()

            async def full() -> bool:
                return srv.notify_waits == 3

            await until(full)
            started = time.monotonic()
            live = await Client.open(srv)
            assert await live.call(b"QREGISTER", b"wq", b"other") == b"+OK\r\n"
            # okq's behaviour below the bound: the closed clients still count as consumers.
            assert await consumers_of(obs, b"wq") == 4
            # Past the bound a QNOTIFY that would wait is refused at once ...
            refused = await live.call(b"QNOTIFY", b"30")
            assert refused == b"-ERR unexpected server-side error\r\n"
            assert time.monotonic() - started < 1.5
            # ... but one that need not wait is answered as usual, and the connection is fine.
            assert await live.call(b"QNOTIFY", b"0") == b"$-1\r\n"
            assert await obs.call(b"QLPUSH", b"other", b"e", b"c") == b"+OK\r\n"
            assert await live.call(b"QNOTIFY", b"30") == b"$5\r\n"
            await live.expect(b"other\r\n")
            assert await obs.call(b"QACK", b"other", b"e") == b":1\r\n"

            async def freed() -> bool:
                return srv.notify_waits == 0 and await consumers_of(obs, b"wq") == 1

            await until(freed)  # the dead waits ended at their timeout, as in okq
            assert time.monotonic() - started >= 1.0
            await live.send(cmd(b"QNOTIFY", b"5"))
            await until(lambda: _is(srv.notify_waits, 1))
            assert await obs.call(b"QLPUSH", b"wq", b"w", b"c") == b"+OK\r\n"
            await live.expect(b"$2\r\nwq\r\n")
            for c in (live, obs):
                await c.close()

    run(main)


def test_350_clients_gone_mid_qnotify_stay_counted_and_the_bound_holds() -> None:
    # The exposure in docs/server.md: okq counts clients closed or reset mid-QNOTIFY until
    # their waits end; the server holds at most max_notify_waits such waits.
    async def main() -> None:
        async with EmbeddedServer(port=0, max_notify_waits=300) as srv:
            clients = [await Client.open(srv) for _ in range(350)]
            for c in clients:
                await c.send(cmd(b"QREGISTER", b"gone") + cmd(b"QNOTIFY", b"3"))
            for c in clients:
                await c.expect(b"+OK\r\n")
            await until(lambda: _is(srv.notify_waits, 300))

            async def refused(c: Client) -> bool:
                try:
                    line = await asyncio.wait_for(c.reader.readuntil(b"\r\n"), 0.5)
                except asyncio.TimeoutError:
                    return False
                assert line == b"-ERR unexpected server-side error\r\n"
                return True

            answers = await asyncio.gather(*(refused(c) for c in clients))
            assert sum(answers) == 50
            for i, c in enumerate(clients):  # every other one reset, the rest closed
                if i % 2:
                    sock = c.writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                with contextlib.suppress(ConnectionError):
                    await c.close()
            obs = await Client.open(srv)

            async def refused_ones_gone() -> bool:
                return await consumers_of(obs, b"gone") == 300

            await until(refused_ones_gone)  # noticed at once: they were not waiting
            assert srv.notify_waits == 300
            await asyncio.sleep(0.5)
            assert await consumers_of(obs, b"gone") == 300  # still counted, as in okq

            async def all_gone() -> bool:
                return srv.notify_waits == 0 and await consumers_of(obs, b"gone") == 0

            for _ in range(10):  # the waits end at their 3 s timeout
                if await all_gone():
                    break
                await asyncio.sleep(0.5)
            assert await all_gone()
            assert srv.connection_count == 1
            await obs.close()

    run(main)


def test_consumer_refused_past_the_wait_bound_recovers() -> None:
    from okq_proto import Hooks
    from okq_transports.asyncio import Client as AsyncioClient

    class Reconnects(Hooks):
        def __init__(self) -> None:
            self.attempts: list[int] = []

        def reconnect(self, address: tuple[str, int], attempt: int, delay_s: float) -> None:
            self.attempts.append(attempt)

    async def main() -> None:
        async with EmbeddedServer(port=0, max_notify_waits=2) as srv:
            obs = await Client.open(srv)
            for _ in range(2):  # two clients gone mid-wait hold both waits for 2 s
                dead = await Client.open(srv)  # (on another queue: pushes to rq wake nobody)
                assert await dead.call(b"QREGISTER", b"deadq") == b"+OK\r\n"
                await dead.send(cmd(b"QNOTIFY", b"2"))
                await dead.close()
            await until(lambda: _is(srv.notify_waits, 2))
            started = time.monotonic()
            assert await obs.call(b"QLPUSH", b"rq", b"first", b"1") == b"+OK\r\n"
            hooks = Reconnects()
            seen: list[str] = []
            stop = asyncio.Event()

            def handler(delivery: Any) -> bool:
                seen.append(delivery.id)
                if len(seen) == 2:
                    stop.set()
                return True

            async with AsyncioClient(srv.address, notify_timeout_s=1, hooks=hooks) as client:
                task = asyncio.ensure_future(client.consume(handler, ["rq"], stop=stop))
                # Found by the initial check, so delivered though the waits are all held;
                # the next QNOTIFY must wait and is refused: the consumer reconnects.
                await until(lambda: _is(len(seen), 1))
                await until(lambda: _is(min(len(hooks.attempts), 1), 1))
                assert srv.notify_waits == 2
                # Once the dead waits end (2 s, as in okq) the consumer waits like any other.
                await until(lambda: _is(srv.notify_waits, 1))
                assert time.monotonic() - started >= 1.5
                assert await obs.call(b"QLPUSH", b"rq", b"second", b"2") == b"+OK\r\n"
                await asyncio.wait_for(task, TIMEOUT_S)
            assert seen == ["first", "second"]
            await obs.send(cmd(b"QSTATUS", b"rq"))
            await obs.expect(b"*1\r\n*4\r\n$2\r\nrq\r\n:0\r\n:0\r\n")
            await obs.close()

    run(main)


async def _is(value: int, expected: int) -> bool:
    return value == expected


# -- lifecycle -----------------------------------------------------------------------------------


def test_graceful_shutdown_ends_waiting_clients() -> None:
    async def main() -> None:
        srv = EmbeddedServer(port=0)
        await srv.start()
        c = await Client.open(srv)
        await c.call(b"QREGISTER", b"sq")
        await c.send(cmd(b"QNOTIFY", b"100"))
        idle = await Client.open(srv)
        await asyncio.sleep(0.05)
        start = time.monotonic()
        await srv.aclose()
        assert time.monotonic() - start < 2.0
        await c.expect_eof()
        await idle.expect_eof()
        await srv.aclose()  # idempotent
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(srv.host, srv.port)
        await c.close()
        await idle.close()

    run(main)


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_stop_closes_the_socket_of_a_client_that_stopped_reading() -> None:
    """Replies buffered for a client that reads nothing do not keep the server's socket open
    past `stop`: the connection is aborted and its socket closed, nothing left for the GC."""
    server = ThreadedServer("127.0.0.1", 0)
    server.start()
    before = _open_fds()
    stalled = socket.socket()
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((server.host, server.port))
        stalled.sendall(cmd(b"QLPUSH", b"stall", b"e1", b"x" * 1_000_000))
        stalled.sendall(cmd(b"QRPEEK", b"stall") * 20)  # ~20 MB of replies, never read
        deadline = time.monotonic() + TIMEOUT_S
        while len(_open_fds() - before) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # our socket and the server's side of it
        time.sleep(0.3)  # the server answers what it was sent, and buffers it
        start = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            server.stop()
            gc.collect()
        assert time.monotonic() - start < 2.0
        assert _open_fds() - {stalled.fileno()} <= before  # the server's side is closed
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    finally:
        stalled.close()


@pytest.mark.slow
def test_redelivery_with_fast_sweep() -> None:
    async def main() -> None:
        async with EmbeddedServer(port=0, sweep_interval_s=0.2) as srv:
            c = await Client.open(srv)
            await c.call(b"QLPUSH", b"rq", b"e1", b"c1")
            await c.send(cmd(b"QRPOP", b"rq", b"EX", b"1"))
            await c.expect(b"*2\r\n$2\r\ne1\r\n$2\r\nc1\r\n")

            async def back() -> bool:
                await c.send(cmd(b"QRPEEK", b"rq"))
                first = await c.reader.readuntil(b"\r\n")
                if first == b"$-1\r\n":
                    return False
                await c.expect(b"$2\r\ne1\r\n$2\r\nc1\r\n")
                return True

            start = time.monotonic()
            await until(back)
            assert 0.9 <= time.monotonic() - start < 2.0
            await c.close()

    run(main)


def test_threaded_server_restart_same_port_same_storage() -> None:
    storage = MemoryStorage()
    with ThreadedServer(storage=storage) as srv:
        port = srv.port
        assert srv.address == f"127.0.0.1:{port}"
        s = socket.create_connection((srv.host, port), timeout=TIMEOUT_S)
        s.sendall(cmd(b"QLPUSH", b"tq", b"e1", b"keep"))
        assert s.recv(100) == b"+OK\r\n"
        srv.stop()
        assert s.recv(100) == b""  # the client sees the close
        s.close()
        assert not srv.running
        srv.start()
        assert srv.port == port
        s = socket.create_connection((srv.host, port), timeout=TIMEOUT_S)
        s.sendall(cmd(b"QRPEEK", b"tq"))
        assert s.recv(100) == b"*2\r\n$2\r\ne1\r\n$4\r\nkeep\r\n"
        s.close()
        srv.restart()
        assert srv.port == port
        with pytest.raises(RuntimeError):
            srv.start()
    assert not srv.running


def test_threaded_start_failure_is_reported() -> None:
    with run_in_thread() as first:
        clash = ThreadedServer(port=first.port)
        with pytest.raises(RuntimeError, match="did not start") as info:
            clash.start()
        assert isinstance(info.value.__cause__, OSError)
        assert not clash.running


def test_trio_async_with_open_server() -> None:
    async def main() -> None:
        async with open_server(sweep_interval_s=0.5, seed=0) as srv:
            assert srv.running
            host, port = srv.host, srv.port
            stream = await trio.open_tcp_stream(host, port)
            buf = bytearray()

            async def expect(data: bytes) -> None:
                while len(buf) < len(data):
                    chunk = await stream.receive_some()
                    assert chunk, "server closed the connection"
                    buf.extend(chunk)
                assert bytes(buf[: len(data)]) == data
                del buf[: len(data)]

            await stream.send_all(cmd(b"PING"))
            await expect(b"+PONG\r\n")
            await stream.send_all(cmd(b"QLPUSH", b"trq", b"e1", b"hi"))
            await expect(b"+OK\r\n")
            await stream.send_all(cmd(b"QRPOP", b"trq", b"EX", b"0"))
            await expect(b"*2\r\n$2\r\ne1\r\n$2\r\nhi\r\n")
            await stream.aclose()
        assert not srv.running
        with pytest.raises(OSError, match="all attempts to connect"):
            await trio.open_tcp_stream(host, port)

    async def guarded() -> None:
        with trio.fail_after(TIMEOUT_S * 2):
            await main()

    trio.run(guarded)


def test_trio_open_server_stops_on_cancel_and_reports_start_failure() -> None:
    async def main() -> None:
        with trio.move_on_after(0.2) as scope:
            async with open_server() as srv:
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert not srv.running
        with run_in_thread() as first:
            with pytest.raises(RuntimeError, match="did not start") as info:
                async with open_server(port=first.port):
                    pass
            assert isinstance(info.value.__cause__, OSError)

    trio.run(main)


def test_options_are_shared_checked_and_keep_their_alias() -> None:
    options: ServerOptions = {"sweep_interval_s": 9.0, "sweep_interval": 0.25, "seed": 0}
    storages = [
        EmbeddedServer(**options).storage,
        ThreadedServer("127.0.0.1", 0, **options).storage,
        EmbeddedServer("127.0.0.1", 0, sweep_interval_s=9.0, sweep_interval=0.25).storage,
    ]
    for storage in storages:
        assert isinstance(storage, MemoryStorage)
        assert storage.engine.sweep_interval_s == 0.25  # the alias wins
    with pytest.raises(TypeError, match="sweep_intervall"):
        ThreadedServer(sweep_intervall=1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="sweep_intervall"):
        EmbeddedServer(sweep_intervall=1.0)  # type: ignore[call-arg]


def test_server_module_imports_without_trio() -> None:
    code = (
        "import sys; sys.modules['trio'] = None\n"
        "import okq_transports.server as s\n"
        "with s.run_in_thread() as srv: assert srv.running\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=TIMEOUT_S * 3)


def test_fixture_server(okq_server: ThreadedServer) -> None:
    with socket.create_connection((okq_server.host, okq_server.port), timeout=TIMEOUT_S) as s:
        s.sendall(cmd(b"PING"))
        assert s.recv(100) == b"+PONG\r\n"


def test_cli_serve_port_zero() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "okq_transports", "serve", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("okq server listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as s:
            s.sendall(cmd(b"PING"))
            assert s.recv(100) == b"+PONG\r\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT_S)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_cli_serve_caps() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["serve", "--port", "0", "--max-query-bytes", "100", "--max-notify-waits", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "okq_transports", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        address = ("127.0.0.1", int(line.rsplit(":", 1)[1]))
        with socket.create_connection(address, timeout=TIMEOUT_S) as s:
            s.sendall(cmd(b"QLPUSH", b"q", b"id", b"x" * 100))
            assert s.recv(100) == b""  # over 100 bytes held: closed without a reply
        with (
            socket.create_connection(address, timeout=TIMEOUT_S) as waiter,
            socket.create_connection(address, timeout=TIMEOUT_S) as other,
        ):
            waiter.sendall(cmd(b"QNOTIFY", b"10"))
            for _ in range(5):  # until the waiter holds the one wait (each try waits 1 s)
                other.sendall(cmd(b"QNOTIFY", b"1"))
                reply = other.recv(100)
                if reply != b"$-1\r\n":
                    break
            assert reply == b"-ERR unexpected server-side error\r\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()
