"""The shared clients every credential's parts are built on: the boto3 clients (one
per service, region and timeouts), the stores on them, and the one HTTP session with
its TLS and proxy settings. Built by the composition root (rotator.app)."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotator.config import Credential, Target, check_ca_bundle
from rotator.errors import ConfigError
from rotator.stores.base import TokenStore

if TYPE_CHECKING:
    import requests

    from rotator.pacing import Pacers


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
            _check_bundle(env[name], name, _identity(env[name]))
            return env[name]
    return True


def _identity(path: str) -> tuple[int, ...] | None:
    """What a CA bundle's readability depends on (None: cannot even stat it)."""
    try:
        st = os.stat(path)  # noqa: PTH116 (a Path per credential is the cost avoided here)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _check_bundle(path: str, where: str, identity: tuple[int, ...] | None) -> None:
    """check_ca_bundle once per file as it is: 1,000 credentials name the same bundle
    (an open and a read each, a third of building a rotator). A bundle replaced, gone
    or re-permissioned has another identity and is checked again; a failure raises and
    is not remembered."""
    del identity  # part of the cache key only
    check_ca_bundle(path, where)


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
