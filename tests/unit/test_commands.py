"""Exit codes of `once`, `check` and `get`, built through the composition root with
a fake HTTP session, a fake clock and a file target (no sockets)."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator import commands
from rotator.app import App, build
from rotator.config import from_mapping
from rotator.stores.file import FileStore
from rotator.token import decode
from tests.fakes import FakeClock, FakeResponse, FakeSession, make_token

SECRET = "client-secret-MARKER-cmd"
ACCESS = "access-token-MARKER-cmd"
URL = "https://sso.example.com/realms/prod/protocol/openid-connect/token"


def ok_body(**extra: Any) -> FakeResponse:
    body = {"access_token": ACCESS, "expires_in": 300, "token_type": "Bearer", **extra}
    return FakeResponse.json(body)


def make_app(
    tmp_path: Path,
    clock: FakeClock,
    session: FakeSession,
    *,
    verify_url: str | None = None,
    budget: float = 20.0,
    env: dict[str, str] | None = None,
) -> tuple[App, FileStore]:
    cred: dict[str, Any] = {
        "name": "oms",
        "token_url": URL,
        "client_id": "oms-client",
        "client_secret_env": "OMS_SECRET",
        "refresh": {"retry_budget_seconds": budget, "max_retry_wait_seconds": 8},
        "targets": [{"type": "file", "path": str(tmp_path / "token.json")}],
    }
    if verify_url:
        cred["verify_url"] = verify_url
    settings = from_mapping({"credentials": [cred]})
    env = {"OMS_SECRET": SECRET} if env is None else env
    app = build(settings, clock=clock, session=session, env=env)
    return app, FileStore(tmp_path / "token.json")


def published(store: FileStore) -> Any:
    value = store.get().value
    return None if value is None else decode(value, "json")


def test_once_rotates_and_exits_0(tmp_path: Path, clock: FakeClock) -> None:
    session = FakeSession(ok_body())
    app, store = make_app(tmp_path, clock, session)
    assert commands.once(app) == 0
    token = published(store)
    assert token.access_token == ACCESS
    assert token.expires_at == clock.now() + timedelta(seconds=300)
    assert session.sent[0].form["client_secret"] == SECRET
    # a second run finds it fresh: no request
    assert commands.once(app) == 0
    assert len(session.sent) == 1


def test_once_force_always_rotates(tmp_path: Path, clock: FakeClock) -> None:
    session = FakeSession(ok_body(), ok_body(access_token=ACCESS + "-2", expires_in=400))
    app, store = make_app(tmp_path, clock, session)
    assert commands.once(app) == 0
    clock.advance(10)
    assert commands.once(app, force=True) == 0
    assert len(session.sent) == 2
    assert published(store).access_token == ACCESS + "-2"


@pytest.mark.parametrize(
    "body",
    [
        {"error": "unauthorized_client", "error_description": "Invalid client credentials"},
        {"error": "invalid_client", "error_description": "Invalid client secret"},
    ],
)
def test_once_rejected_credentials_exit_3_at_once(
    tmp_path: Path, clock: FakeClock, body: dict[str, str]
) -> None:
    session = FakeSession(FakeResponse.json(body, 401))
    app, store = make_app(tmp_path, clock, session)
    assert commands.once(app) == 3
    assert len(session.sent) == 1
    assert clock.waits == []
    assert store.get().is_missing


def test_once_gives_up_after_the_budget_and_exits_1(tmp_path: Path, clock: FakeClock) -> None:
    session = FakeSession(*(FakeResponse(status_code=503, body=b"<html/>") for _ in range(50)))
    app, store = make_app(tmp_path, clock, session, budget=20.0)
    started = clock.now()
    assert commands.once(app) == 1
    assert len(session.sent) == len(clock.waits) + 1 >= 3
    assert sum(clock.waits) <= 20.0
    assert all(w <= 8.0 for w in clock.waits)
    assert (clock.now() - started).total_seconds() <= 20.0
    assert store.get().is_missing


def test_once_recovers_within_the_budget(tmp_path: Path, clock: FakeClock) -> None:
    session = FakeSession(
        FakeResponse(status_code=503, body=b""),
        FakeResponse.json({}, 429, headers={"Retry-After": "3"}),
        ok_body(),
    )
    app, store = make_app(tmp_path, clock, session)
    assert commands.once(app) == 0
    assert clock.waits[1] == 3.0
    assert published(store).access_token == ACCESS


def test_once_html_200_is_not_retried_and_exits_1(tmp_path: Path, clock: FakeClock) -> None:
    session = FakeSession(FakeResponse(status_code=200, body=b"<html>login</html>"))
    app, store = make_app(tmp_path, clock, session)
    assert commands.once(app) == 1
    assert len(session.sent) == 1
    assert store.get().is_missing


def test_once_verify_refused_exits_1_and_publishes_nothing(
    tmp_path: Path, clock: FakeClock
) -> None:
    session = FakeSession(ok_body(), FakeResponse(status_code=401))
    app, store = make_app(tmp_path, clock, session, verify_url="https://oms.example.com/oms-api/")
    assert commands.once(app) == 1
    assert [r.method for r in session.sent] == ["POST", "GET"]
    assert store.get().is_missing


def test_once_missing_secret_exits_2(tmp_path: Path, clock: FakeClock) -> None:
    session = FakeSession()
    app, _ = make_app(tmp_path, clock, session, env={})
    assert commands.once(app) == 2
    assert session.sent == []


def test_get(tmp_path: Path, clock: FakeClock) -> None:
    app, store = make_app(tmp_path, clock, FakeSession())
    out = io.StringIO()
    assert commands.get(app, credential=None, as_json=False, out=out) == 1  # missing
    store.put(make_token(clock.now(), 300, access_token=ACCESS))
    assert commands.get(app, credential="oms", as_json=False, out=out) == 0
    assert out.getvalue() == ACCESS + "\n"
    out = io.StringIO()
    assert commands.get(app, credential=None, as_json=True, out=out) == 0
    assert json.loads(out.getvalue())["access_token"] == ACCESS
    clock.advance(300)
    assert commands.get(app, credential=None, as_json=False, out=io.StringIO()) == 1


def test_get_unreadable_document_exits_1(tmp_path: Path, clock: FakeClock) -> None:
    app, _ = make_app(tmp_path, clock, FakeSession())
    (tmp_path / "token.json").write_text("{truncated")
    out = io.StringIO()
    assert commands.get(app, credential=None, as_json=False, out=out) == 1
    assert out.getvalue() == ""


def test_check_publishes_nothing(tmp_path: Path, clock: FakeClock) -> None:
    session = FakeSession(ok_body(), FakeResponse(status_code=200))
    app, store = make_app(tmp_path, clock, session, verify_url="https://oms.example.com/oms-api/")
    out = io.StringIO()
    assert commands.check(app, out=out) == 0
    text = out.getvalue()
    assert "oms: token endpoint: ok (expires_in=300s, refresh_token=no)" in text
    assert "oms: verify_url: ok" in text
    assert f"target file:{tmp_path / 'token.json'}: ok" in text
    assert ACCESS not in text and SECRET not in text
    assert store.get().is_missing


def test_check_rejected_exits_3(tmp_path: Path, clock: FakeClock) -> None:
    session = FakeSession(FakeResponse.json({"error": "unauthorized_client"}, 401))
    app, _ = make_app(tmp_path, clock, session)
    out = io.StringIO()
    assert commands.check(app, out=out) == 3
    assert "token endpoint: FAILED" in out.getvalue()


def test_worst_exit_code() -> None:
    assert commands.worst([]) == 0
    assert commands.worst([0, 1, 0]) == 1
    assert commands.worst([1, 2]) == 2
    assert commands.worst([3, 2, 1]) == 3
