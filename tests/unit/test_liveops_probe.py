"""The published-token probe and the decision it drives: a revoked token is replaced at
once (one token request), a newer token a replica published is adopted instead, a
refused replacement backs off, and an inconclusive probe changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import requests

from rotator.errors import VerificationFailed
from rotator.oauth import TokenClient
from rotator.probe import (
    ACTIVE,
    ERROR,
    REVOKED,
    HttpOptions,
    ProbeResult,
    introspection_probe,
    verify_probe,
)
from rotator.retry import Backoff
from rotator.rotation import CredentialRotator
from rotator.scheduler import Daemon
from rotator.secret import Secret
from rotator.stores.memory import MemoryStore
from rotator.token import Token
from tests.fakes import (
    FakeClock,
    FakeFetcher,
    FakeResponse,
    FakeSession,
    RecordingObserver,
    ScheduledJob,
    make_token,
)
from tests.unit.liveops_fakes import JobScheduler

URL = "https://oms.example/oms-api/"
INTROSPECT = "https://kc.example/realms/r/protocol/openid-connect/token/introspect"


class ScriptedProbe:
    """A probe answering from a rule over the token; records what it was asked."""

    def __init__(self, rule: Callable[[Token], str]) -> None:
        self.rule = rule
        self.asked: list[str] = []

    def __call__(self, token: Token) -> ProbeResult:
        self.asked.append(token.access_token)
        outcome = self.rule(token)
        return ProbeResult(outcome, "HTTP 401" if outcome == REVOKED else "")


# ---------------------------------------------------------------- the HTTP probes


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, ACTIVE), (204, ACTIVE), (401, REVOKED), (403, REVOKED), (503, ERROR), (302, ERROR)],
)
def test_verify_probe_maps_the_status(status: int, outcome: str) -> None:
    session = FakeSession(FakeResponse(status_code=status))
    result = verify_probe(session, URL, HttpOptions(deadline=5))(make_token())  # type: ignore[arg-type]
    assert result.outcome == outcome
    (sent,) = session.sent
    assert sent.method == "GET" and sent.url == URL
    assert sent.kwargs["headers"] == {"Authorization": "Bearer access-token-MARKER-0"}
    assert sent.kwargs["allow_redirects"] is False
    assert session.responses[0].closed
    assert "MARKER" not in result.detail


def test_verify_probe_timeout_is_an_error_not_a_revocation() -> None:
    session = FakeSession(requests.ConnectTimeout("slow"))
    result = verify_probe(session, URL, HttpOptions())(make_token())  # type: ignore[arg-type]
    assert result.outcome == ERROR and "unreachable" in result.detail


def _client(session: FakeSession, clock: FakeClock, method: str) -> TokenClient:
    return TokenClient(
        session,  # type: ignore[arg-type]
        token_url="https://kc.example/realms/r/protocol/openid-connect/token",
        client_id="oms-client",
        client_secret=lambda: Secret("oms-secret"),
        clock=clock,
        auth_method=method,
    )


@pytest.mark.parametrize(("active", "outcome"), [(True, ACTIVE), (False, REVOKED)])
def test_introspection_posts_the_token_with_the_client_credentials(
    clock: FakeClock, active: bool, outcome: str
) -> None:
    session = FakeSession(FakeResponse.json({"active": active}))
    probe = introspection_probe(
        session,  # type: ignore[arg-type]
        INTROSPECT,
        _client(session, clock, "client_secret_post"),
        HttpOptions(),
    )
    assert probe(make_token()).outcome == outcome
    (sent,) = session.sent
    assert sent.method == "POST" and sent.url == INTROSPECT
    assert sent.form == {
        "token": "access-token-MARKER-0",
        "token_type_hint": "access_token",
        "client_id": "oms-client",
        "client_secret": "oms-secret",
    }


def test_introspection_with_basic_auth_and_its_failures(clock: FakeClock) -> None:
    session = FakeSession(
        FakeResponse.json({"active": True}),
        FakeResponse.json({"error": "unauthorized_client"}, status=401),
        FakeResponse.json({"active": "yes"}),
        FakeResponse(status_code=200, body=b"<html>"),
    )
    probe = introspection_probe(
        session,  # type: ignore[arg-type]
        INTROSPECT,
        _client(session, clock, "client_secret_basic"),
        HttpOptions(),
    )
    outcomes = [probe(make_token()).outcome for _ in range(4)]
    # A 401 refuses our client, not the token: no reason to replace the token.
    assert outcomes == [ACTIVE, ERROR, ERROR, ERROR]
    assert session.sent[0].kwargs["auth"] == ("oms-client", "oms-secret")
    assert "client_secret" not in session.sent[0].form


# ---------------------------------------------------------------- the decision


def _rotator(
    clock: FakeClock, probe: ScriptedProbe | None, store: MemoryStore | None = None
) -> tuple[CredentialRotator, FakeFetcher, MemoryStore]:
    fetcher = FakeFetcher(clock, lifetime=300, refresh_token="refresh-MARKER")
    store = store or MemoryStore("sm")
    rot = CredentialRotator(
        "oms", fetcher=fetcher, stores=[store], clock=clock, rng=lambda: 0.5, probe=probe
    )
    return rot, fetcher, store


def _token_in(store: MemoryStore) -> str:
    reading = store.get()
    assert reading.token is not None
    return reading.token.access_token


def test_a_revoked_token_is_replaced_with_one_client_credentials_request(
    clock: FakeClock,
) -> None:
    probe = ScriptedProbe(lambda t: ACTIVE)
    rot, fetcher, store = _rotator(clock, probe)
    first = rot.rotate().token
    clock.advance(20)
    assert rot.mark_revoked(first) and rot.is_revoked
    result = rot.rotate()
    assert fetcher.calls == 2
    assert fetcher.previous[1] is None  # no refresh grant: the session is revoked too
    assert (result.action, result.reason) == ("rotated", "revoked")
    assert _token_in(store) == result.token.access_token != first.access_token
    assert not rot.is_revoked
    assert probe.asked == [result.token.access_token]  # the replacement was checked
    assert rot.rotate().action == "adopted" and fetcher.calls == 2  # and kept


def test_a_newer_token_from_a_replica_is_probed_and_adopted_not_fetched(
    clock: FakeClock,
) -> None:
    probe = ScriptedProbe(lambda t: ACTIVE)
    rot, fetcher, store = _rotator(clock, probe)
    first = rot.rotate().token
    clock.advance(30)
    newer = make_token(clock.now(), access_token="access-token-MARKER-replica")
    store.put(newer)  # another replica saw the revocation first
    assert rot.mark_revoked(first)
    result = rot.rotate()
    assert fetcher.calls == 1
    assert (result.action, result.reason) == ("adopted", "revoked")
    assert result.token.access_token == newer.access_token
    assert probe.asked == [newer.access_token]
    assert not rot.is_revoked


def test_a_newer_token_that_is_refused_too_is_replaced(clock: FakeClock) -> None:
    probe = ScriptedProbe(lambda t: REVOKED if "replica" in t.access_token else ACTIVE)
    rot, fetcher, store = _rotator(clock, probe)
    first = rot.rotate().token
    clock.advance(30)
    store.put(make_token(clock.now(), access_token="access-token-MARKER-replica"))
    rot.mark_revoked(first)
    result = rot.rotate()
    assert fetcher.calls == 2 and result.action == "rotated"
    assert "replica" not in _token_in(store)


def test_mark_revoked_is_refused_when_a_newer_token_is_known(clock: FakeClock) -> None:
    rot, _, _ = _rotator(clock, ScriptedProbe(lambda t: ACTIVE))
    old = rot.rotate().token
    clock.advance(250)
    rot.rotate()  # due: a new token
    assert not rot.mark_revoked(old) and not rot.is_revoked


def test_a_refused_replacement_is_a_verify_failure_and_stays_revoked(clock: FakeClock) -> None:
    refuse = {"on": False}
    probe = ScriptedProbe(lambda t: REVOKED if refuse["on"] else ACTIVE)
    rot, fetcher, store = _rotator(clock, probe)
    first = rot.rotate().token
    refuse["on"] = True
    rot.mark_revoked(first)
    with pytest.raises(VerificationFailed, match="refused too"):
        rot.rotate()
    assert fetcher.calls == 2 and rot.is_revoked
    assert _token_in(store) == first.access_token  # nothing refused is published


def test_verify_url_checks_the_replacement_when_configured(clock: FakeClock) -> None:
    verified: list[str] = []

    def verify(token: Token) -> None:
        verified.append(token.access_token)
        raise VerificationFailed("verify_url refused the new token: HTTP 401")

    fetcher = FakeFetcher(clock)
    rot = CredentialRotator(
        "oms", fetcher=fetcher, stores=[MemoryStore()], clock=clock, verify=None
    )
    first = rot.rotate().token
    rot._verify = verify  # the same verifier guards every fetched token
    rot.mark_revoked(first)
    with pytest.raises(VerificationFailed):
        rot.rotate()
    assert len(verified) == 1 and rot.is_revoked


# ---------------------------------------------------------------- the daemon's probe chain


def _daemon(
    clock: FakeClock, probe: ScriptedProbe, interval: float = 60
) -> tuple[Daemon, CredentialRotator, FakeFetcher, JobScheduler, RecordingObserver]:
    rot, fetcher, _ = _rotator(clock, probe)
    observer = RecordingObserver()
    events: list[tuple[str, ...]] = []
    observer.probe = lambda name, outcome: events.append(("probe", name, outcome))  # type: ignore[attr-defined]
    observer.revocation = lambda name: events.append(("revocation", name))  # type: ignore[attr-defined]
    observer.liveops = events  # type: ignore[attr-defined]
    daemon = Daemon(
        [rot],
        clock=clock,
        backoff=Backoff(initial=1.0, cap=30.0, jitter=0.0),
        observer=observer,
        scheduler_now=clock.now,
        probe_intervals={"oms": timedelta(seconds=interval)},
        rng=lambda: 0.5,
    )
    scheduler = JobScheduler()
    daemon._scheduler = scheduler
    daemon._started.set()
    return daemon, rot, fetcher, scheduler, observer


def _runs(scheduler: JobScheduler) -> list[ScheduledJob]:
    return [j for j in scheduler.pending("oms#") if "probe" not in j.id]


def test_the_probe_chain_replaces_a_revoked_token_at_once(clock: FakeClock) -> None:
    revoked: set[str] = set()
    probe = ScriptedProbe(lambda t: REVOKED if t.access_token in revoked else ACTIVE)
    daemon, rot, fetcher, scheduler, observer = _daemon(clock, probe)
    daemon._schedule(rot, clock.now())
    daemon._schedule_probe(rot)
    scheduler.take(scheduler.pending("oms#")[0])  # the first rotation
    (probe_job,) = scheduler.pending("oms#probe")
    assert probe_job.run_date == clock.now() + timedelta(seconds=54)  # 60 s, 10 % early
    (planned,) = _runs(scheduler)
    assert planned.run_date > clock.now() + timedelta(seconds=200)

    clock.set(probe_job.run_date)
    assert rot.token is not None
    revoked.add(rot.token.access_token)  # an admin logs the service account out
    scheduler.take(probe_job)
    (now_job,) = _runs(scheduler)
    assert now_job.run_date == clock.now()  # the rotation runs now, not at its plan
    assert rot.is_revoked
    scheduler.take(now_job)
    assert fetcher.calls == 2 and not rot.is_revoked
    assert observer.liveops == [("probe", "oms", "revoked"), ("revocation", "oms")]  # type: ignore[attr-defined]
    assert len(scheduler.pending("oms#probe")) == 1  # the probe chain goes on


def test_an_inconclusive_probe_changes_nothing_but_a_metric(clock: FakeClock) -> None:
    probe = ScriptedProbe(lambda t: ERROR)
    daemon, rot, fetcher, scheduler, observer = _daemon(clock, probe)
    rot.rotate()
    for _ in range(3):
        clock.advance(60)
        assert daemon.probe_once(rot) == ProbeResult(ERROR, "")
    assert fetcher.calls == 1 and not rot.is_revoked and scheduler.jobs == []
    assert observer.liveops == [("probe", "oms", "error")] * 3  # type: ignore[attr-defined]


def test_no_probe_chain_when_the_interval_is_zero(clock: FakeClock) -> None:
    daemon, rot, _, scheduler, _ = _daemon(clock, ScriptedProbe(lambda t: ACTIVE), interval=0)
    daemon._schedule_probe(rot)
    assert scheduler.jobs == []


def test_the_daemon_never_loops_when_every_new_token_is_refused(clock: FakeClock) -> None:
    probe = ScriptedProbe(lambda t: ACTIVE)
    daemon, rot, fetcher, scheduler, _ = _daemon(clock, probe)
    daemon._schedule(rot, clock.now())
    scheduler.take(scheduler.pending("oms#")[0])
    probe.rule = lambda t: REVOKED  # every token, later ones too (keys disabled)
    assert rot.token is not None
    clock.advance(60)
    daemon.probe_once(rot)
    start = clock.now()
    window = timedelta(seconds=300)
    while clock.now() - start < window:
        (job,) = _runs(scheduler)
        clock.set(max(job.run_date, clock.now()))
        scheduler.take(job)
    # Attempts at t = 0, 1, 3, 7, 15, 31, then every 30 s (61 ... 271) and the one at 301
    # that ends the loop: 15 in 300 s, one token request each, never a loop.
    assert fetcher.calls - 1 == 15
    assert rot.is_revoked and daemon.states["oms"].consecutive_failures == fetcher.calls - 1


@pytest.mark.parametrize(("draw", "first", "later"), [(0.0, 0.0, 60.0), (0.99, 59.4, 48.12)])
def test_probes_come_at_a_random_phase_never_later_than_the_interval(
    clock: FakeClock, draw: float, first: float, later: float
) -> None:
    daemon, rot, _, scheduler, _ = _daemon(clock, ScriptedProbe(lambda t: ACTIVE))
    daemon._rng = lambda: draw
    daemon._schedule_probe(rot, first=True)
    daemon._schedule_probe(rot)
    offsets = [(j.run_date - clock.now()).total_seconds() for j in scheduler.jobs]
    assert offsets == pytest.approx([first, later])
