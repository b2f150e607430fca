"""The real-Keycloak tests skip without Java or Maven, saying why, but fail under a truthy CI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import keycloak


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no java, no mvn
    keycloak.keycloak_available.cache_clear()
    yield
    keycloak.keycloak_available.cache_clear()


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_skips_with_the_reason_outside_ci(
    no_java: None, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception) as skipped:
        keycloak.require_keycloak()
    assert str(skipped.value) == (
        "needs a real Keycloak: `java` is not on PATH (Java 17+ and Maven fetch and run it)"
    )


@pytest.mark.parametrize("ci", ["true", "1", "TRUE", "yes"])
def test_fails_under_ci(no_java: None, monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception) as failed:
        keycloak.require_keycloak()
    assert "`java` is not on PATH" in str(failed.value)
    assert "must run, not skip" in str(failed.value)
