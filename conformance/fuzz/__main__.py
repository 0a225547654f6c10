"""Run the fuzzers: in-process targets, or a live okq server with ``--server``.

In-process (the default): ``python -m conformance.fuzz [--iterations N] [--seconds S]
[TARGET...]`` is a bounded mutation loop over a corpus of real okq traffic (the transcripts)
into the codec targets; with ``--atheris`` it hands one target to atheris
(``pip install atheris``).

Live: ``python -m conformance.fuzz --server HOST:PORT [--seconds S] [--iterations N]
[--seed N] [--out DIR] [--restart-cmd CMD]`` mutates the transcripts' requests and framing,
sends them to the server and reports crashes, hangs, broken framing, reply-count desyncs and
damage to a bystander connection, each minimised and saved as a transcript in ``--out``
(``conformance.fuzz.live``). Exit status: 0 no finding, 1 findings, 2 usage errors.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from conformance._transcripts import load_transcripts

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
_TARGET_NAMES = ("decoder", "client", "server")


def corpus() -> list[bytes]:
    """Seeds: every recorded request and reply of the transcripts."""
    seeds: list[bytes] = []
    for scenario in load_transcripts():
        for step in scenario.steps:
            for data in (step.send, step.expect, step.recorded):
                if data and len(data) < 4096:
                    seeds.append(bytes([len(seeds) % 256]) + data)
    return seeds


def mutate(rng: random.Random, seed: bytes, seeds: list[bytes]) -> bytes:
    """One random edit: flip, insert, delete, splice, or repeat a slice."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = rng.choice([b"\r\n", b"*", b"$", b"-1", b"9999999999", b":", b"+"])
        elif op == 2:
            del data[pos : pos + rng.randint(1, 8)]
        elif op == 3:
            other = rng.choice(seeds)
            data[pos:] = other[rng.randrange(len(other) + 1) :]
        else:
            data[pos:pos] = data[pos : pos + 8] * rng.randint(1, 20)
    return bytes(data)


def run(names: list[str], iterations: int, seconds: float, seed: int) -> int:
    """Mutate the corpus into every in-process target; return the number of inputs run."""
    from conformance.fuzz.targets import TARGETS  # needs okq_proto, unlike live mode

    rng = random.Random(seed)
    seeds = corpus()
    deadline = time.monotonic() + seconds
    count = 0
    for _ in range(iterations):
        if time.monotonic() > deadline:
            break
        data = mutate(rng, rng.choice(seeds), seeds)
        for name in names:
            TARGETS[name](data)
        count += 1
    return count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conformance.fuzz",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Exit status: 0 no finding, 1 findings (live mode), 2 usage errors.",
    )
    parser.add_argument("targets", nargs="*", choices=[*_TARGET_NAMES, []], default=[])
    parser.add_argument(
        "--iterations", type=int, default=None, help="inputs at most (in-process: 20000)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="wall-time bound (60)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--atheris", metavar="TARGET", choices=list(_TARGET_NAMES))
    live = parser.add_argument_group("live mode")
    live.add_argument("--server", metavar="HOST:PORT", help="fuzz this running okq server")
    live.add_argument("--out", metavar="DIR", type=Path, help="save findings as transcripts here")
    live.add_argument(
        "--restart-cmd",
        metavar="CMD",
        help="shell command that (re)starts a crashed server; without it a crash ends the run"
        " and is saved unminimised",
    )
    live.add_argument("--timeout", type=float, default=2.0, help="seconds a reply may take (2.0)")
    live.add_argument(
        "--max-block",
        type=float,
        default=1.0,
        help="longest QNOTIFY wait an input may contain; longer ones are skipped (1.0)",
    )
    live.add_argument("--batch", type=int, default=16, help="inputs pipelined per write (16)")
    live.add_argument("--lanes", type=int, default=8, help="connections fuzzing at once (8)")
    live.add_argument(
        "--max-findings", type=int, default=1, help="stop after this many findings; 0: never (1)"
    )
    live.add_argument(
        "--skip-known",
        action="store_true",
        help="do not send inputs of okq's known crash class D1 (short headers, sizes past what"
        " a server must wait for), to look for other faults in a real okq",
    )
    live.add_argument(
        "--oracles",
        default="crash,hang,framing,desync,damage",
        help="comma-separated oracles to report (default: all)",
    )
    live.add_argument(
        "--minimise-seconds", type=float, default=120.0, help="time bound per minimisation"
    )
    return parser


def _main_live(args: argparse.Namespace) -> int:
    from conformance.fuzz.live import ORACLES, LiveOptions, UsageError, run_live, shell_restarter
    from conformance.replay import parse_address

    try:
        host, port = parse_address(args.server)
    except ValueError as exc:
        print(f"error: --server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    oracles = frozenset(o.strip() for o in args.oracles.split(",") if o.strip())
    if not oracles or not oracles <= set(ORACLES):
        print(f"error: --oracles: choose from {', '.join(ORACLES)}", file=sys.stderr)
        return EXIT_USAGE
    options = LiveOptions(
        host=host,
        port=port,
        seconds=args.seconds,
        iterations=10**12 if args.iterations is None else args.iterations,
        seed=args.seed,
        out=args.out,
        restart=shell_restarter(args.restart_cmd) if args.restart_cmd else None,
        timeout_s=args.timeout,
        max_block_s=args.max_block,
        batch=args.batch,
        lanes=args.lanes,
        max_findings=args.max_findings,
        skip_known=args.skip_known,
        oracles=oracles,
        minimise_seconds=args.minimise_seconds,
    )
    try:
        report = run_live(options)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(report.format_text())
    return EXIT_FINDINGS if report.findings else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args, rest = _parser().parse_known_args(argv)
    if args.server is not None:
        if args.targets or args.atheris or rest:
            print("error: --server takes no targets or atheris options", file=sys.stderr)
            return EXIT_USAGE
        return _main_live(args)
    from conformance.fuzz.targets import TARGETS

    if args.atheris:
        import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]  # optional, untyped

        target = TARGETS[args.atheris]
        atheris.Setup([sys.argv[0], *rest], target)
        atheris.Fuzz()
        return 0
    names = args.targets or list(TARGETS)
    iterations = 20_000 if args.iterations is None else args.iterations
    count = run(names, iterations, args.seconds, args.seed)
    print(f"fuzzed {count} inputs into {', '.join(names)}: no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
