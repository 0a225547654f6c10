"""Run the fuzz targets: ``python -m conformance.fuzz [--iterations N] [--seconds S] [TARGET...]``.

Without atheris this is a bounded mutation loop over a corpus of real okq traffic (the
transcripts); with ``--atheris`` it hands one target to atheris (``pip install atheris``).
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from conformance._transcripts import load_transcripts
from conformance.fuzz.targets import TARGETS


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
    """Mutate the corpus into every target; return the number of inputs run."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.fuzz", description=__doc__)
    parser.add_argument("targets", nargs="*", choices=[*TARGETS, []], default=[])
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atheris", metavar="TARGET", choices=list(TARGETS))
    args, rest = parser.parse_known_args(argv)
    if args.atheris:
        import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]  # optional, untyped

        target = TARGETS[args.atheris]
        atheris.Setup([sys.argv[0], *rest], target)
        atheris.Fuzz()
        return 0
    names = args.targets or list(TARGETS)
    count = run(names, args.iterations, args.seconds, args.seed)
    print(f"fuzzed {count} inputs into {', '.join(names)}: no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
