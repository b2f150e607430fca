"""Kubernetes service-link variables are not rotator settings (issue 15, point 1).

A Service named ``rotator`` makes Kubernetes inject ROTATOR_SERVICE_HOST,
ROTATOR_SERVICE_PORT, ROTATOR_PORT, ROTATOR_PORT_9102_TCP... into every pod of
the namespace; the typo check must ignore exactly those names.
"""

from __future__ import annotations

import pytest

from rotator import config
from rotator.config import ConfigError, from_env

ENV = {
    "ROTATOR_TOKEN_URL": "https://sso.example.com/realms/r/protocol/openid-connect/token",
    "ROTATOR_CLIENT_ID": "oms-client",
    "ROTATOR_CLIENT_SECRET": "s3cr3t",
    "ROTATOR_SSM_PARAMETER": "/oms/token",
}

# What the kubelet injects for `kind: Service, name: rotator` with one port
# 9102/TCP named "metrics" (Docker-links style plus the *_SERVICE_* pair).
SERVICE_LINKS = {
    "ROTATOR_SERVICE_HOST": "10.0.0.1",
    "ROTATOR_SERVICE_PORT": "9102",
    "ROTATOR_SERVICE_PORT_METRICS": "9102",
    "ROTATOR_PORT": "tcp://10.0.0.1:9102",
    "ROTATOR_PORT_9102_TCP": "tcp://10.0.0.1:9102",
    "ROTATOR_PORT_9102_TCP_PROTO": "tcp",
    "ROTATOR_PORT_9102_TCP_PORT": "9102",
    "ROTATOR_PORT_9102_TCP_ADDR": "10.0.0.1",
}


@pytest.mark.parametrize("name", sorted(SERVICE_LINKS))
def test_each_service_link_name_is_recognised(name: str) -> None:
    assert config.is_service_link(name)


@pytest.mark.parametrize(
    "name",
    ["ROTATOR_METRICS_PORT", "ROTATOR_PORTS", "ROTATOR_SERVICE", "ROTATOR_SERVICEHOST", "ROTATOR_"],
)
def test_near_misses_are_not_service_links(name: str) -> None:
    assert not config.is_service_link(name)


def test_service_links_are_not_reported_as_unknown_but_typos_still_are() -> None:
    env = {**ENV, **SERVICE_LINKS, "ROTATOR_SSM_PARAMETR": "/typo"}
    assert config.unknown_env_keys(env) == ["ROTATOR_SSM_PARAMETR"]


def test_settings_load_with_service_links_present() -> None:
    settings = from_env({**ENV, **SERVICE_LINKS})
    (credential,) = settings.credentials
    assert [t.ref for t in credential.targets] == ["/oms/token"]
    # ROTATOR_PORT is not ROTATOR_METRICS_PORT: it configures nothing.
    assert settings.metrics_port is None


def test_a_typo_next_to_service_links_is_still_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ROTATOR_CLIENT_SECERT"):
        from_env({**ENV, **SERVICE_LINKS, "ROTATOR_CLIENT_SECERT": "x"})


def test_no_setting_of_ours_looks_like_a_service_link() -> None:
    # Otherwise a real setting would be silently ignored by the typo check's exemption.
    assert not [k for k in config.ENV_KEYS if config.is_service_link(k)]
