"""The dashboard without a browser: its HTTP checks (Host, token, origin, content type,
body), its security headers, contents shown safely, the sampler's bounded history, a server
that goes away, and ``okq dashboard`` as a process."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from okq_proto import QueueStatus
from okq_transports.dashboard import Dashboard, is_loopback, listen_warning
from okq_transports.dashboard._sampler import HISTORY_SAMPLES, History, name_key, show_name
from okq_transports.dashboard._web import PEEK_LIMIT, contents_view
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer("127.0.0.1", 0) as srv:
        yield srv


@pytest.fixture
def writable(server: ThreadedServer) -> Iterator[Dashboard]:
    with Dashboard([server.url], listen=("127.0.0.1", 0), allow_writes=True, interval_s=0.1) as d:
        yield d


def request(
    dashboard: Dashboard,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    host, port = dashboard.http.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        sent = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
        sent.update(headers or {})
        conn.request(method, path, body=data, headers=sent)
        reply = conn.getresponse()
        raw = reply.read()
        parsed = json.loads(raw) if reply.getheader("Content-Type") == "application/json" else raw
        return reply.status, dict(reply.getheaders()), parsed
    finally:
        conn.close()


def flush_request(dashboard: Dashboard, **headers: str) -> tuple[int, Any]:
    base = {"X-OKQ-Token": dashboard.token, "Origin": request_origin(dashboard)}
    base.update(headers)
    status, _, body = request(
        dashboard, "POST", "/api/flush", {"server": 0, "queue": name_key("q")}, base
    )
    return status, body


def request_origin(dashboard: Dashboard) -> str:
    return f"http://127.0.0.1:{dashboard.http.server_address[1]}"


def test_a_write_needs_the_token_the_origin_and_json(
    server: ThreadedServer, writable: Dashboard
) -> None:
    with Client(server.address) as client:
        client.push("q", b"x")
        assert flush_request(writable, **{"X-OKQ-Token": "guess"}) == (
            403,
            {"error": "missing or wrong token"},
        )
        assert flush_request(writable, Origin="http://evil.example")[0] == 403
        assert flush_request(writable, **{"Sec-Fetch-Site": "cross-site"})[0] == 403
        assert flush_request(writable, **{"Content-Type": "text/plain"})[0] == 415
        assert client.status("q")[0].total == 1  # none of those wrote
        assert flush_request(writable) == (200, {"flushed": True})
        assert client.status("q")[0].total == 0
        status, _, body = request(
            writable,
            "POST",
            "/api/push",
            {"server": 0, "queue": name_key("q"), "contents": "hi"},
            {"X-OKQ-Token": writable.token},
        )
        assert status == 200
        assert client.peek_next("q") is not None
        assert client.peek_next("q").id == body["pushed"]  # type: ignore[union-attr]
        client.flush("q")


def test_bad_requests_get_clear_refusals(writable: Dashboard) -> None:
    token = {"X-OKQ-Token": writable.token}
    assert request(writable, "GET", "/", headers={"Host": "evil.example:80"})[0] == 421
    assert request(writable, "GET", "/nowhere")[0] == 404
    assert request(writable, "POST", "/api/nowhere", {}, token)[0] == 404
    assert request(writable, "POST", "/api/flush", {"server": "x"}, token)[0] == 400
    assert request(writable, "POST", "/api/flush", {"server": 9, "queue": "cQ=="}, token)[0] == 400
    assert request(writable, "POST", "/api/flush", [1, 2], token)[0] == 400
    assert request(writable, "GET", "/api/peek?server=0&queue=%%%")[0] == 400
    big = {**token, "Content-Length": str(10 << 20)}
    assert request(writable, "POST", "/api/flush", {}, big)[0] == 400


def test_read_only_refuses_writes_and_every_answer_carries_the_headers(
    server: ThreadedServer,
) -> None:
    with Dashboard([server.url], listen=("127.0.0.1", 0)) as dashboard:
        status, body = flush_request(dashboard)
        assert (status, body) == (403, {"error": "writes are off (start with --allow-writes)"})
        status, headers, page = request(dashboard, "GET", "/")
        assert status == 200
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert b'<meta name="okq-writes" content="0">' in page
        assert dashboard.token.encode() in page
        assert b"<script>" not in page  # no inline script: only /app.js


def test_contents_are_shown_as_text_or_as_hex_and_truncated() -> None:
    assert contents_view(b"hello") == {"size": 5, "truncated": False, "text": "hello"}
    assert contents_view(b"\xff\x00") == {
        "size": 2,
        "truncated": False,
        "hex": "ff 00",
        "base64": "/wA=",
    }
    long = "é" * PEEK_LIMIT  # two bytes each: the limit cuts a character in two
    view = contents_view(long.encode())
    assert view["truncated"]
    assert view["size"] == 2 * PEEK_LIMIT
    assert view["text"] == "é" * (PEEK_LIMIT // 2)


def test_names_round_trip_through_keys() -> None:
    odd = b"caf\xe9 <b>".decode("utf-8", "surrogateescape")
    assert show_name(odd) == "caf\\xe9 <b>"
    assert name_key(odd) == "Y2Fm6SA8Yj4="


def test_the_history_is_bounded_and_forgets_queues_long_gone() -> None:
    history = History()
    for n in range(HISTORY_SAMPLES + 10):
        entries = [QueueStatus("kept", n, 1, 0)]
        if n < 5:
            entries.append(QueueStatus("gone", 1, 0, 0))
        history.add(float(n), entries)
    series = history.series("kept")
    assert len(series["t"]) == HISTORY_SAMPLES
    assert series["total"][-1] == HISTORY_SAMPLES + 9
    assert series["t"][0] == -(HISTORY_SAMPLES - 1)
    assert history.rate("kept") == pytest.approx(1.0)
    assert "gone" not in history.queues  # absent for a whole ring
    assert history.rate("never") is None


def test_a_server_going_away_and_back_is_seen(server: ThreadedServer) -> None:
    with Dashboard([server.url], listen=("127.0.0.1", 0), interval_s=0.1) as dashboard:
        deadline = time.monotonic() + 10

        def state() -> dict[str, Any]:
            return request(dashboard, "GET", "/api/view")[2]["servers"][0]  # type: ignore[no-any-return]

        while state()["up"] is not True:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.stop()
        while state()["up"] is not False:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert state()["error"]
        assert state()["down_since"] > 0
        server.start()
        while state()["up"] is not True:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_the_page_stream_sends_samples(server: ThreadedServer) -> None:
    with Dashboard([server.url], listen=("127.0.0.1", 0), interval_s=0.1) as dashboard:
        port = dashboard.http.server_address[1]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/events?page=0", headers={"Host": f"127.0.0.1:{port}"})
        reply = conn.getresponse()
        assert reply.getheader("Content-Type") == "text/event-stream"
        seen: list[int] = []
        while len(seen) < 2:  # bounded by the socket timeout
            line = reply.readline()
            if line.startswith(b"data: "):
                seen.append(json.loads(line[6:])["version"])
        assert seen[1] > seen[0]
        conn.close()


def test_loopback_is_told_apart_and_elsewhere_is_warned_of() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "example.com", "::"))
    assert listen_warning("127.0.0.1", allow_writes=True) is None
    warning = listen_warning("0.0.0.0", allow_writes=False)
    assert warning is not None
    assert "not loopback" in warning
    assert "flush" not in warning
    assert "can flush them" in (listen_warning("10.0.0.1", allow_writes=True) or "")


@pytest.mark.timeout(60)
def test_okq_dashboard_runs_until_ctrl_c(server: ThreadedServer) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OKQ_URL", "OKQ_SERVER")}
    with subprocess.Popen(
        [
            *(sys.executable, "-m", "okq_transports", "-u", server.url, "dashboard"),
            *("--listen", "127.0.0.1:0", "--interval", "0.2"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("okq dashboard: http://127.0.0.1:"), line
            assert "(read-only)" in line
            url = line.split()[2]
            port = int(url.rsplit(":", 1)[1].strip("/"))
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/", headers={"Host": f"127.0.0.1:{port}"})
            assert conn.getresponse().status == 200
            conn.close()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    bad = subprocess.run(
        [sys.executable, "-m", "okq_transports", "dashboard", "--listen", "nowhere:x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "--listen" in bad.stderr
