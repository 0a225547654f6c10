"""One okq connection driven over a stream: pipelined requests and their replies.

Owns: flushing a `ClientConnection`'s bytes and feeding back what the stream reads, the read
deadline of each reply (the machine's `reply_budget_s`, counted from the write or from the
previous reply, every read waiting what is left: `okq_proto.policy.read_time_left`), poisoning
a connection whose request was interrupted, and the busy check (two callers at once).
Must not know: pools, retries, backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from okq_proto import (
    DEFAULT_MAX_REPLY_BYTES,
    NEED_DATA,
    Command,
    CommandReplied,
    ConnectionClosed,
    ConnectionState,
    DecoderBackend,
    OkqError,
)
from okq_proto.policy import Address, read_time_left
from okq_transports._exceptions import ConnectionBusyError

from .streams import AsyncStream, close_quietly

__all__ = ["AsyncConnection"]

_OPEN: Final = ConnectionState.OPEN


class AsyncConnection:
    """One okq connection over an `AsyncStream`; requests may be pipelined.

    A request interrupted after its bytes were written and before its reply was read
    (cancellation, timeout, error) **poisons** the connection: it is closed at once and every
    later call raises `ConnectionClosed`, so no later caller can read another caller's reply
    (the bug class of CVE-2023-28858).  Two callers at once get `ConnectionBusyError`.

    Args:
        stream: the byte stream (closed by `aclose`).
        read_timeout_s: how long a whole reply may take, however its bytes trickle in: from
            the request's write (or the previous pipelined reply) to the reply's last byte,
            plus the waits of blocking commands in flight; None for no deadline of our own
            (trio: cancel scopes rule).
        address: where the stream goes, for messages.
        decoder: ``"auto"`` (hiredis when installed), ``"python"`` or ``"hiredis"``.
        max_reply_bytes: the most bytes one reply may buffer while incomplete (None: no
            cap); beyond it the request raises `RemoteProtocolError` and the connection is
            closed (`ClientConnection`'s ``max_reply_bytes``).
        clock: the monotonic clock the read timeout is measured with (default: the
            stream's `now`).
    """

    __slots__ = ("_busy", "_clock", "_closed", "_conn", "_stream", "address", "read_timeout_s")

    def __init__(
        self,
        stream: AsyncStream,
        *,
        read_timeout_s: float | None = None,
        address: Address | None = None,
        decoder: DecoderBackend = "auto",
        max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._stream = stream
        self._conn = stream.new_machine(decoder, max_reply_bytes)
        self._busy = False
        self._closed = False
        self._clock = clock if clock is not None else stream.now
        self.read_timeout_s = read_timeout_s
        self.address = address

    @property
    def stream(self) -> AsyncStream:
        """The stream under this connection."""
        return self._stream

    @property
    def usable(self) -> bool:
        """False once poisoned, broken or closed, or when the server sent something since
        the last reply (a reply nobody asked for, or its end of file): such a connection is
        never reused."""
        return (
            not (self._closed or self._busy)
            and self._conn.state is _OPEN
            and not self._stream.has_unread()
        )

    async def request(
        self, command: Command[Any], timeout_s: float | None = None
    ) -> CommandReplied:
        """Send one command and return its reply (an error reply is in ``.error``).

        Args:
            command: what to send.
            timeout_s: how long the whole reply may take; default: ``read_timeout_s`` plus
                the command's own blocking wait.

        Raises:
            ConnectionBusyError: another caller is using this connection.
            ConnectionClosed, TimeoutError: the connection failed (it is now closed).
            RemoteProtocolError: the server broke the protocol, or a reply went past
                ``max_reply_bytes`` (the connection is now closed).
        """
        return (await self.request_many((command,), timeout_s))[0]

    async def request_many(
        self, commands: Sequence[Command[Any]], timeout_s: float | None = None
    ) -> list[CommandReplied]:
        """Send the commands in one write and return their replies in order (pipelining).

        Each reply must be complete within its budget (`timeout_s`, default the machine's
        `reply_budget_s`: ``read_timeout_s`` plus the blocking waits in flight), counted from
        the write for the first reply and from the previous reply for each later one; every
        read waits what is left of it.
        """
        if self._busy or self._closed:
            raise self._unusable()
        self._busy = True
        conn = self._conn
        stream = self._stream
        try:
            count = len(commands)
            if count == 1:
                conn.send(commands[0])
            else:
                conn.send_many(commands)
            budget_s = conn.reply_budget_s(self.read_timeout_s) if timeout_s is None else timeout_s
            await stream.send_all(conn.data_to_send())
            # Nothing is buffered on a usable connection (`has_unsolicited` saw to it), so no
            # reply can be complete yet: read first, with the first reply's whole budget.
            started = self._clock() if budget_s is not None else 0.0
            await stream.fill(conn, budget_s)
            replies: list[CommandReplied] = []
            fresh = False  # True once a reply completed: the next one's budget starts anew
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    wait_s = budget_s
                    if budget_s is not None:
                        if fresh:  # a new reply: its first read waits it all
                            started, fresh = self._clock(), False
                        else:  # the same reply: wait only what is left of its budget
                            wait_s = read_time_left(
                                started, budget_s, self._clock(), 0.0, self._where()
                            )
                    await stream.fill(conn, wait_s)
                    continue
                if type(event) is not CommandReplied:
                    # CLOSED cannot come with replies owed (the machine raises); be safe
                    raise ConnectionClosed(f"{self._where()} closed the connection")
                replies.append(event)
                if len(replies) == count:
                    self._busy = False
                    if conn.has_unsolicited():  # a reply nobody asked for: never reuse
                        self._closed = True
                        await close_quietly(stream)
                    return replies
                fresh = True
        except BaseException:
            # Interrupted mid-request (cancelled, timed out, broken): the stream may still
            # carry our reply, so nobody may use it again.
            self._busy = False
            self._closed = True
            await close_quietly(stream)
            raise

    def _where(self) -> str:
        address = self.address
        return "the server" if address is None else f"{address[0]}:{address[1]}"

    def _unusable(self) -> OkqError:
        if self._busy:
            return ConnectionBusyError(
                "another task is using this okq connection: each task needs its own "
                "(take one from the client's pool)"
            )
        return ConnectionClosed(
            "this okq connection is closed (a request on it was interrupted, or it failed)"
        )

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""
        self._closed = True
        await close_quietly(self._stream)
