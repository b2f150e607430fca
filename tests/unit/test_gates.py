"""tests.gates: one rule for every "needs X" gate: skip locally, fail under any truthy CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import gates


@pytest.mark.parametrize("value", ["true", "1", "yes", "True", "TRUE", "on", "github-actions"])
def test_any_truthy_ci_is_ci(value: str) -> None:
    assert gates.is_ci({"CI": value})


@pytest.mark.parametrize("value", ["", "0", "false", "False", "no", "off", " "])
def test_unset_or_false_like_ci_is_not_ci(value: str) -> None:
    assert not gates.is_ci({"CI": value})
    assert not gates.is_ci({})


@pytest.mark.parametrize("value", ["true", "1", "True"])
def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"needs java: runs Keycloak \(CI is set"):
        gates.require(False, "java", "runs Keycloak")


def test_a_missing_tool_skips_with_one_line_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^needs java: runs Keycloak$"):
        gates.require(False, "java", "runs Keycloak")
    gates.require(True, "java", "runs Keycloak")  # available: nothing happens


def test_require_executable_and_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert gates.require_executable("sh", "a shell").endswith("/sh")
    assert gates.require_module("json", "stdlib").dumps([]) == "[]"
    with pytest.raises(pytest.skip.Exception, match="'no-such-program-x1'"):
        gates.require_executable("no-such-program-x1", "nothing")
    with pytest.raises(pytest.skip.Exception, match="'no_such_module_x1'"):
        gates.require_module("no_such_module_x1", "nothing")


def test_a_module_whose_own_dependency_is_missing_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    package = tmp_path / "gates_broken_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("import no_such_dependency_x1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_x1"):
        gates.require_module("gates_broken_pkg", "a real error, not a skip")
