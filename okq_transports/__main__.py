"""``python -m okq_transports serve``: run the embedded okq server in the foreground."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from okq_transports.server import serve


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the requested command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m okq_transports")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="run the embedded okq server")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4777, help="TCP port; 0 picks a free one")
    p.add_argument("--sweep-interval", type=float, default=10.0, help="restore sweep period (s)")
    p.add_argument("--default-expire", type=int, default=30, help="QRPOP claim without EX (s)")
    p.add_argument("--noblock-workers", type=int, default=128, help="NOBLOCK worker pool size")
    p.add_argument("--seed", type=int, default=None, help="seed for QNOTIFY's random order")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    serve(
        args.host,
        args.port,
        sweep_interval_s=args.sweep_interval,
        default_expire_s=args.default_expire,
        noblock_workers=args.noblock_workers,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
