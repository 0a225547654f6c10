"""The one contract every machine keeps: `SendData`, `Machine` and `step`.

Owns: what a driver calls on a `ClientConnection`, a `Consumer` or a `ServerConnection`
alike: ``receive_data`` / ``receive_eof`` (bytes and the end of file in), ``step(now)``
(what to do next: `SendData` with bytes to write, `NEED_DATA`, or the machine's own event),
``next_deadline()`` and ``allowed_silence_s()`` (how long a read may wait).  `step` hands the
bytes a machine queued to the caller in its return value, so a pump cannot wait for data
while its own requests sit unsent (the silent deadlock of forgetting ``data_to_send()``).
Must not know: sockets, clocks (time is passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ._resp import NeedData

__all__ = ["Machine", "SendData"]


@dataclass(frozen=True, slots=True)
class SendData:
    """Bytes a machine queued: write all of them to the peer, then call `step` again.

    `step` returns this before anything else whenever bytes are queued, so they leave before
    the driver waits for data.
    """

    data: bytes


class Machine(Protocol):
    """What every okq machine offers a driver (`ClientConnection`, `Consumer`,
    `ServerConnection`)::

        while True:
            action = machine.step(now())
            if isinstance(action, SendData):
                sock.sendall(action.data)
            elif action is NEED_DATA:
                data = sock.recv(65536)  # within machine.allowed_silence_s() + a timeout
                machine.receive_data(data) if data else machine.receive_eof()
            else:
                ...  # the machine's event
    """

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes read from the peer."""
        ...

    def receive_eof(self) -> None:
        """The peer closed its side."""
        ...

    def step(self, now: float | None = None) -> object:
        """`SendData` when bytes are queued, else the machine's next event or `NEED_DATA`."""
        ...

    def data_to_send(self) -> bytes:
        """The queued bytes, taken out (`step` calls this itself)."""
        ...

    def next_deadline(self) -> float | None:
        """When, on the caller's clock, something is due without any byte arriving."""
        ...

    def allowed_silence_s(self) -> float:
        """How long the peer may legitimately stay silent now (a read deadline's slack)."""
        ...


def step(machine: _Stepper, now: float | None) -> object:
    """The body of every machine's `step`: queued bytes first, then the next event, and the
    bytes that event queued before a `NEED_DATA`."""
    out = machine.data_to_send()
    if out:
        return SendData(out)
    event = machine._next_for_step(now)
    if isinstance(event, NeedData):
        out = machine.data_to_send()
        if out:
            return SendData(out)
    return event


class _Stepper(Protocol):
    def data_to_send(self) -> bytes: ...

    def _next_for_step(self, now: float | None) -> object: ...
