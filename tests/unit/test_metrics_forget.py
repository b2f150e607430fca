"""A credential removed by a reload leaves /metrics, and stays gone when a job or probe
of its that was running at the removal reports afterwards (seen against a real Keycloak:
a probe finishing after the reload brought `rotator_probes_total{credential="b"}` back)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from rotator.health import Metrics
from tests.fakes import make_token

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

REPORTS: dict[str, Callable[[Metrics, str], None]] = {
    "probe": lambda m, c: m.probe(c, "ok"),
    "revocation": lambda m, c: m.revocation(c),
    "token_request": lambda m, c: m.token_request(c, "client_credentials", "ok"),
    "publish": lambda m, c: m.publish(c, "file", "ok"),
    "rotation": lambda m, c: m.rotation(c, "rotated"),
    "published": lambda m, c: m.published(c, make_token(NOW)),
    "scheduled": lambda m, c: m.scheduled(c, NOW),
    "retry": lambda m, c: m.retry(c, OSError("down")),
    "secretsmanager_interval": lambda m, c: m.secretsmanager_interval(c, 900.0),
}


def series_of(metrics: Metrics, credential: str) -> list[str]:
    text = metrics.exposition().decode()
    return [line for line in text.splitlines() if f'credential="{credential}"' in line]


@pytest.mark.parametrize("report", list(REPORTS), ids=list(REPORTS))
def test_a_late_report_of_a_removed_credential_is_dropped(report: str) -> None:
    metrics = Metrics()
    for name in ("a", "b"):
        metrics.register(name)
        REPORTS[report](metrics, name)
    assert series_of(metrics, "b"), "the report must create a series to begin with"

    metrics.forget("b")
    assert series_of(metrics, "b") == []
    REPORTS[report](metrics, "b")  # the job that was running at the removal finishes
    assert series_of(metrics, "b") == []
    REPORTS[report](metrics, "a")
    assert series_of(metrics, "a"), "other credentials keep reporting"


def test_a_credential_added_again_reports_again() -> None:
    metrics = Metrics()
    metrics.register("b")
    metrics.forget("b")
    metrics.register("b")  # a later reload adds it back
    metrics.probe("b", "ok")
    assert any("rotator_probes_total" in line for line in series_of(metrics, "b"))
