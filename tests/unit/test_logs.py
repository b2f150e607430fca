"""Logging: one line per event, text or JSON, registered secrets masked."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest

from rotator import logs
from rotator.secret import Secret, register, scrub

MARKER = "token-MARKER-for-logs-123"


def capture(fmt: str, level: str = "debug") -> io.StringIO:
    stream = io.StringIO()
    logs.setup(level, fmt, stream=stream)
    return stream


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_registered_secret_is_masked(fmt: str) -> None:
    register(MARKER)
    stream = capture(fmt)
    logging.getLogger("rotator").error("published token=%s to %s", MARKER, "sm")
    out = stream.getvalue()
    assert MARKER not in out
    assert "**********" in out
    assert "to sm" in out


def test_secret_objects_never_format_their_value() -> None:
    stream = capture("text")
    secret = Secret("client-secret-MARKER-xyz")
    logging.getLogger("rotator").info("secret=%s repr=%r f=%s", secret, secret, f"{secret}")
    assert "client-secret-MARKER-xyz" not in stream.getvalue()


def test_a_new_secret_registers_its_value_for_scrubbing() -> None:
    value = f"client-secret-MARKER-{uuid.uuid4().hex}"  # never registered before
    secret = Secret(value)
    stream = capture("text")
    logging.getLogger("rotator").error("leaked %s", secret.reveal())
    assert value not in stream.getvalue()
    assert "leaked **********" in stream.getvalue()
    assert scrub(f"a{value}b") == "a**********b"


def test_json_format_is_one_valid_object_per_line() -> None:
    stream = capture("json")
    log = logging.getLogger("rotator")
    log.info("first line\nsecond line")
    log.warning('quotes " and \\ backslashes')
    log.debug("déjà vu")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["level"] for r in records] == ["info", "warning", "debug"]
    assert records[0]["message"] == "first line second line"
    assert records[1]["message"] == 'quotes " and \\ backslashes'
    assert records[2]["message"] == "déjà vu"
    assert all(r["logger"] == "rotator" for r in records)
    assert all(r["time"].endswith("Z") for r in records)


def test_text_format_is_one_line_without_traceback() -> None:
    stream = capture("text")
    try:
        raise ValueError(f"bad {MARKER}")
    except ValueError:
        logging.getLogger("rotator").exception("step failed")
    out = stream.getvalue()
    assert out.count("\n") == 1
    assert "Traceback" not in out
    assert "step failed: ValueError" in out
    assert " ERROR " in out


def test_level_filters() -> None:
    stream = capture("text", level="warning")
    logging.getLogger("rotator").info("quiet")
    logging.getLogger("rotator").warning("loud")
    assert "quiet" not in stream.getvalue()
    assert "loud" in stream.getvalue()


def test_setup_replaces_earlier_handlers() -> None:
    first = capture("text")
    second = capture("json")
    logging.getLogger("rotator").warning("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["message"] == "once"


def test_short_values_are_not_masked() -> None:
    register("abc")  # too short: masking it would mangle ordinary words
    assert scrub("abcdef abc") == "abcdef abc"
