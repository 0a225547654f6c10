"""Consumers cancelled at every byte of the replies they read, while waiting in QNOTIFY, and
while their handler runs, on the asyncio and the trio client.

A `DribbleProxy` sits on loopback between the client and the embedded server.  The first
connection through it is the consumer's: the server's replies (``QREGISTER``'s ``+OK``, the
``QNOTIFY`` name, the ``QRPOP`` event, the ``QACK`` count) reach the client one byte at a
time, and after byte ``k`` the rest waits while the test cancels the ``consume`` call (task
cancel, cancel scope).  Every ``k`` from 0 to the last byte is tried, for ``consume`` with
one worker and with two (the other worker's connection passes straight through) and for the
pull form (``deliveries()``).  Then the call is cancelled while waiting in QNOTIFY, while
the handler runs, and right after it returned true (the handler cancels the call itself),
also with the reply to that final ack held after each of its bytes.  After each
cancellation:

* the call returned promptly (within the shielded final-ack wait, `FINAL_ACK_S`);
* every socket of the call was closed by the client (the proxy sees each end), before the
  client itself is closed, and the server stops counting the consumer;
* a later request gets the right reply, on the same client and on a fresh one (no misroute),
  and every delivery the handler saw was the run's own event;
* the run's event is acked if and only if the handler returned true for it; otherwise it
  is still there, claimed (to be redelivered) or never claimed; and at each offset the
  outcome is one the protocol allows (`check_offsets`).

The cancelled consumers claim with ``EX 1`` and the server sweeps every 0.2 s, so at the end
a final consumer takes what is left within seconds: each test asserts that every queue
reaches total 0, so every claimed event was either acked or redelivered, and prints its
ledger (``pytest -s`` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

import okq_transports.asyncio as okq_asyncio
import okq_transports.trio as okq_trio
from okq_proto import Delivery, Event
from okq_transports._async.consume import FINAL_ACK_S
from okq_transports.server import ThreadedServer

pytestmark = pytest.mark.timeout(120)

DEADLINE_S = 10.0
#: A cancelled consume must return within this (a final ack may be shielded for 1 s).
PROMPT_S = 2.0
#: How long the client's consumer socket may take to close after the call returned.
CLOSE_S = 2.0
EVENT_ID = "i1"
CONTENTS = b"x"
REPEATS = 4  # runs of each non-byte cancellation point
POINT_MODES = ("wait", "hang", "cancel-then-true", "sync-cancel-then-true")


@pytest.fixture(scope="module")
def server() -> Any:
    with ThreadedServer(port=0, sweep_interval_s=0.2) as srv:
        yield srv


@dataclass
class _Link:
    """One proxied connection."""

    client: socket.socket
    upstream: socket.socket
    victim: bool
    ended: bool = False  # the up pump has finished
    proxy_shut: bool = False  # the proxy shut the client side (the server ended first)
    down: threading.Thread = field(default_factory=threading.Thread)


class DribbleProxy:
    """A loopback TCP proxy in front of `upstream`.

    The first connection is the victim: the server's bytes reach the client one at a time,
    and once `k` have (``k=None``: no limit) `reached` is set and the rest waits for
    `release`.  Later connections pass bytes straight through.  `victim_closed` is set when
    the client ends the victim connection (FIN or reset).
    """

    def __init__(self, upstream: tuple[str, int], k: int | None) -> None:
        self.upstream = upstream
        self.k = k
        self.reached = threading.Event()
        self.release = threading.Event()
        self.victim_closed = threading.Event()
        self.accepted = 0
        self.client_open = 0  # connections the client has not ended yet
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._start(self._accept_loop)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                with self._lock:
                    self.accepted += 1
                    self.client_open += 1
                    victim = self.accepted == 1
                # No Nagle: each byte leaves at once (with it, the last byte of a reply
                # waits ~40 ms for the client's delayed ACK, and bytes are coalesced).
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                upstream = socket.create_connection(self.upstream, timeout=DEADLINE_S)
                upstream.settimeout(None)
                link = _Link(client, upstream, victim)
                link.down = threading.Thread(target=self._down, args=(link,), daemon=True)
                link.down.start()
                self._start(self._up, link)

    def _up(self, link: _Link) -> None:
        """Client to server.  Its end is the client's end, unless the proxy shut it."""
        with contextlib.suppress(OSError):
            while data := link.client.recv(65536):
                link.upstream.sendall(data)
        with self._lock:
            link.ended = True
            if not link.proxy_shut:
                self.client_open -= 1
                if link.victim:
                    self.victim_closed.set()
        with contextlib.suppress(OSError):
            link.upstream.shutdown(socket.SHUT_RDWR)  # wakes the down pump
        link.down.join(DEADLINE_S)
        link.client.close()
        link.upstream.close()

    def _down(self, link: _Link) -> None:
        """Server to client, dribbled on the victim.  A failed send means the client is gone:
        the up pump sees that end by itself."""
        sent = 0
        limited = link.victim and self.k is not None
        if limited and self.k == 0:
            self.reached.set()
        with contextlib.suppress(OSError):
            while data := link.upstream.recv(65536):
                try:
                    if not limited or self.release.is_set():
                        link.client.sendall(data)
                        continue
                    for i in range(len(data)):
                        if sent == self.k:
                            self.release.wait(DEADLINE_S)
                            link.client.sendall(data[i:])
                            break
                        link.client.sendall(data[i : i + 1])
                        sent += 1
                        if sent == self.k:
                            self.reached.set()
                except OSError:
                    return
        # The server's side ended (or the up pump shut it after the client's end).
        with self._lock:
            if link.ended:
                return
            link.proxy_shut = True
        with contextlib.suppress(OSError):
            link.client.shutdown(socket.SHUT_RDWR)  # wakes the up pump

    def close(self) -> None:
        self.release.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop (Linux)
        self._listener.close()


def open_fds() -> int | None:
    """Open file descriptors of this process (None where /proc is missing)."""
    with contextlib.suppress(OSError):
        return len(os.listdir("/proc/self/fd"))
    return None


@dataclass
class Ledger:
    """What the runs of one test did, and what the final consumer found."""

    cancellations: int = 0
    byte_offsets: int = 0
    misroutes: list[str] = field(default_factory=list)
    leaked_sockets: list[str] = field(default_factory=list)
    slow_returns: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    acked: int = 0  # acked by the cancelled consumer (its handler returned true)
    claimed_pending: list[str] = field(default_factory=list)  # claimed, not acked: redelivery due
    unclaimed: list[str] = field(default_factory=list)  # never claimed before the cancellation
    redelivered: int = 0
    delivered_late: int = 0  # the final consumer's deliveries of never-claimed events
    slowest_return_s: float = 0.0
    offset_errors: list[str] = field(default_factory=list)  # see check_offsets
    queues: list[str] = field(default_factory=list)  # one event pushed to each
    watched: list[str] = field(default_factory=list)  # every queue a consumer registered for

    def summary(self, runtime: str) -> str:
        return (
            f"{runtime}: {self.cancellations} cancellations ({self.byte_offsets} at byte "
            f"offsets), {len(self.misroutes)} misroutes, {len(self.leaked_sockets)} leaked "
            f"sockets, {len(self.lost)} lost; events: {self.acked} acked by the cancelled "
            f"consumer, {self.redelivered} claimed and redelivered, {self.delivered_late} never "
            f"claimed and delivered later; slowest return {self.slowest_return_s * 1000:.0f} ms"
        )


class Runtime:
    """One async library's way of running and cancelling a consume call."""

    name = "?"

    def client(self, address: str) -> contextlib.AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    async def cancel_consume(
        self,
        consume: Callable[[], Awaitable[None]],
        ready: Callable[[Callable[[], bool]], Awaitable[None]],
        box: list[Callable[[], None]],
    ) -> float:
        """Run ``consume()``; once ``ready(done)`` returns, cancel it (or let the handler
        cancel it through ``box[0]()``).  Returns the seconds from cancel to return."""
        raise NotImplementedError


class AsyncioRuntime(Runtime):
    name = "asyncio"

    def client(self, address: str) -> contextlib.AbstractAsyncContextManager[Any]:
        return okq_asyncio.Client(address, notify_timeout_s=1, read_timeout_s=5.0)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def cancel_consume(
        self,
        consume: Callable[[], Awaitable[None]],
        ready: Callable[[Callable[[], bool]], Awaitable[None]],
        box: list[Callable[[], None]],
    ) -> float:
        task = asyncio.ensure_future(consume())
        asked: list[float] = []

        def cancel() -> None:
            asked.append(time.monotonic())
            task.cancel()

        box[:] = [cancel]
        try:
            try:
                await ready(task.done)
            except AssertionError:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise AssertionError("the consume call failed") from task.exception()
                raise
            if not asked:
                cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, DEADLINE_S)
                raise AssertionError("the consume call returned without being cancelled")
        finally:
            if not task.done():
                task.cancel()
        return time.monotonic() - asked[0]


class TrioRuntime(Runtime):
    name = "trio"

    def client(self, address: str) -> contextlib.AbstractAsyncContextManager[Any]:
        return okq_trio.open_client(address, notify_timeout_s=1)

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def cancel_consume(
        self,
        consume: Callable[[], Awaitable[None]],
        ready: Callable[[Callable[[], bool]], Awaitable[None]],
        box: list[Callable[[], None]],
    ) -> float:
        asked: list[float] = []
        returned: list[bool] = []
        scope = trio.CancelScope()

        def cancel() -> None:
            asked.append(time.monotonic())
            scope.cancel()

        box[:] = [cancel]
        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    with scope:
                        await consume()
                        returned.append(True)

                nursery.start_soon(run)
                await ready(lambda: bool(returned))
                if not asked:
                    cancel()
        assert not returned, "the consume call returned without being cancelled"
        return time.monotonic() - asked[0]


async def wait_for_flag(rt: Runtime, flag: Callable[[], bool], done: Callable[[], bool]) -> None:
    """Poll (bounded) until `flag`; fail at once if the consume call ended first."""
    deadline = time.monotonic() + DEADLINE_S
    while not flag():
        assert not done(), "the consume call ended before the cancellation point"
        assert time.monotonic() < deadline, "cancellation point never reached"
        await rt.sleep(0.001)


def replies(queue: str) -> list[bytes]:
    """The replies a consumer reads for one event: QREGISTER, QNOTIFY, QRPOP, QACK."""
    q = queue.encode()
    event = b"*2\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(EVENT_ID),
        EVENT_ID.encode(),
        len(CONTENTS),
        CONTENTS,
    )
    return [b"+OK\r\n", b"$%d\r\n%b\r\n" % (len(q), q), event, b":1\r\n"]


def reply_bytes(queue: str) -> bytes:
    """Every byte a consumer reads for one event."""
    return b"".join(replies(queue))


def check_offsets(outcomes: dict[int, str], queue: str) -> list[str]:
    """What the byte offsets must give whatever the timing: nothing is claimed before the
    QNOTIFY reply is whole, and always once a byte of the QRPOP reply came (the server ran
    the pop); nothing is acked before the event is whole, and always once a byte of the QACK
    reply came (the server ran the ack)."""
    ok, notify, event, _ = (len(r) for r in replies(queue))
    notify_end = ok + notify
    event_end = notify_end + event
    wrong = []
    for k, outcome in sorted(outcomes.items()):
        allowed = {"unclaimed", "claimed", "acked"}
        if k < notify_end:
            allowed = {"unclaimed"}
        elif k > notify_end:
            allowed.discard("unclaimed")
        if k < event_end:
            allowed.discard("acked")
        elif k > event_end:
            allowed = {"acked"}
        if outcome not in allowed:
            wrong.append(f"byte {k}: {outcome}, expected one of {sorted(allowed)}")
    return wrong


@dataclass
class Run:
    """One cancellation: its queue, what the handler saw and returned."""

    queue: str
    label: str
    seen: list[Delivery] = field(default_factory=list)
    returned_true: bool = False


async def check_after(
    rt: Runtime,
    ledger: Ledger,
    run: Run,
    proxy: DribbleProxy,
    client: Any,
    direct: Any,
    ref: Event,
    elapsed_s: float,
) -> str:
    """The checks made after every cancellation (see the module docstring).  Returns what
    became of the run's event: acked, claimed (redelivery due) or unclaimed."""
    ledger.cancellations += 1
    ledger.slowest_return_s = max(ledger.slowest_return_s, elapsed_s)
    if elapsed_s > PROMPT_S:
        ledger.slow_returns.append(f"{run.label}: {elapsed_s:.2f} s")
    proxy.release.set()  # the rest of the reply is on the wire now: it must reach nobody
    closed = await asyncio_or_trio_wait(rt, proxy.victim_closed, CLOSE_S)
    if not closed:
        ledger.leaked_sockets.append(run.label)
    # Every connection of the call (all its workers') is closed, before the client is.
    deadline = time.monotonic() + CLOSE_S
    while proxy.client_open and time.monotonic() < deadline:
        await rt.sleep(0.002)
    if proxy.client_open:
        ledger.leaked_sockets.append(f"{run.label}: {proxy.client_open} connections left open")
    for delivery in run.seen:
        if (delivery.queue, delivery.id, delivery.contents) != (run.queue, EVENT_ID, CONTENTS):
            ledger.misroutes.append(f"{run.label}: handler got {delivery!r}")
    # The same client (a new connection through the proxy) and a fresh one answer right.
    for who, c in (("same client", client), ("fresh client", direct)):
        got = await c.peek_next(ref.queue)
        if got != ref:
            ledger.misroutes.append(f"{run.label}: {who} read {got!r}")
    if run.label.startswith("wait"):
        return "none"  # no event in this run
    (st,) = await direct.status(run.queue)
    if st.total == 0:
        if run.returned_true:
            ledger.acked += 1
        else:
            ledger.lost.append(f"{run.label}: acked but the handler never returned true")
        return "acked"
    if run.returned_true:  # documented: a handler that returned true keeps its ack
        ledger.lost.append(f"{run.label}: the handler returned true, the ack was not kept")
    if st.processing == 1:
        ledger.claimed_pending.append(run.queue)
        return "claimed"
    ledger.unclaimed.append(run.queue)
    return "unclaimed"


async def asyncio_or_trio_wait(rt: Runtime, event: threading.Event, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not event.is_set():
        if time.monotonic() > deadline:
            return False
        await rt.sleep(0.002)
    return True


@contextlib.asynccontextmanager
async def proxied(
    rt: Runtime, server: ThreadedServer, k: int | None
) -> AsyncIterator[tuple[DribbleProxy, Any]]:
    proxy = DribbleProxy((server.host, server.port), k)
    try:
        async with rt.client(proxy.address) as client:
            yield proxy, client
    finally:
        proxy.close()


async def cancel_everywhere(rt: Runtime, server: ThreadedServer) -> Ledger:
    ledger = Ledger()
    tag = uuid.uuid4().hex[:6]
    ref = Event(f"{tag}-ref", "ref-id", b"reference")
    async with rt.client(server.address) as direct:
        await direct.push_event(ref)

        def handler_for(run: Run, box: list[Callable[[], None]], mode: str) -> Any:
            async def handler(delivery: Delivery) -> bool:
                run.seen.append(delivery)
                if mode == "hang":
                    await rt.sleep(30)  # cancelled here
                if mode == "cancel-then-true":
                    box[0]()  # the consume call is cancelled as the handler returns true
                run.returned_true = True
                return True

            return handler

        # 1. Every byte offset of the replies one event takes, for consume(), for consume()
        # with two workers (the first one's connection is dribbled, the event goes to either)
        # and for the pull form (deliveries(), acking each delivery as it comes).
        total = len(reply_bytes(f"{tag}b000"))
        for form in ("consume", "2-workers", "pull"):
            outcomes: dict[int, str] = {}
            for k in range(total + 1):
                run = Run(queue=f"{tag}{form[0]}{k:03d}", label=f"{form} byte {k}/{total}")
                assert len(reply_bytes(run.queue)) == total
                await direct.push_event(Event(run.queue, EVENT_ID, CONTENTS))
                async with proxied(rt, server, k) as (proxy, client):
                    box: list[Callable[[], None]] = []
                    if form != "pull":
                        consume = functools.partial(
                            client.consume,
                            handler_for(run, box, "ack"),
                            [run.queue],
                            expire_seconds=1,
                            concurrency=1 if form == "consume" else 2,
                        )
                    else:
                        consume = functools.partial(pull, client, run)

                    async def at_byte(
                        done: Callable[[], bool], proxy: DribbleProxy = proxy
                    ) -> None:
                        await wait_for_flag(rt, proxy.reached.is_set, done)
                        await rt.sleep(0.003)  # let the k bytes land in the client

                    elapsed = await rt.cancel_consume(consume, at_byte, box)
                    ledger.byte_offsets += 1
                    outcomes[k] = await check_after(
                        rt, ledger, run, proxy, client, direct, ref, elapsed
                    )
                ledger.queues.append(run.queue)
            if form != "2-workers":  # (there the other worker may take the event)
                for line in check_offsets(outcomes, f"{tag}b000"):
                    ledger.offset_errors.append(f"{form}: {line}")

        # 2. Waiting in QNOTIFY (nothing to do), 3. while the handler runs, 4. right after it
        # returned true (it cancels the call itself), 5. as 4 from a plain function, 6. as 4
        # with the reply to that final ack held after each of its bytes: the shielded wait
        # for it gives up after FINAL_ACK_S (the server has the QACK all the same).
        ack = len(replies(f"{tag}b000")[-1])
        points = [
            *((mode, i) for mode in POINT_MODES for i in range(REPEATS)),
            *(("held-ack", j) for j in range(ack)),
        ]
        for mode, i in points:
            run = Run(queue=f"{tag}{mode[:4]}{i}", label=f"{mode} #{i}")
            # held-ack: the proxy holds the QACK reply after its byte i
            hold = len(reply_bytes(run.queue)) - ack + i if mode == "held-ack" else None
            ledger.watched.append(run.queue)
            if mode != "wait":
                await direct.push_event(Event(run.queue, EVENT_ID, CONTENTS))
            async with proxied(rt, server, hold) as (proxy, client):
                box = []
                handler: Any = handler_for(
                    run, box, "cancel-then-true" if mode == "held-ack" else mode
                )
                if mode == "sync-cancel-then-true":

                    def handler(delivery: Delivery, run: Run = run, box: Any = box) -> bool:
                        run.seen.append(delivery)
                        box[0]()
                        run.returned_true = True
                        return True

                consume = functools.partial(client.consume, handler, [run.queue], expire_seconds=1)

                async def point(done: Callable[[], bool], run: Run = run, mode: str = mode) -> None:
                    if mode == "wait":

                        async def registered() -> bool:
                            (st,) = await direct.status(run.queue)
                            return bool(st.consumers == 1)

                        deadline = time.monotonic() + DEADLINE_S
                        while not await registered():
                            assert not done()
                            assert time.monotonic() < deadline
                            await rt.sleep(0.005)
                        await rt.sleep(0.02)  # inside the QNOTIFY wait by now
                    elif mode == "hang":
                        await wait_for_flag(rt, lambda: bool(run.seen), done)
                        await rt.sleep(0.01)
                    else:  # the handler cancels; wait for the call to end
                        await wait_for_flag(rt, lambda: bool(run.seen), done)

                elapsed = await rt.cancel_consume(consume, point, box)
                outcome = await check_after(rt, ledger, run, proxy, client, direct, ref, elapsed)
                if mode not in ("wait", "hang"):
                    assert run.returned_true
                if mode == "held-ack":
                    assert outcome == "acked"
                    assert elapsed >= FINAL_ACK_S * 0.9, "the final ack was not awaited"
            if mode != "wait":
                ledger.queues.append(run.queue)

        # Server side: every cancelled consumer's connection is gone (noticed once its
        # QNOTIFY 1 ends), so no queue still counts a consumer.
        async def unregistered() -> bool:
            statuses = await direct.status(*ledger.queues, *ledger.watched)
            return all(st.consumers == 0 for st in statuses)

        deadline = time.monotonic() + 5
        while not await unregistered():
            assert time.monotonic() < deadline, "a cancelled consumer is still registered"
            await rt.sleep(0.05)

        # The final consumer: what was not acked comes back (claims expire after 1 s).
        pending = set(ledger.claimed_pending) | set(ledger.unclaimed)
        late: dict[str, int] = {}

        async def all_empty() -> bool:
            statuses = await direct.status(*ledger.queues)
            return all(st.total == 0 for st in statuses)

        def final(delivery: Delivery) -> bool:
            late[delivery.queue] = late.get(delivery.queue, 0) + 1
            if (delivery.id, delivery.contents) != (EVENT_ID, CONTENTS):
                ledger.misroutes.append(f"final consumer got {delivery!r}")
            return True

        async def drain(done: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 15
            while not (set(late) >= pending and await all_empty()):
                assert not done(), "the final consumer ended"
                assert time.monotonic() < deadline, f"still pending: {pending - set(late)}"
                await rt.sleep(0.05)

        final_consume = functools.partial(direct.consume, final, ledger.queues, expire_seconds=30)
        await rt.cancel_consume(final_consume, drain, [])
        ledger.redelivered = sum(1 for q in ledger.claimed_pending if q in late)
        ledger.delivered_late = sum(1 for q in ledger.unclaimed if q in late)
        extra = set(late) - pending
        if extra:
            ledger.lost.append(f"acked events came back: {sorted(extra)}")
        assert await all_empty()
        assert await direct.peek_next(ref.queue) == ref
        await direct.flush(ref.queue)
    return ledger


async def pull(client: Any, run: Run) -> None:
    """The pull form of a consumer: each delivery is acked (the ack leaves with the next
    pop, or from the stream's close)."""
    async with client.deliveries(run.queue, expire_seconds=1) as stream:
        async for delivery in stream:
            run.seen.append(delivery)
            stream.ack(delivery)
            run.returned_true = True


def check(ledger: Ledger, runtime: str) -> None:
    print("\n" + ledger.summary(runtime))
    for name in ("misroutes", "leaked_sockets", "slow_returns", "lost", "offset_errors"):
        for line in getattr(ledger, name):
            print(f"  {name}: {line}")
    assert ledger.misroutes == []
    assert ledger.leaked_sockets == []
    assert ledger.slow_returns == []
    assert ledger.lost == []
    assert ledger.offset_errors == []
    assert ledger.byte_offsets >= 90
    assert ledger.redelivered == len(ledger.claimed_pending)
    assert ledger.delivered_late == len(ledger.unclaimed)
    assert ledger.acked + ledger.redelivered + ledger.delivered_late == len(ledger.queues)
    # Every kind of outcome happened: the offsets reach each side of the pop and the ack.
    assert ledger.acked > 0
    assert ledger.redelivered > 0
    assert ledger.unclaimed


def test_asyncio_consumer_cancelled_everywhere(server: ThreadedServer) -> None:
    fds = open_fds()

    async def main() -> Ledger:
        return await cancel_everywhere(AsyncioRuntime(), server)

    check(asyncio.run(main()), "asyncio")
    if fds is not None:
        assert_fds_back(fds)


def test_trio_consumer_cancelled_everywhere(server: ThreadedServer) -> None:
    fds = open_fds()

    async def main() -> Ledger:
        return await cancel_everywhere(TrioRuntime(), server)

    check(trio.run(main), "trio")
    if fds is not None:
        assert_fds_back(fds)


def assert_fds_back(before: int) -> None:
    """The process's open fds return to their count before the test (the server notices
    closed consumer connections only when their 1 s QNOTIFY ends, hence the wait)."""
    deadline = time.monotonic() + 5
    while (now := open_fds()) is not None and now > before:
        assert time.monotonic() < deadline, f"{now - before} file descriptors left open"
        time.sleep(0.05)


def test_asyncio_final_ack_survives_repeated_cancels(server: ThreadedServer) -> None:
    """asyncio only (a trio scope is cancelled once for good): the handler returned true and
    the call keeps being cancelled, every 10 ms, while its final ack's reply is held after
    each of its bytes.  The ack is kept and the call still returns after `FINAL_ACK_S`."""

    async def main() -> list[str]:
        wrong: list[str] = []
        tag = uuid.uuid4().hex[:6]
        async with okq_asyncio.Client(server.address) as direct:
            for j in range(len(b":1\r\n")):
                queue = f"{tag}r{j}"
                await direct.push_event(Event(queue, EVENT_ID, CONTENTS))
                proxy = DribbleProxy((server.host, server.port), len(reply_bytes(queue)) - 4 + j)
                try:
                    async with okq_asyncio.Client(proxy.address, notify_timeout_s=1) as client:
                        asked: list[float] = []
                        tasks: list[asyncio.Task[None]] = []

                        async def handler(
                            delivery: Delivery,
                            asked: list[float] = asked,
                            tasks: list[asyncio.Task[None]] = tasks,
                        ) -> bool:
                            asked.append(time.monotonic())
                            tasks[0].cancel()
                            return True

                        task = asyncio.ensure_future(
                            client.consume(handler, [queue], expire_seconds=1)
                        )
                        tasks.append(task)
                        cancels = 0
                        deadline = time.monotonic() + DEADLINE_S
                        while not task.done():
                            assert time.monotonic() < deadline
                            await asyncio.sleep(0.01)
                            if asked:
                                task.cancel()
                                cancels += 1
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                        elapsed = time.monotonic() - asked[0]
                        proxy.release.set()
                        if not await asyncio_or_trio_wait(
                            AsyncioRuntime(), proxy.victim_closed, CLOSE_S
                        ):
                            wrong.append(f"byte {j}: socket left open")
                    (st,) = await direct.status(queue)
                    if st.total != 0:
                        wrong.append(f"byte {j}: the ack was lost ({cancels} cancels)")
                    if not FINAL_ACK_S * 0.9 <= elapsed <= PROMPT_S:
                        wrong.append(f"byte {j}: returned after {elapsed:.2f} s")
                    if cancels < 10:
                        wrong.append(f"byte {j}: only {cancels} extra cancels")
                finally:
                    proxy.close()
        return wrong

    assert asyncio.run(main()) == []
