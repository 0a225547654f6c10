"""The embedded server's options: `ServerOptions`, their defaults and their checking.

Owns: the keyword options every way of running the server takes, the bound okq leaves out
(`DEFAULT_MAX_NOTIFY_WAITS`), the check that refuses an unknown option and the default
`MemoryStorage` the options describe.
Must not know: sockets, event loops, threads; what the options do (`EmbeddedServer` does it).
"""

from __future__ import annotations

from ssl import SSLContext
from typing import TYPE_CHECKING, Final, TypedDict

from okq_proto.server import DEFAULT_EXPIRE_S, DEFAULT_SWEEP_INTERVAL_S

from ._storage import MemoryStorage, Storage

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.11+; annotations only

__all__ = ["DEFAULT_MAX_NOTIFY_WAITS", "Listening", "ServerOptions", "checked", "default_storage"]

DEFAULT_MAX_NOTIFY_WAITS: Final = 1000
"""QNOTIFY waits one server holds at once (okq has no bound); see `ServerOptions`."""


class ServerOptions(TypedDict, total=False):
    """The keyword options of `EmbeddedServer`, `ThreadedServer`, `run_in_thread`,
    `open_server` and `serve`; all optional.

    Attributes:
        sweep_interval_s: restore sweep period for the default storage (okq: 10 s).
        sweep_interval: alias of ``sweep_interval_s`` (wins when both are given).
        default_expire_s: QRPOP's claim duration without ``EX``, for the default storage.
        noblock_workers: NOBLOCK pushes in flight before ``ERR too busy`` (okq: 128).
        seed: seeds QNOTIFY's shuffle (None: unpredictable).
        max_bulk_bytes: input limit per connection (as are the three below); exceeding one
            closes that connection without a reply.
        max_array_count: elements of one request.
        max_line_bytes: length of one header line.
        max_nesting: depth of nested arrays.
        max_query_bytes: bytes one request may hold while it is read, its arguments so far
            included (Redis's client-query-buffer-limit, 1 GiB there and here); past it the
            connection is closed without a reply, as Redis closes such a client.
        max_notify_waits: QNOTIFY waits the server holds at once (1000).  A QNOTIFY that
            would have to wait while that many are held is answered ``-ERR unexpected
            server-side error`` at once (a warning is logged); one that finds work, or
            ``QNOTIFY 0``, is answered as usual.  Closed clients keep their wait, and their
            count as consumers, until it ends, as in okq.
        ssl: serve TLS with this server-side `ssl.SSLContext` (``ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH)`` with ``load_cert_chain(cert, key)``); None: plain TCP.
            A client whose handshake fails is closed; the others are not affected.
    """

    sweep_interval_s: float
    sweep_interval: float | None
    default_expire_s: int
    noblock_workers: int
    seed: int | None
    max_bulk_bytes: int
    max_array_count: int
    max_line_bytes: int
    max_nesting: int
    max_query_bytes: int
    max_notify_waits: int
    ssl: SSLContext | None


def checked(options: ServerOptions) -> ServerOptions:
    """A copy of ``options``; an unknown name is a TypeError, as for any keyword argument."""
    unknown = sorted(set(options) - ServerOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"unexpected server option(s): {', '.join(unknown)}")
    return options.copy()


def default_storage(options: ServerOptions) -> MemoryStorage:
    """The `MemoryStorage` a server makes when it is given none."""
    sweep = options.get("sweep_interval")
    if sweep is None:
        sweep = options.get("sweep_interval_s", DEFAULT_SWEEP_INTERVAL_S)
    expire = options.get("default_expire_s", DEFAULT_EXPIRE_S)
    return MemoryStorage(sweep_interval_s=sweep, default_expire_s=expire)


class Listening:
    """What both servers share: their constructor's arguments (checked once) and where they
    listen (each says its own `port`).

    Args:
        host: address to listen on (loopback by default).
        port: TCP port; 0 picks a free one.
        storage: where queues live; a fresh `MemoryStorage` if None.
        **options: the `ServerOptions`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        storage: Storage | None = None,
        **options: Unpack[ServerOptions],
    ) -> None:
        self._host = host
        self._requested_port = port
        self._options = checked(options)
        self.storage: Storage = storage or default_storage(self._options)
        """The storage behind this server (kept across restarts of a `ThreadedServer`)."""
        self._init()

    def _init(self) -> None:
        """The rest of the subclass's state (the options are in ``_options``)."""

    @property
    def host(self) -> str:
        """The listening host."""
        return self._host

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def address(self) -> str:
        """``"host:port"``."""
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """``"okq://host:port"``."""
        return f"okq://{self.address}"

    def _listening(self) -> bool:
        """True while serving (for `repr`).  `ThreadedServer` asks its thread;
        `EmbeddedServer` holds its ``asyncio.Server`` in ``_server`` from `start` to
        `aclose`."""
        return getattr(self, "_server", None) is not None

    def __repr__(self) -> str:
        """``<ThreadedServer okq://127.0.0.1:PORT running>`` (``stopped`` when not serving;
        ``tls`` when it serves TLS; the requested port until one is bound)."""
        try:
            port = self.port
        except RuntimeError:  # an EmbeddedServer not started yet: no bound port
            port = self._requested_port
        host = f"[{self._host}]" if ":" in self._host else self._host
        tls = " tls" if self._options.get("ssl") is not None else ""
        state = "running" if self._listening() else "stopped"
        return f"<{type(self).__name__} okq://{host}:{port}{tls} {state}>"
