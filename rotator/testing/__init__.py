"""Test helpers shipped with rotator, for testing rotator and the programs that consume its
tokens, with no network beyond 127.0.0.1:

* ``KeycloakStub``: a Keycloak-faithful OAuth2 token endpoint (client_credentials and
  refresh_token grants, Keycloak's errors) plus a protected resource that checks tokens;
* ``FaultProxy``: a fault-injecting HTTP proxy (latency, stalls, resets, canned errors,
  truncated bodies) to put in front of the stub or of a moto server;
* ``AwsLimitsProxy``: a ``FaultProxy`` for a moto server that enforces what moto does not
  (the Secrets Manager version quota, value sizes, request rates, read-only replicas).

All use only the standard library. The names are imported lazily, so that
``python -m rotator.testing.keycloak`` runs cleanly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rotator._lazy import lazy_attributes

if TYPE_CHECKING:
    from rotator.testing.awslimits import AwsLimitsProxy, Refusal
    from rotator.testing.keycloak import KeycloakStub, TokenRequest, VerifyRequest
    from rotator.testing.proxy import FaultProxy, ProxiedRequest

__all__ = [
    "AwsLimitsProxy",
    "FaultProxy",
    "KeycloakStub",
    "ProxiedRequest",
    "Refusal",
    "TokenRequest",
    "VerifyRequest",
]

__getattr__ = lazy_attributes(
    __name__,
    {
        "KeycloakStub": "rotator.testing.keycloak",
        "TokenRequest": "rotator.testing.keycloak",
        "VerifyRequest": "rotator.testing.keycloak",
        "FaultProxy": "rotator.testing.proxy",
        "ProxiedRequest": "rotator.testing.proxy",
        "AwsLimitsProxy": "rotator.testing.awslimits",
        "Refusal": "rotator.testing.awslimits",
    },
)
