from __future__ import annotations

from collections import Counter

import pytest

pytest_plugins = ["tests.fixtures.aws", "tests.fixtures.oidc", "tests.fixtures.keycloak"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line: how many tests were skipped and why (``tests.gates`` says what is missing)."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else "?"
        reasons[str(reason).removeprefix("Skipped: ")] += 1
    if reasons:
        why = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common())
        terminalreporter.write_line(f"skipped {sum(reasons.values())}: {why}")
