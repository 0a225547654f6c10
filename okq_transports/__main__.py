"""``python -m okq_transports``: the ``okq`` command line (see `okq_transports.cli`).

``python -m okq_transports serve [--host H] [--port P] [--sweep-interval S]`` runs the
embedded server in the foreground and prints ``okq server listening on HOST:PORT``.
"""

from __future__ import annotations

from okq_transports.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
