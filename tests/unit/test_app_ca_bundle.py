"""The CA bundle named by the environment is checked once per file as it is, not once
per credential (an open and a read each: a third of building 1,000 rotators), and again
as soon as the file changes, goes or loses its permissions."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from rotator.app import tls_verify
from rotator.errors import ConfigError


def test_a_bundle_is_read_once_while_it_is_unchanged(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    opened: list[str] = []

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "open" and str(args[0]) == str(bundle):  # this test's file only
            opened.append(event)

    sys.addaudithook(hook)  # stays installed (hooks cannot be removed): inert after this
    for _ in range(50):
        assert tls_verify(None, {"REQUESTS_CA_BUNDLE": str(bundle)}) == str(bundle)
    assert len(opened) == 1


def test_a_bundle_gone_or_unreadable_is_refused_again(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"CURL_CA_BUNDLE": str(bundle)}
    assert tls_verify(None, env) == str(bundle)
    bundle.unlink()
    with pytest.raises(ConfigError, match="CA bundle not found"):
        tls_verify(None, env)
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert tls_verify(None, env) == str(bundle)
    if os.geteuid() != 0:  # root reads whatever the mode says
        bundle.chmod(0)
        with pytest.raises(ConfigError, match="cannot read CA bundle"):
            tls_verify(None, env)
