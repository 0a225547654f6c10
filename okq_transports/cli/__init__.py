"""The ``okq`` command line (also ``python -m okq_transports``): `main` and `build_parser`.

Owns: the entry point and the error contract: a failure is one line on stderr and a non-zero
exit status (`EXIT_ERROR` 1 for failures, `EXIT_USAGE` 2 for a bad command line, `EXIT_EMPTY` 3
when there was nothing to peek, pop or ack), never a traceback.
Must not know: the wire protocol (the sync client and `okq_proto` speak it).

Modules below, each importing only the ones after it: ``_parser`` (the arguments),
``_commands`` (what each subcommand does), ``_bench`` and ``_demo`` (``okq bench``, ``okq
demo``), ``_conformance`` (``okq conformance``: the suite's own command line) and ``_common``
(exit codes, argument types, output helpers).  Run ``okq --help`` or ``okq SUBCOMMAND --help``
for the details; ``docs/cli.md`` has examples.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from okq_proto import LocalProtocolError, OkqError

from . import _conformance
from ._commands import CHATTY, COMMANDS, error
from ._common import EXIT_ERROR, EXIT_USAGE, CliError, one_line
from ._parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``okq`` with `argv` (default: ``sys.argv[1:]``); returns the exit status.

    Never raises for bad input or an unreachable server: the error goes to stderr as one line.
    """
    logger = logging.getLogger("okq")
    level = logger.level
    try:
        suite = _conformance.suite_argv(sys.argv[1:] if argv is None else argv)
        if suite is not None:
            return _conformance.run(suite)
        args = build_parser().parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = COMMANDS[args.command]
        if args.command not in CHATTY:
            # a one-shot command reports its failure as its one line; the client's own
            # warnings ("cannot connect ...") would only repeat it
            logger.setLevel(logging.CRITICAL)
        return handler(args)
    except CliError as exc:
        error(str(exc), prefixed=str(exc).startswith("okq"))
        return exc.code
    except LocalProtocolError as exc:
        error(one_line(exc))
        return EXIT_USAGE
    except OkqError as exc:
        error(one_line(exc) or type(exc).__name__)
        return EXIT_ERROR
    except BrokenPipeError:
        # `okq status | head`: the reader left; exit quietly (Python docs, "SIGPIPE")
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:
        error(one_line(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    finally:
        logger.setLevel(level)
