"""An HTTP proxy in front of moto that enforces the AWS limits moto does not.

moto answers every call at any rate, accepts values of any size and never runs out of
Secrets Manager versions. Real AWS does not. ``AwsLimitsProxy`` (a ``FaultProxy``, so
faults can be injected too) stands between boto3 and a moto server and enforces:

* the Secrets Manager **version quota**: at most ``max_versions`` (100) versions of one
  secret created within a sliding ``version_window`` (24 h; seconds in a test). A write
  that would create one more is answered ``LimitExceededException``. A retry with a
  ``ClientRequestToken`` already seen for that secret creates no version (AWS returns the
  existing one), so it is not counted and never refused;
* **value sizes**: ``SecretString`` at most 65,536 bytes; a parameter value at most 4,096
  bytes in the Standard tier and 8,192 in the Advanced one (``ValidationException``);
* **request rates**, one token bucket per (group, region): SSM ``PutParameter`` (3/s),
  SSM reads (40/s), Secrets Manager writes (``PutSecretValue``, ``UpdateSecret``,
  ``UpdateSecretVersionStage``, ``CreateSecret``: 50/s) and, if asked, Secrets Manager
  reads. Past the rate AWS answers HTTP 400 ``ThrottlingException: Rate exceeded``, and so
  does the proxy, in the JSON protocol's error shape (``{"__type": ..., "message": ...}``);
* **read-only replicas**: every write to a secret in a region that holds a replica of it
  (``AddReplicaRegions`` at ``CreateSecret``, ``ReplicateSecretToRegions``, or
  ``add_replica()``) is refused with "Operation not permitted on a replica secret".

It also answers ``BatchGetSecretValue`` (with a ``SecretIdList``) as AWS does: each
secret's ``AWSCURRENT`` version. moto answers a secret's first ("default") version, which
is stale once a version was promoted with ``UpdateSecretVersionStage``; the proxy asks
moto ``GetSecretValue(VersionStage="AWSCURRENT")`` per secret instead and answers one
``BatchGetSecretValue`` (counted once, like AWS).

The region of a request is read from its SigV4 ``Authorization`` header. Time comes from
``clock`` (default ``time.monotonic``) so a test can move it by hand::

    from rotator.testing.awslimits import AwsLimitsProxy

    with AwsLimitsProxy(moto_url, version_window=30.0) as aws:
        client = boto3.client("secretsmanager", endpoint_url=aws.url, ...)
        ...
        assert aws.refused("ThrottlingException") == 0
        assert aws.versions_created("oms/token") == 1
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rotator.testing._http import Handler
from rotator.testing.proxy import FaultProxy, Verdict

__all__ = [
    "DEFAULT_RATES",
    "AwsLimitsProxy",
    "Refusal",
    "TokenBucket",
]

SM_MAX_VALUE_BYTES = 65_536
SSM_MAX_STANDARD_BYTES = 4_096
SSM_MAX_ADVANCED_BYTES = 8_192
SM_MAX_VERSIONS = 100
DAY_SECONDS = 86_400.0

_SM = "secretsmanager."
_SSM = "AmazonSSM."
# The action groups that share one rate, and AWS's documented defaults (requests/s).
_GROUPS: dict[str, frozenset[str]] = {
    "ssm:write": frozenset({_SSM + "PutParameter"}),
    "ssm:read": frozenset(
        {_SSM + "GetParameter", _SSM + "GetParameters", _SSM + "GetParametersByPath"}
    ),
    "secretsmanager:write": frozenset(
        {
            _SM + "PutSecretValue",
            _SM + "UpdateSecret",
            _SM + "UpdateSecretVersionStage",
            _SM + "CreateSecret",
        }
    ),
    "secretsmanager:read": frozenset(
        {_SM + "GetSecretValue", _SM + "BatchGetSecretValue", _SM + "DescribeSecret"}
    ),
}
DEFAULT_RATES: dict[str, float | None] = {
    "ssm:write": 3.0,
    "ssm:read": 40.0,
    "secretsmanager:write": 50.0,
    "secretsmanager:read": None,  # about 10,000/s: never the limit in a test
}
_SM_WRITES = frozenset(
    {
        "PutSecretValue",
        "UpdateSecret",
        "UpdateSecretVersionStage",
        "DeleteSecret",
        "RestoreSecret",
        "RotateSecret",
        "CancelRotateSecret",
        "TagResource",
        "UntagResource",
        "PutResourcePolicy",
        "DeleteResourcePolicy",
    }
)
_REGION = re.compile(r"Credential=[^/,]+/\d{8}/([a-z0-9-]+)/")
_ARN_SECRET = re.compile(r"^arn:[^:]+:secretsmanager:[^:]*:[^:]*:secret:(.+?)(-[A-Za-z0-9]{6})?$")
_JSON = "application/x-amz-json-1.1"


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``take()`` spends one."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


@dataclass(frozen=True)
class Refusal:
    """One request the proxy answered itself: AWS's error code, the action, the region
    and the resource (secret or parameter name)."""

    code: str
    action: str
    region: str
    resource: str


@dataclass
class _Secret:
    """The versions created within the window: ClientRequestToken -> creation time."""

    created: dict[str, float] = field(default_factory=dict)
    order: deque[tuple[float, str]] = field(default_factory=deque)


class AwsLimitsProxy(FaultProxy):
    """A FaultProxy that also enforces AWS's limits; see the module docstring."""

    def __init__(
        self,
        upstream: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_versions: int = SM_MAX_VERSIONS,
        version_window: float = DAY_SECONDS,
        rates: dict[str, float | None] | None = None,
        burst_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        upstream_timeout: float = 30.0,
    ) -> None:
        """``rates`` overrides entries of ``DEFAULT_RATES`` (None turns a group's limit
        off); a bucket holds ``burst_seconds`` worth of requests (at least one)."""
        super().__init__(upstream, host, port, upstream_timeout=upstream_timeout)
        unknown = set(rates or {}) - set(_GROUPS)
        if unknown:
            raise ValueError(f"unknown rate group(s) {sorted(unknown)}; known: {sorted(_GROUPS)}")
        if max_versions < 1 or version_window <= 0:
            raise ValueError("max_versions must be >= 1 and version_window > 0")
        self.max_versions = max_versions
        self.version_window = version_window
        self.rates = {**DEFAULT_RATES, **(rates or {})}
        self._burst_seconds = burst_seconds
        self._clock = clock
        self._limits = threading.Lock()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._secrets: dict[str, _Secret] = {}
        self._replicas: dict[tuple[str, str], str] = {}  # (secret, region) -> primary region
        self._refusals: list[Refusal] = []
        self._versions_total: dict[str, int] = {}

    # -- set-up and observation ------------------------------------------------------------

    def add_replica(self, secret_id: str, region: str, primary_region: str) -> None:
        """Treat ``secret_id`` in ``region`` as a read-only replica of ``primary_region``."""
        with self._limits:
            self._replicas[(_secret_name(secret_id), region)] = primary_region

    def set_rate(self, group: str, rate: float | None) -> None:
        """Change one group's rate while running (its buckets start full)."""
        if group not in _GROUPS:
            raise ValueError(f"unknown rate group {group!r}; known: {sorted(_GROUPS)}")
        with self._limits:
            self.rates[group] = rate
            for key in [k for k in self._buckets if k[0] == group]:
                del self._buckets[key]

    def refusals(self) -> list[Refusal]:
        """Every request answered with an AWS limit error, oldest first."""
        with self._limits:
            return list(self._refusals)

    def refused(self, code: str | None = None) -> int:
        """How many requests were refused (with this error code, if given)."""
        with self._limits:
            return sum(1 for r in self._refusals if code is None or r.code == code)

    def versions_created(self, secret_id: str | None = None) -> int:
        """Secret versions created through the proxy since it started (all secrets, or one;
        idempotent replays not counted)."""
        with self._limits:
            if secret_id is None:
                return sum(self._versions_total.values())
            return self._versions_total.get(_secret_name(secret_id), 0)

    def versions_in_window(self, secret_id: str) -> int:
        """Versions of ``secret_id`` created within the current window."""
        with self._limits:
            secret = self._secrets.get(_secret_name(secret_id))
            if secret is None:
                return 0
            self._expire(secret)
            return len(secret.created)

    # -- the screen ------------------------------------------------------------------------

    def _screen(self, handler: Handler, target: str | None, body: bytes) -> Verdict | None:
        if not target or not target.startswith((_SM, _SSM)):
            return None
        region = _region(handler.headers.get("Authorization", ""))
        try:
            request: Any = json.loads(body or b"{}")
        except ValueError:
            return None
        if not isinstance(request, dict):
            return None
        action = target.split(".", 1)[1]
        resource = str(request.get("SecretId") or request.get("Name") or "")
        with self._limits:
            code_message = self._check(target, action, region, request)
            if code_message is not None:
                code, message = code_message
                self._refusals.append(Refusal(code, action, region, resource))
                return Verdict(name=f"limit:{code}", answer=_error(code, message))
            if target.startswith(_SM) and action != "BatchGetSecretValue":
                return self._track_sm(action, region, request)
        ids = request.get("SecretIdList")
        if action == "BatchGetSecretValue" and isinstance(ids, list) and ids:
            return self._batch_get_current(handler, [str(i) for i in ids])
        return None

    def _batch_get_current(self, handler: Handler, ids: list[str]) -> Verdict | None:
        """BatchGetSecretValue answered from GetSecretValue(AWSCURRENT) per secret."""
        headers = {
            name: value
            for name, value in handler.headers.items()
            if name.lower() not in ("content-length", "x-amz-target", "connection")
        }
        headers["X-Amz-Target"] = _SM + "GetSecretValue"
        values: list[Any] = []
        errors: list[Any] = []
        conn = http.client.HTTPConnection(
            self._upstream_host, self._upstream_port, timeout=self._upstream_timeout
        )
        try:
            for secret_id in ids:
                body = json.dumps({"SecretId": secret_id, "VersionStage": "AWSCURRENT"})
                conn.request("POST", self._upstream_base + "/", body=body, headers=headers)
                response = conn.getresponse()
                answer: Any = json.loads(response.read() or b"{}")
                if response.status == 200:
                    values.append(answer)
                    continue
                code = str(answer.get("__type", "InternalServiceError")).rsplit("#", 1)[-1]
                message = str(answer.get("message") or answer.get("Message") or "")
                errors.append({"SecretId": secret_id, "ErrorCode": code, "Message": message})
        except (OSError, http.client.HTTPException, ValueError):
            return None  # let moto answer it itself
        finally:
            conn.close()
        body_out = json.dumps({"SecretValues": values, "Errors": errors}).encode("utf-8")
        headers_out = (("Content-Type", _JSON), ("x-amzn-RequestId", str(uuid.uuid4())))
        return Verdict(answer=(200, headers_out, body_out))  # not a fault: no name

    def _check(
        self, target: str, action: str, region: str, request: dict[str, Any]
    ) -> tuple[str, str] | None:
        if target.startswith(_SM) and action in _SM_WRITES:
            name = _secret_name(str(request.get("SecretId", "")))
            primary = self._replicas.get((name, region))
            if primary is not None:
                return (
                    "InvalidRequestException",
                    "Operation not permitted on a replica secret. Call must be made in "
                    f"primary secret's region ({primary}).",
                )
        size_error = _size_error(target, request)
        if size_error is not None:
            return "ValidationException", size_error
        for group, actions in _GROUPS.items():
            if target in actions and not self._bucket_take(group, region):
                return "ThrottlingException", "Rate exceeded"
        if target.startswith(_SM) and _creates_version(action, request):
            name = _secret_name(str(request.get("SecretId") or request.get("Name") or ""))
            secret = self._secrets.setdefault(name, _Secret())
            self._expire(secret)
            token = str(request.get("ClientRequestToken") or "")
            if token not in secret.created and len(secret.created) >= self.max_versions:
                return (
                    "LimitExceededException",
                    "The request failed because it would exceed one of the Secrets Manager "
                    f"quotas: {name} has {len(secret.created)} versions created in the last "
                    f"{self.version_window:g} s (at most {self.max_versions}).",
                )
        return None

    def _bucket_take(self, group: str, region: str) -> bool:
        rate = self.rates.get(group)
        if rate is None:
            return True
        bucket = self._buckets.get((group, region))
        if bucket is None:
            burst = max(1.0, rate * self._burst_seconds)
            bucket = self._buckets[(group, region)] = TokenBucket(rate, burst, self._clock)
        return bucket.take()

    def _track_sm(self, action: str, region: str, request: dict[str, Any]) -> Verdict | None:
        """Reserve the version a write would create (settled by the upstream's answer) and
        learn replicas from the requests that make them."""
        if action == "CreateSecret":
            for replica in request.get("AddReplicaRegions") or []:
                if isinstance(replica, dict) and replica.get("Region"):
                    name = _secret_name(str(request.get("Name", "")))
                    self._replicas[(name, str(replica["Region"]))] = region
        if action == "ReplicateSecretToRegions":
            for replica in request.get("AddReplicaRegions") or []:
                if isinstance(replica, dict) and replica.get("Region"):
                    name = _secret_name(str(request.get("SecretId", "")))
                    self._replicas[(name, str(replica["Region"]))] = region
        if not _creates_version(action, request):
            return None
        name = _secret_name(str(request.get("SecretId") or request.get("Name") or ""))
        secret = self._secrets.setdefault(name, _Secret())
        token = str(request.get("ClientRequestToken") or uuid.uuid4())
        if token in secret.created:
            return None  # a replay: AWS returns the existing version
        now = self._clock()
        secret.created[token] = now
        secret.order.append((now, token))

        def settle(status: int | None) -> None:
            with self._limits:
                if status == 200:
                    self._versions_total[name] = self._versions_total.get(name, 0) + 1
                elif secret.created.get(token) == now:
                    del secret.created[token]

        return Verdict(settle=settle)

    def _expire(self, secret: _Secret) -> None:
        horizon = self._clock() - self.version_window
        while secret.order and secret.order[0][0] <= horizon:
            at, token = secret.order.popleft()
            if secret.created.get(token) == at:
                del secret.created[token]


def _creates_version(action: str, request: dict[str, Any]) -> bool:
    if action == "PutSecretValue":
        return True
    if action in ("CreateSecret", "UpdateSecret"):
        return "SecretString" in request or "SecretBinary" in request
    return False


def _size_error(target: str, request: dict[str, Any]) -> str | None:
    if target in (_SM + "PutSecretValue", _SM + "CreateSecret", _SM + "UpdateSecret"):
        value = request.get("SecretString")
        if isinstance(value, str) and len(value.encode("utf-8")) > SM_MAX_VALUE_BYTES:
            return (
                "1 validation error detected: Value at 'secretString' failed to satisfy "
                f"constraint: Member must have length less than or equal to {SM_MAX_VALUE_BYTES}"
            )
    if target == _SSM + "PutParameter":
        value = request.get("Value")
        if not isinstance(value, str):
            return None
        size = len(value.encode("utf-8"))
        tier = request.get("Tier") or "Standard"
        if tier == "Standard" and size > SSM_MAX_STANDARD_BYTES:
            return (
                f"Standard tier parameters support a maximum parameter value of "
                f"{SSM_MAX_STANDARD_BYTES} characters. To create a larger parameter value, "
                "upgrade the parameter to use the advanced-parameter tier."
            )
        if size > SSM_MAX_ADVANCED_BYTES:
            return (
                f"Advanced tier parameters support a maximum parameter value of "
                f"{SSM_MAX_ADVANCED_BYTES} characters."
            )
    return None


def _error(code: str, message: str) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
    """An AWS JSON-protocol error: HTTP 400, ``{"__type": code, "message": ...}``."""
    body = json.dumps({"__type": code, "message": message}).encode("utf-8")
    headers = (
        ("Content-Type", _JSON),
        ("x-amzn-RequestId", str(uuid.uuid4())),
        ("x-amzn-ErrorType", f"{code}:"),
    )
    return 400, headers, body


def _region(authorization: str) -> str:
    match = _REGION.search(authorization)
    return match.group(1) if match else "-"


def _secret_name(secret_id: str) -> str:
    """A secret's name from its name or (full or partial) ARN."""
    match = _ARN_SECRET.match(secret_id)
    return match.group(1) if match else secret_id
