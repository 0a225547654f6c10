"""Client policy for the authors of doors: what a driver decides, written once, without I/O.

Owns: which requests are sent again after a connection failure and how often (`may_retry`,
the one meaning of every door's ``retries=``), the order in which a door tries its server
addresses and the one error that reports that none answered (`Failover`), how long the next
read may wait (`read_time_left`, with `ClientConnection.reply_budget_s` and
`Consumer.reply_budget_s`), the reconnect `Backoff`, which failures a consumer survives
(`is_transient`), which of a run of reconnect failures are worth a warning (`FailureLog`),
and the checks of every door's options.
Must not know: sockets, event loops, threads, clocks (time is passed in).

A door moves bytes and time; it asks this module what to do::

    attempt = 0
    while True:
        try:
            return send(commands)                   # on a connection from the pool
        except CONNECTION_FAILURES as exc:
            if not may_retry(commands, exc, attempt, retries):
                raise
            attempt += 1                            # again, on a new connection
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ._commands import Command
from ._errors import ConnectError, LocalProtocolError, OkqError
from ._ops import (
    CONNECTION_FAILURES,
    DEFAULT_NOTIFY_TIMEOUT_S,
    DEFAULT_PORT,
    Backoff,
    check_client_options,
    check_consume_options,
    is_transient,
    parse_address,
    parse_addresses,
    read_time_left,
    refuse_connection_state,
    retry_safe,
    settle_retried_push,
)

__all__ = [
    "CONNECTION_FAILURES",
    "DEFAULT_NOTIFY_TIMEOUT_S",
    "DEFAULT_POOL_TIMEOUT_S",
    "DEFAULT_PORT",
    "DEFAULT_RETRIES",
    "Address",
    "Backoff",
    "Failover",
    "FailureLog",
    "check_client_options",
    "check_consume_options",
    "is_transient",
    "may_retry",
    "parse_address",
    "parse_addresses",
    "read_time_left",
    "refuse_connection_state",
    "retry_safe",
    "settle_retried_push",
]

#: ``(host, port)``.
Address = tuple[str, int]

#: How many times every door sends a retry-safe request again after a connection failure.
DEFAULT_RETRIES: Final = 1
#: How long a request waits for a free pooled connection by default (None: forever).
DEFAULT_POOL_TIMEOUT_S: Final = 30.0


def may_retry(
    commands: Sequence[Command[Any]], error: BaseException, attempt: int, retries: int
) -> bool:
    """Should a request that failed with `error` be sent again, on a new connection?

    Yes when the failure is the connection's (`CONNECTION_FAILURES`: the request's fate is
    unknown), every command is safe to send twice (`retry_safe`: pushes with their own id,
    peeks, status, info, flush, ping; never ``QRPOP`` or ``QACK``), and fewer than `retries`
    retries were made (`attempt`: how many so far).  A closed client is the caller's mistake,
    never retried.
    """
    return (
        attempt < retries
        and isinstance(error, CONNECTION_FAILURES)
        and not isinstance(error, LocalProtocolError)
        and all(map(retry_safe, commands))
    )


def _where(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Failover:
    """The order in which a door tries its server addresses (okq servers sharing one Redis
    are interchangeable), and the one error that says none answered.

    Each attempt starts from the address that worked last (`succeeded`) and goes round the
    list once.

    Raises:
        LocalProtocolError: no address.
    """

    __slots__ = ("_preferred", "addresses")

    def __init__(self, addresses: Sequence[Address]) -> None:
        if not addresses:
            raise LocalProtocolError("at least one server address is needed")
        self.addresses: tuple[Address, ...] = tuple(addresses)
        self._preferred = 0

    @property
    def preferred(self) -> Address:
        """The address tried first (the last one that worked)."""
        return self.addresses[self._preferred]

    def order(self) -> tuple[Address, ...]:
        """Every address once, starting with `preferred`."""
        i = self._preferred
        return self.addresses[i:] + self.addresses[:i]

    def succeeded(self, address: Address) -> None:
        """`address` accepted a connection: try it first from now on."""
        self._preferred = self.addresses.index(address)

    def error(self, failures: Sequence[tuple[Address, OkqError]]) -> OkqError:
        """The error to raise when every address failed (`failures`: each address tried and
        its error, in order).  With one address, its own error (a `ConnectError`, or a
        `TimeoutError` for a connect timeout); with several, one `ConnectError` naming every
        address and its failure (``.failures``), chained to the last.
        """
        if len(failures) == 1:
            return failures[0][1]
        text = "; ".join(f"{_where(address)}: {error}" for address, error in failures)
        error = ConnectError(
            f"no okq server reachable at any of {len(failures)} addresses: {text}",
            tuple(failures),
        )
        if failures:
            error.__cause__ = failures[-1][1]
        return error


class FailureLog:
    """Which failures of a retrying loop (a consumer reconnecting) are worth a warning, so
    that a server down for an hour gives a handful of log lines, not one per attempt.

    Call `failed` at each failure and `recovered` at the next success; time is passed in
    (any monotonic clock, in seconds).  The schedule: the first failure of a run is reported;
    after a report, the next failure at least `first_interval_s` later is reported, and each
    report doubles that interval up to `max_interval_s`.  With the defaults, failures are
    reported at about 0, 1, 3, 7, 15, 31 and 63 s into an outage, then once a minute.
    `recovered` ends the run (the next failure is reported again) and says how long it
    lasted.

    Args:
        first_interval_s: the least time between the first report and the second.
        max_interval_s: the longest time between two reports.

    Raises:
        LocalProtocolError: not ``0 < first_interval_s <= max_interval_s``.
    """

    __slots__ = (
        "_interval_s",
        "_next_s",
        "failures",
        "first_interval_s",
        "max_interval_s",
        "started_s",
    )

    def __init__(self, first_interval_s: float = 1.0, max_interval_s: float = 60.0) -> None:
        if not 0 < first_interval_s <= max_interval_s:
            raise LocalProtocolError("FailureLog needs 0 < first_interval_s <= max_interval_s")
        self.first_interval_s = first_interval_s
        self.max_interval_s = max_interval_s
        #: Failures since the last success (0: none, the loop is healthy).
        self.failures = 0
        #: When the first of those failures happened (None while healthy).
        self.started_s: float | None = None
        self._interval_s = first_interval_s
        self._next_s = 0.0

    def failed(self, now: float) -> bool:
        """Count one failure at `now`; True when it should be reported (logged at WARNING),
        False when it is one of a run already reported (log it at DEBUG at most)."""
        self.failures += 1
        if self.started_s is None:
            self.started_s = now
            self._interval_s = self.first_interval_s
            self._next_s = now + self._interval_s
            return True
        if now < self._next_s:
            return False
        self._interval_s = min(self._interval_s * 2.0, self.max_interval_s)
        self._next_s = now + self._interval_s
        return True

    def failing_s(self, now: float) -> float:
        """How long the current run of failures has lasted at `now` (0.0 while healthy)."""
        return 0.0 if self.started_s is None else max(0.0, now - self.started_s)

    def recovered(self, now: float) -> tuple[int, float] | None:
        """A success at `now`: the failures of the run it ends and how long the run lasted
        (seconds, from its first failure), or None when there was no failure.  Resets."""
        if self.started_s is None:
            return None
        ended = (self.failures, self.failing_s(now))
        self.failures = 0
        self.started_s = None
        return ended
