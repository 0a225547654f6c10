"""``okq dashboard``: a live web page of okq queues, on the public sync client and the
standard library alone.

Owns: `Dashboard` (one sampler and one HTTP server in background threads: start, stop, its
URL) and the listening rules (loopback unless told otherwise, with a warning).
Must not know: what the page shows (`_page`), the routes (`_web`), how samples are kept
(`_sampler`).

::

    from okq_transports.dashboard import Dashboard

    with Dashboard(["okq://127.0.0.1:4777"], listen=("127.0.0.1", 8765)) as dashboard:
        print("open", dashboard.url)
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Final

from ._sampler import Sampler
from ._web import DashboardHTTPServer

__all__ = ["DEFAULT_LISTEN", "Dashboard", "is_loopback", "listen_warning"]

#: Where ``okq dashboard`` listens unless told otherwise.
DEFAULT_LISTEN: Final = ("127.0.0.1", 8765)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_warning(host: str, *, allow_writes: bool) -> str | None:
    """What ``okq dashboard`` says before listening on `host`, or None for loopback."""
    if is_loopback(host):
        return None
    return (
        f"okq dashboard: warning: listening on {host}, not loopback: anyone who can reach it"
        " sees your queues" + (" and can flush them" if allow_writes else "")
    )


class Dashboard:
    """The dashboard of the okq servers at `addresses`, served at `listen`.

    Args:
        addresses: the servers, each shown side by side (a failover list's members).
        listen: ``(host, port)`` to serve the page on; port 0 picks a free one.
        allow_writes: let the page flush queues and push test events (after a confirmation,
            with the per-process token and same-origin checks).
        interval_s: how often each server's ``QSTATUS`` is sampled.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        listen: tuple[str, int] = DEFAULT_LISTEN,
        allow_writes: bool = False,
        interval_s: float = 2.0,
    ) -> None:
        self.sampler = Sampler(addresses, interval_s=interval_s)
        self.http = DashboardHTTPServer(listen, self.sampler, allow_writes=allow_writes)
        self._thread = threading.Thread(
            target=self.http.serve_forever, name="okq-dashboard-http", daemon=True
        )

    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` of the page."""
        host, port = self.http.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}/"

    @property
    def token(self) -> str:
        """The per-process token the page's writes carry."""
        return self.http.token

    def start(self) -> None:
        """Start sampling and serving (returns at once)."""
        self.sampler.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (open page streams end) and sampling; close the clients.  Idempotent."""
        if self.http.closing.is_set():
            return
        self.http.closing.set()
        self.sampler.stop()  # wakes the page streams, which see `closing`
        if self._thread.is_alive():
            self.http.shutdown()
            self._thread.join(10)
        self.http.server_close()

    def __enter__(self) -> Dashboard:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
