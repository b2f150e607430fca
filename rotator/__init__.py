"""rotator: keep a short-lived OAuth2 access token fresh in AWS.

The package root stays import-light (``rotator get`` and consumers pay only for
what they use); public names are loaded on first access.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["BearerAuth", "Token", "TokenReader", "__version__"]

_LAZY = {
    "Token": "rotator.token",
    "TokenReader": "rotator.reader",
    "BearerAuth": "rotator.reader",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rotator' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
