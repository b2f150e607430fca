"""A fault-injecting HTTP/1.1 reverse proxy for tests.

Put ``FaultProxy`` between a consumer and a local server (the ``KeycloakStub``, a moto
server...) and switch faults on and off while the test runs::

    from rotator.testing import FaultProxy

    with FaultProxy(moto_url) as proxy:
        client = boto3.client("secretsmanager", endpoint_url=proxy.url, ...)
        proxy.fail(503, times=2, target="PutSecretValue")
        ...
        assert proxy.count(target="PutSecretValue") == 3

Requests are forwarded as they came (Host header included, so AWS signatures stay valid),
minus hop-by-hop headers; the upstream answer is passed back with its status, reason,
headers and body. Client connections are kept alive, each with its own upstream connection.

Faults apply to the next ``times`` matching requests (``times=None``: until ``clear()``).
A fault can be limited to requests whose path starts with ``path_prefix`` and/or whose
``X-Amz-Target`` header contains ``target`` (AWS JSON protocols name the action there, e.g.
``secretsmanager.PutSecretValue`` or ``AmazonSSM.PutParameter``). When several faults
match a request, the oldest latency and the oldest other fault apply: latency first, then
``stall``, ``reset``, ``fail`` or ``truncate``.

The upstream must be on a loopback address: these tests never leave the machine.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from rotator.testing._http import (
    BodyError,
    Handler,
    TrackingServer,
    drop_hop_by_hop,
    error_page,
    is_loopback,
    origin_form,
    public_host,
    read_body,
)
from rotator.testing.faults import Fault, FaultPlan

__all__ = ["FaultProxy", "ProxiedRequest", "Verdict"]

_MAX_BODY = 64 << 20


@dataclass(frozen=True)
class ProxiedRequest:
    """One request that reached the proxy.

    ``fault`` names what was injected: ``"latency"``, ``"stall"``, ``"reset"``, ``"fail"``,
    ``"truncate"``, or ``"latency+fail"`` and the like when latency came with another fault;
    ``None`` for a plain pass-through. ``status`` is the status sent to the client: ``None``
    while the request is in flight, and for stalled or reset requests. An upstream that cannot
    be reached gives 502. ``time`` is ``time.time()`` at arrival.
    """

    time: float
    method: str
    path: str
    target: str | None
    fault: str | None
    status: int | None


@dataclass(frozen=True)
class Verdict:
    """What a subclass of FaultProxy decided about one request (see ``_screen``).

    ``answer`` (status, headers, body) is sent instead of forwarding; ``name`` is then
    logged as the request's ``fault``. ``settle`` hears the upstream's status of a
    forwarded request."""

    name: str = ""
    answer: tuple[int, tuple[tuple[str, str], ...], bytes] | None = None
    settle: Callable[[int | None], None] | None = None


class _ProxyHandler(Handler):
    proxy: FaultProxy | None = None
    upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.proxy is not None:
                self.proxy._drop_upstream(self)


class FaultProxy:
    """Fault-injecting reverse proxy to a loopback HTTP server; see the module docstring."""

    def __init__(
        self,
        upstream: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        upstream_timeout: float = 30.0,
    ) -> None:
        """``upstream`` is ``http://127.0.0.1:PORT`` (any loopback host; a path is prefixed
        to forwarded paths). Raises ``ValueError`` for any other host: nothing is proxied
        off the machine."""
        parts = urlsplit(upstream)
        if parts.scheme != "http":
            raise ValueError(f"FaultProxy forwards plain http only, got {upstream!r}")
        upstream_host = parts.hostname
        if not upstream_host or not is_loopback(upstream_host):
            raise ValueError(
                f"FaultProxy only forwards to a loopback upstream (127.0.0.0/8, ::1, localhost), "
                f"got {upstream!r}"
            )
        self.upstream = upstream
        self._upstream_host = upstream_host
        self._upstream_port = parts.port or 80
        self._upstream_base = parts.path.rstrip("/")
        self._upstream_timeout = upstream_timeout
        self.host = host
        self._requested_port = port
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._generation = 0
        self._stopping = threading.Event()
        self._plan = FaultPlan()
        self._log: list[ProxiedRequest] = []
        self._upstreams: set[http.client.HTTPConnection] = set()
        self._server: TrackingServer | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        with self._lock:
            if self._server is not None:
                raise RuntimeError("FaultProxy is already running")
            self._stopping.clear()
            server = TrackingServer(
                (self.host, self._requested_port), _ProxyHandler, self._handle, "fault-proxy"
            )
            self._server = server
            self._port = server.port
        server.start_serving()
        return self

    def stop(self) -> None:
        """Stop serving; close the listening socket, every client connection (stalled ones
        included) and every upstream connection; join the threads. Idempotent."""
        with self._lock:
            server, self._server = self._server, None
            self._stopping.set()
            self._released.notify_all()
            upstreams = list(self._upstreams)
        if server is None:
            return
        for conn in upstreams:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
        server.stop_serving()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FaultProxy has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``"""
        return f"http://{public_host(self.host)}:{self.port}"

    # -- faults ------------------------------------------------------------------------------

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self._plan.add(fault)

    def add_latency(
        self,
        seconds: float,
        *,
        times: int | None = 1,
        path_prefix: str | None = None,
        target: str | None = None,
    ) -> None:
        """Wait ``seconds`` before handling each matching request."""
        self._add(Fault.latency(seconds, times=times, path_prefix=path_prefix, target=target))

    def stall(
        self, *, times: int | None = 1, path_prefix: str | None = None, target: str | None = None
    ) -> None:
        """Read matching requests and never answer; on ``clear()`` or ``stop()`` the stalled
        connections are closed without an answer (the request never reaches the upstream)."""
        self._add(Fault("stall", times, path_prefix, target))

    def reset(
        self, *, times: int | None = 1, path_prefix: str | None = None, target: str | None = None
    ) -> None:
        """Read matching requests, then close the connection with a TCP RST, unanswered."""
        self._add(Fault("reset", times, path_prefix, target))

    def fail(
        self,
        status: int = 503,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        times: int | None = 1,
        path_prefix: str | None = None,
        target: str | None = None,
    ) -> None:
        """Answer matching requests with a canned response, without forwarding them.

        ``body`` defaults to a proxy-style HTML error page for ``status``; Content-Type
        defaults to ``text/html`` unless ``headers`` has one (pass ``{"Retry-After": "2"}``
        with a 429, say). Content-Length is always set to the body's length.
        """
        self._add(
            Fault.canned(status, body, headers, times=times, path_prefix=path_prefix, target=target)
        )

    def truncate(
        self,
        *,
        keep_bytes: int | None = None,
        times: int | None = 1,
        path_prefix: str | None = None,
        target: str | None = None,
    ) -> None:
        """Forward matching requests, then send the upstream's status and headers with its
        full Content-Length (at least one more than what is sent), only ``keep_bytes`` of the
        body (default: half of it), and close the connection."""
        self._add(Fault.truncation(keep_bytes, times=times, path_prefix=path_prefix, target=target))

    def clear(self) -> None:
        """Remove every fault and release stalled connections (they are closed)."""
        with self._lock:
            self._plan.clear()
            self._generation += 1
            self._released.notify_all()

    # -- observation -------------------------------------------------------------------------

    def requests(self) -> list[ProxiedRequest]:
        """Snapshot of every request that reached the proxy, oldest first."""
        with self._lock:
            return list(self._log)

    def count(self, target: str | None = None, path_prefix: str | None = None) -> int:
        """Number of requests, optionally only those whose X-Amz-Target contains ``target``
        and/or whose path starts with ``path_prefix``."""
        with self._lock:
            return sum(
                1
                for r in self._log
                if (target is None or (r.target is not None and target in r.target))
                and (path_prefix is None or r.path.startswith(path_prefix))
            )

    # -- request handling --------------------------------------------------------------------

    def _handle(self, handler: Handler) -> None:
        assert isinstance(handler, _ProxyHandler)
        handler.proxy = self
        try:
            body = read_body(handler.rfile, handler.headers, _MAX_BODY)
        except BodyError as exc:
            handler.close_connection = True
            handler.send_raw(
                exc.status, [("Content-Type", "text/plain")], exc.message.encode("ascii")
            )
            return
        path = origin_form(handler.path)
        target = handler.headers.get("X-Amz-Target")
        with self._lock:
            latency, fault = self._plan.take(path, target)
            generation = self._generation
        names = [rule.kind for rule in (latency, fault) if rule is not None]
        verdict = self._screen(handler, target, body) if fault is None else None
        if verdict is not None and verdict.answer is not None:
            names.append(verdict.name)
        with self._lock:
            index = len(self._log)
            self._log.append(
                ProxiedRequest(
                    time=time.time(),
                    method=handler.command,
                    path=path,
                    target=target,
                    fault="+".join(names) or None,
                    status=None,
                )
            )
        if latency is not None and self._stopping.wait(latency.seconds):
            handler.close_connection = True
            return
        if verdict is not None and verdict.answer is not None:
            status, headers, data = verdict.answer
            self._set_status(index, status)
            handler.send_raw(status, headers, data)
        elif fault is None or fault.kind == "truncate":
            settle = verdict.settle if verdict is not None else None
            self._forward(handler, index, path, body, fault, settle=settle)
        elif fault.kind == "fail":
            self._set_status(index, fault.status)
            handler.send_raw(fault.status, fault.headers, fault.body)
        elif fault.kind == "stall":
            self._stall(generation)
            handler.close_connection = True
        else:
            self._reset(handler)

    def _screen(self, handler: Handler, target: str | None, body: bytes) -> Verdict | None:
        """A subclass's say on a request that no fault claimed: answer it itself
        (``Verdict.answer``) or forward it and hear the outcome (``Verdict.settle``, called
        with the upstream's status, None when there was no answer). None: forward as is."""
        return None

    def _set_status(self, index: int, status: int) -> None:
        """Log the status before the client can see it, so the log never lags behind."""
        with self._lock:
            self._log[index] = replace(self._log[index], status=status)

    def _stall(self, generation: int) -> None:
        with self._released:
            while self._generation == generation and not self._stopping.is_set():
                self._released.wait()

    @staticmethod
    def _reset(handler: _ProxyHandler) -> None:
        handler.close_connection = True
        sock = handler.connection
        assert isinstance(sock, socket.socket)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The buffered reader holds a reference that would defer the real close (and the RST).
        handler.rfile.close()
        sock.close()

    def _new_upstream(self, handler: _ProxyHandler) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(
            self._upstream_host, self._upstream_port, timeout=self._upstream_timeout
        )
        with self._lock:
            self._upstreams.add(conn)
        handler.upstream = conn
        return conn

    def _drop_upstream(self, handler: _ProxyHandler) -> None:
        conn, handler.upstream = handler.upstream, None
        if conn is not None:
            with self._lock:
                self._upstreams.discard(conn)
            conn.close()

    def _exchange(
        self,
        handler: _ProxyHandler,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """One upstream round trip; a reused connection the upstream closed is retried once
        on a new one (nothing reached the upstream in that case)."""
        has_host = any(name.lower() == "host" for name, _ in headers)
        while True:
            reused = handler.upstream is not None
            conn = handler.upstream or self._new_upstream(handler)
            try:
                conn.putrequest(
                    handler.command,
                    self._upstream_base + path,
                    skip_host=has_host,
                    skip_accept_encoding=True,
                )
                for name, value in headers:
                    conn.putheader(name, value)
                conn.endheaders(body)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop_upstream(handler)
                if reused and not self._stopping.is_set():
                    continue
                raise
            except (OSError, http.client.HTTPException):
                self._drop_upstream(handler)
                raise
            if response.will_close:
                self._drop_upstream(handler)
            return response, data

    def _forward(
        self,
        handler: _ProxyHandler,
        index: int,
        path: str,
        body: bytes,
        truncate: Fault | None,
        *,
        settle: Callable[[int | None], None] | None = None,
    ) -> None:
        """Forward the request; ``settle`` hears the upstream's status (None: no answer)
        before the client does."""
        request_headers = drop_hop_by_hop(list(handler.headers.items()), "content-length", "expect")
        send_body: bytes | None = None
        if body or "Content-Length" in handler.headers or handler.command in ("POST", "PUT"):
            send_body = body
            request_headers.append(("Content-Length", str(len(body))))
        try:
            response, data = self._exchange(handler, path, request_headers, send_body)
        except (OSError, http.client.HTTPException):
            if settle is not None:
                settle(None)
            if self._stopping.is_set():
                handler.close_connection = True
                return
            self._set_status(index, 502)
            handler.send_raw(502, [("Content-Type", "text/html")], error_page(502))
            return
        response_headers = drop_hop_by_hop(response.getheaders(), "content-length")
        status = response.status
        self._set_status(index, status)
        if settle is not None:
            settle(status)
        bodiless = handler.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        if bodiless:
            length = response.getheader("Content-Length")
            handler.send_raw(
                status,
                response_headers,
                b"",
                reason=response.reason,
                content_length=int(length) if length and length.isdigit() else 0,
                date=False,
            )
        elif truncate is not None:
            keep = len(data) // 2 if truncate.keep_bytes is None else truncate.keep_bytes
            sent = data[:keep]
            handler.close_connection = True
            handler.send_raw(
                status,
                response_headers,
                sent,
                reason=response.reason,
                content_length=max(len(data), len(sent) + 1),
                date=False,
            )
        else:
            handler.send_raw(status, response_headers, data, reason=response.reason, date=False)
