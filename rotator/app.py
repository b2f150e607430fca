"""The composition root: the one place that builds things. ``build`` makes an App
from Settings; the App builds every part of a credential (its stores, token client,
schedule, retry policy, rotator) and of the daemon (the scheduler, the health
server). Commands only use what it builds.

Every entry point (CLI, daemon, tests, benchmarks) builds through here; tests
pass their own clock, session or endpoint instead of patching anything.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rotator.clients import (
    AwsClients,
    build_session,
    build_store,
    proxies_for,
    timeouts_of,
    tls_verify,
)
from rotator.clock import Clock, SystemClock
from rotator.config import Credential, Settings, Target
from rotator.errors import ConfigError
from rotator.oauth import TokenClient, check_http_url, verify_token
from rotator.retry import Backoff
from rotator.rotation import CredentialRotator, NullObserver, Observer, Schedule
from rotator.secretsource import SecretProvider
from rotator.stores.base import TokenStore

if TYPE_CHECKING:
    import requests

    from rotator.assertion import ClientAuth
    from rotator.health import HealthServer
    from rotator.keysource import KeyProvider
    from rotator.probe import Probe
    from rotator.scheduler import Daemon
    from rotator.token import Token
    from rotator.transport import TokenTransport

__all__ = [
    "App",
    "AwsClients",
    "build",
    "build_session",
    "build_store",
    "job_deadline",
    "probe_interval",
    "proxies_for",
    "timeouts_of",
    "tls_verify",
]


@dataclass
class App:
    settings: Settings
    clock: Clock
    aws: AwsClients
    observer: Observer
    session: Any = field(default=None, repr=False)
    # token POSTs; None: a TokenTransport (build() passes an injected session here too)
    token_session: Any = field(default=None, repr=False)
    env: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)
    stop_event: threading.Event = field(default_factory=threading.Event, repr=False)
    metrics_port: int | None = None  # `run --metrics-port` (None: the configuration's)
    _secrets: dict[str, SecretProvider] = field(default_factory=dict, repr=False)
    _keys: dict[str, KeyProvider] = field(default_factory=dict, repr=False)
    _proxies: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict, repr=False)
    _advice_index: tuple[object, dict[str, Credential]] = field(
        default_factory=lambda: (None, {}), repr=False, compare=False
    )

    def http(self) -> requests.Session:
        if self.session is None:
            self.session = build_session()
        return self.session  # type: ignore[no-any-return]

    def token_http(self) -> TokenTransport | requests.Session:
        """What token requests go through: urllib3 pools without requests' Session
        layer (rotator.transport), unless a session was injected."""
        if self.token_session is None:
            from rotator.transport import TokenTransport

            self.token_session = TokenTransport()
        return self.token_session  # type: ignore[no-any-return]

    def proxies(self, url: str) -> dict[str, str]:
        """proxies_for(url), once per scheme and host: each lookup walks the whole
        environment twice (~0.5 ms), 1,000 times at start-up with 1,000 credentials."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        found = self._proxies.get(key)
        if found is None:
            found = self._proxies[key] = proxies_for(url)
        return dict(found)

    def store(self, target: Target, credential: Credential | None = None) -> TokenStore:
        """`target`'s store; its AWS calls take `credential`'s timeouts (None: the defaults)."""
        return build_store(
            target, self.aws, None if credential is None else timeouts_of(credential)
        )

    def stores(self, credential: Credential) -> list[TokenStore]:
        return [self.store(t, credential) for t in credential.targets]

    def schedule(self, credential: Credential) -> Schedule:
        """When `credential`'s token is due (the one place Schedule is made from Refresh)."""
        refresh = credential.refresh
        return Schedule(
            ratio=refresh.ratio,
            jitter_ratio=refresh.jitter_ratio,
            safety_margin=_seconds(refresh.safety_margin_seconds),
        )

    def secret(self, credential: Credential) -> SecretProvider:
        provider = self._secrets.get(credential.name)
        if provider is None:
            source = credential.require_client().secret_source
            if source is None:
                raise ConfigError(f"credentials[{credential.name}]: no client secret configured")
            timeouts = timeouts_of(credential)
            provider = SecretProvider(
                source,
                env=self.env,
                client_for=lambda service, region: self.aws.client(service, region, timeouts),
            )
            self._secrets[credential.name] = provider
        return provider

    def signing_key(self, credential: Credential) -> KeyProvider:
        """The private key of a private_key_jwt credential (one provider per credential)."""
        from rotator.keysource import KeyProvider

        provider = self._keys.get(credential.name)
        if provider is None:
            jwt = credential.require_client().jwt
            if jwt is None or jwt.key_source is None:
                raise ConfigError(f"credentials[{credential.name}]: no private key configured")
            provider = KeyProvider(
                jwt.key_source,
                alg=jwt.signing_alg,
                kid=jwt.key_id,
                env=self.env,
                client_for=lambda service, region: self.aws.client(
                    service, region, timeouts_of(credential)
                ),
            )
            self._keys[credential.name] = provider
        return provider

    def client_auth(self, credential: Credential) -> ClientAuth | None:
        """RFC 7523 client assertions for the JWT methods; None for the secret methods."""
        client = credential.require_client()
        jwt = client.jwt
        if jwt is None:
            return None
        from rotator import assertion

        common: dict[str, Any] = {
            "client_id": client.client_id,
            "audience": client.token_url,
            "clock": self.clock,
            "lifetime": _seconds(jwt.assertion_lifetime_seconds),
        }
        if client.auth_method == "private_key_jwt":
            return assertion.private_key_jwt(self.signing_key(credential), **common)
        return assertion.client_secret_jwt(self.secret(credential), **common)

    def token_client(self, credential: Credential) -> TokenClient:
        refresh = credential.refresh
        observer = self.observer
        name = credential.name
        client = credential.require_client()
        client_auth = self.client_auth(credential)
        secret = _no_secret if client_auth else self.secret(credential)
        return TokenClient(
            self.token_http(),
            token_url=client.token_url,
            client_id=client.client_id,
            client_secret=secret,
            client_auth=client_auth,
            extra_params=credential.extra_params,
            reresolve_secret=None if client_auth else self.secret(credential).invalidate,
            clock=self.clock,
            auth_method=client.auth_method,
            scope=credential.scope,
            timeout=timeouts_of(credential),
            deadline=refresh.request_deadline_seconds,
            verify=tls_verify(credential.ca_bundle, self.env),
            proxies=self.proxies(client.token_url),
            on_request=lambda grant, outcome: observer.token_request(name, grant, outcome),
        )

    def verifier(self, credential: Credential) -> Any:
        url = credential.verify_url
        if url is None:
            return None
        check_http_url(url, "verify_url")
        refresh = credential.refresh
        session = self.http()
        tls = tls_verify(credential.ca_bundle, self.env)
        proxies = self.proxies(url)

        def verify(token: Token) -> None:
            verify_token(
                session,
                url,
                token,
                timeout=timeouts_of(credential),
                verify=tls,
                proxies=proxies,
                deadline=refresh.request_deadline_seconds,
            )

        return verify

    def probe(self, credential: Credential) -> Probe | None:
        """The published-token probe (verify_url or RFC 7662 introspection), if any."""
        from rotator import probe

        url = credential.probe_url
        if url is None:
            return None
        options = probe.HttpOptions(
            timeout=timeouts_of(credential),
            verify=tls_verify(credential.ca_bundle, self.env),
            proxies=self.proxies(url),
            deadline=credential.refresh.request_deadline_seconds,
        )
        if credential.probe == "introspection":
            return probe.introspection_probe(
                self.http(), url, self.token_client(credential), options
            )
        return probe.verify_probe(self.http(), url, options)

    def forget(self, name: str) -> None:
        """Drop what is cached for a credential (its secret and key sources): a reload
        changed or removed it."""
        self._secrets.pop(name, None)
        self._keys.pop(name, None)

    def rotator(self, credential: Credential) -> CredentialRotator:
        from rotator.stores.quota import gate_for

        schedule = self.schedule(credential)
        return CredentialRotator(
            credential.name,
            fetcher=self.token_client(credential),
            stores=self.stores(credential),
            clock=self.clock,
            schedule=schedule,
            verify=self.verifier(credential),
            observer=self.observer,
            gate=gate_for(credential, schedule, self.clock, self.env),
            probe=self.probe(credential),
        )

    def backoff(self, credential: Credential | None = None) -> Backoff:
        """`credential`'s retry policy (the back-off between attempts)."""
        cap = (credential or self.settings.credentials[0]).refresh.max_retry_wait_seconds
        return Backoff(initial=1.0, cap=cap, jitter=1.0)

    # -- the daemon

    @property
    def serving_port(self) -> int | None:
        """The daemon's metrics and health port (None: not served)."""
        return self.metrics_port if self.metrics_port is not None else self.settings.metrics_port

    def daemon(self, rotators: Sequence[CredentialRotator]) -> Daemon:
        """The scheduler of `rotators`, each with its credential's retry policy, job
        deadline and probe interval."""
        from rotator.scheduler import Daemon

        credentials = self.settings.credentials
        return Daemon(
            rotators,
            clock=self.clock,
            backoff=self._backoffs(credentials),
            observer=self.observer,
            stop_event=self.stop_event,
            max_workers=self.settings.workers,
            job_deadlines=_by_name(credentials, job_deadline),
            probe_intervals=_by_name(credentials, probe_interval),
            advise=self.advise,
        )

    def restart_chains(
        self,
        daemon: Daemon,
        start: Sequence[Credential],
        rotators: Sequence[CredentialRotator],
        stop: Sequence[str],
    ) -> None:
        """A reload: stop the chains named `stop`, start `rotators` (of `start`), each
        with its credential's retry policy, job deadline and probe interval."""
        daemon.apply(
            add=rotators,
            remove=stop,
            backoffs=self._backoffs(start),
            job_deadlines=_by_name(start, job_deadline),
            probe_intervals=_by_name(start, probe_interval),
        )

    def _backoffs(self, credentials: Sequence[Credential]) -> dict[str, Backoff]:
        return {cred.name: self.backoff(cred) for cred in credentials}

    def health_server(self, daemon: Daemon) -> HealthServer | None:
        """/metrics, /healthz and /readyz of `daemon`, or None when no port is set."""
        port = self.serving_port
        if port is None:
            return None
        from rotator.health import HealthServer

        return HealthServer(self, daemon, host=self.settings.metrics_address, port=port)

    def advise(self, name: str, token: Token) -> str | None:
        """Secrets Manager write-rate advice for a credential of the running configuration
        (a reload may have removed it): a gauge for dashboards and, if too fast, a warning.
        Found by name: every credential's first step asks, and a scan of the configuration
        there made a start-up with 5,000 credentials quadratic."""
        from rotator.stores.quota import write_rate_advice

        credentials = self.settings.credentials
        of, by_name = self._advice_index
        if of is not credentials:  # a reload replaced them: index them again (one swap)
            by_name = {credential.name: credential for credential in credentials}
            self._advice_index = (credentials, by_name)
        credential = by_name.get(name)
        if credential is None:
            return None
        if any(t.type == "secretsmanager" for t in credential.targets):
            gauge = getattr(self.observer, "secretsmanager_interval", None)
            if gauge is not None:
                gauge(credential.name, token.lifetime.total_seconds() * credential.refresh.ratio)
        return write_rate_advice(credential, token)

    def capacity(self, lifetimes: Mapping[str, float]) -> list[str]:
        """`check`'s capacity lines: projected AWS writes a second per region against the pace."""
        from rotator.pacing import Pacing, capacity_lines

        pacers = self.aws.pacers
        pacing = pacers.pacing if pacers is not None else Pacing.from_env(self.env)
        region = self.env.get("AWS_REGION") or self.env.get("AWS_DEFAULT_REGION")
        return capacity_lines(self.settings.credentials, lifetimes, pacing, region)


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    observer: Observer | None = None,
    session: Any = None,
    env: Mapping[str, str] | None = None,
    aws: AwsClients | None = None,
    daemon: bool = False,
    metrics_port: int | None = None,
) -> App:
    """The App of `settings`. For the daemon (`daemon=True`) that serves metrics (its
    `metrics_port`, else the configuration's), the observer is a Prometheus registry."""
    from rotator.pacing import Pacers, Pacing

    first = settings.credentials[0].refresh
    environ = os.environ if env is None else env
    serves = metrics_port is not None or settings.metrics_port is not None
    if observer is None and daemon and serves:
        from rotator.health import Metrics

        observer = Metrics()
    return App(
        settings=settings,
        clock=clock or SystemClock(),
        aws=aws
        or AwsClients(
            connect_timeout=first.connect_timeout_seconds,
            read_timeout=first.read_timeout_seconds,
            pacers=Pacers(Pacing.from_env(environ)),
        ),
        observer=observer or NullObserver(),
        session=session,
        token_session=session,
        env=environ,
        metrics_port=metrics_port,
    )


def job_deadline(credential: Credential) -> timedelta:
    """The longest one rotation step of `credential` can take when every call runs
    to its limit: up to three token requests (refresh, fallback, a retry after a
    re-read client secret), the verify call, and a read and a write per target
    plus a client secret read from AWS, each within its connect + read timeouts."""
    refresh = credential.refresh
    connect, read = timeouts_of(credential)
    aws_calls = 2 * len(credential.targets) + 1
    seconds = 4 * refresh.request_deadline_seconds + aws_calls * (connect + read)
    return timedelta(seconds=seconds)


def probe_interval(credential: Credential) -> timedelta:
    """How often the daemon probes the published token (zero: never)."""
    if credential.probe_url is None:
        return timedelta(0)
    return timedelta(seconds=credential.probe_interval_seconds)


def _by_name(
    credentials: Sequence[Credential], policy: Callable[[Credential], timedelta]
) -> dict[str, timedelta]:
    return {cred.name: policy(cred) for cred in credentials}


def _no_secret() -> Any:
    raise AssertionError("a JWT client authenticates by assertion, never by sending a secret")


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
