"""Raw-socket client connections for the conformance runner.

This module owns moving bytes: opening a TCP connection, writing, reading exactly
n bytes or one RESP reply before a deadline, watching for silence or for the
peer's close, and remembering when each byte arrived and when the latest write
happened (for ``elapsed_min``/``elapsed_max``). It uses only the standard
library and knows nothing of transcripts or okq semantics. Every wait is
bounded by an explicit deadline.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import time
from typing import Final

from ._resp import FramingError, frame_reply

__all__ = ["Connection", "ReadFailure", "connect"]

_RECV_SIZE: Final = 256 * 1024
#: Seconds to wait for a TCP connection to be accepted.
CONNECT_TIMEOUT_S: Final = 5.0


class ReadFailure(Exception):
    """A read ended without what was expected.

    Attributes:
        reason: ``"timeout"``, ``"eof"`` or ``"framing"``.
        got: every byte received and not consumed (the partial data).
        detail: a human-readable message.
    """

    def __init__(self, reason: str, got: bytes, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.got = got
        self.detail = detail


class Connection:
    """One client TCP connection with a receive buffer and arrival timestamps.

    Args:
        sock: a connected stream socket; the ``Connection`` owns and closes it.
        label: name used in messages (``conn 0``, ``redis``).
    """

    def __init__(self, sock: socket.socket, label: str) -> None:
        self.sock = sock
        self.label = label
        self.opened_at = time.monotonic()
        #: Monotonic time when the latest ``send`` finished (initially the open time).
        self.last_write = self.opened_at
        self.eof = False
        self.closed = False
        self._buf = bytearray()
        # (absolute stream offset just past a received chunk, monotonic arrival time)
        self._chunks: collections.deque[tuple[int, float]] = collections.deque()
        self._received = 0
        self._consumed = 0

    # -- writing ---------------------------------------------------------------

    def send(self, data: bytes, timeout_s: float) -> None:
        """Write all of ``data``, then record the time as the latest write.

        Raises:
            OSError: the write failed or did not finish within ``timeout_s``.
        """
        self.sock.settimeout(timeout_s)
        self.sock.sendall(data)
        self.last_write = time.monotonic()

    # -- reading ---------------------------------------------------------------

    @property
    def buffered(self) -> bytes:
        """Bytes received but not consumed yet (a copy)."""
        return bytes(self._buf)

    def _fill(self, deadline: float) -> bool:
        """Receive one chunk before ``deadline``; False on EOF, raise on timeout."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(_RECV_SIZE)
        except TimeoutError:
            raise TimeoutError from None
        except (ConnectionResetError, ConnectionAbortedError):
            # A server that closes with our bytes still unread sends RST instead
            # of FIN; for the runner both mean "the server closed the connection".
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        now = time.monotonic()
        self._buf += chunk
        self._received += len(chunk)
        self._chunks.append((self._received, now))
        return True

    def _consume(self, n: int) -> tuple[bytes, float]:
        """Take ``n`` buffered bytes; also return when the last of them arrived."""
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._consumed += n
        arrived = time.monotonic()
        for end, when in self._chunks:
            if end >= self._consumed:
                arrived = when
                break
        while self._chunks and self._chunks[0][0] <= self._consumed:
            self._chunks.popleft()
        return data, arrived

    def _failure(self, reason: str, what: str, started: float) -> ReadFailure:
        waited = time.monotonic() - started
        if reason == "timeout":
            detail = f"timed out after {waited:.3f} s waiting for {what}"
        else:
            detail = f"connection closed by the server while waiting for {what}"
        return ReadFailure(reason, bytes(self._buf), detail)

    def read_exact(self, n: int, deadline: float) -> tuple[bytes, float]:
        """Read exactly ``n`` bytes.

        Returns:
            The bytes and the monotonic time the last of them arrived.

        Raises:
            ReadFailure: EOF or ``deadline`` came first (``got`` has the partial data).
        """
        started = time.monotonic()
        while len(self._buf) < n:
            try:
                if not self._fill(deadline):
                    raise self._failure("eof", f"{n} bytes", started)
            except TimeoutError:
                raise self._failure("timeout", f"{n} bytes", started) from None
        return self._consume(n)

    def read_reply(self, deadline: float) -> tuple[bytes, float]:
        """Read exactly one complete RESP reply.

        Returns:
            The reply's bytes and the monotonic time its last byte arrived.

        Raises:
            ReadFailure: EOF or ``deadline`` came first, or the bytes are not RESP.
        """
        started = time.monotonic()
        while True:
            try:
                end = frame_reply(self._buf)
            except FramingError as exc:
                raise ReadFailure("framing", bytes(self._buf), f"not a RESP reply: {exc}") from None
            if end is not None:
                return self._consume(end)
            try:
                if not self._fill(deadline):
                    raise self._failure("eof", "a complete RESP reply", started)
            except TimeoutError:
                raise self._failure("timeout", "a complete RESP reply", started) from None

    def expect_silence(self, seconds: float) -> str | None:
        """Check that nothing arrives and the connection stays open for ``seconds``.

        Returns:
            ``None`` if silent, else a description of what happened.
        """
        if self._buf:
            return f"unexpected bytes {bytes(self._buf)!r}"
        deadline = time.monotonic() + seconds
        try:
            while True:
                if not self._fill(deadline):
                    return "the server closed the connection"
                return f"unexpected bytes {bytes(self._buf)!r}"
        except TimeoutError:
            return None

    def expect_eof(self, deadline: float) -> str | None:
        """Check that the server closes the connection, sending nothing more.

        Returns:
            ``None`` on a clean close, else a description of what happened.
        """
        started = time.monotonic()
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            waited = time.monotonic() - started
            extra = f", after sending {bytes(self._buf)!r}" if self._buf else ""
            return f"the server did not close the connection within {waited:.1f} s{extra}"
        if self._buf:
            return f"the server sent {bytes(self._buf)!r} before closing"
        return None

    def pending(self, wait_s: float) -> bytes:
        """Return unread bytes: those buffered plus any arriving within ``wait_s``."""
        deadline = time.monotonic() + wait_s
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            pass
        return bytes(self._buf)

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if not self.closed:
            self.closed = True
            self.sock.close()


def connect(host: str, port: int, label: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Connection:
    """Open a TCP connection with Nagle disabled.

    Raises:
        OSError: the connection was refused or timed out.
    """
    sock = socket.create_connection((host, port), timeout=timeout_s)
    with contextlib.suppress(OSError):  # not every platform/socket supports it
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Connection(sock, label)
