"""The daemon's health and metrics pages, read over HTTP."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from typing import Any

import requests

from tests.harness.process import Daemon, wait_for_daemons

HEALTH_PORT = re.compile(r"metrics and health on port (\d+)")


def health_port(daemon: Daemon, *, timeout: float = 30.0) -> int:
    """The port the daemon logged for its health server (``metrics_port = 0``)."""
    found = lambda: HEALTH_PORT.search(daemon.stderr_text())  # noqa: E731
    wait_for_daemons("health server", lambda: found() is not None, [daemon], timeout=timeout)
    match = found()
    assert match is not None
    return int(match.group(1))


def page(port: int, path: str) -> tuple[int, str]:
    """Status and text of one page, an HTTP error status included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def health(port: int, path: str) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"http://127.0.0.1:{port}{path}", timeout=30)
    return response.status_code, response.json()


def state_between_attempts(port: int, credential: str, *, tries: int = 100) -> dict[str, Any]:
    """A failing credential's /healthz entry, asked until no attempt is running: between
    two attempts it says "failing"; a loaded machine may answer while the next one runs
    ("running"). Fails when every answer was "running"."""
    for _ in range(tries):
        status, live = health(port, "/healthz")
        assert status == 200, live
        state: dict[str, Any] = live["credentials"][credential]
        if state["state"] != "running":
            return state
        time.sleep(0.05)
    raise AssertionError(f"{credential}: an attempt running at each of {tries} asks")


def metric(port: int, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name} in:\n{text}")
