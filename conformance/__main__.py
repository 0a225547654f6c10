"""Command line of the okq conformance suite: ``python -m conformance``.

Runs every recorded transcript and the D1-D3 defect probes against one okq
server and prints PASS/FAIL/N/A per check, then a closing line
``N passed, M failed`` (followed by ``, K skipped`` when some checks were not
applicable). Exit status: 0 when nothing failed, 1 when something failed,
2 for usage errors (bad arguments, unreachable server, ``-k`` matching nothing,
unreadable transcripts).
"""

from __future__ import annotations

import argparse
import fnmatch
import socket
import sys
from collections.abc import Sequence

from ._check import SemanticCheck
from ._report import Result, format_result
from ._transcripts import TRANSCRIPTS_DIR, TranscriptError, load_transcripts
from .defects import DefectProbe, defect_probes
from .replay import Check, parse_address, run_scenarios

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description="Check an okq server against byte-exact recordings of the real okq server,"
        " then probe for the known okq defects D1-D3.",
        epilog="Exit status: 0 if nothing failed, 1 if a check failed, 2 on usage errors.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="okq server host (127.0.0.1)")
    parser.add_argument("--port", type=int, default=4777, help="okq server port (4777)")
    parser.add_argument(
        "--redis",
        metavar="HOST:PORT",
        help="the Redis the server stores its data in: FLUSHALL before each scenario and run"
        " the requires_redis scenarios (otherwise reported N/A, counted as skipped)",
    )
    parser.add_argument(
        "-k",
        dest="patterns",
        action="append",
        metavar="PATTERN",
        help="only checks whose name contains PATTERN (case-insensitive; * ? [] globs"
        " allowed); may be repeated",
    )
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=1,
        metavar="N",
        help="run up to N independent checks at once (default 1); checks that need an"
        " empty server still run alone",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON report instead of text")
    parser.add_argument(
        "--transcripts",
        metavar="PATH",
        default=None,
        help=f"folder (or file) of transcripts (default: {TRANSCRIPTS_DIR})",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--defects", action="store_true", help="run only the defect probes D1-D3")
    which.add_argument(
        "--no-defects", action="store_true", help="run only the transcripts, no defect probes"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="skip D3's redelivery check (which waits ~13 s for a restore sweep)",
    )
    return parser


def _matches(name: str, patterns: Sequence[str] | None) -> bool:
    if not patterns:
        return True
    lowered = name.lower()
    for pattern in patterns:
        pat = pattern.lower()
        if any(c in pat for c in "*?[") and fnmatch.fnmatchcase(lowered, pat):
            return True
        if pat in lowered:
            return True
    return False


def _describe(check: Check) -> str:
    if isinstance(check, DefectProbe):
        flags = ["defect " + check.defect]
        if check.final:
            flags.append("runs last")
        if check.slow:
            flags.append("slow")
        return f"{check.name}  [{', '.join(flags)}]  {check.description}"
    flags = []
    if isinstance(check, SemanticCheck):
        flags.append(check.section)
        if check.slow:
            flags.append("slow")
    elif check.requires_redis:
        flags.append("requires_redis")
    if check.needs_empty_server:
        flags.append("needs_empty_server")
    tag = f"  [{', '.join(flags)}]" if flags else ""
    return f"{check.name}{tag}  {check.description}"


def _reachable(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=5.0):
            return None
    except OSError as exc:
        return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (see the module docstring)."""
    args = _parser().parse_args(argv)
    if args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        redis = parse_address(args.redis) if args.redis else None
    except ValueError as exc:
        print(f"error: --redis: {exc}", file=sys.stderr)
        return EXIT_USAGE
    checks: list[Check] = []
    if not args.defects:
        try:
            checks.extend(load_transcripts(args.transcripts))
        except TranscriptError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if not args.no_defects:
        checks.extend(defect_probes(slow=not args.quick))
    checks = [c for c in checks if _matches(c.name, args.patterns)]
    if not checks:
        print("error: no check matches the -k patterns", file=sys.stderr)
        return EXIT_USAGE
    if args.list:
        for check in checks:
            print(_describe(check))
        return EXIT_OK
    problem = _reachable(args.host, args.port)
    if problem:
        print(f"error: cannot connect to {args.host}:{args.port}: {problem}", file=sys.stderr)
        return EXIT_USAGE

    def show(result: Result) -> None:
        print(format_result(result), flush=True)

    if not args.json:
        print(
            f"okq conformance: {len(checks)} checks against {args.host}:{args.port}"
            f" (jobs={args.jobs}, redis={f'{redis[0]}:{redis[1]}' if redis else 'none'})",
            flush=True,
        )
    report = run_scenarios(
        args.host,
        args.port,
        checks,
        redis=redis,
        jobs=args.jobs,
        on_result=None if args.json else show,
    )
    if args.json:
        print(report.to_json())
    else:
        empty = [r.name for r in report.results if r.failed and r.needs_empty_server]
        if empty:
            print(
                "note: these failed checks list every queue and need a server holding no other"
                f" queues: {', '.join(empty)}"
            )
        print(f"finished in {report.duration_s:.1f} s")
        print(report.summary_line())
    return EXIT_OK if report.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
