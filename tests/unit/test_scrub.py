"""The scrub index (every occurrence of every known secret masked, at a cost that follows
the text, not the number of secrets) and the log handler that formats outside its lock."""

from __future__ import annotations

import io
import logging
import threading

import pytest

from rotator.logs import _Handler, _ScrubbingFormatter
from rotator.secret import _Registry

MASK = "**********"


def registry(*values: str, limit: int = 4096) -> _Registry:
    reg = _Registry(limit=limit)
    for value in values:
        reg.add(value)
    return reg


def test_every_occurrence_of_every_secret_is_masked_among_thousands() -> None:
    reg = registry(*(f"token-{i:06d}-value" for i in range(4096)))
    text = "a token-000007-value b token-004095-value c token-000007-value"
    assert reg.scrub(text) == f"a {MASK} b {MASK} c {MASK}"
    assert reg.scrub("token-00000 no secret here") == "token-00000 no secret here"


def test_secrets_sharing_a_prefix_mask_the_longest_match() -> None:
    reg = registry("shared-prefix", "shared-prefix-and-more")
    assert reg.scrub("<shared-prefix-and-more>") == f"<{MASK}>"
    assert reg.scrub("<shared-prefix-and>") == f"<{MASK}-and>"


def test_overlapping_secrets_leave_no_character_of_either() -> None:
    reg = registry("alpha-beta", "beta-gamma")
    out = reg.scrub("x alpha-beta-gamma y")
    assert out == f"x {MASK} y"
    for part in ("alpha", "beta", "gamma"):
        assert part not in out


def test_short_values_are_not_registered_and_text_edges_are_scanned() -> None:
    reg = registry("abc", "secret")
    assert reg.scrub("abc") == "abc"
    assert reg.scrub("secret") == MASK
    assert reg.scrub("xsecret") == f"x{MASK}"
    assert reg.scrub("secre") == "secre"


def test_the_oldest_values_leave_the_index_past_the_limit() -> None:
    reg = registry("first-secret", "second-secret", "third-secret", limit=2)
    assert reg.scrub("first-secret") == "first-secret"
    assert reg.scrub("second-secret third-secret") == f"{MASK} {MASK}"
    reg.add("second-secret")  # seen again: newest, so "third" is evicted next
    reg.add("fourth-secret")
    assert reg.scrub("second-secret third-secret") == f"{MASK} third-secret"
    assert sorted(reg.values()) == ["fourth-secret", "second-secret"]


def test_the_handler_formats_before_taking_its_lock() -> None:
    stream = io.StringIO()
    handler = _Handler(stream)
    held_while_formatting: list[bool] = []

    class Probe(_ScrubbingFormatter):
        def format(self, record: logging.LogRecord) -> str:
            other: list[bool] = []
            # Another thread tries the handler's lock while this record is formatted.
            probe = threading.Thread(target=lambda: other.append(try_lock(handler)))
            probe.start()
            probe.join()
            held_while_formatting.append(not other[0])
            return super().format(record)

    handler.setFormatter(Probe("text"))
    record = logging.LogRecord("rotator", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    assert handler.handle(record)
    assert held_while_formatting == [False]
    assert stream.getvalue().endswith("INFO    hello you\n")


def try_lock(handler: logging.Handler) -> bool:
    assert handler.lock is not None
    got = handler.lock.acquire(blocking=False)
    if got:
        handler.lock.release()
    return got


def test_values_sharing_a_long_prefix_as_jwts_do_are_each_masked() -> None:
    header = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
    reg = registry(*(f"{header}payload{i:05d}.sig{i:05d}" for i in range(4096)))
    text = f"x {header}payload00042.sig00042 y {header}payload00042.sig00043 z"
    assert reg.scrub(text) == f"x {MASK} y {header}payload00042.sig00043 z"


class CountingText(str):
    """A text that counts the slices taken of it (the window scan takes one a character)."""

    slices = 0

    def __getitem__(self, key: object) -> str:  # type: ignore[override]
        type(self).slices += 1
        return str.__getitem__(self, key)  # type: ignore[index]


def test_a_few_secrets_are_found_without_scanning_every_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import rotator.secret as secret

    values = ("alpha-beta", "beta-gamma", "secret", "shared-prefix", "shared-prefix-and-more")
    texts = [
        "x alpha-beta-gamma y",
        "secretsecret xsecret secre <shared-prefix-and-more> <shared-prefix-and>",
        "nothing here at all",
        "",
    ]
    few = registry(*values)
    assert len(few._index) <= secret._FEW_KEYS
    CountingText.slices = 0
    assert few.scrub(CountingText("a log line of a hundred characters " * 3)).startswith("a log")
    assert CountingText.slices == 0  # no window of it looked up
    fast = [few.scrub(t) for t in texts]
    assert fast[0] == f"x {MASK} y"
    assert fast[1] == f"{MASK} x{MASK} secre <{MASK}> <{MASK}-and>"
    # the same masks as the scan of every window (forced by a threshold below zero)
    monkeypatch.setattr(secret, "_FEW_KEYS", -1)
    assert fast == [few.scrub(t) for t in texts]
    CountingText.slices = 0
    few.scrub(CountingText("a log line"))
    assert CountingText.slices > 0
