"""Loopback doors in front of the embedded okq server, for the redis-py pool tests.

`Backstage` runs an `EmbeddedServer` and the `Forwarder` doors in front of it on one asyncio
loop in a background thread, so the tests (sync, or asyncio on their own loop) can read what
the server and each door saw: a TLS-terminating proxy (TLS in, plaintext to the server) and a
unix-socket-to-TCP forwarder (the embedded server listens on TCP only).  `make_certificates`
writes a throwaway CA and a server certificate for 127.0.0.1 / localhost with the ``openssl``
command line (the ``cryptography`` package is not a test dependency).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

from okq_transports.server import EmbeddedServer

__all__ = ["Backstage", "Certificates", "Forwarder", "make_certificates", "server_context"]

T = TypeVar("T")

#: The bound on every wait here (starting, stopping, a call on the loop, a condition).
WAIT_S: Final = 10.0

#: How long closing one side of a forwarded connection may take (a TLS close_notify
#: exchange) before the transport is aborted.
_CLOSE_S: Final = 2.0


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA that signed the server certificate, the certificate and its key."""

    ca: Path
    cert: Path
    key: Path


_SERVER_EXTENSIONS: Final = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:  # no skip: a missing tool fails the test that needs it
        raise RuntimeError("the openssl command line is needed to make test certificates")
    done = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr}")


def make_certificates(directory: Path) -> Certificates:
    """A new CA and a server certificate it signed (valid for ``IP:127.0.0.1`` and
    ``DNS:localhost``, two days), written into `directory`."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key = directory / "server.pem", directory / "server.key"
    request, extensions = directory / "server.csr", directory / "server.ext"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=okq test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    _openssl(
        "req", "-new", *ec, "-keyout", str(key), "-out", str(request), "-subj", "/CN=localhost"
    )
    extensions.write_text(_SERVER_EXTENSIONS, encoding="ascii")
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
        "-set_serial", str(int(time.time() * 1000)), "-days", "2",
        "-extfile", str(extensions), "-out", str(cert),
    )  # fmt: skip
    return Certificates(ca=ca, cert=cert, key=key)


def server_context(certificates: Certificates) -> ssl.SSLContext:
    """The TLS proxy's side: ``PROTOCOL_TLS_SERVER`` with the server certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.cert, certificates.key)
    return context


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close one side, bounded: a peer that never answers TLS's close_notify is aborted."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), _CLOSE_S)
    except (asyncio.TimeoutError, OSError, ssl.SSLError):
        writer.transport.abort()


class Forwarder:
    """A door in front of the server: each connection it accepts (TLS, TCP or a unix socket)
    gets a plaintext TCP connection of its own to the server, bytes are copied both ways, and
    when either side closes both are closed.  Runs on the `Backstage` loop; its counters are
    read from other threads (plain ints).

    Attributes:
        accepted: connections accepted (for TLS: handshakes completed).
        tls_accepted: those that came over TLS.
        open: accepted connections open now; ``peak``: the most open at once.
        upstream_opened: connections it opened to the server; ``upstream_open``: open now.
        bytes_in, bytes_out: bytes copied to the server and back to the clients.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.address = ""
        """``host:port`` or the socket file's path."""
        self.port = 0
        self.accepted = 0
        self.tls_accepted = 0
        self.open = 0
        self.peak = 0
        self.upstream_opened = 0
        self.upstream_open = 0
        self.bytes_in = 0
        self.bytes_out = 0

    async def start_tcp(self, context: ssl.SSLContext | None) -> None:
        """Listen on 127.0.0.1, a free port (TLS with `context`)."""
        self._server = server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=context, ssl_handshake_timeout=WAIT_S
        )
        self.port = server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"

    async def start_unix(self, path: Path) -> None:
        """Listen on the unix socket `path`."""
        self._server = await asyncio.start_unix_server(self._handle, path=str(path))
        self.address = str(path)

    async def aclose(self) -> None:
        """Stop listening and close every forwarded connection (both sides)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=WAIT_S)
        assert not self._tasks, "forwarded connections still open"
        if server is not None:
            await asyncio.wait_for(server.wait_closed(), WAIT_S)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        if writer.get_extra_info("ssl_object") is not None:
            self.tls_accepted += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self._upstream), WAIT_S
            )
            upstream = up_writer
            self.upstream_opened += 1
            self.upstream_open += 1
            try:
                await self._both_ways(reader, writer, up_reader, up_writer)
            finally:
                self.upstream_open -= 1
        except (OSError, asyncio.TimeoutError, asyncio.CancelledError):
            pass  # a side went away (or the door is closing): close both below
        finally:
            try:
                if upstream is not None:
                    await _close(upstream)
                await _close(writer)
            finally:
                self.open -= 1
                self._tasks.discard(task)

    async def _both_ways(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
    ) -> None:
        inward = asyncio.ensure_future(self._copy(reader, upstream, inward=True))
        outward = asyncio.ensure_future(self._copy(up_reader, writer, inward=False))
        try:
            await asyncio.wait({inward, outward}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in (inward, outward):
                pipe.cancel()
            await asyncio.gather(inward, outward, return_exceptions=True)

    async def _copy(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, inward: bool
    ) -> None:
        while data := await reader.read(65536):
            if inward:
                self.bytes_in += len(data)
            else:
                self.bytes_out += len(data)
            writer.write(data)
            await writer.drain()


class Backstage:
    """The embedded server and its doors on one asyncio loop in a daemon thread.

    ``with Backstage() as backstage:``: `server` is the `EmbeddedServer` (its TCP port is only
    for the doors), `tls_proxy` / `unix_forwarder` open doors, `call` runs a coroutine on the
    loop.  Leaving the block closes the doors, then the server, stops the loop and joins the
    thread (each bounded).
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="okq-backstage", daemon=True
        )
        self._doors: list[Forwarder] = []
        self.server = EmbeddedServer("127.0.0.1", 0)

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` on the loop and return its result (within `WAIT_S`)."""

        async def run() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(WAIT_S)

    def server_connections(self) -> int:
        """The server's open client connections (read on its loop)."""

        async def count() -> int:
            return self.server.connection_count

        return self.call(count)

    def tls_proxy(self, context: ssl.SSLContext) -> Forwarder:
        """A new TLS-terminating proxy on 127.0.0.1 in front of the server."""
        door = Forwarder((self.server.host, self.server.port))
        self._doors.append(door)
        self.call(lambda: door.start_tcp(context))
        return door

    def unix_forwarder(self, path: Path) -> Forwarder:
        """A new unix-socket forwarder at `path` in front of the server."""
        door = Forwarder((self.server.host, self.server.port))
        self._doors.append(door)
        self.call(lambda: door.start_unix(path))
        return door

    def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait (bounded) until `predicate` holds; it is called from this thread."""
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            assert time.monotonic() < deadline, f"not reached within {WAIT_S} s: {what}"
            time.sleep(0.01)

    def __enter__(self) -> Backstage:
        self._thread.start()
        self.call(self.server.start)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for door in self._doors:
                self.call(door.aclose)
            self.call(self.server.aclose)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(WAIT_S)
            alive = self._thread.is_alive()
            if not alive:
                with contextlib.suppress(RuntimeError):
                    self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.close()
        assert not alive, f"the backstage thread did not stop within {WAIT_S} s"
