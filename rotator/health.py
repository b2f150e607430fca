"""Prometheus metrics and the /healthz and /readyz endpoints of the daemon.

The server runs on its own thread and reads only in-memory state, so it
answers at once even while a rotation is stuck on a slow endpoint.
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from rotator.token import Token

if TYPE_CHECKING:
    from rotator.app import App
    from rotator.scheduler import Daemon


class Metrics:
    """An Observer that keeps Prometheus metrics in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = registry or CollectorRegistry()
        # Credentials removed by a reload: a job or probe of theirs still running when
        # they were removed finishes later and must not bring their series back.
        self._gone: set[str] = set()
        r = self.registry
        self.expiry = Gauge(
            "rotator_token_expiry_timestamp_seconds",
            "Unix time at which the published token expires.",
            ["credential"],
            registry=r,
        )
        self.next_rotation = Gauge(
            "rotator_next_rotation_timestamp_seconds",
            "Unix time of the next planned rotation attempt.",
            ["credential"],
            registry=r,
        )
        self.last_success = Gauge(
            "rotator_last_success_timestamp_seconds",
            "Unix time of the last successful rotation step.",
            ["credential"],
            registry=r,
        )
        self.healthy = Gauge(
            "rotator_credential_healthy",
            "1 when the last rotation step of the credential succeeded, else 0.",
            ["credential"],
            registry=r,
        )
        self.rotations = Counter(
            "rotator_rotations_total",
            "Rotation steps by result (rotated, adopted, published, error).",
            ["credential", "result"],
            registry=r,
        )
        self.token_requests = Counter(
            "rotator_token_requests_total",
            "Token endpoint requests by grant type and outcome.",
            ["credential", "grant", "outcome"],
            registry=r,
        )
        self.publishes = Counter(
            "rotator_publishes_total",
            "Publishes by target and outcome (ok, kept_newer, error, refused: over "
            "max_writes_per_day, quota_exceeded: AWS's version quota).",
            ["credential", "target", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "rotator_retries_total",
            "Failed attempts that will be retried.",
            ["credential"],
            registry=r,
        )
        self.sm_interval = Gauge(
            "rotator_secretsmanager_write_interval_seconds",
            "Expected seconds between PutSecretValue calls (AWS advises >= 600).",
            ["credential"],
            registry=r,
        )

        self.probes = Counter(
            "rotator_probes_total",
            "Probes of the published token by outcome (active, revoked, error).",
            ["credential", "outcome"],
            registry=r,
        )
        self.revocations = Counter(
            "rotator_revocations_total",
            "Published tokens found refused before their expiry (replaced at once).",
            ["credential"],
            registry=r,
        )
        self.reloads = Counter(
            "rotator_config_reloads_total",
            "Configuration reloads by result (applied, unchanged, refused).",
            ["result"],
            registry=r,
        )

    def register(self, credential: str) -> None:
        """Create a credential's series up front, so the first retry is visible to rate()."""
        self._gone.discard(credential)
        self.retries.labels(credential)
        self.rotations.labels(credential, "error")
        self.revocations.labels(credential)

    def forget(self, credential: str) -> None:
        """Remove every series of a credential (removed from the configuration); what
        its last running job or probe reports afterwards is dropped."""
        self._gone.add(credential)
        for collector in (
            self.expiry,
            self.next_rotation,
            self.last_success,
            self.healthy,
            self.rotations,
            self.token_requests,
            self.publishes,
            self.retries,
            self.sm_interval,
            self.probes,
            self.revocations,
        ):
            names = list(collector._labelnames)
            where = names.index("credential")
            with collector._lock:
                labelsets = [key for key in collector._metrics if key[where] == credential]
            for labels in labelsets:
                collector.remove(*labels)

    def probe(self, credential: str, outcome: str) -> None:
        if credential in self._gone:
            return
        self.probes.labels(credential, outcome).inc()

    def revocation(self, credential: str) -> None:
        if credential in self._gone:
            return
        self.revocations.labels(credential).inc()

    def reload(self, result: str) -> None:
        self.reloads.labels(result).inc()

    def token_request(self, credential: str, grant: str, outcome: str) -> None:
        if credential in self._gone:
            return
        self.token_requests.labels(credential, grant, outcome).inc()

    def publish(self, credential: str, target: str, outcome: str) -> None:
        if credential in self._gone:
            return
        self.publishes.labels(credential, target, outcome).inc()

    def rotation(self, credential: str, result: str) -> None:
        if credential in self._gone:
            return
        self.rotations.labels(credential, result).inc()
        ok = result not in ("error", "internal_error")
        self.healthy.labels(credential).set(1 if ok else 0)
        if ok:
            self.last_success.labels(credential).set_to_current_time()

    def published(self, credential: str, token: Token) -> None:
        if credential in self._gone:
            return
        self.expiry.labels(credential).set(int(token.expires_at.timestamp()))

    def scheduled(self, credential: str, at: datetime) -> None:
        if credential in self._gone:
            return
        self.next_rotation.labels(credential).set(at.timestamp())

    def retry(self, credential: str, error: BaseException) -> None:
        if credential in self._gone:
            return
        self.retries.labels(credential).inc()

    def secretsmanager_interval(self, credential: str, seconds: float) -> None:
        if credential in self._gone:
            return
        self.sm_interval.labels(credential).set(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# A probe or scrape is one short request: an idle or slow connection is dropped
# after this long, and at most MAX_CONNECTIONS are served at once (the rest are
# closed at once), so idle sockets cannot pile up threads in the daemon.
CONNECTION_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 8


class _BoundedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # every handler is busy: drop, never queue
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HealthServer:
    """/metrics, /healthz (the scheduler is alive and no job is stuck) and /readyz
    (every credential has a published token with more than the readiness margin
    left, in every one of its targets). Bodies say state, never error details:
    those go to the logs, the metrics and `rotator status`."""

    def __init__(self, app: App, daemon: Daemon, *, host: str = "0.0.0.0", port: int = 0) -> None:  # noqa: S104
        self._app = app
        self._daemon = daemon
        handler = _handler(self)
        self._server = _BoundedServer((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="rotator-health", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def metrics(self) -> bytes:
        observer = self._app.observer
        if isinstance(observer, Metrics):
            return observer.exposition()
        return b""

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        running = self._daemon.is_alive and not self._daemon.stop_event.is_set()
        stuck = set(self._daemon.stuck())
        alive = running and not stuck
        status = "ok" if alive else ("stuck" if running else "down")
        body: dict[str, Any] = {"status": status, "credentials": {}}
        for name, state in self._daemon.states.items():
            if name in stuck:
                cred_state = "stuck"
            elif state.running_since is not None:
                cred_state = "running"
            else:
                cred_state = "failing" if state.consecutive_failures else "ok"
            body["credentials"][name] = {
                "state": cred_state,
                "consecutive_failures": state.consecutive_failures,
                "next_run_at": state.next_run_at.isoformat() if state.next_run_at else None,
            }
        return alive, body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        now = self._app.clock.now()
        margin = self._app.settings.readiness_margin_seconds
        ready = True
        creds: dict[str, Any] = {}
        for rotator in self._daemon.rotators:
            token = rotator.token
            left = None if token is None else (token.expires_at - now).total_seconds()
            behind = sorted(rotator.pending_targets)
            held = sorted(rotator.held)  # refused by a quota: the details are in the log
            revoked = rotator.is_revoked  # refused early, not replaced yet
            ok = left is not None and left > margin and not behind and not held and not revoked
            ready = ready and ok
            creds[rotator.name] = {"ready": ok, "seconds_left": left, "targets_behind": behind}
            if held:
                creds[rotator.name]["targets_refused"] = held
            if revoked:
                creds[rotator.name]["revoked"] = True
        return ready, {"status": "ready" if ready else "not ready", "credentials": creds}


def _handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = CONNECTION_TIMEOUT_SECONDS  # per connection: an idle client is dropped

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, server.metrics(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok, body = server.liveness()
                self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
            elif path == "/readyz":
                ok, body = server.readiness()
                self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler
