"""The frozen settings: what every source (TOML file, environment) validates into.

Defaults live here and nowhere else; closed sets are ``Literal`` types whose
members, in order, are also the choices error messages list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from rotator.errors import ConfigError

AuthMethod = Literal[
    "client_secret_post", "client_secret_basic", "client_secret_jwt", "private_key_jwt"
]
TargetType = Literal["secretsmanager", "ssm", "file"]
Format = Literal["json", "raw"]
ProbeKind = Literal["verify_url", "introspection", "off"]
SecretKind = Literal[
    "client_secret_env", "client_secret_file", "client_secret_secretsmanager", "client_secret_ssm"
]
KeyKind = Literal[
    "private_key_env", "private_key_file", "private_key_secretsmanager", "private_key_ssm"
]
SigningAlg = Literal["RS256", "ES256", "PS256", "HS256"]

AUTH_METHODS: tuple[AuthMethod, ...] = get_args(AuthMethod)
JWT_METHODS: tuple[AuthMethod, ...] = ("client_secret_jwt", "private_key_jwt")
TARGET_TYPES: tuple[TargetType, ...] = get_args(TargetType)
FORMATS: tuple[Format, ...] = get_args(Format)
PROBES: tuple[ProbeKind, ...] = get_args(ProbeKind)
SECRET_SOURCES: tuple[SecretKind, ...] = get_args(SecretKind)
KEY_SOURCES: tuple[KeyKind, ...] = get_args(KeyKind)
# Signing algorithms per JWT method; the first is the default.
SIGNING_ALGS: dict[str, tuple[SigningAlg, ...]] = {
    "private_key_jwt": ("RS256", "ES256", "PS256"),
    "client_secret_jwt": ("HS256",),
}

DEFAULT_AUTH_METHOD: AuthMethod = "client_secret_post"
DEFAULT_FORMAT: Format = "json"
DEFAULT_METRICS_ADDRESS = "0.0.0.0"  # noqa: S104 - a container's probe port must be reachable
DEFAULT_READINESS_MARGIN_SECONDS = 30.0
ASSERTION_LIFETIME_SECONDS = 60.0
MAX_ASSERTION_LIFETIME_SECONDS = 600.0
PROBE_INTERVAL_SECONDS = 60.0
INTROSPECTION_SUFFIX = "/introspect"
# Form fields rotator itself sets: extra_params may never override them.
RESERVED_PARAMS = (
    "client_secret",
    "client_id",
    "grant_type",
    "client_assertion",
    "client_assertion_type",
    "refresh_token",
    "scope",
)


@dataclass(frozen=True)
class SecretSource:
    """Where the client secret (kind in SECRET_SOURCES) or the private key (kind in
    KEY_SOURCES) is read from."""

    kind: str
    ref: str
    region: str | None = None


@dataclass(frozen=True)
class Target:
    type: TargetType
    ref: str  # secret id, parameter name or file path
    format: Format = DEFAULT_FORMAT
    kms_key_id: str | None = None
    create: bool = False
    region: str | None = None
    mode: int | None = None  # file targets: permission bits (None: 0600)
    owner: int | None = None  # file targets: uid to chown to (None: unchanged)
    group: int | None = None  # file targets: gid to chown to (None: unchanged)
    # Secrets Manager only: refuse a cadence that creates more versions a day (None: 90)
    max_writes_per_day: int | None = None

    @property
    def label(self) -> str:
        return f"{self.type}:{self.ref}"


@dataclass(frozen=True)
class Refresh:
    """When to refresh and how hard to retry; plain seconds at this boundary."""

    ratio: float = 0.75  # refresh at this fraction of the token's lifetime
    jitter_ratio: float = 0.05  # minus up to this fraction of the lifetime, at random
    safety_margin_seconds: float = 30.0  # never later than this before expiry
    max_retry_wait_seconds: float = 30.0  # cap between attempts (and <= lifetime / 4)
    retry_budget_seconds: float = 60.0  # how long `once` keeps retrying
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 10.0
    # The whole exchange (connect, headers, body) of one token request or verify
    # call: requests' read timeout is per socket read, so a server that drips a
    # byte at a time would otherwise hold the job for ever.
    request_deadline_seconds: float = 30.0


@dataclass(frozen=True)
class JwtAuth:
    """RFC 7523 client authentication: how each client assertion is signed."""

    signing_alg: SigningAlg
    key_source: SecretSource | None = None  # private_key_jwt only
    key_id: str | None = None  # the JWS "kid" header
    assertion_lifetime_seconds: float = ASSERTION_LIFETIME_SECONDS


@dataclass(frozen=True)
class Client:
    """How a credential asks the token endpoint. A consumer (``rotator get``,
    ``status``) may leave it out: it only reads the targets."""

    token_url: str
    client_id: str
    secret_source: SecretSource | None  # None for private_key_jwt
    auth_method: AuthMethod = DEFAULT_AUTH_METHOD
    jwt: JwtAuth | None = None  # set for client_secret_jwt and private_key_jwt


@dataclass(frozen=True)
class Credential:
    name: str
    targets: tuple[Target, ...]
    client: Client | None = None  # None: a consumer's credential (see Client)
    scope: str | None = None
    verify_url: str | None = None
    ca_bundle: str | None = None
    refresh: Refresh = field(default_factory=Refresh)
    extra_params: tuple[tuple[str, str], ...] = ()  # extra token-request form fields
    # The published-token probe: "verify_url" (GET it), "introspection" (RFC 7662) or
    # "off"; None when verify_url is unset and no probe was asked for.
    probe: ProbeKind | None = None
    probe_interval_seconds: float = PROBE_INTERVAL_SECONDS  # 0: no probe
    introspection_url: str | None = None

    def require_client(self) -> Client:
        """The client part, or a configuration error naming the credential."""
        if self.client is None:
            raise ConfigError(
                f"credentials[{self.name}]: no token endpoint client configured "
                "(token_url, client_id and the client secret or private key)"
            )
        return self.client

    @property
    def probe_url(self) -> str | None:
        """What the probe asks, or None when the credential is not probed."""
        if self.probe_interval_seconds <= 0 or self.probe in (None, "off"):
            return None
        if self.probe == "introspection":
            if self.introspection_url:
                return self.introspection_url
            return None if self.client is None else self.client.token_url + INTROSPECTION_SUFFIX
        return self.verify_url


@dataclass(frozen=True)
class Settings:
    credentials: tuple[Credential, ...]
    metrics_port: int | None = None
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    readiness_margin_seconds: float = DEFAULT_READINESS_MARGIN_SECONDS
    source: str = "environment"
    max_workers: int | None = None  # None: one per credential plus one, at most 32
    config_path: str | None = None  # the TOML file loaded (None: the environment)

    @property
    def metrics_host(self) -> str:
        """The former name of `metrics_address`."""
        return self.metrics_address

    @property
    def workers(self) -> int:
        """Threads that run rotation jobs in the daemon."""
        if self.max_workers is not None:
            return self.max_workers
        return min(32, len(self.credentials) + 1)

    def credential(self, name: str | None) -> Credential:
        if name is None:
            return self.credentials[0]
        for cred in self.credentials:
            if cred.name == name:
                return cred
        known = ", ".join(c.name for c in self.credentials)
        msg = f"no credential named {name!r} (configured: {known})"
        raise ConfigError(msg)
