"""In-memory stand-ins for the two HTTP sides, to measure rotator's own work alone.

``CannedSession`` answers every token POST with one real Keycloak body (captured from
the stub), so ``TokenClient`` still parses and validates it; ``FakeSecretsManager`` and
``FakeSsm`` answer the boto3 calls the stores make with plain dicts, as botocore
would after parsing. What is left when these replace the network is ours: validation,
scheduling, serialisation, logging.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

from botocore.exceptions import ClientError
from requests.structures import CaseInsensitiveDict

from rotator.app import AwsClients
from tests.fakes import FakeResponse


class CannedSession:
    """``requests.Session`` enough for TokenClient: every POST gets the same body."""

    def __init__(self, body: bytes, *, expires_in: int | None = None) -> None:
        if expires_in is not None:
            data = json.loads(body)
            data["expires_in"] = expires_in
            body = json.dumps(data).encode()
        self.body = body
        self.headers = CaseInsensitiveDict(
            {"Content-Type": "application/json", "Cache-Control": "no-store"}
        )

    def post(self, url: str, **kwargs: Any) -> FakeResponse:
        return FakeResponse(status_code=200, body=self.body, headers=self.headers)


def _error(code: str, op: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, op)


class FakeSecretsManager:
    """The five Secrets Manager calls SecretsManagerStore makes, one secret per id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._current: dict[str, str] = {}
        self._values: dict[tuple[str, str], str] = {}

    def get_secret_value(self, *, SecretId: str, VersionStage: str) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            version = self._current.get(SecretId)
            if version is None:
                raise _error("ResourceNotFoundException", "GetSecretValue")
            value = self._values[(SecretId, version)]
        return {"Name": SecretId, "VersionId": version, "SecretString": value}

    def put_secret_value(self, *, SecretId: str, SecretString: str, **kw: Any) -> dict[str, Any]:  # noqa: N803
        version = kw.get("ClientRequestToken") or f"v{next(self._ids)}"
        with self._lock:
            self._values[(SecretId, version)] = SecretString
            first = SecretId not in self._current
            if first:
                self._current[SecretId] = version
        return {"VersionId": version, "VersionStages": ["AWSCURRENT"] if first else ["AWSPENDING"]}

    def create_secret(self, *, Name: str, SecretString: str, **kw: Any) -> dict[str, Any]:  # noqa: N803
        return self.put_secret_value(SecretId=Name, SecretString=SecretString, **kw)

    def update_secret_version_stage(self, *, SecretId: str, VersionStage: str, **kw: Any) -> Any:  # noqa: N803
        if VersionStage != "AWSCURRENT":
            return {}
        with self._lock:
            current = self._current.get(SecretId)
            if kw.get("RemoveFromVersionId") not in (None, current):
                raise _error("InvalidParameterException", "UpdateSecretVersionStage")
            self._current[SecretId] = kw["MoveToVersionId"]
            if current is not None:
                self._values.pop((SecretId, current), None)
        return {}

    def describe_secret(self, *, SecretId: str) -> dict[str, Any]:  # noqa: N803
        return {"Name": SecretId}


class FakeSsm:
    """GetParameter and PutParameter, as SsmStore uses them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._params: dict[str, tuple[str, int]] = {}

    def get_parameter(self, *, Name: str, WithDecryption: bool) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            held = self._params.get(Name)
        if held is None:
            raise _error("ParameterNotFound", "GetParameter")
        return {"Parameter": {"Name": Name, "Value": held[0], "Version": held[1]}}

    def put_parameter(self, *, Name: str, Value: str, **kw: Any) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            version = self._params.get(Name, ("", 0))[1] + 1
            self._params[Name] = (Value, version)
        return {"Version": version, "Tier": kw.get("Tier", "Standard")}


class FakeAwsClients(AwsClients):
    """The composition root's client cache, handing out the fakes instead of boto3."""

    def __init__(self) -> None:
        super().__init__()
        self.fakes: dict[str, Any] = {"secretsmanager": FakeSecretsManager(), "ssm": FakeSsm()}

    def client(
        self,
        service: str,
        region: str | None = None,
        timeouts: tuple[float, float] | None = None,
    ) -> Any:
        return self.fakes[service]
