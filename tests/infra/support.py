"""What the infra/ checks share: paths, the tools, the CloudFormation template loaded with
its intrinsics resolved against fake parameters, its IAM policies, the Kubernetes
manifests."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

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
