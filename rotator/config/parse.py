"""One validator: the mapping a TOML file gives (or the environment is turned into,
rotator.config.env) becomes frozen Settings. Errors name the key as the user wrote
it: a TOML key path, or the ROTATOR_* variable (``Names``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rotator.config import values as v
from rotator.config.schema import (
    ASSERTION_LIFETIME_SECONDS,
    AUTH_METHODS,
    DEFAULT_AUTH_METHOD,
    DEFAULT_FORMAT,
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_READINESS_MARGIN_SECONDS,
    FORMATS,
    JWT_METHODS,
    KEY_SOURCES,
    MAX_ASSERTION_LIFETIME_SECONDS,
    PROBE_INTERVAL_SECONDS,
    PROBES,
    RESERVED_PARAMS,
    SECRET_SOURCES,
    SIGNING_ALGS,
    TARGET_TYPES,
    AuthMethod,
    Client,
    Credential,
    JwtAuth,
    Refresh,
    SecretSource,
    Settings,
    Target,
)
from rotator.config.values import Where
from rotator.errors import ConfigError


class Names:
    """What errors call each key when it did not come from a TOML file: the
    ROTATOR_* variable, per level (top, credential, target by type)."""

    __slots__ = ("credential", "targets", "top")

    def __init__(
        self,
        top: Mapping[str, str] | None = None,
        credential: Mapping[str, str] | None = None,
        targets: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.top: Mapping[str, str] = top or {}
        self.credential: Mapping[str, str] = credential or {}
        self.targets: Mapping[str, Mapping[str, str]] = targets or {}


_TOP_KEYS = {
    "credentials",
    "metrics_port",
    "metrics_address",
    "metrics_host",
    "max_workers",
    "readiness_margin_seconds",
}


def from_mapping(
    data: Mapping[str, Any],
    *,
    source: str = "config",
    require_client: bool = True,
    names: Names | None = None,
    config_path: str | None = None,
) -> Settings:
    names = names or Names()
    top = Where("", names.top)
    v.check_keys(data, _TOP_KEYS, "")
    if "metrics_address" in data and "metrics_host" in data:
        raise ConfigError("give metrics_address or its old name metrics_host, not both")
    creds_raw = data.get("credentials")
    if not isinstance(creds_raw, list) or not creds_raw:
        raise ConfigError(f"{source}: at least one [[credentials]] table is required")
    credentials = tuple(
        _credential(item, Where(f"credentials[{i}]", names.credential), names, require_client)
        for i, item in enumerate(creds_raw)
    )
    v.check_unique([c.name for c in credentials], "credentials[].name")
    port = data.get("metrics_port")
    address_key = "metrics_host" if "metrics_host" in data else "metrics_address"
    workers = data.get("max_workers")
    return Settings(
        credentials=credentials,
        metrics_port=None if port is None else v.port(port, top("metrics_port")),
        metrics_address=v.address(data.get(address_key, DEFAULT_METRICS_ADDRESS), top(address_key)),
        readiness_margin_seconds=v.seconds(
            data.get("readiness_margin_seconds", DEFAULT_READINESS_MARGIN_SECONDS),
            top("readiness_margin_seconds"),
            zero_ok=True,
        ),
        source=source,
        max_workers=None if workers is None else v.workers(workers, top("max_workers")),
        config_path=config_path,
    )


_CRED_KEYS = {
    "name",
    "token_url",
    "client_id",
    *SECRET_SOURCES,
    "client_secret_region",
    "scope",
    "auth_method",
    "verify_url",
    "ca_bundle",
    "refresh",
    "targets",
    *KEY_SOURCES,
    "private_key_region",
    "private_key_id",
    "signing_alg",
    "assertion_lifetime_seconds",
    "extra_params",
    "probe",
    "probe_interval_seconds",
    "introspection_url",
}
_REFRESH_KEYS = set(Refresh.__dataclass_fields__)


def _credential(item: Any, where: Where, names: Names, require_client: bool) -> Credential:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where.path} must be a table")
    if "client_secret" in item:
        raise ConfigError(
            f"{where('client_secret')}: secrets are never inline; use one of "
            + ", ".join(SECRET_SOURCES)
        )
    if "private_key" in item:
        raise ConfigError(
            f"{where('private_key')}: keys are never inline; use one of " + ", ".join(KEY_SOURCES)
        )
    v.check_keys(item, _CRED_KEYS, where.path)
    name = v.name(item.get("name"), where("name"))
    where = where.at(f"credentials[{name}]")
    client = _client(item, where, require_client=require_client)
    verify_url = item.get("verify_url")
    refresh_raw = item.get("refresh", {})
    if not isinstance(refresh_raw, Mapping):
        raise ConfigError(f"{where('refresh')} must be a table")
    targets_raw = item.get("targets")
    if not isinstance(targets_raw, list) or not targets_raw:
        raise ConfigError(f"{where.path}: at least one [[credentials.targets]] table is required")
    targets = tuple(
        _target(t, Where(f"{where.path}.targets[{i}]"), names) for i, t in enumerate(targets_raw)
    )
    v.check_unique([t.label for t in targets], f"{where.path}.targets")
    return Credential(
        name=name,
        targets=targets,
        client=client,
        scope=v.opt_string(item.get("scope"), where("scope")),
        verify_url=None if verify_url is None else v.url(verify_url, where("verify_url")),
        ca_bundle=v.ca_bundle(item.get("ca_bundle"), where("ca_bundle")),
        refresh=_refresh(refresh_raw, where("refresh")),
        extra_params=extra_params(item.get("extra_params", {}), where("extra_params")),
        **probe_settings(
            item.get("probe"),
            item.get("probe_interval_seconds", PROBE_INTERVAL_SECONDS),
            item.get("introspection_url"),
            has_verify_url=verify_url is not None,
            where=where,
        ),
    )


def _client(item: Mapping[str, Any], where: Where, *, require_client: bool) -> Client | None:
    """The token endpoint client part; a consumer's is checked as far as it is given,
    and is None unless complete."""
    token_url = item.get("token_url")
    client_id = item.get("client_id")
    sources = [k for k in SECRET_SOURCES if k in item]
    if require_client or token_url is not None:
        token_url = v.url(token_url, where("token_url"))
    if require_client or client_id is not None:
        client_id = v.string(client_id, where("client_id"))
    if len(sources) > 1:
        raise ConfigError(
            f"{where.path}: give exactly one of {', '.join(SECRET_SOURCES)}, not several"
        )
    secret_source = None
    if sources:
        kind = sources[0]
        secret_source = SecretSource(
            kind=kind,
            ref=v.string(item[kind], where(kind)),
            region=v.opt_string(item.get("client_secret_region"), where("client_secret_region")),
        )
    auth_method = v.choice(
        item.get("auth_method", DEFAULT_AUTH_METHOD), AUTH_METHODS, where("auth_method")
    )
    jwt = _jwt_auth(
        item, auth_method, where, has_secret=secret_source is not None, required=require_client
    )
    if secret_source is None and require_client and auth_method != "private_key_jwt":
        raise ConfigError(
            f"{where.path}: the client secret needs one of {', '.join(SECRET_SOURCES)}"
        )
    has_auth = secret_source is not None or (jwt is not None and jwt.key_source is not None)
    if token_url is None or client_id is None or not has_auth:
        return None
    return Client(token_url, client_id, secret_source, auth_method, jwt)


def probe_settings(
    probe: Any, interval: Any, introspection_url: Any, *, has_verify_url: bool, where: Where
) -> dict[str, Any]:
    """The probe keys of one credential, checked together."""
    chosen = None if probe is None else v.choice(probe, PROBES, where("probe"))
    if chosen is None and has_verify_url:
        chosen = "verify_url"
    if chosen == "verify_url" and not has_verify_url:
        raise ConfigError(f"{where.setting('probe', 'verify_url')} needs a verify_url")
    url = None
    if introspection_url is not None:
        if chosen != "introspection":
            raise ConfigError(
                f'{where("introspection_url")} applies only to probe = "introspection"'
            )
        url = v.url(introspection_url, where("introspection_url"))
    return {
        "probe": chosen,
        "probe_interval_seconds": v.seconds(
            interval, where("probe_interval_seconds"), zero_ok=True
        ),
        "introspection_url": url,
    }


def _jwt_auth(
    item: Mapping[str, Any], method: AuthMethod, where: Where, *, has_secret: bool, required: bool
) -> JwtAuth | None:
    """The RFC 7523 keys of one credential, checked against its auth_method."""
    jwt_keys = ("signing_alg", "assertion_lifetime_seconds")
    key_keys = (*KEY_SOURCES, "private_key_region", "private_key_id")
    if method not in JWT_METHODS:
        for key in (*jwt_keys, *key_keys):
            if key in item:
                raise ConfigError(
                    f"{where(key)} applies only to auth_method = "
                    f"{' or '.join(JWT_METHODS)}, not {method}"
                )
        return None
    if method == "client_secret_jwt":
        for key in key_keys:
            if key in item:
                raise ConfigError(
                    f"{where(key)}: client_secret_jwt signs with the client secret; "
                    "a private key is for private_key_jwt"
                )
        key_source = None
    else:
        if has_secret:
            raise ConfigError(
                f"{where.path}: private_key_jwt sends no client secret; remove "
                + ", ".join(k for k in SECRET_SOURCES if k in item)
            )
        sources = [k for k in KEY_SOURCES if k in item]
        if len(sources) > 1 or (required and not sources):
            raise ConfigError(
                f"{where.path}: private_key_jwt needs exactly one of {', '.join(KEY_SOURCES)}"
            )
        key_source = (
            SecretSource(
                kind=sources[0],
                ref=v.string(item[sources[0]], where(sources[0])),
                region=v.opt_string(item.get("private_key_region"), where("private_key_region")),
            )
            if sources
            else None
        )
    algs = SIGNING_ALGS[method]
    lifetime = v.seconds(
        item.get("assertion_lifetime_seconds", ASSERTION_LIFETIME_SECONDS),
        where("assertion_lifetime_seconds"),
    )
    if lifetime > MAX_ASSERTION_LIFETIME_SECONDS:
        raise ConfigError(
            f"{where('assertion_lifetime_seconds')} must be at most "
            f"{MAX_ASSERTION_LIFETIME_SECONDS:g} (an assertion is short-lived): {lifetime:g}"
        )
    return JwtAuth(
        signing_alg=v.choice(item.get("signing_alg", algs[0]), algs, where("signing_alg")),
        key_source=key_source,
        key_id=v.opt_string(item.get("private_key_id"), where("private_key_id")),
        assertion_lifetime_seconds=lifetime,
    )


def extra_params(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """The extra_params table as (field, value) pairs; a list value repeats the field
    (RFC 8707 allows several ``resource``). Fields rotator sets itself are refused."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table of form fields")
    pairs: list[tuple[str, str]] = []
    for key, raw in value.items():
        if key in RESERVED_PARAMS:
            hint = "use the scope key" if key == "scope" else "rotator sets it itself"
            raise ConfigError(f"{where}.{key} may not be overridden ({hint})")
        if not key.strip() or key != key.strip():
            raise ConfigError(f"{where}: bad form field name {key!r}")
        values = raw if isinstance(raw, list) else [raw]
        if not values or not all(isinstance(x, str) for x in values):
            raise ConfigError(f"{where}.{key} must be a string or a list of strings")
        pairs.extend((key, x) for x in values)
    return tuple(pairs)


def _refresh(data: Mapping[str, Any], where: str) -> Refresh:
    v.check_keys(data, _REFRESH_KEYS, where)
    numbers: dict[str, float] = {}
    for key, value in data.items():
        numbers[key] = v.seconds(value, f"{where}.{key}", zero_ok=key == "jitter_ratio")
    refresh = Refresh(**numbers)
    if not 0 < refresh.ratio < 1:
        raise ConfigError(f"{where}.ratio must be between 0 and 1 (exclusive): {refresh.ratio!r}")
    if not 0 <= refresh.jitter_ratio < refresh.ratio:
        raise ConfigError(
            f"{where}.jitter_ratio must be >= 0 and below ratio: {refresh.jitter_ratio!r}"
        )
    return refresh


_TARGET_REF_KEYS = {"secretsmanager": "secret_id", "ssm": "parameter", "file": "path"}


def _target(item: Any, where: Where, names: Names) -> Target:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where.path} must be a table")
    kind = v.choice(item.get("type"), TARGET_TYPES, where("type"))
    where = where.at(where.path, names.targets.get(kind, {}))
    ref_key = _TARGET_REF_KEYS[kind]
    allowed = {"type", ref_key, "name", "format", "region"}
    if kind == "file":
        allowed |= {"mode", "owner", "group"}
    else:
        allowed.add("kms_key_id")
    if kind == "secretsmanager":
        allowed |= {"create", "max_writes_per_day"}
    v.check_keys(item, allowed, where.path)
    if ref_key in item and "name" in item:
        raise ConfigError(f"{where.path}: give {ref_key!r} or 'name', not both")
    ref = v.string(item.get(ref_key, item.get("name")), where(ref_key))
    if kind == "ssm" and not ref.startswith("/") and "/" in ref:
        raise ConfigError(f"{where(ref_key)}: a hierarchical name must start with '/': {ref!r}")
    create = item.get("create", False)
    if not isinstance(create, bool):
        raise ConfigError(f"{where('create')} must be true or false: {create!r}")
    return Target(
        type=kind,
        ref=ref,
        format=v.choice(item.get("format", DEFAULT_FORMAT), FORMATS, where("format")),
        kms_key_id=v.opt_string(item.get("kms_key_id"), where("kms_key_id")),
        create=create,
        region=v.opt_string(item.get("region"), where("region")),
        max_writes_per_day=v.opt_count(item.get("max_writes_per_day"), where("max_writes_per_day")),
        **_file_permissions(item, where),
    )


def _file_permissions(item: Mapping[str, Any], where: Where) -> dict[str, Any]:
    """`mode`/`owner`/`group` of a file target (rotator/filemode.py), None where unset."""
    from rotator.filemode import parse_group, parse_mode, parse_owner

    parsers = {"mode": parse_mode, "owner": parse_owner, "group": parse_group}
    found: dict[str, Any] = {}
    for key, parse in parsers.items():
        value = item.get(key)
        found[key] = None if value in (None, "") else parse(value, where(key))
    return found
