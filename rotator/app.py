"""The composition root: the one place that builds the HTTP session, the boto3
clients (one per service and region, shared), the stores and the rotators.

Every entry point (CLI, daemon, tests, benchmarks) builds through here; tests
pass their own clock, session or endpoint instead of patching anything.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rotator.clock import Clock, SystemClock
from rotator.config import Credential, Settings, Target, check_ca_bundle
from rotator.errors import ConfigError
from rotator.oauth import TokenClient, check_http_url, verify_token
from rotator.retry import Backoff
from rotator.rotation import CredentialRotator, NullObserver, Observer, Schedule
from rotator.secretsource import SecretProvider
from rotator.stores.base import TokenStore

if TYPE_CHECKING:
    import requests

    from rotator.assertion import ClientAuth
    from rotator.keysource import KeyProvider
    from rotator.pacing import Pacers
    from rotator.probe import Probe
    from rotator.token import Token

SM_ADVISED_WRITE_INTERVAL_SECONDS = 600.0


class AwsClients:
    """boto3 clients built lazily, one per (service, region), shared by every store.

    Endpoints come from boto3's own variables (AWS_ENDPOINT_URL,
    AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_ENDPOINT_URL_SSM); retries are ours
    (tenacity), so botocore makes one attempt per call.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        pacers: Pacers | None = None,
    ) -> None:
        self.pacers = pacers  # rotator.pacing: AWS's shared rates, one pacer per region
        self._clients: dict[tuple[str, str | None, tuple[float, float]], Any] = {}
        self._lock = threading.Lock()
        self._session: Any = None
        self._timeouts = (connect_timeout, read_timeout)

    def client(
        self,
        service: str,
        region: str | None = None,
        timeouts: tuple[float, float] | None = None,
    ) -> Any:
        """The shared client for (service, region, timeouts): each credential's own
        connect/read timeouts apply to its own calls."""
        timeouts = timeouts or self._timeouts
        key = (service, region, timeouts)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._build(service, region, timeouts)
            return self._clients[key]

    def _build(self, service: str, region: str | None, timeouts: tuple[float, float]) -> Any:
        # botocore directly: boto3's import pulls in s3transfer and costs ~30 ms of
        # start-up on every cron run for nothing (boto3 is only a thin layer on it).
        import botocore.session
        from botocore.config import Config

        if self._session is None:
            self._session = botocore.session.get_session()
        region = (
            region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or self._session.get_config_variable("region")
        )
        if not region:
            raise ConfigError(
                f"no AWS region for {service}: set AWS_REGION (or the target's region key)"
            )
        config = Config(
            connect_timeout=timeouts[0],
            read_timeout=timeouts[1],
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=32,
        )
        client = self._session.create_client(service, region_name=region, config=config)
        if self.pacers is not None:
            self.pacers.install(client, region)
        return client


def build_store(
    target: Target, aws: AwsClients, timeouts: tuple[float, float] | None = None
) -> TokenStore:
    if target.type == "file":
        from rotator.stores.file import DEFAULT_MODE, FileStore

        return FileStore(
            Path(target.ref),
            fmt=target.format,
            mode=DEFAULT_MODE if target.mode is None else target.mode,
            uid=target.owner,
            gid=target.group,
        )
    if target.type == "ssm":
        from rotator.stores.ssm import SsmStore

        return SsmStore(
            aws.client("ssm", target.region, timeouts),
            target.ref,
            fmt=target.format,
            kms_key_id=target.kms_key_id,
        )
    from rotator.stores.secretsmanager import SecretsManagerStore

    return SecretsManagerStore(
        aws.client("secretsmanager", target.region, timeouts),
        target.ref,
        fmt=target.format,
        create=target.create,
        kms_key_id=target.kms_key_id,
    )


def build_session() -> requests.Session:
    """One HTTP session for every token endpoint, TLS verification on.

    The environment (proxies, REQUESTS_CA_BUNDLE) is resolved once per
    credential at start-up instead of by requests on every call."""
    import requests
    from requests.adapters import HTTPAdapter

    from rotator import deadline

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=32, max_retries=0)
    deadline.mount(adapter)  # token requests and verify calls have an overall deadline
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "rotator/0.1"
    session.trust_env = False  # see tls_verify() and proxies_for()
    return session


def tls_verify(ca_bundle: str | None, env: Mapping[str, str]) -> str | bool:
    """The `verify` argument: the credential's CA bundle, else REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE, else the default trust store. Never off. A bundle from the
    environment that cannot be read is a configuration error (exit 2)."""
    if ca_bundle:
        return ca_bundle
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if env.get(name):
            check_ca_bundle(env[name], name)
            return env[name]
    return True


def timeouts_of(credential: Credential) -> tuple[float, float]:
    """A credential's (connect, read) timeouts, never beyond its overall deadline."""
    refresh = credential.refresh
    deadline = refresh.request_deadline_seconds
    return (
        min(refresh.connect_timeout_seconds, deadline),
        min(refresh.read_timeout_seconds, deadline),
    )


def proxies_for(url: str) -> dict[str, str]:
    """HTTP(S)_PROXY / NO_PROXY for `url`, as requests would resolve them per call."""
    from requests.utils import get_environ_proxies

    return dict(get_environ_proxies(url))


@dataclass
class App:
    settings: Settings
    clock: Clock
    aws: AwsClients
    observer: Observer
    session: Any = field(default=None, repr=False)
    env: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)
    stop_event: threading.Event = field(default_factory=threading.Event, repr=False)
    _secrets: dict[str, SecretProvider] = field(default_factory=dict, repr=False)
    _keys: dict[str, KeyProvider] = field(default_factory=dict, repr=False)
    _proxies: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict, repr=False)

    def http(self) -> requests.Session:
        if self.session is None:
            self.session = build_session()
        return self.session  # type: ignore[no-any-return]

    def proxies(self, url: str) -> dict[str, str]:
        """proxies_for(url), once per scheme and host: each lookup walks the whole
        environment twice (~0.5 ms), 1,000 times at start-up with 1,000 credentials."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        found = self._proxies.get(key)
        if found is None:
            found = self._proxies[key] = proxies_for(url)
        return dict(found)

    def stores(self, credential: Credential) -> list[TokenStore]:
        timeouts = timeouts_of(credential)
        return [build_store(t, self.aws, timeouts) for t in credential.targets]

    def secret(self, credential: Credential) -> SecretProvider:
        provider = self._secrets.get(credential.name)
        if provider is None:
            assert credential.secret_source is not None
            timeouts = timeouts_of(credential)
            provider = SecretProvider(
                credential.secret_source,
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
            jwt = credential.jwt
            assert jwt is not None and jwt.key_source is not None
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
        jwt = credential.jwt
        if jwt is None:
            return None
        from rotator import assertion

        common: dict[str, Any] = {
            "client_id": credential.client_id,
            "audience": credential.token_url,
            "clock": self.clock,
            "lifetime": _seconds(jwt.assertion_lifetime_seconds),
        }
        if credential.auth_method == "private_key_jwt":
            return assertion.private_key_jwt(self.signing_key(credential), **common)
        return assertion.client_secret_jwt(self.secret(credential), **common)

    def token_client(self, credential: Credential) -> TokenClient:
        refresh = credential.refresh
        observer = self.observer
        name = credential.name
        client_auth = self.client_auth(credential)
        secret = _no_secret if client_auth else self.secret(credential)
        return TokenClient(
            self.http(),
            token_url=credential.token_url,
            client_id=credential.client_id,
            client_secret=secret,
            client_auth=client_auth,
            extra_params=credential.extra_params,
            reresolve_secret=None if client_auth else self.secret(credential).invalidate,
            clock=self.clock,
            auth_method=credential.auth_method,
            scope=credential.scope,
            timeout=timeouts_of(credential),
            deadline=refresh.request_deadline_seconds,
            verify=tls_verify(credential.ca_bundle, self.env),
            proxies=self.proxies(credential.token_url),
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

        refresh = credential.refresh
        schedule = Schedule(
            ratio=refresh.ratio,
            jitter_ratio=refresh.jitter_ratio,
            safety_margin=_seconds(refresh.safety_margin_seconds),
        )
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
        cap = (credential or self.settings.credentials[0]).refresh.max_retry_wait_seconds
        return Backoff(initial=1.0, cap=cap, jitter=1.0)


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    observer: Observer | None = None,
    session: Any = None,
    env: Mapping[str, str] | None = None,
    aws: AwsClients | None = None,
) -> App:
    from rotator.pacing import Pacers, Pacing

    first = settings.credentials[0].refresh
    environ = os.environ if env is None else env
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
        env=environ,
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


def write_rate_advice(credential: Credential, token: Token) -> str | None:
    """A warning when a Secrets Manager target would be written faster than AWS advises."""
    sm_targets = [t.ref for t in credential.targets if t.type == "secretsmanager"]
    if not sm_targets:
        return None
    interval = token.lifetime.total_seconds() * credential.refresh.ratio
    advised_lifespan = SM_ADVISED_WRITE_INTERVAL_SECONDS / credential.refresh.ratio
    if interval >= SM_ADVISED_WRITE_INTERVAL_SECONDS:
        return None
    return (
        f"credential={credential.name} secretsmanager target(s) {', '.join(sm_targets)} "
        f"will be written every ~{interval:.0f} s; AWS advises at most one PutSecretValue "
        f"per ~{SM_ADVISED_WRITE_INTERVAL_SECONDS:.0f} s sustained (versions pile up toward "
        "the quota). Use an ssm target for short-lived tokens, or raise the client's access "
        f"token lifespan to at least {advised_lifespan:.0f} s"
    )


def _no_secret() -> Any:
    raise AssertionError("a JWT client authenticates by assertion, never by sending a secret")


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def capacity(app: App, lifetimes: Mapping[str, float]) -> list[str]:
    """`check`'s capacity lines: projected AWS writes a second per region against the pace."""
    from rotator.pacing import Pacing, capacity_lines

    pacing = app.aws.pacers.pacing if app.aws.pacers is not None else Pacing.from_env(app.env)
    region = app.env.get("AWS_REGION") or app.env.get("AWS_DEFAULT_REGION")
    return capacity_lines(app.settings.credentials, lifetimes, pacing, region)
