"""What the token-endpoint unit tests share: a token URL, marker secrets, Keycloak's body."""

from __future__ import annotations

from typing import Any

URL = "https://sso.example.com/auth/realms/prod/protocol/openid-connect/token"
ACCESS = "eyJ-access-token-MARKER"
REFRESH = "refresh-token-MARKER"
CLIENT_SECRET = "client-secret-MARKER"
MARKERS = (ACCESS, REFRESH, CLIENT_SECRET)

KEYCLOAK_BODY: dict[str, Any] = {
    "access_token": ACCESS,
    "expires_in": 300,
    "refresh_expires_in": 0,
    "token_type": "Bearer",
    "not-before-policy": 0,
    "scope": "profile email",
}
