"""What each ``okq`` subcommand does, over the sync client (``serve``: the embedded server).

Owns: one function per subcommand (`COMMANDS` maps each name to it), which of them let the
clients' warnings through (`CHATTY`), the output of events and tables, ``consume --exec`` and
the signal handling of ``consume``.  ``demo`` and ``bench`` live in
`okq_transports.cli._demo` and `okq_transports.cli._bench`.
Must not know: the wire protocol (the sync client and `okq_proto` speak it), argparse's
layout (`okq_transports.cli._parser`) or the exit-status contract's shape (`okq_transports.cli`
turns what these raise into one line and a status).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final, NoReturn

from okq_proto import (
    Delivery,
    Event,
    OkqError,
    PushFlag,
    QAck,
    QRPop,
    parse_address,
    parse_addresses,
    to_wire,
)

from ._common import (
    EXIT_EMPTY,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    event_json,
    event_line,
    one_line,
    record_json,
    resolve_server,
    show,
    status_json,
    status_table,
)

if TYPE_CHECKING:
    from okq_transports.server import ServerOptions
    from okq_transports.sync import Client

__all__ = ["CHATTY", "COMMANDS", "error"]

_PUSH_BATCH: Final = 1000
#: Commands that run for a while and let the clients' warnings (reconnects...) through.
CHATTY: Final = frozenset({"serve", "consume", "worker", "dashboard", "bench", "demo"})


def error(message: str, *, prefixed: bool = False) -> None:
    """Report `message` as one line on stderr (``okq: error: ...`` unless `prefixed`)."""
    print(message if prefixed else f"okq: error: {message}", file=sys.stderr, flush=True)


def _server(args: argparse.Namespace) -> str:
    return resolve_server(getattr(args, "server", None))[0]


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[Client]:
    from okq_transports.sync import Client

    with Client(address=_server(args)) as client:
        yield client


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _print_event(event: Event, args: argparse.Namespace, *, with_queue: bool = False) -> None:
    if getattr(args, "raw", False):
        sys.stdout.buffer.write(event.contents)
        sys.stdout.buffer.flush()
    elif args.json:
        _out(event_json(event))
    else:
        _out(event_line(event, with_queue=with_queue))


def _cmd_serve(args: argparse.Namespace) -> int:
    from okq_transports.server import serve

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    options: ServerOptions = {
        "sweep_interval_s": args.sweep_interval,
        "default_expire_s": args.default_expire,
        "noblock_workers": args.noblock_workers,
        "seed": args.seed,
    }
    if args.max_query_bytes is not None:
        options["max_query_bytes"] = args.max_query_bytes
    if args.max_notify_waits is not None:
        options["max_notify_waits"] = args.max_notify_waits
    if args.tls_cert is not None or args.tls_key is not None:
        options["ssl"] = _server_tls(args.tls_cert, args.tls_key)
    if args.redis is not None or args.redis_cluster is not None:
        return _serve_on_redis(args, options)
    serve(args.host, args.port, **options)
    return EXIT_OK


def _server_tls(cert: str | None, key: str | None) -> ssl.SSLContext:
    """The server-side TLS context of ``--tls-cert`` and ``--tls-key``.

    Raises:
        CliError: one without the other (usage, 2), or files that do not load (1).
    """
    if cert is None or key is None:
        raise CliError("okq serve: error: --tls-cert and --tls-key go together", EXIT_USAGE)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(
            f"cannot load the TLS certificate {cert}: {one_line(exc)}", EXIT_ERROR
        ) from exc
    return context


def _serve_on_redis(args: argparse.Namespace, options: ServerOptions) -> int:
    """``okq serve --redis URL`` / ``--redis-cluster URL``: the server in a thread over a
    `RedisStorage`, until SIGINT or SIGTERM.  A bad URL is a usage error (2); a Redis that
    cannot be reached, or a port in use, a failure (1)."""
    from okq_transports.server import RedisStorage, ThreadedServer

    cluster = args.redis_cluster is not None
    url = args.redis_cluster if cluster else args.redis
    try:
        storage = RedisStorage(
            url,
            cluster=cluster,
            sweep_interval_s=args.sweep_interval,
            default_expire_s=args.default_expire,
        )
    except ValueError as exc:
        raise CliError(f"okq serve: error: {exc}", EXIT_USAGE) from exc
    server = ThreadedServer(args.host, args.port, storage=storage, **options)
    try:
        server.start()
    except RuntimeError as exc:
        cause = exc.__cause__ or exc
        where = "Redis Cluster" if cluster else "Redis"
        raise CliError(f"cannot serve on {where} {url}: {one_line(cause)}", EXIT_ERROR) from exc
    print(f"okq server listening on {server.address}", flush=True)
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        stop.wait()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        server.stop()
    print("okq server stopped", file=sys.stderr, flush=True)
    return EXIT_OK


def _cmd_push(args: argparse.Namespace) -> int:
    flags = PushFlag.NORMAL
    if args.high_priority:
        flags |= PushFlag.HIGH_PRIORITY
    if args.no_block:
        flags |= PushFlag.NO_BLOCK
    if args.lines:
        if args.contents != "-":
            raise CliError("push: --lines reads stdin; give no CONTENTS", EXIT_USAGE)
        if args.event_id is not None:
            raise CliError("push: --id names one event; it cannot be used with --lines", EXIT_USAGE)
        return _push_lines(args, flags)
    contents = sys.stdin.buffer.read() if args.contents == "-" else os.fsencode(args.contents)
    with _client(args) as client:
        if args.event_id is None:
            event_id = client.push(args.queue, contents, flags)
        else:
            event_id = args.event_id
            client.push_event(Event(args.queue, event_id, contents), flags)
    _out(record_json(args.queue, id=event_id) if args.json else event_id)
    return EXIT_OK


def _push_lines(args: argparse.Namespace, flags: PushFlag) -> int:
    failed = 0
    with _client(args) as client:
        batch: list[bytes] = []

        def flush_batch() -> None:
            nonlocal failed
            for outcome in client.push_many(args.queue, batch, flags):
                if outcome.ok:
                    _out(record_json(args.queue, id=outcome.id) if args.json else outcome.id)
                else:
                    failed += 1
                    if args.json:  # the failure on stdout too, in line with the others
                        _out(record_json(args.queue, id=outcome.id, error=one_line(outcome.error)))
                    error(f"push {show(outcome.id)}: {one_line(outcome.error)}")
            batch.clear()

        for line in sys.stdin.buffer:
            batch.append(line[:-1] if line.endswith(b"\n") else line)
            if len(batch) >= _PUSH_BATCH:
                flush_batch()
        if batch:
            flush_batch()
    return EXIT_ERROR if failed else EXIT_OK


def _cmd_peek(args: argparse.Namespace) -> int:
    with _client(args) as client:
        event = client.peek_last(args.queue) if args.last else client.peek_next(args.queue)
    if event is None:
        error(f"queue {show(args.queue)} has no waiting event")
        return EXIT_EMPTY
    _print_event(event, args)
    return EXIT_OK


def _cmd_pop(args: argparse.Namespace) -> int:
    with _client(args) as client:
        event = client.execute(QRPop(to_wire(args.queue), args.ex))
    if event is None:
        error(f"queue {show(args.queue)} has no waiting event")
        return EXIT_EMPTY
    _print_event(event, args)
    if args.ex > 0 and sys.stderr.isatty():
        print(
            f"claimed for {args.ex} s; acknowledge with: okq ack {args.queue} {event.id}",
            file=sys.stderr,
        )
    return EXIT_OK


def _cmd_ack(args: argparse.Namespace) -> int:
    with _client(args) as client:
        removed = client.execute(QAck(to_wire(args.queue), to_wire(args.event_id)))
    if not removed:
        error(
            f"no event {show(args.event_id)} in queue {show(args.queue)} "
            "(already acked, flushed, or popped with --ex 0)"
        )
        return EXIT_EMPTY
    _out(record_json(args.queue, id=args.event_id, acked=True) if args.json else "acked")
    return EXIT_OK


def _cmd_flush(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.flush(args.queue)
    _out(record_json(args.queue, flushed=True) if args.json else f"flushed {show(args.queue)}")
    return EXIT_OK


def _cmd_ping(args: argparse.Namespace) -> int:
    with _client(args) as client:
        start = time.perf_counter()
        client.ping()
        elapsed_ms = (time.perf_counter() - start) * 1000
    if args.json:
        _out(record_json(server=_server(args), rtt_ms=round(elapsed_ms, 3)))
    else:
        _out(f"PONG from {_server(args)} in {elapsed_ms:.2f} ms")
    return EXIT_OK


# -- status -----------------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if not args.watch:
            entries = client.status(*args.queues)
            _out(status_json(entries) if args.json else "\n".join(status_table(entries)))
            return EXIT_OK
        return _watch(client, args)


def _watch(client: Client, args: argparse.Namespace) -> int:
    live = sys.stdout.isatty()
    drawn = 0
    frame = 0
    try:
        while args.count is None or frame < args.count:
            entries = client.status(*args.queues)
            if args.json:
                lines = [status_json(entries)]
            else:
                stamp = time.strftime("%H:%M:%S")
                title = f"okq status  {_server(args)}  {stamp}  (every {args.interval:g} s"
                lines = [title + ", Ctrl-C to stop)", *status_table(entries)]
            if live and drawn:
                sys.stdout.write(f"\x1b[{drawn}F\x1b[J")  # back to the frame's start, clear
            elif frame and not args.json:
                sys.stdout.write("\n")
            _out("\n".join(lines))
            drawn = len(lines)
            frame += 1
            if args.count is None or frame < args.count:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        lines = client.info(*args.queues)
    if args.json:
        _out(json.dumps([line.rstrip() for line in lines], ensure_ascii=False))
        return EXIT_OK
    for line in lines:
        _out(show(line.rstrip()))
    return EXIT_OK


# -- consume ----------------------------------------------------------------------------------


class _Announced:
    """The stop flag the signal handlers set: says so on stderr, then sets `stop`."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def is_set(self) -> bool:
        return self._stop.is_set()

    def set(self) -> None:
        print("okq: stopping (finishing events in hand)...", file=sys.stderr, flush=True)
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stop.wait(timeout)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """`okq_transports.sync.stop_on_signals` for the block: Ctrl-C and SIGTERM set `stop` (a
    graceful stop), a second one quits at once (`_force_quit`); the previous handlers are
    back afterwards.  Yields the list of the signals received (the first, that stopped)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # Python installs signal handlers in the main thread only
        return
    from okq_transports.sync import stop_on_signals

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:  # what stop_on_signals puts back after the first signal
        signal.signal(sig, _force_quit)
    stop_on_signals(_Announced(stop), signals, on_signal=received.append)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            if old is not None:  # None: a handler not installed from Python; leave it
                signal.signal(sig, old)


def _run_exec(command: str, delivery: Delivery) -> bool:
    """Run `command` with the event's contents on stdin; true (ack) on exit status 0.

    The command gets ``OKQ_QUEUE`` and ``OKQ_EVENT_ID`` in its environment and is killed when
    the claim expires (the event is redelivered anyway, so finishing it is wasted work).
    """
    env = dict(os.environ, OKQ_QUEUE=delivery.queue, OKQ_EVENT_ID=delivery.id)
    timeout = delivery.remaining(time.monotonic()) if delivery.needs_ack else None
    try:
        done = subprocess.run(
            command,
            shell=True,
            input=delivery.contents,
            env=env,
            timeout=None if timeout is None else max(timeout, 0.001),
            check=False,
        )
    except subprocess.TimeoutExpired:
        error(f"--exec timed out on event {show(delivery.id)}: the claim expired; not acked")
        return False
    except OSError as exc:
        error(f"--exec failed on event {show(delivery.id)}: {one_line(exc)}")
        return False
    if done.returncode != 0:
        error(f"--exec exited {done.returncode} on event {show(delivery.id)}: not acked")
    return done.returncode == 0


def _cmd_consume(args: argparse.Namespace) -> int:
    lock = threading.Lock()

    def handler(delivery: Delivery) -> bool:
        if args.exec_cmd is not None:
            return _run_exec(args.exec_cmd, delivery)
        with lock:
            _print_event(delivery, args, with_queue=True)
        return True

    return _consume_with(args, handler)


def _cmd_worker(args: argparse.Namespace) -> int:
    from ._worker import Handler, load_handler

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = Handler(load_handler(args.handler))
    kind = "coroutine function" if handler.is_async else "function"
    queues = ", ".join(show(q) for q in args.queues)
    print(
        f"okq worker: {args.handler} ({kind}) on {queues} at {_server(args)},"
        f" {args.concurrency} at once; Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        return _consume_with(args, handler)
    finally:
        handler.close()


def _consume_with(args: argparse.Namespace, handler: Callable[[Delivery], bool]) -> int:
    """``consume`` and ``worker``: run `handler` per event with the options they share
    (queues, ``--concurrency``, ``--ex``, ``--max-events``) until ``--max-events`` or a
    signal; the exit status as `exit_after` says."""
    stop = threading.Event()
    lock = threading.Lock()
    handled = 0

    def counted(delivery: Delivery) -> bool:
        nonlocal handled
        try:
            return handler(delivery)
        finally:
            with lock:
                handled += 1
                if args.max_events is not None and handled >= args.max_events:
                    stop.set()

    with _client(args) as client, _stop_on_signals(stop) as received:
        client.consume(
            counted,
            args.queues,
            expire_seconds=args.ex,
            concurrency=args.concurrency,
            stop=stop,
        )
    return exit_after(received)


def exit_after(received: list[int]) -> int:
    """The exit status of a consumer that stopped: 128 + the signal that stopped it (130 for
    Ctrl-C, 143 for SIGTERM, as shells report), 0 when it stopped by itself."""
    return 128 + received[0] if received else EXIT_OK


def _force_quit(signum: int = signal.SIGINT, frame: object = None) -> NoReturn:
    """The handler of a second Ctrl-C (or SIGTERM) during a graceful stop: leave now (exit
    130), handlers in hand unfinished; their events are not acked, so the server redelivers
    them after their claim.  A handler may be waiting for a thread or a command that nothing
    can interrupt: only ending the process is sure to be prompt."""
    print("okq: interrupted again, quitting without waiting", file=sys.stderr, flush=True)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    os._exit(130)  # threads running handlers cannot be stopped; the process can


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from okq_transports.dashboard import Dashboard, listen_warning

    try:
        if args.listen.endswith(":0"):  # a free port; parse_address wants 1-65535
            host, port = parse_address(args.listen[:-2] + ":1")[0], 0
        else:
            host, port = parse_address(args.listen)
    except OkqError as exc:
        raise CliError(f"okq dashboard: error: --listen: {one_line(exc)}", EXIT_USAGE) from exc
    addresses = [
        f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in parse_addresses(_server(args))
    ]
    try:
        dashboard = Dashboard(
            addresses, listen=(host, port), allow_writes=args.allow_writes, interval_s=args.interval
        )
    except OSError as exc:
        raise CliError(f"cannot listen on {args.listen}: {one_line(exc)}", EXIT_ERROR) from exc
    warning = listen_warning(host, allow_writes=args.allow_writes)
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    with dashboard:
        mode = "writes allowed" if args.allow_writes else "read-only"
        print(f"okq dashboard: {dashboard.url} ({mode}); Ctrl-C stops", flush=True)
        try:
            stop.wait()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from ._bench import run

    return run(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run

    return run(args)


def _cmd_conformance(args: argparse.Namespace) -> int:
    # `okq conformance ...` is normally handed to the suite before parsing (see _conformance);
    # this is reached only when options came first, e.g. `okq -v conformance`.
    from ._conformance import run

    return run(["--server", args.server] if args.server else [])


COMMANDS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "serve": _cmd_serve,
    "push": _cmd_push,
    "peek": _cmd_peek,
    "pop": _cmd_pop,
    "ack": _cmd_ack,
    "flush": _cmd_flush,
    "ping": _cmd_ping,
    "status": _cmd_status,
    "info": _cmd_info,
    "consume": _cmd_consume,
    "worker": _cmd_worker,
    "dashboard": _cmd_dashboard,
    "bench": _cmd_bench,
    "demo": _cmd_demo,
    "conformance": _cmd_conformance,
}
