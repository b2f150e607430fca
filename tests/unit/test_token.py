"""The Token value and the published document: the contract with consumers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from rotator.clock import format_instant, parse_instant
from rotator.oauth import Grant
from rotator.secret import Secret
from rotator.token import Token, decode, decode_document, encode, jwt_claims
from tests.fakes import T0, make_jwt, make_token

MARKER = "access-token-MARKER-doc"


def doc(**fields: str) -> str:
    return json.dumps({"access_token": MARKER, **fields})


def test_document_has_exactly_the_contract_keys() -> None:
    token = make_token(T0, 300, access_token=MARKER)
    doc = json.loads(encode(token, "json"))
    assert doc == {
        "access_token": MARKER,
        "token_type": "Bearer",
        "expires_at": "2026-11-28T22:05:00Z",
        "issued_at": "2026-11-28T22:00:00Z",
    }


def test_scope_appears_only_when_granted() -> None:
    doc = json.loads(encode(make_token(scope="oms.read oms.write"), "json"))
    assert doc["scope"] == "oms.read oms.write"
    assert "scope" not in json.loads(encode(make_token(scope=None), "json"))
    assert "scope" not in json.loads(encode(make_token(scope=""), "json"))


def test_document_round_trip() -> None:
    token = make_token(T0, 300, access_token=MARKER, scope="oms")
    back = decode(encode(token, "json"), "json")
    assert back == token


def test_instants_are_normalised_to_utc_with_z() -> None:
    plus2 = timezone(timedelta(hours=2))
    token = Token(
        access_token=MARKER,
        token_type="Bearer",
        issued_at=datetime(2026, 11, 29, 0, 30, 0, 999_999, tzinfo=plus2),
        expires_at=datetime(2026, 11, 29, 0, 35, 0, tzinfo=plus2),
    )
    doc = token.to_document()
    assert doc["issued_at"] == "2026-11-28T22:30:00Z"
    assert doc["expires_at"] == "2026-11-28T22:35:00Z"
    assert token.expires_at.tzinfo == UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        Token(MARKER, "Bearer", datetime(2026, 1, 1), datetime(2026, 1, 2))  # noqa: DTZ001


def test_no_refresh_token_key_ever() -> None:
    grant = Grant(
        token=make_token(access_token=MARKER),
        refresh_token=Secret("refresh-token-MARKER"),
        refresh_expires_at=T0 + timedelta(hours=1),
    )
    text = encode(grant.token, "json")
    assert "refresh" not in text
    assert "refresh-token-MARKER" not in repr(grant)
    assert MARKER not in repr(grant)


def test_raw_format_is_the_bare_access_token() -> None:
    token = make_token(access_token=MARKER)
    assert encode(token, "raw") == MARKER


def test_raw_jwt_decodes_its_expiry_from_exp() -> None:
    exp = int((T0 + timedelta(minutes=5)).timestamp())
    iat = int(T0.timestamp())
    jwt = make_jwt({"exp": exp, "iat": iat, "scope": "oms"})
    token = decode(jwt + "\n", "raw")
    assert token is not None
    assert token.access_token == jwt
    assert token.expires_at == T0 + timedelta(minutes=5)
    assert token.issued_at == T0
    assert token.scope == "oms"


def test_raw_jwt_without_iat_counts_from_expiry() -> None:
    exp = int(T0.timestamp())
    token = decode(make_jwt({"exp": exp}), "raw")
    assert token is not None
    assert token.issued_at == token.expires_at == T0


@pytest.mark.parametrize(
    "value",
    [MARKER, make_jwt({"sub": "x"}), make_jwt({"exp": "soon"}), make_jwt({"exp": True})],
)
def test_raw_opaque_or_expiry_less_tokens_decode_to_none(value: str) -> None:
    assert decode(value, "raw") is None


def test_empty_raw_value_is_malformed() -> None:
    with pytest.raises(ValueError, match="empty"):
        decode("  \n", "raw")


@pytest.mark.parametrize("exp", [1e20, -1e20, 10**15])
def test_raw_jwt_with_an_out_of_range_exp_is_malformed_not_a_crash(exp: float) -> None:
    with pytest.raises(ValueError) as info:
        decode(make_jwt({"exp": exp}), "raw")
    assert "exp" in str(info.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not json " + MARKER, "not JSON"),
        ('["a"]', "not a JSON object"),
        ('{"token_type": "Bearer"}', "no access_token"),
        ('{"access_token": ""}', "no access_token"),
        ('{"access_token": 12}', "no access_token"),
        (doc(), "expires_at"),
        (doc(expires_at="tomorrow"), "expires_at"),
        (doc(expires_at="2026-11-28T22:00:00"), "expires_at"),
        (doc(expires_at="9999-12-31T23:59:59-01:00"), "expires_at"),
        (
            doc(expires_at="2026-11-28T22:00:00Z", issued_at="0001-01-01T00:00:00+01:00"),
            "issued_at",
        ),
    ],
)
def test_malformed_documents_raise_value_error_without_echoing(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        decode_document(value)
    assert MARKER not in str(info.value)


def test_document_defaults_are_lenient_for_readers() -> None:
    token = decode_document('{"access_token": "abc", "expires_at": "2026-11-28T22:05:00+00:00"}')
    assert token.token_type == "Bearer"
    assert token.issued_at == token.expires_at == T0 + timedelta(minutes=5)


def test_repr_and_str_never_show_the_token() -> None:
    token = make_token(access_token=MARKER, scope="oms")
    for text in (repr(token), str(token), f"{token}", f"{token!r}", str([token])):
        assert MARKER not in text
    assert "2026-11-28T22:05:00Z" in str(token)


def test_lifetime_remaining_expired() -> None:
    token = make_token(T0, 300)
    assert token.lifetime == timedelta(seconds=300)
    assert token.remaining(T0 + timedelta(seconds=100)) == timedelta(seconds=200)
    assert not token.is_expired(T0 + timedelta(seconds=299))
    assert token.is_expired(T0 + timedelta(seconds=300))


def test_jwt_claims() -> None:
    assert jwt_claims(make_jwt({"exp": 1, "a": "b"})) == {"exp": 1, "a": "b"}
    assert jwt_claims("a.b") is None
    assert jwt_claims("a.!!!.c") is None
    assert jwt_claims("a.WzFd.c") is None  # "[1]": not an object


def test_instant_format_and_parse() -> None:
    assert format_instant(T0 + timedelta(microseconds=999)) == "2026-11-28T22:00:00Z"
    assert parse_instant("2026-11-28T23:00:00+01:00") == T0
    assert parse_instant("2026-11-28T22:00:00z") == T0
    with pytest.raises(ValueError, match="no time zone"):
        parse_instant("2026-11-28T22:00:00")
