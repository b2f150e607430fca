"""The daemon's health and metrics pages, read over HTTP."""

from __future__ import annotations

from typing import Any

import requests


def health(port: int, path: str) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"http://127.0.0.1:{port}{path}", timeout=30)
    return response.status_code, response.json()


def metric(port: int, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name} in:\n{text}")
