"""One place where the socket world's exceptions become okq's (httpcore ``map_exceptions``).

Owns: the mapping of `OSError` (and its subclasses: `socket.timeout`, `ConnectionResetError`,
`BrokenPipeError`, `BlockingIOError` from an ``SO_RCVTIMEO`` read...) onto the
`TransportError` branch of okq's tree.  Every transport (sync, asyncio, trio) uses it, so user
code catches the same types everywhere; the original exception is chained as ``__cause__``.
Must not know: okq commands, pools, retries.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
from collections.abc import Iterator
from typing import Final

from okq_proto import ConnectError, ConnectionClosed, LocalProtocolError, OkqError, TimeoutError

__all__ = ["ConnectionBusyError", "map_exceptions", "to_okq_error"]

# A read or write that hit SO_RCVTIMEO / SO_SNDTIMEO fails with EAGAIN on a blocking socket.
_TIMEOUT_ERRNOS: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ETIMEDOUT})


def to_okq_error(exc: BaseException, what: str, *, connecting: bool = False) -> OkqError:
    """The okq error for a low-level failure (not raised; chain it with ``from exc``).

    Args:
        exc: what the socket (or stream library) raised.  An `OkqError` is returned as is.
        what: what was being done, for the message (``"connect to 127.0.0.1:4777"``).
        connecting: True while the connection is being made: failures become `ConnectError`
            (timeouts stay `TimeoutError`).

    Returns:
        `TimeoutError` for timeouts, `ConnectError` while connecting, else `ConnectionClosed`.
    """
    if isinstance(exc, OkqError):
        return exc
    if isinstance(exc, builtins.TimeoutError) or (
        isinstance(exc, OSError) and exc.errno in _TIMEOUT_ERRNOS
    ):
        return TimeoutError(f"{what}: timed out")
    detail = str(exc) or type(exc).__name__
    if connecting:
        return ConnectError(f"{what}: {detail}")
    return ConnectionClosed(f"{what}: {detail}")


@contextlib.contextmanager
def map_exceptions(what: str, *, connecting: bool = False) -> Iterator[None]:
    """Re-raise `OSError` inside the block as the matching okq `TransportError`.

    ::

        with map_exceptions(f"connect to {host}:{port}", connecting=True):
            sock = socket.create_connection((host, port), timeout)

    Hot paths may call `to_okq_error` from their own ``except OSError`` instead (a generator
    context manager costs a microsecond or two per use).
    """
    try:
        yield
    except OSError as exc:
        raise to_okq_error(exc, what, connecting=connecting) from exc


class ConnectionBusyError(LocalProtocolError):
    """Two tasks (or threads) used one connection at the same time (trio's
    ``BusyResourceError`` idea).

    Nothing was sent for the second caller; the first one carries on undisturbed.
    """
