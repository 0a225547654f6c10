"""``python -m okq_transports.cli``: the ``okq`` command line, as ``python -m okq_transports``."""

from __future__ import annotations

from okq_transports.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
