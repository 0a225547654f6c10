"""The ``okq`` command line (also ``python -m okq_transports``).

Owns: parsing the command line (argparse, no dependency), running each subcommand over the
sync client, and the error contract: a failure is one line on stderr and a non-zero exit status
(`EXIT_ERROR` 1 for failures, `EXIT_USAGE` 2 for a bad command line, `EXIT_EMPTY` 3 when
there was nothing to peek, pop or ack), never a traceback.  ``demo`` and ``bench`` live in
`okq_transports._cli_demo` and `okq_transports._cli_bench`.
Must not know: the wire protocol (the sync client and `okq_proto` speak it).

Run ``okq --help`` or ``okq SUBCOMMAND --help`` for the details; ``docs/cli.md`` has examples.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Final, NoReturn

from okq_proto import (
    Delivery,
    Event,
    LocalProtocolError,
    OkqError,
    PushFlag,
    QAck,
    QRPop,
    to_wire,
)

from ._cli_common import (
    EXIT_EMPTY,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    event_json,
    event_line,
    one_line,
    resolve_server,
    show,
    status_json,
    status_table,
)

if TYPE_CHECKING:
    from .sync import Client

__all__ = ["build_parser", "main"]

_PUSH_BATCH: Final = 1000
#: Commands that run for a while and let the clients' warnings (reconnects...) through.
_CHATTY: Final = frozenset({"serve", "consume", "bench", "demo"})


# -- argument types: each failure is one line, never a traceback ------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


_expire = _int_at_least(-1)
_port = _int_at_least(0)
_count = _int_at_least(1)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``okq push: error: ...``) and exit status 2,
    and a subcommand's options may come between its positionals (``okq push q --id X text``:
    plain argparse would leave ``text`` unrecognised)."""

    intermixed = False
    _parsing = False

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: error: {message} (see '{self.prog} --help')", EXIT_USAGE)

    def parse_known_args(  # type: ignore[override]  # same signature, narrower types
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if not self.intermixed or self._parsing:
            return super().parse_known_args(args, namespace)
        # parse_known_intermixed_args calls back into parse_known_args: guard the recursion
        self._parsing = True
        try:
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


# -- the parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``okq`` argument parser (exposed for the docs and the tests)."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=argparse.SUPPRESS,
        help="okq server (default: $OKQ_SERVER or 127.0.0.1:4777)",
    )
    parser = _Parser(
        prog="okq",
        description="Push, inspect and consume okq queues; run a test server, a demo, a bench.",
        epilog="Exit status: 0 ok, 1 failure, 2 bad command line, 3 nothing there.",
    )
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=None,
        help="okq server (default: $OKQ_SERVER or 127.0.0.1:4777)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sub(name: str, help_text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text, parents=[common])
        assert isinstance(p, _Parser)
        p.intermixed = True
        return p

    p = sub("serve", "run the embedded okq server (memory storage) in the foreground")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=4777, help="TCP port; 0 picks a free one")
    p.add_argument(
        "--sweep-interval", type=_seconds, default=10.0, help="restore sweep period in s (10)"
    )
    p.add_argument("--default-expire", type=_count, default=30, help="QRPOP claim without EX (s)")
    p.add_argument("--noblock-workers", type=_count, default=128, help="NOBLOCK worker pool size")
    p.add_argument("--seed", type=int, default=None, help="seed for QNOTIFY's random order")
    p.add_argument(
        "--max-query-bytes",
        type=_count,
        default=None,
        help="bytes one request may hold while read; past it the client is closed (1 GiB)",
    )
    p.add_argument(
        "--max-notify-waits",
        type=_count,
        default=None,
        help="QNOTIFY waits held at once; past it QNOTIFY gets a server-side error (1000)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")

    p = sub("push", "push one event (or one per stdin line with --lines); prints the id")
    p.add_argument("queue")
    p.add_argument("contents", nargs="?", default="-", help="the contents; '-' reads stdin")
    p.add_argument("--lines", action="store_true", help="one event per line of stdin")
    p.add_argument("--id", dest="event_id", help="the event id (default: a new UUID4)")
    p.add_argument("--high-priority", action="store_true", help="QRPUSH: consumed next")
    p.add_argument("--no-block", action="store_true", help="NOBLOCK: fast, duplicates unseen")

    p = sub("peek", "show the next event to be consumed (or the last with --last)")
    p.add_argument("queue")
    p.add_argument("--last", action="store_true", help="the most recently pushed event")
    _event_output(p)

    p = sub("pop", "claim the next event (ack it within --ex seconds)")
    p.add_argument("queue")
    p.add_argument(
        "--ex", type=_int_at_least(0), default=30, help="claim length in s; 0: at-most-once"
    )
    _event_output(p)

    p = sub("ack", "acknowledge (delete) an event")
    p.add_argument("queue")
    p.add_argument("event_id", metavar="ID")

    p = sub("flush", "delete every event of a queue")
    p.add_argument("queue")

    sub("ping", "check that the server answers")

    p = sub("status", "queue counters as a table (all queues, or the ones named)")
    p.add_argument("queues", nargs="*", metavar="QUEUE")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    p.add_argument("--interval", type=_seconds, default=1.0, help="--watch period in s (1)")
    p.add_argument("--count", type=_count, default=None, help="--watch: stop after N refreshes")

    p = sub("info", "the server's own one-line-per-queue summary (QINFO)")
    p.add_argument("queues", nargs="*", metavar="QUEUE")

    p = sub("consume", "consume events: print them, or run a command per event")
    p.add_argument("queues", nargs="+", metavar="QUEUE")
    p.add_argument(
        "--exec",
        dest="exec_cmd",
        metavar="CMD",
        help="shell command run per event, contents on stdin; exit status 0 acks",
    )
    p.add_argument("--concurrency", type=_count, default=1, help="events handled at once (1)")
    p.add_argument(
        "--expire", type=_expire, default=30, help="claim length in s (30); -1: at-most-once"
    )
    p.add_argument("--max-events", type=_count, default=None, help="stop after N events")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")

    from ._cli_bench import add_arguments as add_bench
    from ._cli_demo import add_arguments as add_demo

    add_bench(sub("bench", "push and consume N events; print rates and latency percentiles"))
    add_demo(sub("demo", "watch events flow: embedded server, producer, sync/asyncio/trio"))
    return parser


def _event_output(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print the event as JSON")
    group.add_argument("--raw", action="store_true", help="write only the contents, as is")


# -- running ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``okq`` with `argv` (default: ``sys.argv[1:]``); returns the exit status.

    Never raises for bad input or an unreachable server: the error goes to stderr as one line.
    """
    logger = logging.getLogger("okq")
    level = logger.level
    try:
        args = build_parser().parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = _COMMANDS[args.command]
        if args.command not in _CHATTY:
            # a one-shot command reports its failure as its one line; the client's own
            # warnings ("cannot connect ...") would only repeat it
            logger.setLevel(logging.CRITICAL)
        return handler(args)
    except CliError as exc:
        _error(str(exc), prefixed=str(exc).startswith("okq"))
        return exc.code
    except LocalProtocolError as exc:
        _error(one_line(exc))
        return EXIT_USAGE
    except OkqError as exc:
        _error(one_line(exc) or type(exc).__name__)
        return EXIT_ERROR
    except BrokenPipeError:
        # `okq status | head`: the reader left; exit quietly (Python docs, "SIGPIPE")
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:
        _error(one_line(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    finally:
        logger.setLevel(level)


def _error(message: str, *, prefixed: bool = False) -> None:
    print(message if prefixed else f"okq: error: {message}", file=sys.stderr, flush=True)


def _server(args: argparse.Namespace) -> str:
    return resolve_server(getattr(args, "server", None))[0]


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[Client]:
    from .sync import Client

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
    from .server import ServerOptions, serve

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
    serve(args.host, args.port, **options)
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
    _out(event_id)
    return EXIT_OK


def _push_lines(args: argparse.Namespace, flags: PushFlag) -> int:
    failed = 0
    with _client(args) as client:
        batch: list[bytes] = []

        def flush_batch() -> None:
            nonlocal failed
            for outcome in client.push_many(args.queue, batch, flags):
                if outcome.ok:
                    _out(outcome.id)
                else:
                    failed += 1
                    _error(f"push {show(outcome.id)}: {one_line(outcome.error)}")
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
        _error(f"queue {show(args.queue)} has no waiting event")
        return EXIT_EMPTY
    _print_event(event, args)
    return EXIT_OK


def _cmd_pop(args: argparse.Namespace) -> int:
    with _client(args) as client:
        event = client.execute(QRPop(to_wire(args.queue), args.ex))
    if event is None:
        _error(f"queue {show(args.queue)} has no waiting event")
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
        _error(
            f"no event {show(args.event_id)} in queue {show(args.queue)} "
            "(already acked, flushed, or popped with --ex 0)"
        )
        return EXIT_EMPTY
    _out("acked")
    return EXIT_OK


def _cmd_flush(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.flush(args.queue)
    _out(f"flushed {show(args.queue)}")
    return EXIT_OK


def _cmd_ping(args: argparse.Namespace) -> int:
    with _client(args) as client:
        start = time.perf_counter()
        client.ping()
        elapsed_ms = (time.perf_counter() - start) * 1000
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
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """`okq_transports.sync.stop_on_signals` for the block: Ctrl-C and SIGTERM set `stop` (a
    graceful stop), a second Ctrl-C interrupts; the previous handlers are back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python installs signal handlers in the main thread only
        return
    from .sync import stop_on_signals

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    stop_on_signals(_Announced(stop), signals)
    try:
        yield
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
        _error(f"--exec timed out on event {show(delivery.id)}: the claim expired; not acked")
        return False
    except OSError as exc:
        _error(f"--exec failed on event {show(delivery.id)}: {one_line(exc)}")
        return False
    if done.returncode != 0:
        _error(f"--exec exited {done.returncode} on event {show(delivery.id)}: not acked")
    return done.returncode == 0


def _cmd_consume(args: argparse.Namespace) -> int:
    stop = threading.Event()
    lock = threading.Lock()
    handled = 0

    def handler(delivery: Delivery) -> bool:
        nonlocal handled
        if args.exec_cmd is not None:
            ok = _run_exec(args.exec_cmd, delivery)
        else:
            with lock:
                _print_event(delivery, args, with_queue=True)
            ok = True
        with lock:
            handled += 1
            if args.max_events is not None and handled >= args.max_events:
                stop.set()
        return ok

    with _client(args) as client, _stop_on_signals(stop):
        client.consume(
            handler,
            args.queues,
            expire_seconds=args.expire,
            concurrency=args.concurrency,
            stop=stop,
        )
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from ._cli_bench import run

    return run(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._cli_demo import run

    return run(args)


_COMMANDS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
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
    "bench": _cmd_bench,
    "demo": _cmd_demo,
}

if __name__ == "__main__":
    raise SystemExit(main())
