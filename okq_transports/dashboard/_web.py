"""The dashboard's HTTP side, on the standard library's ``http.server``: the page, its live
stream (server-sent events), peeks, and the writes that ``--allow-writes`` turns on.

Owns: the routes, the checks every request passes (the ``Host`` it names, and for writes the
per-process token, the same-origin ``Origin`` and a JSON body: a page on another site can
neither read nor write), the security headers (a Content-Security-Policy without inline
script, so nothing in an event can run), and showing event contents safely (text when they
are UTF-8, hex and base64 when not, truncated with the size given).
Must not know: how samples are taken (`Sampler`), what the page looks like (`_page`).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from okq_proto import Event, OkqError

from . import _page
from ._sampler import Sampler

__all__ = ["PEEK_LIMIT", "DashboardHTTPServer", "contents_view"]

#: The most bytes of an event's contents the page is sent.
PEEK_LIMIT: Final = 4096
#: How long a page stream waits for a sample before a keep-alive comment.
_KEEPALIVE_S: Final = 15.0
_MAX_BODY: Final = 1 << 20
_PER_PAGE: Final = 50
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def contents_view(contents: bytes, limit: int = PEEK_LIMIT) -> dict[str, Any]:
    """Event contents for the page: ``size``, ``truncated``, and ``text`` (UTF-8 contents)
    or ``hex`` and ``base64`` (other bytes), of at most `limit` bytes."""
    shown = contents[:limit]
    view: dict[str, Any] = {"size": len(contents), "truncated": len(contents) > limit}
    try:
        view["text"] = shown.decode("utf-8")
    except UnicodeDecodeError as exc:
        if len(contents) > limit and exc.start >= limit - 3:  # a character cut by the limit
            view["text"] = shown[: exc.start].decode("utf-8")
        else:
            view["hex"] = shown.hex(" ")
            view["base64"] = base64.b64encode(shown).decode("ascii")
    return view


class DashboardHTTPServer(ThreadingHTTPServer):
    """The dashboard's HTTP server (one thread per request; page streams included)."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], sampler: Sampler, *, allow_writes: bool = False
    ) -> None:
        self.sampler = sampler
        self.allow_writes = allow_writes
        self.token = secrets.token_urlsafe(24)
        self.closing = threading.Event()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def allowed_hosts(self) -> set[str]:
        host, port = self.server_address[:2]
        names = {str(host), "127.0.0.1", "localhost", "[::1]"}
        return {f"{name}:{port}" for name in names}


class _Handler(BaseHTTPRequestHandler):
    server: DashboardHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the dashboard's output is the page

    # -- routing --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", self._page())
        elif url.path == "/app.js":
            self._send(HTTPStatus.OK, "text/javascript; charset=utf-8", _page.SCRIPT.encode())
        elif url.path == "/app.css":
            self._send(HTTPStatus.OK, "text/css; charset=utf-8", _page.STYLE.encode())
        elif url.path == "/api/view":
            self._json(HTTPStatus.OK, self._view(query))
        elif url.path == "/events":
            self._stream(query)
        elif url.path == "/api/peek":
            self._peek(query)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "no such page"})

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        if path not in ("/api/flush", "/api/push"):
            self._json(HTTPStatus.NOT_FOUND, {"error": "no such action"})
            return
        body = self._write_request()
        if body is None:
            return
        server_no, queue = body.get("server", 0), body.get("queue")
        if not isinstance(server_no, int) or not isinstance(queue, str):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "server (a number) and queue needed"})
            return
        client = self._client(server_no)
        name = _queue_name(queue)
        if client is None or name is None:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "no such server or queue"})
            return
        try:
            if path == "/api/flush":
                client.flush(name)
                self._json(HTTPStatus.OK, {"flushed": True})
            else:
                contents = body.get("contents", "")
                if not isinstance(contents, str):
                    self._json(HTTPStatus.BAD_REQUEST, {"error": "contents must be text"})
                    return
                event_id = client.push(name, contents.encode("utf-8"))
                self._json(HTTPStatus.OK, {"pushed": event_id})
        except OkqError as exc:
            self._json(HTTPStatus.BAD_GATEWAY, {"error": str(exc)})

    # -- checks ---------------------------------------------------------------------------------

    def _host_ok(self) -> bool:
        """The request names this server (a DNS-rebinding page names its own host)."""
        if self.headers.get("Host", "") in self.server.allowed_hosts():
            return True
        self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": "unexpected Host header"})
        return False

    def _write_request(self) -> dict[str, Any] | None:
        """The JSON body of a write, or None once a refusal is sent."""
        server = self.server
        if not server.allow_writes:
            self._json(
                HTTPStatus.FORBIDDEN, {"error": "writes are off (start with --allow-writes)"}
            )
            return None
        if not secrets.compare_digest(self.headers.get("X-OKQ-Token", ""), server.token):
            self._json(HTTPStatus.FORBIDDEN, {"error": "missing or wrong token"})
            return None
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host', '')}":
            self._json(HTTPStatus.FORBIDDEN, {"error": "cross-origin request refused"})
            return None
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            self._json(HTTPStatus.FORBIDDEN, {"error": "cross-site request refused"})
            return None
        if self.headers.get_content_type() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send application/json"})
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
            return None
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "the body must be a JSON object"})
            return None
        return body

    # -- answers --------------------------------------------------------------------------------

    def _page(self) -> bytes:
        server = self.server
        return _page.render(
            token=server.token,
            writes=server.allow_writes,
            servers=[s.address for s in server.sampler.servers],
        ).encode("utf-8")

    def _view(self, query: dict[str, str]) -> dict[str, Any]:
        try:
            page = int(query.get("page", "0"))
        except ValueError:
            page = 0
        view = self.server.sampler.view(
            page=page, per_page=_PER_PAGE, match=query.get("match", ""), plot=query.get("plot")
        )
        view["writes"] = self.server.allow_writes
        return view

    def _stream(self, query: dict[str, str]) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        sampler = self.server.sampler
        version = -1
        try:
            while not self.server.closing.is_set():  # bounded: ends with the server or the tab
                current = sampler.wait_for(version, _KEEPALIVE_S)
                if current == version:
                    self.wfile.write(b": keep-alive\n\n")
                else:
                    version = current
                    data = json.dumps(self._view(query), separators=(",", ":"))
                    self.wfile.write(b"data: " + data.encode("utf-8") + b"\n\n")
                self.wfile.flush()
        except (OSError, ValueError):
            pass  # the tab went away, or the dashboard is stopping
        self.close_connection = True

    def _peek(self, query: dict[str, str]) -> None:
        try:
            server_no = int(query.get("server", "0"))
        except ValueError:
            server_no = -1
        client = self._client(server_no)
        name = _queue_name(query.get("queue", ""))
        if client is None or name is None:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "no such server or queue"})
            return
        try:
            event = client.peek_last(name) if query.get("end") == "last" else client.peek_next(name)
        except OkqError as exc:
            self._json(HTTPStatus.BAD_GATEWAY, {"error": str(exc)})
            return
        self._json(HTTPStatus.OK, _event_view(event))

    def _client(self, number: int) -> Any:
        clients = self.server.sampler.clients
        return clients[number] if 0 <= number < len(clients) else None

    def _json(self, status: HTTPStatus, value: object) -> None:
        self._send(status, "application/json", json.dumps(value).encode("utf-8"))

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _queue_name(key: str) -> str | None:
    """The queue name a page sent as its `name_key`."""
    try:
        raw = base64.urlsafe_b64decode(key.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    return raw.decode("utf-8", "surrogateescape") if raw else None


def _event_view(event: Event | None) -> dict[str, Any]:
    if event is None:
        return {"found": False}
    return {"found": True, "id": event.id, **contents_view(event.contents)}
