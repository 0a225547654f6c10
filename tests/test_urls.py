"""Addresses as URLs on every door: ``okq://HOST:PORT`` (and failover lists of them) beside
``HOST:PORT``, a clear error for a scheme okq does not speak, and the CLI's ``-u/--url`` and
``OKQ_URL``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
import trio

from okq_proto import LocalProtocolError
from okq_transports import trio as okq_trio
from okq_transports.asyncio import Client as AsyncioClient
from okq_transports.cli import main
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client

SCHEME_ERROR = r"unsupported scheme 'redis' in server address 'redis://127\.0\.0\.1:4777'"


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer("127.0.0.1", 0) as srv:
        yield srv


@pytest.fixture(scope="module")
def dead_url() -> str:
    """A loopback URL where nothing listens (a port just freed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"okq://127.0.0.1:{port}"


def test_a_server_has_a_url(server: ThreadedServer) -> None:
    assert server.url == f"okq://127.0.0.1:{server.port}"


def test_sync_client_takes_urls_and_fails_over_along_them(
    server: ThreadedServer, dead_url: str
) -> None:
    with Client(server.url) as client:
        client.push("urls", b"a")
    with Client(f"{dead_url},{server.url}", retries=0) as client:
        assert client.status("urls")[0].total == 1
    with Client([dead_url, server.url + "/"]) as client:
        client.flush("urls")


def test_asyncio_client_takes_urls(server: ThreadedServer, dead_url: str) -> None:
    async def main_() -> None:
        async with AsyncioClient(f"{dead_url},{server.url}") as client:
            await client.ping()

    asyncio.run(main_())


def test_trio_client_takes_urls(server: ThreadedServer, dead_url: str) -> None:
    async def main_() -> None:
        async with okq_trio.open_client([dead_url, server.url]) as client:
            await client.ping()

    trio.run(main_)


def test_every_door_refuses_another_scheme_clearly() -> None:
    with pytest.raises(LocalProtocolError, match=SCHEME_ERROR):
        Client("redis://127.0.0.1:4777")
    with pytest.raises(LocalProtocolError, match=SCHEME_ERROR):
        AsyncioClient("redis://127.0.0.1:4777")

    async def on_trio() -> None:
        async with okq_trio.open_client("redis://127.0.0.1:4777"):
            pass

    with pytest.raises(LocalProtocolError, match=SCHEME_ERROR):
        trio.run(on_trio)


def test_cli_url_option_and_okq_url(
    server: ThreadedServer,
    dead_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OKQ_URL", raising=False)
    monkeypatch.setenv("OKQ_SERVER", dead_url)
    for option in ("-u", "--url", "--server"):
        assert main([option, server.url, "ping"]) == 0
        assert main(["ping", option, server.url]) == 0
    assert f"PONG from {server.url}" in capsys.readouterr().out
    monkeypatch.setenv("OKQ_URL", f"{dead_url},{server.url}")  # wins over OKQ_SERVER
    assert main(["ping"]) == 0
    monkeypatch.setenv("OKQ_URL", "redis://127.0.0.1:4777")
    capsys.readouterr()
    assert main(["ping"]) == 2
    err = capsys.readouterr().err
    assert "unsupported scheme 'redis'" in err
    assert len(err.strip().splitlines()) == 1


def test_serve_help_offers_no_server_to_talk_to(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--server" not in out
    assert "--url" not in out
    assert "--tls-cert" in out
