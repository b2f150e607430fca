"""Resolves the client secret from where the configuration says it lives.

Environment and file sources are read on every use (cheap, and a mounted
Kubernetes Secret that changes is picked up); AWS sources are cached until a
credential rejection invalidates them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rotator.config import SecretSource
from rotator.errors import SecretSourceError
from rotator.secret import Secret

# IAM actions needed to read a client secret kept in AWS.
IAM_ACTIONS: tuple[str, ...] = ("secretsmanager:GetSecretValue", "ssm:GetParameter")


def strip_one_newline(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


class SecretProvider:
    """Gives the client secret for one credential, wrapped in Secret."""

    def __init__(
        self,
        source: SecretSource,
        *,
        env: Mapping[str, str] | None = None,
        client_for: Callable[[str, str | None], Any] | None = None,
    ) -> None:
        self._source = source
        self._env = os.environ if env is None else env
        self._client_for = client_for
        self._cached: Secret | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SecretProvider({self._source.kind}={self._source.ref!r})"

    def __call__(self) -> Secret:
        return self.get()

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def get(self) -> Secret:
        kind, ref = self._source.kind, self._source.ref
        if kind == "client_secret_env":
            value = self._env.get(ref)
            if not value:
                raise SecretSourceError(f"client secret: environment variable {ref} is not set")
            return Secret(value)
        if kind == "client_secret_file":
            return Secret(_read_file(ref))
        with self._lock:
            if self._cached is None:
                self._cached = Secret(self._fetch_aws(kind, ref))
            return self._cached

    def _fetch_aws(self, kind: str, ref: str) -> str:
        from rotator.stores.aws import map_aws_error

        if self._client_for is None:
            raise SecretSourceError(f"client secret: no AWS client for {kind}")
        region = self._source.region
        try:
            if kind == "client_secret_secretsmanager":
                client = self._client_for("secretsmanager", region)
                response = client.get_secret_value(SecretId=ref)
                return _from_secret_string(response.get("SecretString"), ref)
            client = self._client_for("ssm", region)
            response = client.get_parameter(Name=ref, WithDecryption=True)
            value = response.get("Parameter", {}).get("Value")
        except SecretSourceError:
            raise
        except Exception as exc:
            action = (
                "secretsmanager:GetSecretValue"
                if kind == "client_secret_secretsmanager"
                else "ssm:GetParameter"
            )
            error = map_aws_error(exc, target=ref, action=action)
            if not error.is_transient:
                # Not found, AccessDenied (IAM or KMS), validation: the client secret
                # cannot be resolved, a configuration error (exit 2); throttling and
                # 5xx stay retryable.
                raise SecretSourceError(f"client secret: {error}") from exc
            raise error from exc
        if not isinstance(value, str) or not value:
            raise SecretSourceError(f"client secret: parameter {ref} is empty")
        return value


def _read_file(ref: str) -> str:
    path = Path(ref)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SecretSourceError(f"client secret file not found: {ref!r}") from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SecretSourceError(f"cannot read client secret file {ref!r}: {reason}") from exc
    except UnicodeDecodeError:  # its text quotes a byte of the secret: no cause
        reason = "UnicodeDecodeError"
        raise SecretSourceError(f"cannot read client secret file {ref!r}: {reason}") from None
    value = strip_one_newline(text)
    if not value:
        raise SecretSourceError(f"client secret file {ref!r} is empty")
    return value


def _from_secret_string(value: object, ref: str) -> str:
    """The whole SecretString, or its "client_secret" key when it is a JSON object."""
    if not isinstance(value, str) or not value:
        raise SecretSourceError(f"client secret: secret {ref} has no SecretString")
    if value.lstrip().startswith("{"):
        try:
            data = json.loads(value)
        except ValueError:
            return value
        if isinstance(data, dict):
            inner = data.get("client_secret")
            if isinstance(inner, str) and inner:
                return inner
            raise SecretSourceError(
                f"client secret: secret {ref} is a JSON object without a 'client_secret' key"
            )
    return value
