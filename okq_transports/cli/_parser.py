"""The ``okq`` argument parser: every subcommand, its arguments and its help.

Owns: `build_parser` and the parser class that makes a usage error one line (exit status 2)
and lets a subcommand's options come between its positionals.
Must not know: what a subcommand does (`okq_transports.cli._commands`), the clients, the
server.  ``bench`` and ``demo`` add their own options (`okq_transports.cli._bench`,
`okq_transports.cli._demo`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Final, NoReturn

import okq_proto

from ._bench import add_arguments as add_bench
from ._common import (
    EXIT_USAGE,
    CliError,
    claim_seconds,
    port_number,
    positive_int,
    positive_seconds,
)
from ._demo import add_arguments as add_demo

__all__ = ["build_parser"]


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


#: The help of ``-u/--url`` (``--server`` is its older spelling).
SERVER_HELP: Final = (
    "okq server: okq://HOST:PORT or HOST:PORT, comma-separated for failover"
    " (default: $OKQ_URL, else $OKQ_SERVER, else okq://127.0.0.1:4777)"
)


def build_parser() -> argparse.ArgumentParser:
    """The ``okq`` argument parser (exposed for the docs and the tests)."""
    common = _Parser(add_help=False)
    common.add_argument(
        "-u",
        "--url",
        "--server",
        dest="server",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=SERVER_HELP,
    )
    parser = _Parser(
        prog="okq",
        description="Push, inspect and consume okq queues; run a test server, a demo, a bench.",
        epilog="Exit status: 0 ok, 1 failure, 2 bad command line, 3 nothing there.",
    )
    parser.add_argument(
        "-u", "--url", "--server", dest="server", metavar="URL", default=None, help=SERVER_HELP
    )
    parser.add_argument("--version", action="version", version=f"okq {okq_proto.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sub(name: str, help_text: str, *, client: bool = True) -> argparse.ArgumentParser:
        parents = [common] if client else []
        p = commands.add_parser(name, help=help_text, description=help_text, parents=parents)
        assert isinstance(p, _Parser)
        p.intermixed = True
        return p

    p = sub(
        "serve",
        "run the embedded okq server in the foreground (memory storage, or Redis in okq's layout)",
        client=False,
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=4777, help="TCP port; 0 picks a free one")
    p.add_argument(
        "--sweep-interval",
        type=positive_seconds,
        default=10.0,
        help="restore sweep period in s (10)",
    )
    p.add_argument(
        "--default-expire", type=positive_int, default=30, help="QRPOP claim without EX (s)"
    )
    p.add_argument(
        "--noblock-workers", type=positive_int, default=128, help="NOBLOCK worker pool size"
    )
    p.add_argument("--seed", type=int, default=None, help="seed for QNOTIFY's random order")
    p.add_argument(
        "--max-query-bytes",
        type=positive_int,
        default=None,
        help="bytes one request may hold while read; past it the client is closed (1 GiB)",
    )
    p.add_argument(
        "--max-notify-waits",
        type=positive_int,
        default=None,
        help="QNOTIFY waits held at once; past it QNOTIFY gets a server-side error (1000)",
    )
    p.add_argument(
        "--tls-cert",
        metavar="FILE",
        default=None,
        help="serve TLS with this certificate chain (PEM); needs --tls-key",
    )
    p.add_argument(
        "--tls-key", metavar="FILE", default=None, help="the private key of --tls-cert (PEM)"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="keep queues in the Redis at URL (redis://HOST:PORT[/DB]), as okq does, "
        "shared with okq instances on it",
    )
    where.add_argument(
        "--redis-cluster",
        metavar="URL",
        default=None,
        help="keep queues in the Redis Cluster of the seed URL (redis://HOST:PORT)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")

    p = sub("push", "push one event (or one per stdin line with --lines); prints the id")
    p.add_argument("queue")
    p.add_argument("contents", nargs="?", default="-", help="the contents; '-' reads stdin")
    p.add_argument("--lines", action="store_true", help="one event per line of stdin")
    p.add_argument("--id", dest="event_id", help="the event id (default: a new UUID4)")
    p.add_argument("--high-priority", action="store_true", help="QRPUSH: consumed next")
    p.add_argument("--no-block", action="store_true", help="NOBLOCK: fast, duplicates unseen")
    _json_output(p, "print {queue, id} as JSON (one line per event with --lines)")

    p = sub("peek", "show the next event to be consumed (or the last with --last)")
    p.add_argument("queue")
    p.add_argument("--last", action="store_true", help="the most recently pushed event")
    _event_output(p)

    p = sub("pop", "claim the next event (ack it within --ex seconds)")
    p.add_argument("queue")
    _claim_option(p)
    _event_output(p)

    p = sub("ack", "acknowledge (delete) an event")
    p.add_argument("queue")
    p.add_argument("event_id", metavar="ID")
    _json_output(p, "print {queue, id, acked} as JSON")

    p = sub("flush", "delete every event of a queue")
    p.add_argument("queue")
    _json_output(p, "print {queue, flushed} as JSON")

    p = sub("ping", "check that the server answers")
    _json_output(p, "print {server, rtt_ms} as JSON")

    p = sub("status", "queue counters as a table (all queues, or the ones named)")
    p.add_argument("queues", nargs="*", metavar="QUEUE")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    p.add_argument("--interval", type=positive_seconds, default=1.0, help="--watch period in s (1)")
    p.add_argument(
        "--count", type=positive_int, default=None, help="--watch: stop after N refreshes"
    )

    p = sub("info", "the server's own one-line-per-queue summary (QINFO)")
    p.add_argument("queues", nargs="*", metavar="QUEUE")
    _json_output(p, "print the lines as a JSON array of strings")

    p = sub("consume", "consume events: print them, or run a command per event")
    p.add_argument("queues", nargs="+", metavar="QUEUE")
    p.add_argument(
        "--exec",
        dest="exec_cmd",
        metavar="CMD",
        help="shell command run per event, contents on stdin; exit status 0 acks",
    )
    _claim_option(p)
    _consumer_options(p)
    p.add_argument("--json", action="store_true", help="print events as JSON lines")

    p = sub(
        "worker",
        "run a Python handler per event: returning acks, returning False or raising does not",
    )
    p.add_argument(
        "handler",
        metavar="MODULE:FUNCTION",
        help="the handler, e.g. myapp.tasks:handle (called with each Delivery; may be async)",
    )
    p.add_argument("queues", nargs="+", metavar="QUEUE")
    _claim_option(p)
    _consumer_options(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")

    p = sub("dashboard", "serve a live web page of the queues (every server of -u side by side)")
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default="127.0.0.1:8765",
        help="where the page is served (127.0.0.1:8765; other than loopback: a warning)",
    )
    p.add_argument(
        "--allow-writes",
        action="store_true",
        help="let the page flush queues and push test events (each confirmed)",
    )
    p.add_argument(
        "--interval", type=positive_seconds, default=2.0, help="sampling period in s (2)"
    )

    sub("conformance", "check an okq server with the conformance suite (see: okq conformance -h)")
    add_bench(sub("bench", "push and consume N events; print rates and latency percentiles"))
    add_demo(sub("demo", "watch events flow: embedded server, producer, sync/asyncio/trio"))
    return parser


def _consumer_options(p: argparse.ArgumentParser) -> None:
    """The options ``consume`` and ``worker`` share (with `_claim_option`)."""
    p.add_argument("--concurrency", type=positive_int, default=1, help="events handled at once (1)")
    p.add_argument("--max-events", type=positive_int, default=None, help="stop after N events")


def _json_output(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--json", action="store_true", help=help_text)


def _claim_option(p: argparse.ArgumentParser) -> None:
    """``--ex SECONDS``, the one spelling of the claim length of ``pop`` and ``consume``
    (``--expire`` is its older spelling; -1 is taken for 0)."""
    p.add_argument(
        "--ex",
        "--expire",
        dest="ex",
        type=claim_seconds,
        default=30,
        metavar="SECONDS",
        help="claim length in s (30): acknowledge within it or the event is redelivered;"
        " 0: at-most-once (acknowledged as it is taken)",
    )


def _event_output(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print the event as JSON")
    group.add_argument("--raw", action="store_true", help="write only the contents, as is")
