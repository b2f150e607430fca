"""The pure parts of the 5,000-credential benchmark (``tests.bench.scale_stats``): the log
is read into steps, each step's lag is its start minus the previous step's plan, the
percentile is nearest-rank, and the result renders one table row per bound."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from tests.bench.scale_stats import ScaleResult, lags, parse_log, percentile

# Lines as `rotator run` writes them (copied from a run's log).
LOG = """\
2026-12-01T18:12:40.447Z INFO    daemon started credentials=2 targets=2
2026-12-01T18:12:41.079Z INFO    adopted credential=c00000 expires_at=2026-12-01T18:14:11Z \
next_run=2026-12-01T18:13:42.783Z duration_ms=0
2026-12-01T18:12:41.080Z INFO    adopted credential=c00001 expires_at=2026-12-01T18:14:16Z \
next_run=2026-12-01T18:13:44.637Z duration_ms=0
2026-12-01T18:13:42.900Z INFO    published credential=c00000 target=ssm:/b/c00000 \
expires_at=2026-12-01T18:18:42Z
2026-12-01T18:13:42.903Z INFO    rotated credential=c00000 expires_at=2026-12-01T18:18:42Z \
next_run=2026-12-01T18:16:58.825Z duration_ms=57
2026-12-01T18:13:45.100Z ERROR   rotation failed credential=c00001 attempt=1 \
error=StoreUnavailable: ssm:/b/c00001: ThrottlingException retry_in=1.5s
2026-12-01T18:13:46.700Z INFO    rotated credential=c00001 reason=revoked \
expires_at=2026-12-01T18:18:46Z next_run=2026-12-01T18:17:01.000Z duration_ms=40
2026-12-01T18:14:00.139Z INFO    daemon stopped
"""


def test_steps_and_lags_come_from_the_daemon_log() -> None:
    steps = parse_log(LOG)
    assert [s.action for s in steps["c00000"]] == ["adopted", "rotated"]
    assert [s.action for s in steps["c00001"]] == ["adopted", "failed", "rotated"]
    lag = sorted(round(x, 3) for x in lags(steps))
    # c00000: started 42.903 - 0.057 = 42.846 against a plan of 42.783
    # c00001: the failed step ran 0.463 s late (45.100 against 44.637), the retry started
    # 46.660 against 45.100 + 1.5
    assert lag == [0.06, 0.063, 0.463]


def test_lags_can_skip_plans_made_before_an_instant() -> None:
    steps = parse_log(LOG)
    later = steps["c00000"][1].next_run
    assert later is not None
    assert lags(steps, after=later) == []
    assert len(lags(steps)) == 3


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([5.0, 1.0], 1.0) == 5.0
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError, match="q must be"):
        percentile(values, 0)


def _result() -> ScaleResult:
    return ScaleResult(
        date="2026-12-01 18:00",
        credentials=5000,
        lifespan_s=300,
        rates={"proxy_write": 60, "proxy_read": 160, "pacer_write": 40, "pacer_read": 120},
        load_average=(3.0, 2.5, 2.0),
        load_before=(1.0, 1.0, 1.0),
        tokens_read=15000,
        expired_seen=0,
        min_left_s=20.5,
        throttled=0,
        lag_n=5000,
        lag_p50_ms=3.0,
        lag_p99_ms=250.0,
        lag_max_ms=900.0,
        startup_calls=500,
        startup_get_parameters=500,
        startup_other_calls=0,
        startup_adopted=5000,
        startup_s=9.5,
        startup_cpu_s=6.0,
        rss_peak_mib=120.0,
        idle_window_s=40.0,
        idle_cpu_s=0.08,
        rotations=5000,
        failures=0,
        steady_s=180.0,
        puts=5000,
        gets=5000,
    )


def test_result_renders_one_row_per_bound() -> None:
    result = _result()
    text = result.markdown()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 7  # the header and seven figures
    assert all(row.endswith("| yes |") for row in rows[1:]), rows
    assert "## 8. 5,000 SSM credentials" in text
    assert "0.200 % of a core" in text  # 80 ms over 40 s
    assert "9.5 s from launch to the last adoption (6.0 s of the daemon's CPU)" in text
    assert result.all_met
    data = result.to_json()
    assert data["all_met"] is True
    assert data["idle_cpu_pct"] == pytest.approx(0.2)
    figures = data["figures"]
    assert isinstance(figures, list)
    assert len(figures) == 7
    again = ScaleResult.from_json(json.loads(json.dumps(data)))
    assert again == result
    assert again.markdown() == text


@pytest.mark.parametrize(
    ("change", "figures"),
    [
        ({"expired_seen": 1}, "expired tokens seen by readers"),
        ({"throttled": 2}, "ThrottlingException at the proxy"),
        ({"lag_p99_ms": 1000.0}, "scheduling lag p99 once started"),
        ({"startup_calls": 601}, "start-up adopting 5,000 fresh tokens: AWS calls"),
        (
            {"startup_adopted": 4999},  # neither start-up figure counts until all adopted
            "start-up adopting 5,000 fresh tokens: AWS calls|"
            "start-up adopting 5,000 fresh tokens: time",
        ),
        ({"startup_s": 10.5}, "start-up adopting 5,000 fresh tokens: time"),
        ({"rss_peak_mib": 151.0}, "daemon peak RSS"),
        ({"idle_cpu_s": 0.3}, "idle CPU (nothing due)"),
        ({"idle_window_s": 0.0}, "idle CPU (nothing due)"),
    ],
)
def test_a_figure_past_its_bound_is_not_met(change: dict[str, float], figures: str) -> None:
    result = replace(_result(), **change)
    missed = [f.what for f in result.figures() if not f.met]
    assert missed == figures.split("|")
    assert not result.all_met
    text = result.markdown()
    for figure in missed:
        row = next(line for line in text.splitlines() if line.startswith(f"| {figure} |"))
        assert row.endswith("| **NO** |")
    # the same verdicts reach the Targets table at the top of BENCHMARKS.md
    goals = result.goals()
    assert [g.verdict for g in goals] == [
        "met" if f.met else "**MISSED**" for f in result.figures()
    ]
    assert all(g.what.startswith("5,000 SSM credentials: ") for g in goals)
