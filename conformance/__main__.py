"""Command line of the okq conformance suite: ``okq conformance`` and ``python -m conformance``.

Runs, against one okq server, every recorded transcript, the semantic checks (labelled with
the protocol-notes section each checks), the model-based random sequences and the D1-D3
defect probes, prints PASS/FAIL/N/A per check, then a closing line ``N passed, M failed``
(followed by ``, K skipped`` when some checks were not applicable).  ``--json FILE`` and
``--junit FILE`` write the same report as JSON and as JUnit XML (``-`` for stdout, instead
of the text).

Exit status: 0 when nothing failed, 1 when a check failed (a reproduced okq defect
included), 2 for usage errors (bad arguments, an unreachable server, ``-k`` matching
nothing, unreadable transcripts, an unwritable report file).
"""

from __future__ import annotations

import argparse
import fnmatch
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from ._check import SemanticCheck
from ._junit import report_to_junit
from ._report import Report, Result, format_result
from ._suite import SuiteSelection, all_checks
from ._transcripts import TRANSCRIPTS_DIR, TranscriptError
from .defects import DefectProbe
from .replay import Check, parse_address, run_scenarios

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_DEFAULT_PORT = 4777


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Check an okq server: byte-exact recordings of the real okq server,"
        " semantic checks of the protocol notes, model-based random sequences, and probes"
        " for the known okq defects D1-D3.",
        epilog="Exit status: 0 if nothing failed, 1 if a check failed, 2 on usage errors.",
    )
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        help=f"the okq server to check (default 127.0.0.1:{_DEFAULT_PORT})",
    )
    parser.add_argument("--host", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
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
        default=4,
        metavar="N",
        help="run up to N independent checks at once (default 4); checks that need an"
        " empty server still run alone",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        nargs="?",
        const="-",
        default=None,
        help="write the report as JSON to FILE ('-' or no FILE: to stdout, instead of text)",
    )
    parser.add_argument(
        "--junit",
        metavar="FILE",
        default=None,
        help="write the report as JUnit XML to FILE ('-': to stdout, instead of text)",
    )
    parser.add_argument(
        "--transcripts",
        metavar="PATH",
        default=None,
        help=f"folder (or file) of transcripts (default: {TRANSCRIPTS_DIR})",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--defects", action="store_true", help="run only the defect probes D1-D3")
    which.add_argument(
        "--no-defects",
        action="store_true",
        help="leave out the defect probes (D1's inputs crash the real okq server)",
    )
    parser.add_argument("--no-semantic", action="store_true", help="leave out the semantic checks")
    parser.add_argument(
        "--no-model", action="store_true", help="leave out the model-based random sequences"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the model-based sequences (default 0)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="skip the checks that wait for a restore sweep (claim expiry and redelivery,"
        " D3's redelivery part: about 13 s each)",
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


def _address(args: argparse.Namespace) -> tuple[str, int]:
    """``--server HOST:PORT`` (or the older ``--host``/``--port``) as a pair."""
    if args.server is not None:
        if args.host is not None or args.port is not None:
            raise ValueError("give either --server HOST:PORT or --host/--port, not both")
        return parse_address(args.server)
    host = args.host if args.host is not None else "127.0.0.1"
    port = args.port if args.port is not None else _DEFAULT_PORT
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    return host, port


def _write(target: str, text: str) -> None:
    if target == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    Path(target).write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m conformance") -> int:
    """Run the command line; return the exit status (see the module docstring)."""
    args = _parser(prog).parse_args(argv)
    if args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        host, port = _address(args)
        redis = parse_address(args.redis) if args.redis else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    selection = SuiteSelection(
        transcripts=not args.defects,
        semantic=not (args.defects or args.no_semantic),
        model=not (args.defects or args.no_model),
        defects=not args.no_defects,
        quick=args.quick,
        seed=args.seed,
        transcripts_path=args.transcripts,
    )
    try:
        checks = [c for c in all_checks(selection) if _matches(c.name, args.patterns)]
    except TranscriptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not checks:
        print("error: no check matches the -k patterns", file=sys.stderr)
        return EXIT_USAGE
    if args.list:
        for check in checks:
            print(_describe(check))
        return EXIT_OK
    problem = _reachable(host, port)
    if problem:
        print(f"error: cannot connect to {host}:{port}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    quiet = "-" in (args.json, args.junit)

    def show(result: Result) -> None:
        print(format_result(result), flush=True)

    if not quiet:
        print(
            f"okq conformance: {len(checks)} checks against {host}:{port}"
            f" (jobs={args.jobs}, redis={f'{redis[0]}:{redis[1]}' if redis else 'none'})",
            flush=True,
        )
    report = run_scenarios(
        host, port, checks, redis=redis, jobs=args.jobs, on_result=None if quiet else show
    )
    try:
        if args.json is not None:
            _write(args.json, report.to_json())
        if args.junit is not None:
            _write(args.junit, report_to_junit(report, suite=f"okq-conformance {host}:{port}"))
    except OSError as exc:
        print(f"error: cannot write the report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not quiet:
        _closing(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def _closing(report: Report) -> None:
    empty = [r.name for r in report.results if r.failed and r.needs_empty_server]
    if empty:
        print(
            "note: these failed checks list every queue and need a server holding no other"
            f" queues: {', '.join(empty)}"
        )
    print(f"finished in {report.duration_s:.1f} s")
    print(report.summary_line())


if __name__ == "__main__":
    sys.exit(main())
