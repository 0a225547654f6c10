"""Fuzz targets: arbitrary bytes into every parser okq has, expecting only typed outcomes.

Each target takes one ``bytes`` input and must either finish or raise the documented protocol
error; anything else (``IndexError``, ``ValueError``, ``RecursionError``, ``MemoryError``, a
hang) is a bug.  The same functions serve three runners:

* ``python -m conformance.fuzz`` — a bounded, dependency-free mutation loop (used by the tests);
* atheris (``pip install atheris``; ``python -m conformance.fuzz --atheris TARGET``), which
  instruments the code and explores it coverage-guided;
* hypothesis, through the property tests in ``tests/proto``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from okq_proto import (
    NEED_DATA,
    ClientConnection,
    Decoder,
    Limits,
    LocalProtocolError,
    ProtocolError,
    QRPop,
    RemoteProtocolError,
    TransportError,
)
from okq_proto.server import CloseWithoutReply, PeerClosed, ServerConnection

__all__ = ["TARGETS", "fuzz_client_connection", "fuzz_decoder", "fuzz_server_connection"]

# Small limits, so that the fuzzer reaches every limit branch with short inputs.
_SMALL: Final = Limits(max_bulk_length=4096, max_array_length=64, max_depth=4, max_line_length=64)


def _split(data: bytes) -> list[bytes]:
    """Cut the input into chunks at points the input itself chooses (first byte = stride)."""
    if not data:
        return [b""]
    stride = data[0] % 7 + 1
    body = data[1:]
    return [body[i : i + stride] for i in range(0, len(body), stride)] or [b""]


def fuzz_decoder(data: bytes) -> None:
    """The pure RESP2 decoder: values or `RemoteProtocolError`, and then sticky."""
    for limits in (Limits(), _SMALL):
        decoder = Decoder(limits)
        try:
            for chunk in _split(data):
                decoder.feed(chunk)
                while decoder.next_reply() is not NEED_DATA:
                    pass
        except RemoteProtocolError:
            try:
                decoder.next_reply()
            except RemoteProtocolError:
                continue
            raise AssertionError("decoder not sticky after a protocol error") from None


def fuzz_client_connection(data: bytes) -> None:
    """The client machine with commands in flight: replies, typed errors, or protocol errors."""
    conn = ClientConnection(backend="python", limits=_SMALL)
    for _ in range(4):
        conn.send(QRPop(b"q", 30))
    conn.data_to_send()
    try:
        for chunk in _split(data):
            conn.receive_data(chunk)
            while conn.next_event() is not NEED_DATA:
                pass
        conn.receive_eof()
        conn.next_event()
    except (ProtocolError, TransportError):
        pass


def fuzz_server_connection(data: bytes) -> None:
    """The server-role machine: requests, a silent close, or nothing; never a crash."""
    conn = ServerConnection()
    try:
        for chunk in _split(data):
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is NEED_DATA or isinstance(event, (CloseWithoutReply, PeerClosed)):
                    break
                conn.send_reply(b"+OK\r\n")
    except LocalProtocolError:
        pass  # data after the machine decided to close: the transport stops reading then


TARGETS: Final[dict[str, Callable[[bytes], None]]] = {
    "decoder": fuzz_decoder,
    "client": fuzz_client_connection,
    "server": fuzz_server_connection,
}
