"""The RESP2 framer under `HiredisDecoder`: it proves, element by element, that replies keep
the pure decoder's rules and `Limits`, and hands on what it has walked.

Owns: walking bytes the way the pure `Decoder` does without building anything (each header and
line checked by the pure decoder's rules: type byte, strict integers and lengths, `Limits`, the
CR LF after a bulk payload, CR or LF inside a simple string), the state that carries a walk
across chunks (a stack of element counts still owed, the bytes of bulk payload still to pass,
the bytes of a line whose CR LF has not arrived), the exact bytes of every error line walked,
and holding back large arrays (`HOLD_COUNT`).
Must not know: hiredis (what it walks goes to a sink, ``_feed``, that its subclass sets), the
trusted runs and shortcuts, how replies are handed out, okq commands, sockets, clocks.

A payload is passed over by its length and never searched, so contents full of RESP-looking
lines cost what any contents cost: no recursion, no per-line work, no copy of what is only
passed over (a chunk inside a payload costs one comparison).

**Memory is bounded by the bytes received.**  hiredis allocates an array's list when it reads
the header (``*16777216`` asks for 128 MiB at once).  Headers under `HOLD_COUNT` elements go
straight on (at most ``max_depth`` such lists are open); from `HOLD_COUNT` elements on, the
array's bytes are held back and handed on only once all of it has arrived, so the list hiredis
makes is never larger than what the peer actually sent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

from ._errors import RemoteProtocolError
from ._resp import _SMALL_INTS, Limits, _parse_int

__all__ = ["HOLD_COUNT", "Framer"]

#: Arrays of at least this many elements are handed on only once all of them arrived.
HOLD_COUNT: Final = 1024

_CRLF: Final = b"\r\n"
_CR: Final = 13
_LF: Final = 10
_DOLLAR: Final = 36  # ord("$")
_STAR: Final = 42  # ord("*")
_PLUS: Final = 43  # ord("+")
_MINUS: Final = 45  # ord("-")
_COLON: Final = 58  # ord(":")


def _ignore(*_args: object) -> None:
    """The sink while the framer walks bytes the real one already has (`Framer._frame_fed`)."""


class Framer:
    """The framer's state and walk; `HiredisDecoder` is one (it sets ``_feed``, the sink).

    Args:
        limits: the bounds every walked element is checked against.
    """

    __slots__ = (
        "_cr_ok",
        "_feed",
        "_held",
        "_hold_level",
        "_limits",
        "_line",
        "_raw_errors",
        "_skip",
        "_stack",
    )

    #: Where walked bytes go (``hiredis.Reader.feed``: bytes, or a buffer with offset and size).
    _feed: Callable[..., None]

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        # Exact bytes of every error line walked, in stream order (for the error replies).
        self._raw_errors: deque[bytes] = deque()
        # Elements still owed by each open array, outermost first.
        self._stack: list[int] = []
        # Bytes still to pass of a bulk payload and its CR LF (0: none).
        self._skip = 0
        # Whether the byte where a payload's CR belongs was one (checked with its LF).
        self._cr_ok = True
        # A line whose CR LF has not arrived yet, from its type byte on (empty: none).
        self._line = bytearray()
        # While an array of HOLD_COUNT elements or more is open: the bytes walked since its
        # header, and the stack depth at which it opened (-1: nothing held).
        self._held: list[bytes] = []
        self._hold_level = -1

    def _reset_walk(self) -> None:
        """Forget the reply being walked (after a protocol error: nothing after it is read)."""
        self._stack.clear()
        self._skip = 0
        self._line = bytearray()
        self._held = []
        self._hold_level = -1

    def _frame_fed(self, data: bytes) -> bool:
        """Walk `data`, the start of a reply that the sink already has, handing nothing on.

        Returns:
            True if the walk ended inside that reply with no byte of `data` left to hand on
            (in a payload or between elements: no partial line, no held array, no error line
            walked); False if not (the walk's state is then forgotten, as if never begun).

        Raises:
            RemoteProtocolError: where the pure decoder would refuse `data`.
        """
        feed = self._feed
        errors = len(self._raw_errors)
        self._feed = _ignore
        try:
            pos = self._frame(data, 0, 0, to_boundary=True)
        finally:
            self._feed = feed
        if (
            pos == len(data)
            and (self._stack or self._skip)
            and not self._line
            and self._hold_level < 0
            and len(self._raw_errors) == errors
        ):
            return True
        self._reset_walk()
        raw = self._raw_errors
        while len(raw) > errors:
            raw.pop()
        return False

    def _out(self, data: bytes, start: int, end: int) -> None:
        """Hand ``data[start:end]`` on: to the sink, or to the held array's bytes."""
        if end > start:
            if self._hold_level >= 0:
                self._held.append(data if start == 0 and end == len(data) else data[start:end])
            else:
                self._feed(data, start, end - start)

    def _release(self) -> None:
        """The held array is complete: the sink gets all of it now."""
        self._hold_level = -1
        held = self._held
        self._held = []
        feed = self._feed
        for part in held:
            feed(part)

    def _walk(self, data: bytes) -> int:
        """Frame `data` (bytes that go on a reply begun before) up to the first reply
        boundary, handing it on as it goes.

        Returns:
            Where that boundary is in `data`, or its length if the reply goes on past it.

        Raises:
            RemoteProtocolError: where the pure decoder would refuse the stream.
        """
        pos = 0
        end = len(data)
        if self._skip:  # inside a bulk payload (or its CR LF)
            pos = self._pass(data, 0)
        elif self._line:  # a line whose CR LF is in `data`, or not yet
            line = self._line
            if line[-1] == _CR and data[0] == _LF:
                after = 1
            else:
                nl = data.find(_CRLF)
                if nl < 0:
                    line += data
                    self._check_partial(len(line))
                    return end
                if len(line) + nl > self._limits.max_line_length + 1:
                    raise RemoteProtocolError(
                        f"line longer than {self._limits.max_line_length} bytes"
                    )
                after = nl + 2
            self._line = bytearray()
            # The completed line is framed on its own, then the walk goes on in `data`.
            line += data[:after]
            self._frame(bytes(line), 0, 0, one=True)
            pos = self._pass(data, after) if self._skip else after
        if pos >= end or not (self._stack or self._skip):
            return pos
        return self._frame(data, pos, pos, to_boundary=True)

    def _pass(self, data: bytes, pos: int) -> int:
        """Pass over the bulk payload owed, from ``data[pos]`` on.

        Returns:
            Where the walk goes on in `data` (its length when used up).
        """
        skip = self._skip
        end = len(data)
        take = min(skip, end - pos)
        self._check_crlf(data, pos, skip, take)
        self._skip = skip - take
        if self._skip:
            self._out(data, pos, end)
            return end
        self._close_element(data, pos, pos + take)
        return pos + take

    def _close_element(self, data: bytes, start: int, pos: int) -> None:
        """An element ended at ``data[pos]``: pop finished arrays; hand on ``data[start:pos]``."""
        stack = self._stack
        while stack:
            stack[-1] -= 1
            if stack[-1]:
                break
            stack.pop()
            if len(stack) == self._hold_level:
                self._out(data, start, pos)
                start = pos
                self._release()
        self._out(data, start, pos)

    def _check_crlf(self, data: bytes, pos: int, skip: int, take: int) -> None:
        """Check the CR LF that ends a payload, among the `take` bytes of the `skip` owed that
        start at ``data[pos]`` (at most two comparisons).  As in the pure decoder, a bad pair
        is refused once both of its bytes have arrived."""
        for i in range(max(skip - 2, 0), take):
            if skip - i == 2:
                self._cr_ok = data[pos + i] == _CR
            elif not self._cr_ok or data[pos + i] != _LF:
                raise RemoteProtocolError("bulk string payload not followed by CR LF")

    def _length(self, line: bytes, kind: int) -> int:
        """A bulk (``$``) or array (``*``) length by the pure decoder's rules, else raise."""
        limits = self._limits
        value = _parse_int(line)
        what = "bulk" if kind == _DOLLAR else "array"
        if value is None or value < -1:
            raise RemoteProtocolError(f"bad {what} length {line!r}")
        limit, name = (
            (limits.max_bulk_length, "max_bulk_length")
            if kind == _DOLLAR
            else (limits.max_array_length, "max_array_length")
        )
        if value > limit:
            raise RemoteProtocolError(f"{what} length {value} exceeds {name} {limit}")
        return value

    def _check_partial(self, size: int) -> None:
        # Type byte + line + the CR of a CR LF still on its way: anything longer cannot become
        # a line within the limit.
        limit = self._limits.max_line_length
        if size > limit + 2:
            raise RemoteProtocolError(f"no line end within {limit} bytes (max_line_length)")

    def _frame(
        self, data: bytes, pos: int, start: int, *, one: bool = False, to_boundary: bool = False
    ) -> int:
        """Walk whole elements of `data` from `pos`; hand on ``data[start:]`` as walked.

        Args:
            one: walk only the line starting at `pos` (a completed partial line).
            to_boundary: stop where a reply ends.

        Returns:
            The offset walked to.

        Raises:
            RemoteProtocolError: at the first element the pure decoder refuses; what came
                before it has been handed on.
        """
        end = len(data)
        find = data.find
        stack = self._stack
        ints = _SMALL_INTS
        limits = self._limits
        max_line = limits.max_line_length + 1
        max_bulk = limits.max_bulk_length
        max_array = limits.max_array_length
        try:
            while pos < end:
                kind = data[pos]
                nl = find(_CRLF, pos)
                if nl < 0:
                    self._check_partial(end - pos)
                    self._line = bytearray(data[pos:])
                    break
                if nl - pos > max_line:
                    raise RemoteProtocolError(f"line longer than {max_line - 1} bytes")
                if kind == _DOLLAR:
                    length = ints.get(data[pos + 1 : nl])
                    if length is None or length > max_bulk:
                        length = self._length(data[pos + 1 : nl], _DOLLAR)
                    if length < 0:
                        pos = nl + 2
                    else:
                        after = nl + 4 + length
                        if after > end:  # the payload goes on in later chunks
                            self._check_crlf(data, nl + 2, length + 2, end - nl - 2)
                            self._skip = after - end
                            pos = end
                            break
                        if data[after - 2 : after] != _CRLF:
                            raise RemoteProtocolError("bulk string payload not followed by CR LF")
                        pos = after
                elif kind == _STAR:
                    count = ints.get(data[pos + 1 : nl])
                    if count is None or count > max_array:
                        count = self._length(data[pos + 1 : nl], _STAR)
                    if count > 0:
                        if len(stack) >= limits.max_depth:
                            raise RemoteProtocolError(
                                f"arrays nested deeper than max_depth {limits.max_depth}"
                            )
                        if count >= HOLD_COUNT and self._hold_level < 0:
                            # Hand on what came before; hold this array until it is complete.
                            if pos > start:
                                self._feed(data, start, pos - start)
                            start = pos
                            self._hold_level = len(stack)
                        stack.append(count)
                        pos = nl + 2
                        if one:
                            break
                        continue
                    pos = nl + 2
                elif kind == _COLON:
                    if data[pos + 1 : nl] not in ints and _parse_int(data[pos + 1 : nl]) is None:
                        raise RemoteProtocolError(f"bad integer {data[pos + 1 : nl]!r}")
                    pos = nl + 2
                elif kind in (_PLUS, _MINUS):
                    if find(b"\r", pos, nl) >= 0 or find(b"\n", pos, nl) >= 0:
                        what = "simple string" if kind == _PLUS else "error reply"
                        raise RemoteProtocolError(f"CR or LF inside {what} {data[pos + 1 : nl]!r}")
                    if kind == _MINUS:
                        self._raw_errors.append(data[pos + 1 : nl])
                    pos = nl + 2
                else:
                    raise RemoteProtocolError(f"unknown RESP2 type byte {data[pos : pos + 1]!r}")
                # An element is complete: count it off its arrays.
                while stack:
                    stack[-1] -= 1
                    if stack[-1]:
                        break
                    stack.pop()
                    if len(stack) == self._hold_level:
                        self._out(data, start, pos)
                        start = pos
                        self._release()
                if one or (to_boundary and not stack):
                    break
        except RemoteProtocolError:
            self._out(data, start, pos)
            raise
        if start < pos:
            if self._hold_level < 0:
                self._feed(data, start, pos - start)
            else:
                self._out(data, start, pos)
        return pos
