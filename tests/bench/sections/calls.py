"""4. Calls per rotation: the result of ``bench_calls.run`` and its section."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tests.bench.section import num, table


@dataclass(frozen=True)
class Count:
    """Requests one `rotator once` made for one target type."""

    token: int
    aws: int
    ops: str  # the AWS calls, in order


@dataclass(frozen=True)
class SteadyCount:
    """`rotator run`, per rotation: the windows between token requests."""

    rotations: int
    token_per_rotation: float
    aws_per_rotation: float
    ops: str  # the most common sequence of AWS calls in a window
    daemon_start_ops: str  # AWS calls before the first token request
    daemon_start_aws: int


@dataclass(frozen=True)
class LambdaStep:
    step: str
    calls: str
    count: int


@dataclass(frozen=True)
class CallsResult:
    startup_empty: dict[str, Count]  # by target type
    startup_fresh: dict[str, Count]
    once_force: dict[str, Count]
    steady: dict[str, SteadyCount]
    lambda_pattern: tuple[LambdaStep, ...]

    @property
    def lambda_sm_calls(self) -> int:
        return sum(s.count for s in self.lambda_pattern)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "lambda_sm_calls": self.lambda_sm_calls}

    def markdown(self) -> str:
        rows: list[list[str]] = []
        for label, counts in (
            ("start-up, nothing published (`once`)", self.startup_empty),
            ("start-up, fresh token published (`once` again: restart)", self.startup_fresh),
            ("`once --force`", self.once_force),
        ):
            for kind, c in counts.items():
                rows.append([label, kind, str(c.token), str(c.aws), c.ops or "-"])
        for kind, s in self.steady.items():
            rows.append(
                [
                    f"steady state, per rotation (`run`, {s.rotations} rotations)",
                    kind,
                    num(s.token_per_rotation, 0),
                    num(s.aws_per_rotation, 1),
                    s.ops or "-",
                ]
            )
            rows.append(
                [
                    "daemon start (adopts the fresh token)",
                    kind,
                    "0",
                    str(s.daemon_start_aws),
                    s.daemon_start_ops or "-",
                ]
            )
        lam = [[s.step, s.calls, str(s.count)] for s in self.lambda_pattern]
        return "\n".join(
            [
                "## 4. Calls per rotation",
                "",
                "Counted by the servers: the stub's request log (token endpoint, by client id) "
                "and a `FaultProxy` without faults in front of moto (AWS, by `X-Amz-Target`). "
                "One config with one credential per target type; steady state is `rotator run` "
                "with 4 s tokens, each rotation the window from 1 s before a token request to "
                "1 s before the next.",
                "",
                *table(
                    ["scenario", "target", "token requests", "AWS calls", "AWS calls made"], rows
                ),
                "",
                "Compare: the floor script and the shell script make 1 token request and 1 "
                "PutSecretValue per run, with no read-back and no compare-and-set. rotator adds "
                "a read (to adopt a fresh token instead of fetching one, and as the basis of the "
                "compare-and-set) and, on Secrets Manager, the staged promotion "
                "(`UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId=new, "
                "RemoveFromVersionId=read)`, which fails if another writer moved AWSCURRENT "
                "since the read); its `RotatorPending` label stays on the promoted version "
                "until the next write moves it. On SSM the step's own read, when at most "
                "0.25 s old (`FRESH_READ`), is the read before the write (there is no "
                "conditional write); an older one is read again.",
                "",
                "The AWS rotation-Lambda pattern (AWS's `SecretsManagerRotationTemplate`; "
                "Secrets Manager invokes the function once per step and each invocation starts "
                "with DescribeSecret), per rotation:",
                "",
                *table(["step", "Secrets Manager calls", "count"], lam),
                "",
                f"Total: {self.lambda_sm_calls} Secrets Manager calls, 4 Lambda invocations and "
                "the token request per rotation (+1 RotateSecret when something other than "
                "Secrets Manager's own schedule triggers it), against rotator's 1 token request "
                "+ 3 calls (Secrets Manager) or + 2 calls (SSM). Secrets Manager's managed "
                "rotation schedules also run at most every 4 hours, far too seldom for tokens "
                "that live minutes.",
                "",
            ]
        )
