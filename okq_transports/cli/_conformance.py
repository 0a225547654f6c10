"""``okq conformance``: the conformance suite (the ``conformance`` package) behind the okq CLI.

Owns: recognising ``okq [--server HOST:PORT] conformance ARGS...`` before the okq parser sees
it (the suite parses its own options: ``okq conformance --help``; ``okq conformance fuzz ...``
and ``okq conformance model ...`` are ``python -m conformance.fuzz`` and ``python -m
conformance.model_main``), and refusing, with the
reason, a ``conformance`` package that is not the one okq ships (the import name is generic, and
another distribution could install one of that name in the same environment).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from ._common import EXIT_USAGE, CliError

__all__ = ["run", "suite_argv"]

COMMAND = "conformance"

#: ``okq conformance TOOL ...``: the suite's other command lines, by module.
TOOLS = {"fuzz": "conformance.fuzz.__main__", "model": "conformance.model_main"}


def suite_argv(argv: Sequence[str]) -> list[str] | None:
    """The suite's own arguments if ``argv`` (the okq CLI's) runs ``okq conformance``, else None.

    ``okq --server HOST:PORT conformance ...`` passes the server on as ``--server HOST:PORT``.
    """
    head: list[str] = []
    rest = list(argv)
    if rest[:1] == ["--server"] and len(rest) >= 2:
        head, rest = rest[:2], rest[2:]
    elif rest and rest[0].startswith("--server="):
        head, rest = ["--server", rest[0].partition("=")[2]], rest[1:]
    if rest[:1] != [COMMAND]:
        return None
    return head + rest[1:]


def run(argv: Sequence[str]) -> int:
    """Run the suite's command line with ``argv``; returns its exit status.

    Raises:
        CliError: the importable ``conformance`` package is not okq's (exit status 2).
    """
    suite = importlib.import_module("conformance")
    if getattr(suite, "__distribution__", None) != "okq":
        where = getattr(suite, "__file__", None) or "an unknown place"
        raise CliError(
            f"the 'conformance' package imported from {where} is not okq's conformance suite"
            " (another distribution installs a package of that name): uninstall it or run"
            " okq from an environment without it",
            EXIT_USAGE,
        )
    args = list(argv)
    if args[:1] == ["--server"] and len(args) > 2 and args[2] in TOOLS:
        args = [args[2], *args[:2], *args[3:]]  # okq --server X conformance fuzz ...
    tool = args[0] if args and args[0] in TOOLS else None
    if tool is None:
        cli = importlib.import_module("conformance.__main__")
        status: int = cli.main(args, prog="okq conformance")
        return status
    module = importlib.import_module(TOOLS[tool])
    if tool == "fuzz":
        status = module.main(args[1:])
    else:
        status = module.main(args[1:], prog=f"okq conformance {tool}")
    return status
