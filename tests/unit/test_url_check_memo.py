"""config.values.url remembers the URLs it accepted (a fleet repeats one token URL),
never one it refused, and the check a remembered URL skips is the same for every key."""

from __future__ import annotations

import pytest

from rotator.config import values
from rotator.errors import ConfigError


def test_an_accepted_url_is_remembered_and_given_back_as_is() -> None:
    text = "https://kc.example/realms/memo/protocol/openid-connect/token"
    values._ACCEPTED_URLS.discard(text)
    assert values.url(f"  {text} ", "a.token_url") == text
    assert text in values._ACCEPTED_URLS
    assert values.url(text, "b.token_url") == text


@pytest.mark.parametrize(
    "bad",
    [
        "http://kc.example/realms/memo/token",  # plain http off loopback
        "https://user:pw@kc.example/token",
        "https://kc.example/to ken",
        "ftp://kc.example/token",
    ],
)
def test_a_refused_url_is_refused_every_time_and_never_remembered(bad: str) -> None:
    for key in ("a.token_url", "b.verify_url"):
        with pytest.raises(ConfigError) as caught:
            values.url(bad, key)
        assert key in str(caught.value)
        assert "pw" not in str(caught.value)
    assert bad not in values._ACCEPTED_URLS


def test_the_memory_is_bounded() -> None:
    saved = set(values._ACCEPTED_URLS)
    try:
        values._ACCEPTED_URLS.clear()
        for k in range(4100):
            values.url(f"https://kc{k}.example/token", "token_url")
        assert len(values._ACCEPTED_URLS) == 4096
        assert values.url("https://kc4099.example/token", "token_url")  # checked, not kept
    finally:
        values._ACCEPTED_URLS.clear()
        values._ACCEPTED_URLS.update(saved)
