"""Proxy settings are resolved once per scheme and host, not once per credential: each
lookup walks the whole environment twice, which cost ~0.5 s of start-up at 1,000
credentials."""

from __future__ import annotations

import pytest

from rotator.app import build
from rotator.config import from_mapping


def test_proxies_resolved_once_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "direct.example")
    settings = from_mapping(
        {
            "credentials": [
                {
                    "name": "a",
                    "token_url": "https://kc.example/realms/a/token",
                    "client_id": "c",
                    "client_secret_env": "S",
                    "targets": [{"type": "file", "path": "/tmp/a.json"}],
                }
            ]
        }
    )
    app = build(settings)
    proxied = app.proxies("https://kc.example/realms/a/token")
    assert proxied.get("https") == "http://proxy.internal:3128"
    assert "https" not in app.proxies("https://direct.example/realms/b/token")
    # Resolved at the first lookup for this host: later lookups (another realm's path,
    # every further credential) reuse it without walking the environment again.
    monkeypatch.setenv("HTTPS_PROXY", "http://changed.internal:3128")
    assert app.proxies("https://kc.example/realms/other/token") == proxied
    assert app.proxies("https://new.example/token")["https"] == "http://changed.internal:3128"
    # a copy each time: one credential cannot change another's settings
    app.proxies("https://kc.example/x")["https"] = "mutated"
    assert app.proxies("https://kc.example/y") == proxied
