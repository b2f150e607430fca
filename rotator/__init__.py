"""rotator: keep a short-lived OAuth2 access token fresh in AWS.

The package root stays import-light (``rotator get`` and consumers pay only for
what they use); public names are loaded on first access.
"""

from __future__ import annotations

from rotator._lazy import lazy_attributes

__version__ = "0.1.0"

__all__ = ["BearerAuth", "Token", "TokenReader", "__version__"]

__getattr__ = lazy_attributes(
    __name__,
    {
        "Token": "rotator.token",
        "TokenReader": "rotator.reader",
        "BearerAuth": "rotator.reader",
    },
)
