"""One rule for every test that needs something outside Python's standard library.

A test that needs Node.js, a moto server, Java/Maven, a linter, ... calls one of
these before it starts. When the thing is missing the test is skipped with one
line saying what and why, except in CI (``CI`` set to any truthy value: ``true``,
``1``, ``yes``, ``on``, in any case), where it fails: CI must run every test.

    from tests import gates

    gates.require(shutil.which("java") is not None, "java", "runs the real Keycloak server")
    java = gates.require_executable("java", "runs the real Keycloak server")
    boto3 = gates.require_module("boto3", "talks to the moto server")
    gates.missing("keycloak distribution", "not downloaded: make keycloak")  # NoReturn
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["is_ci", "missing", "require", "require_executable", "require_module"]

_FALSY = {"", "0", "false", "no", "off", "n", "f"}


def is_ci(environ: dict[str, str] | None = None) -> bool:
    """True when ``CI`` is set to anything but an empty or false-like value."""
    value = (os.environ if environ is None else environ).get("CI")
    return value is not None and value.strip().lower() not in _FALSY


def missing(what: str, why: str) -> NoReturn:
    """Skip the current test (fail it under CI): `what` is not available; `why` it is needed."""
    message = f"needs {what}: {why}"
    if is_ci():
        pytest.fail(f"{message} (CI is set: this test must run, not skip)", pytrace=False)
    pytest.skip(message)


def require(available: bool, what: str, why: str) -> None:
    """``missing(what, why)`` unless `available`."""
    if not available:
        missing(what, why)


def require_executable(name: str, why: str) -> str:
    """Path of the program `name`: the running interpreter's bin folder first, then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        missing(f"the {name!r} program", why)
    return found


def require_module(name: str, why: str) -> ModuleType:
    """The imported module `name` (the gate's answer to ``pytest.importorskip``)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not name.startswith(exc.name):
            raise  # the module exists but one of its own dependencies is missing: a real error
        missing(f"the Python module {name!r}", why)
