"""HTTP/1.1 server plumbing shared by the test servers (the Keycloak stub, the fault
proxy, the AWS-limits proxy): body framing, a keep-alive handler that hands each request
to an ``app`` callable, and a server that can close every connection and join every thread.

Private to rotator.testing; its names are public so the servers import no private name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "BodyError",
    "Handler",
    "TrackingServer",
    "drop_hop_by_hop",
    "error_page",
    "is_loopback",
    "origin_form",
    "public_host",
    "read_body",
]

STOP_TIMEOUT = 5.0
POLL_INTERVAL = 0.05
# Headers that describe one connection, not the message: a proxy does not forward them.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


class BodyError(Exception):
    """The request body could not be read; answer ``status`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _read_chunked(rfile: BufferedIOBase, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise BodyError(400, "malformed chunked body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise BodyError(400, "malformed chunk size") from exc
        if size < 0:
            raise BodyError(400, "malformed chunk size")
        if size == 0:
            break
        total += size
        if total > limit:
            raise BodyError(413, "request body too large")
        chunk = rfile.read(size)
        if len(chunk) < size:
            raise BodyError(400, "incomplete chunked body")
        parts.append(chunk)
        if rfile.readline(1024) not in (b"\r\n", b"\n"):
            raise BodyError(400, "malformed chunked body")
    while True:  # trailer section
        line = rfile.readline(8192)
        if line in (b"\r\n", b"\n", b""):
            break
    return b"".join(parts)


def read_body(rfile: BufferedIOBase, headers: Message, limit: int) -> bytes:
    """Read a request body framed by Content-Length or chunked transfer coding."""
    transfer_encoding = headers.get("Transfer-Encoding")
    if transfer_encoding is not None:
        if transfer_encoding.strip().lower() != "chunked":
            raise BodyError(501, "unsupported transfer coding")
        return _read_chunked(rfile, limit)
    content_length = headers.get("Content-Length")
    if content_length is None:
        return b""
    try:
        size = int(content_length)
    except ValueError as exc:
        raise BodyError(400, "invalid Content-Length") from exc
    if size < 0:
        raise BodyError(400, "invalid Content-Length")
    if size > limit:
        raise BodyError(413, "request body too large")
    data = rfile.read(size)
    if len(data) < size:
        raise BodyError(400, "incomplete request body")
    return data


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler that hands every request to the server's ``app``."""

    protocol_version = "HTTP/1.1"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Never log: request lines and bodies may carry secrets."""

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = ""
                self.request_version = ""
                self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            server = self.server
            assert isinstance(server, TrackingServer)
            server.app(self)
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True

    def send_raw(
        self,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        reason: str | None = None,
        content_length: int | None = None,
        date: bool = True,
    ) -> None:
        """Write a whole response at once; the body is left out for HEAD requests."""
        if reason is None:
            try:
                reason = HTTPStatus(status).phrase
            except ValueError:
                reason = ""
        lines = [f"HTTP/1.1 {status} {reason}".rstrip()]
        if date:
            lines.append(f"Date: {self.date_time_string()}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        length = len(body) if content_length is None else content_length
        lines.append(f"Content-Length: {length}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.wfile.write(head if self.command == "HEAD" else head + body)


class TrackingServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its connections and worker threads, so that ``stop``
    can close every socket (idle keep-alive and stalled ones included) and join every thread.
    """

    daemon_threads = True
    block_on_close = False
    # socketserver's default listen backlog is 5: a daemon's cold start opens up to 32
    # connections at once and the excess were refused (ConnectionError, retried). Real
    # servers (Keycloak's Vert.x, moto's werkzeug) accept far more.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[Handler],
        app: Callable[[Handler], None],
        name: str,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.app = app
        self.name = name
        self._track_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        self._closing = False
        self._serial = 0
        self._serve_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port = self.server_address[1]
        assert isinstance(port, int)
        return port

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        sock = request if isinstance(request, socket.socket) else request[1]
        with self._track_lock:
            if self._closing:
                self.shutdown_request(request)
                return
            self._serial += 1
            worker = threading.Thread(
                target=self._work,
                args=(request, sock, client_address),
                name=f"{self.name}-conn-{self._serial}",
                daemon=True,
            )
            self._connections.add(sock)
            self._workers.add(worker)
        worker.start()

    def _work(
        self,
        request: socket.socket | tuple[bytes, socket.socket],
        sock: socket.socket,
        client_address: Any,
    ) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._track_lock:
                self._connections.discard(sock)
                self._workers.discard(threading.current_thread())
            self.shutdown_request(request)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if isinstance(sys.exception(), OSError):
            return  # the peer went away, or stop() closed the socket: not worth a traceback
        super().handle_error(request, client_address)

    def start_serving(self) -> None:
        self._serve_thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name=f"{self.name}-accept",
            daemon=True,
        )
        self._serve_thread.start()

    def stop_serving(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop accepting, close the listening socket and every connection, join threads."""
        self.shutdown()
        self.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(timeout)
        with self._track_lock:
            self._closing = True
            connections = list(self._connections)
            workers = list(self._workers)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))


def public_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def error_page(status: int) -> bytes:
    try:
        title = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        title = str(status)
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    ).encode("ascii")


def origin_form(target: str) -> str:
    """Path and query of a request target, also when a client sent the absolute form."""
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        path = parts.path or "/"
        return f"{path}?{parts.query}" if parts.query else path
    return target


def drop_hop_by_hop(headers: list[tuple[str, str]], *extra: str) -> list[tuple[str, str]]:
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    dropped = HOP_BY_HOP | named | set(extra)
    return [(name, value) for name, value in headers if name.lower() not in dropped]
