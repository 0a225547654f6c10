"""Command line of the model-based random sequences: ``python -m conformance.model_main``.

::

    python -m conformance.model_main --server HOST:PORT [--also HOST:PORT] [--seed N]
        [--runs K] [--steps S] [--out DIR] [--profile events|consumers] [--max-findings N]
        [--wake-delay SECONDS]

(``python -m conformance.model`` runs the same.)  Runs ``--runs`` random sequences per
profile against the server, prints sequences/s and steps/s, and for each failure the shrunk
sequence and, with ``--out``, the transcript written for it (replay it with
``python -m conformance --transcripts FILE``).  Exit status: 0 when nothing failed, 1 on a
finding, 2 on usage errors (bad arguments, unreachable server).

Owns: the argument parsing and the printing; the work is `conformance.model.run_model`.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

from .model import PROFILES, WAKE_DELAY_S, run_model
from .replay import parse_address

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run random okq command sequences against a server and the project's"
        " reference engine; shrink a failure to a transcript.",
        epilog="Exit status: 0 if nothing failed, 1 on a finding, 2 on usage errors.",
    )
    parser.add_argument("--server", required=True, metavar="HOST:PORT", help="the okq server")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="another okq server on the same Redis: connections are spread over all of them"
        " (may be repeated)",
    )
    parser.add_argument("--seed", type=int, default=0, help="picks the sequences (default 0)")
    parser.add_argument("--runs", type=int, default=20, help="sequences per profile (default 20)")
    parser.add_argument(
        "--steps", type=int, default=60, help="random steps per sequence (default 60)"
    )
    parser.add_argument("--out", metavar="DIR", help="write a transcript per finding here")
    parser.add_argument(
        "--profile",
        action="append",
        choices=sorted(PROFILES),
        help="only these kinds of sequence (may be repeated; default: all)",
    )
    parser.add_argument(
        "--wake-delay",
        type=float,
        default=WAKE_DELAY_S,
        metavar="SECONDS",
        help="pause between a QNOTIFY that waits and the push that wakes it (default"
        f" {WAKE_DELAY_S}: real okq subscribes a queue a moment after QREGISTER)",
    )
    parser.add_argument(
        "--max-findings",
        type=int,
        default=1,
        metavar="N",
        help="stop after N findings (default 1)",
    )
    return parser


def _reachable(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=5.0):
            return None
    except OSError as exc:
        return str(exc)


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m conformance.model") -> int:
    """Run the command line; return the exit status (see the module docstring)."""
    parser = _parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors (and --help)
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        host, port = parse_address(args.server)
        others = [parse_address(text) for text in args.also]
    except ValueError as exc:
        print(f"error: --server/--also: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.runs < 1 or args.steps < 0 or args.max_findings < 1 or not args.wake_delay >= 0:
        print(
            "error: --runs and --max-findings must be at least 1, --steps and --wake-delay"
            " at least 0",
            file=sys.stderr,
        )
        return EXIT_USAGE
    for address in ((host, port), *others):
        problem = _reachable(*address)
        if problem:
            print(f"error: cannot connect to {address[0]}:{address[1]}: {problem}", file=sys.stderr)
            return EXIT_USAGE
    report = run_model(
        host,
        port,
        seed=args.seed,
        runs=args.runs,
        steps=args.steps,
        out_dir=args.out,
        profiles=tuple(args.profile or PROFILES),
        max_findings=args.max_findings,
        wake_delay_s=args.wake_delay,
        others=others,
    )
    for line in report.format():
        print(line)
    return EXIT_OK if report.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main(prog="python -m conformance.model_main"))
