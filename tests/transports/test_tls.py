"""TLS end to end: a certificate authority and a server certificate made by the test
(trustme), the embedded server serving TLS (`ServerOptions` ``ssl``, ``okq serve --tls-cert
--tls-key``), and the sync, asyncio and trio clients connecting with ``ssl=``; a client that
does not trust the server's authority, or names another host, fails to connect with
`ConnectError`, and a plain-TCP client gets nothing from a TLS server."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme

from okq_proto import ConnectError, Event, LocalProtocolError, TransportError
from okq_transports import trio as okq_trio
from okq_transports.asyncio import Client as AsyncioClient
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(authority: trustme.CA) -> Iterator[ThreadedServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    with ThreadedServer("127.0.0.1", 0, ssl=context) as server:
        yield server


@pytest.fixture
def trusting(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return context


def test_sync_client_over_tls(tls_server: ThreadedServer, trusting: ssl.SSLContext) -> None:
    with Client(tls_server.address, ssl=trusting, pool_size=2) as client:
        event_id = client.push("tls-sync", b"secret" * 10_000)  # several TLS records
        assert client.peek_next("tls-sync") == Event("tls-sync", event_id, b"secret" * 10_000)
        stop = threading.Event()
        got: list[bytes] = []

        def handler(event: Event) -> bool:
            got.append(event.contents)
            stop.set()
            return True

        client.consume(handler, ["tls-sync"], stop=stop)
        assert got == [b"secret" * 10_000]
        assert client.status("tls-sync")[0].total == 0


def test_asyncio_client_over_tls(tls_server: ThreadedServer, trusting: ssl.SSLContext) -> None:
    async def main() -> None:
        async with AsyncioClient(tls_server.address, ssl=trusting) as client:
            event_id = await client.push("tls-asyncio", b"hello")
            peeked = await client.peek_next("tls-asyncio")
            assert peeked == Event("tls-asyncio", event_id, b"hello")
            await client.flush("tls-asyncio")

    asyncio.run(main())


def test_trio_client_over_tls(tls_server: ThreadedServer, trusting: ssl.SSLContext) -> None:
    async def main() -> None:
        async with okq_trio.open_client(tls_server.address, ssl=trusting) as client:
            event_id = await client.push("tls-trio", b"hello")
            peeked = await client.peek_next("tls-trio")
            assert peeked == Event("tls-trio", event_id, b"hello")
            await client.flush("tls-trio")

    trio.run(main)


def test_an_untrusted_server_is_a_connect_error_on_every_door(tls_server: ThreadedServer) -> None:
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)  # another authority

    with (
        Client(tls_server.address, ssl=stranger, retries=0) as client,
        pytest.raises(ConnectError, match=r"TLS.*CERTIFICATE_VERIFY_FAILED"),
    ):
        client.ping()

    async def on_asyncio() -> None:
        async with AsyncioClient(tls_server.address, ssl=stranger, retries=0) as client:
            await client.ping()

    with pytest.raises(ConnectError, match=r"TLS.*CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(on_asyncio())

    async def on_trio() -> None:
        async with okq_trio.open_client(tls_server.address, ssl=stranger, retries=0) as client:
            await client.ping()

    with pytest.raises(ConnectError, match=r"TLS.*CERTIFICATE_VERIFY_FAILED"):
        trio.run(on_trio)


def test_the_certificate_must_name_the_host(
    authority: trustme.CA, trusting: ssl.SSLContext
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("elsewhere.example").configure_cert(context)
    with (
        ThreadedServer("127.0.0.1", 0, ssl=context) as server,
        Client(server.address, ssl=trusting, retries=0) as client,
        pytest.raises(ConnectError, match=r"TLS.*(match|mismatch)"),
    ):
        client.ping()


def test_a_plain_client_gets_no_reply_from_a_tls_server(tls_server: ThreadedServer) -> None:
    with (
        Client(tls_server.address, retries=0, read_timeout_s=2.0) as client,
        pytest.raises(TransportError),
    ):
        client.ping()
    with (
        Client(tls_server.address, ssl=None, retries=0) as client,  # None is plain TCP
        pytest.raises(TransportError),
    ):
        client.ping()


def test_ssl_must_be_a_context() -> None:
    with pytest.raises(LocalProtocolError, match=r"ssl= takes an ssl\.SSLContext"):
        Client("127.0.0.1:4777", ssl=True)  # type: ignore[arg-type]

    async def both() -> None:
        async with okq_trio.open_client(
            "127.0.0.1:4777",
            ssl=ssl.create_default_context(),
            stream_factory=lambda address: trio.open_tcp_stream(*address),
        ):
            pass

    with pytest.raises(LocalProtocolError, match="not both"):
        trio.run(both)


@pytest.mark.timeout(60)
def test_okq_serve_with_tls_cert_and_key(
    tmp_path: Path, authority: trustme.CA, trusting: ssl.SSLContext
) -> None:
    cert = authority.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [
            *(sys.executable, "-m", "okq_transports", "serve", "--port", "0"),
            *("--tls-cert", str(cert_file), "--tls-key", str(key_file)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("okq server listening on 127.0.0.1:"), line
            address = line.split()[-1]
            with Client(address, ssl=trusting) as client:
                client.ping()
                client.push("served", b"over TLS")
                assert client.status("served")[0].total == 1
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--tls-cert", "cert.pem"], 2, "--tls-cert and --tls-key go together"),
        (["--tls-key", "key.pem"], 2, "--tls-cert and --tls-key go together"),
        (["--tls-cert", "missing.pem", "--tls-key", "missing.pem"], 1, "cannot load the TLS"),
    ],
)
def test_okq_serve_tls_usage_errors(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "okq_transports", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
