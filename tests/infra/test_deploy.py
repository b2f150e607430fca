"""infra/ against issue 15 ("deploy for real"): daemon mode on ECS, failure
notifications, a scoped execution role, and Kubernetes manifests that survive a
Service named rotator, fail fast on hopeless exit codes and keep a writer up.

The linters themselves run in test_infra.py; these tests read the files.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.support import (
    ACCOUNT,
    FAKE_PARAMETERS,
    K8S,
    REGION,
    _as_list,
    _identity_policies,
    _k8s,
    _load_template,
    _only_container,
    _Resolver,
)

ECR = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/rotator"


def _container(parameters: dict[str, Any]) -> dict[str, Any]:
    template = _load_template()
    resolver = _Resolver(template, FAKE_PARAMETERS | parameters)
    (container,) = resolver.resolve(
        template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    )
    return dict(container)


# ---------------------------------------------------------------- CloudFormation


def test_daemon_mode_is_an_ecs_service_with_a_health_check() -> None:
    template = _load_template()
    res = template["Resources"]
    daemon = _Resolver(template, FAKE_PARAMETERS | {"RunMode": "daemon"})
    cron = _Resolver(template, FAKE_PARAMETERS)
    assert template["Parameters"]["RunMode"]["Default"] == "cron"

    service = res["DaemonService"]
    assert service["Type"] == "AWS::ECS::Service"
    assert daemon.condition(service["Condition"]) and not cron.condition(service["Condition"])
    props = service["Properties"]
    assert props["TaskDefinition"] == {"Ref": "TaskDefinition"}
    assert props["LaunchType"] == "FARGATE" and props["DesiredCount"] == 1
    assert props["DeploymentConfiguration"]["MinimumHealthyPercent"] == 100  # never zero writers

    container = _container({"RunMode": "daemon"})
    assert container["Command"] == ["run"]
    check = container["HealthCheck"]
    assert check["Command"][0] == "CMD" and "http://127.0.0.1:9102/healthz" in check["Command"][-1]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["ROTATOR_METRICS_PORT"] == "9102"

    # cron-only parts are absent in daemon mode
    for name in ("Schedule", "SchedulerRole", "ScheduleDeadLetterQueue"):
        assert not daemon.condition(res[name]["Condition"]), name
    assert "SchedulerRole.run-rotator-task" not in _identity_policies({"RunMode": "daemon"})


def test_failed_tasks_reach_an_sns_topic() -> None:
    template = _load_template()
    res = template["Resources"]
    rule = res["TaskFailedRule"]["Properties"]
    assert "Condition" not in res["TaskFailedRule"]  # both modes
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.ecs"]
    assert pattern["detail-type"] == ["ECS Task State Change"]
    detail = pattern["detail"]
    assert detail["clusterArn"] == [{"Fn::GetAtt": ["Cluster", "Arn"]}]
    assert detail["lastStatus"] == ["STOPPED"]
    assert {"containers": {"exitCode": [{"anything-but": 0}]}} in detail["$or"]
    assert {"stopCode": ["TaskFailedToStart"]} in detail["$or"]
    assert rule["Targets"] == [{"Id": "alarm-topic", "Arn": {"Ref": "AlarmTopic"}}]

    # EventBridge may publish to the topic for this rule only; CloudWatch for alarms
    (policy,) = [r for r in res.values() if r["Type"] == "AWS::SNS::TopicPolicy"]
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    events = statements["EventBridgeTaskFailures"]
    assert events["Principal"] == {"Service": "events.amazonaws.com"}
    assert events["Condition"]["ArnEquals"]["aws:SourceArn"] == {
        "Fn::GetAtt": ["TaskFailedRule", "Arn"]
    }

    alarm = res["ScheduleDeadLetterAlarm"]["Properties"]
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert alarm["Namespace"] == "AWS/SQS" and alarm["Threshold"] == 0


@pytest.mark.parametrize("ecr", [ECR, ""], ids=["ecr", "no-ecr"])
def test_execution_role_is_scoped_to_the_repository_and_log_group(ecr: str) -> None:
    template = _load_template()
    role = template["Resources"]["ExecutionRole"]["Properties"]
    assert "ManagedPolicyArns" not in role  # no AmazonECSTaskExecutionRolePolicy (ECR/Logs on *)
    resolver = _Resolver(template, FAKE_PARAMETERS | {"EcrRepositoryArn": ecr})
    document = _identity_policies({"EcrRepositoryArn": ecr})["ExecutionRole.pull-log-inject"]
    by_action = {
        a: _as_list(s["Resource"]) for s in document["Statement"] for a in _as_list(s["Action"])
    }
    log_group = resolver._arn("LogGroup")
    assert by_action["logs:CreateLogStream"] == by_action["logs:PutLogEvents"] == [log_group]
    assert by_action["secretsmanager:GetSecretValue"] == [FAKE_PARAMETERS["ClientSecretSourceArn"]]
    ecr_actions = {a for a in by_action if a.startswith("ecr:")}
    if not ecr:
        assert not ecr_actions
        return
    assert by_action.pop("ecr:GetAuthorizationToken") == ["*"]  # has no resource
    assert {a: r for a, r in by_action.items() if a.startswith("ecr:")} == {
        "ecr:BatchCheckLayerAvailability": [ECR],
        "ecr:GetDownloadUrlForLayer": [ECR],
        "ecr:BatchGetImage": [ECR],
    }
    # the log group ARN ends in ":*" (its streams); nothing else is a wildcard
    assert all("*" not in r for rs in by_action.values() for r in rs if r != log_group)


def test_cpu_architecture_is_a_parameter() -> None:
    template = _load_template()
    assert template["Parameters"]["CpuArchitecture"]["AllowedValues"] == ["X86_64", "ARM64"]
    platform = template["Resources"]["TaskDefinition"]["Properties"]["RuntimePlatform"]
    assert platform["CpuArchitecture"] == {"Ref": "CpuArchitecture"}
    assert "STS" not in template["Parameters"]["Subnets"]["Description"]


# ---------------------------------------------------------------- Kubernetes


def _pod_specs() -> dict[str, dict[str, Any]]:
    return {
        "deployment.yaml": _k8s("deployment.yaml")["spec"]["template"]["spec"],
        "cronjob.yaml": _k8s("cronjob.yaml")["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    }


def test_pods_take_no_service_link_variables() -> None:
    for name, spec in _pod_specs().items():
        assert spec["enableServiceLinks"] is False, name
    # and the metrics Service carries the name that would inject them
    service = _k8s("service.yaml")
    assert service["metadata"]["name"] == "rotator"
    assert [p["port"] for p in service["spec"]["ports"]] == [9102]


def test_cronjob_fails_at_once_on_config_error_and_rejected_credentials() -> None:
    job = _k8s("cronjob.yaml")["spec"]["jobTemplate"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"]
    assert fail == [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "rotator", "operator": "In", "values": [2, 3]},
        }
    ]
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    container = _only_container(job["template"]["spec"])
    assert container["name"] == "rotator"


def test_daemon_runs_two_spread_replicas_with_a_disruption_budget() -> None:
    deployment = _k8s("deployment.yaml")
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["selector"]["matchLabels"]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    assert all(c["labelSelector"]["matchLabels"] == labels for c in spread)
    pdb = _k8s("pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    assert pdb["spec"]["minAvailable"] == 1
    resources = _k8s("kustomization.yaml")["resources"]
    assert {"pdb.yaml", "service.yaml", "deployment.yaml"} <= set(resources)


def test_network_policy_admits_only_the_monitoring_namespace() -> None:
    policy = _k8s("networkpolicy.yaml")["spec"]
    (ingress,) = policy["ingress"]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 9102}]
    egress_ports = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {("UDP", 53), ("TCP", 53), ("TCP", 443)}
    assert (K8S / "networkpolicy.yaml").read_text().count("monitoring") >= 2  # documented
