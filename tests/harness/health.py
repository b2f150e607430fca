"""The daemon's health server in the tests: its configuration, its metrics page, read.

* ``toml_config(token_url=..., targets=[...])``: one credential, the health server on
  127.0.0.1, a 30 s readiness margin.
* ``parse_metrics(text)``/``metrics(daemon)``/``sample(samples, name, **labels)``: the
  Prometheus exposition as ``{(name, labels): value}``.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.harness.process import Daemon

CREDENTIAL = "oms"
SECRET_ID = "oms/token"
SECRET_ENV = "OMS_CLIENT_SECRET"
GOOD_SECRET = "oms-secret"
WRONG_SECRET = "wrong-secret-MARKER"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def toml_config(
    *,
    token_url: str,
    targets: list[dict[str, Any]],
    verify_url: str | None = None,
    refresh: dict[str, float] | None = None,
) -> str:
    def value(v: Any) -> str:
        return json.dumps(v)  # a JSON string/number/bool is a valid TOML value

    lines = [
        'metrics_host = "127.0.0.1"',
        "readiness_margin_seconds = 30",
        "",
        "[[credentials]]",
        f"name = {value(CREDENTIAL)}",
        f"token_url = {value(token_url)}",
        'client_id = "oms-client"',
        f"client_secret_env = {value(SECRET_ENV)}",
    ]
    if verify_url:
        lines.append(f"verify_url = {value(verify_url)}")
    if refresh:
        lines += ["", "[credentials.refresh]"]
        lines += [f"{k} = {value(v)}" for k, v in refresh.items()]
    for target in targets:
        lines += ["", "[[credentials.targets]]"]
        lines += [f"{k} = {value(v)}" for k, v in target.items()]
    return "\n".join(lines) + "\n"


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def metrics(daemon: Daemon) -> Samples:
    response = daemon.get("/metrics")
    assert response.status_code == 200
    return parse_metrics(response.text)
