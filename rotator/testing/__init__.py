"""Test helpers shipped with rotator, for testing rotator and the programs that consume its
tokens, with no network beyond 127.0.0.1:

* ``KeycloakStub``: a Keycloak-faithful OAuth2 token endpoint (client_credentials and
  refresh_token grants, Keycloak's errors) plus a protected resource that checks tokens;
* ``FaultProxy``: a fault-injecting HTTP proxy (latency, stalls, resets, canned errors,
  truncated bodies) to put in front of the stub or of a moto server.

Both use only the standard library. The names are imported lazily, so that
``python -m rotator.testing.keycloak`` runs cleanly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rotator.testing.keycloak import KeycloakStub, TokenRequest, VerifyRequest
    from rotator.testing.proxy import FaultProxy, ProxiedRequest

__all__ = ["FaultProxy", "KeycloakStub", "ProxiedRequest", "TokenRequest", "VerifyRequest"]

_HOMES = {
    "KeycloakStub": "keycloak",
    "TokenRequest": "keycloak",
    "VerifyRequest": "keycloak",
    "FaultProxy": "proxy",
    "ProxiedRequest": "proxy",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
