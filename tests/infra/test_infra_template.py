"""The CloudFormation template held to rotator's contract: the writer policy grants
exactly the AWS calls the store modules make (rotator.stores.*.IAM_ACTIONS, and those
match the boto3 calls in their source), the token policies are least privilege, the
cron mode and the task environment follow the parameters. Linters: ``test_infra.py``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.support import (
    ACCOUNT,
    FAKE_PARAMETERS,
    PARTITION,
    REGION,
    UID,
    _actions,
    _as_list,
    _identity_policies,
    _import_store,
    _load_template,
    _Resolver,
)

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
