"""Talking to the shipped test helpers (``KeycloakStub``, ``FaultProxy``) over HTTP."""

from __future__ import annotations

import threading
from typing import Any

import requests

CLIENT = "oms-client"  # KeycloakStub's default client
SECRET = "oms-secret"
CC = {"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET}
TIMEOUT = 5.0


def post(url: str, data: dict[str, str], **kwargs: Any) -> requests.Response:
    return requests.post(url, data=data, timeout=TIMEOUT, **kwargs)


def helper_threads() -> list[threading.Thread]:
    """The helpers' own threads still alive (a stopped helper leaves none)."""
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith(("keycloak-stub", "fault-proxy")) and t.is_alive()
    ]
