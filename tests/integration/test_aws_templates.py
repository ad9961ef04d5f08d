"""The AWS templates: deploy what moto supports of storage.yaml through CloudFormation on the
local moto server, then run the pipeline against exactly those resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import AwsEnv
from tests.integration.helpers import FAST, outcome, png, upload

TEMPLATES = Path(__file__).resolve().parents[2] / "infra" / "aws"
# Resource types moto's CloudFormation cannot create; the test makes their equivalent itself.
UNSUPPORTED = {"AWS::S3Express::DirectoryBucket"}


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags (!Ref, !Sub, ...) as dicts."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/img2img-prefect@sha256:" + "0" * 64


def load_template(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.load((TEMPLATES / name).read_text(), Loader=_CfnLoader)
    return doc


def without_unsupported(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    dropped = [k for k, r in doc["Resources"].items() if r["Type"] in UNSUPPORTED]
    for key in dropped:
        del doc["Resources"][key]
    text = json.dumps(doc)
    doc["Outputs"] = {
        k: v
        for k, v in doc.get("Outputs", {}).items()
        if not any(d in json.dumps(v) for d in dropped)
    }
    assert all(d not in json.dumps(doc["Resources"]) for d in dropped), text[:200]
    return doc, dropped


def stub_resources(doc: dict[str, Any], made: dict[str, str]) -> dict[str, Any]:
    """The template without the resources in `made`, each reference to one (`Ref`,
    `Fn::GetAtt`, `${Name}` in `Fn::Sub`) replaced by the value given for it."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Ref"} and node["Ref"] in made:
                return made[node["Ref"]]
            if set(node) == {"Fn::GetAtt"} and node["Fn::GetAtt"][0] in made:
                return made[node["Fn::GetAtt"][0]]
            if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
                text = node["Fn::Sub"]
                for name, value in made.items():
                    text = text.replace("${" + name + "}", value)
                return {"Fn::Sub": text}
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    resources = {k: v for k, v in doc["Resources"].items() if k not in made}
    stubbed: dict[str, Any] = walk({**doc, "Resources": resources})
    return stubbed


@pytest.mark.usefixtures("prefect_api")
def test_storage_stack_on_moto_runs_the_pipeline(aws: AwsEnv) -> None:
    from flows.pipeline import img2img_pipeline
    from img2img.aws.clients import service_client
    from tasks.runtime import reset_runtime

    clients, settings = aws
    cfn = service_client(settings.aws, "cloudformation")
    doc, dropped = without_unsupported(load_template("storage.yaml"))
    assert dropped == ["StageBucket"]
    cfn.create_stack(
        StackName="img2img-storage",
        TemplateBody=json.dumps(doc),
        Parameters=[
            {"ParameterKey": "Prefix", "ParameterValue": "cfntest"},
            {
                "ParameterKey": "ModelsWriterArns",
                "ParameterValue": "arn:aws:iam::123456789012:role/img2img-release",
            },
        ],
    )
    stack = cfn.describe_stacks(StackName="img2img-storage")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    out = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    # What moto's CloudFormation applies of the template's promises (the rest is checked
    # statically in tests/unit/test_aws_templates.py): encryption, uploads whose creations
    # reach the ingest queue, a redrive policy to the dead-letter queue.
    uploads, results = out["UploadsBucket"], out["ResultsBucket"]
    for bucket in (uploads, results):
        rules = clients.s3.get_bucket_encryption(Bucket=bucket)[
            "ServerSideEncryptionConfiguration"
        ]["Rules"]
        assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    queue_url = clients.sqs.get_queue_url(QueueName=out["IngestQueueName"])["QueueUrl"]
    attrs = clients.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    redrive = json.loads(attrs["Attributes"]["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == 5
    assert redrive["deadLetterTargetArn"] == out["DeadLetterQueueArn"]

    # moto's CloudFormation leaves out the bucket notification: apply the template's own
    # NotificationConfiguration through the API, pointed at the stack's queue.
    template_bucket = load_template("storage.yaml")["Resources"]["UploadsBucket"]["Properties"]
    configs = template_bucket["NotificationConfiguration"]["QueueConfigurations"]
    assert configs == [
        {"Event": "s3:ObjectCreated:*", "Queue": {"Fn::GetAtt": ["IngestQueue", "Arn"]}}
    ]
    clients.s3.put_bucket_notification_configuration(
        Bucket=uploads,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": out["IngestQueueArn"], "Events": [c["Event"] for c in configs]}
            ]
        },
    )

    # The directory bucket moto's CloudFormation lacks, named as the template names it.
    stage = "cfntest-stage--use1-az4--x-s3"
    clients.s3.create_bucket(Bucket=stage)

    import os

    env = {
        "IMG2IMG_STORAGE__UPLOADS_BUCKET": uploads,
        "IMG2IMG_STORAGE__RESULTS_BUCKET": results,
        "IMG2IMG_STORAGE__STAGE_BUCKET": stage,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_runtime()
    try:
        upload(clients, uploads, "cfn/one.png", png(), FAST)
        # The notification the template wired delivers the upload to the template's queue.
        from img2img.intake.events import parse_message

        refs = []
        for _ in range(10):
            messages = clients.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            refs += [r for m in messages for r in parse_message(m["Body"]).objects]
            if refs:
                break
        [ref] = refs
        assert ref.key == "cfn/one.png" and ref.bucket == uploads
        state = img2img_pipeline(objects=[ref], return_state=True)
        assert state.is_completed(), state.message
        status, meta = outcome(clients, results, ref)
        assert status == "completed" and meta["source"] == f"s3://{uploads}/cfn/one.png"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_runtime()


def test_prefect_server_stack_on_moto(aws: AwsEnv) -> None:
    """The self-hosted server's template creates on moto's CloudFormation (what moto has of
    it), and what it made is private, encrypted and wired as the template says."""
    from img2img.aws.clients import service_client

    _, settings = aws
    ec2 = service_client(settings.aws, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"us-east-1{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    certificate = service_client(settings.aws, "acm").request_certificate(
        DomainName="prefect.img2img.internal"
    )["CertificateArn"]
    # moto's CloudFormation has no Secrets Manager secrets and no ElastiCache, and hands RDS
    # the parameter group object instead of its name: those are made here (Redis is only
    # named), and the template's references to them replaced by what was made.
    secrets = service_client(settings.aws, "secretsmanager")
    made = {
        name: secrets.create_secret(Name=f"img2img/prefect-server/{slug}", SecretString=value)[
            "ARN"
        ]
        for name, slug, value in (
            ("DatabaseSecret", "database", '{"username": "prefect", "password": "pw"}'),
            ("AuthSecret", "auth-string", "a" * 48),
            ("RedisSecret", "redis", "r" * 64),
        )
    }
    rds = service_client(settings.aws, "rds")
    made["DatabaseParameters"] = rds.create_db_parameter_group(
        DBParameterGroupName="img2img-prefect",
        DBParameterGroupFamily="postgres16",
        Description="made by the test",
    )["DBParameterGroup"]["DBParameterGroupName"]
    made |= {"Redis": "redis.img2img.internal", "RedisSubnets": "img2img-redis"}
    doc = stub_resources(load_template("prefect-server.yaml"), made)
    dropped: list[str] = []
    cfn = service_client(settings.aws, "cloudformation")
    cfn.create_stack(
        StackName="img2img-prefect",
        TemplateBody=json.dumps(doc),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[
            {"ParameterKey": "VpcId", "ParameterValue": vpc},
            {"ParameterKey": "PrivateSubnetIds", "ParameterValue": ",".join(subnets)},
            {"ParameterKey": "CertificateArn", "ParameterValue": certificate},
            {"ParameterKey": "DomainName", "ParameterValue": "prefect.img2img.internal"},
            {"ParameterKey": "PrefectImage", "ParameterValue": IMAGE},
        ],
    )
    stack = cfn.describe_stacks(StackName="img2img-prefect")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    out = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert out["PrefectApiUrl"] == "https://prefect.img2img.internal/api"

    assert out["AuthSecretArn"] == made["AuthSecret"]
    (db,) = rds.describe_db_instances()["DBInstances"]
    assert db["StorageEncrypted"] and not db["PubliclyAccessible"] and db["MultiAZ"]
    assert db["Engine"] == "postgres" and db["DBName"] == "prefect"

    ecs = service_client(settings.aws, "ecs")
    arns = ecs.list_services(cluster="img2img-prefect")["serviceArns"]
    services = {
        s["serviceName"]: s
        for s in ecs.describe_services(cluster="img2img-prefect", services=arns)["services"]
    }
    assert services["img2img-prefect-api"]["desiredCount"] == 2
    assert services["img2img-prefect-services"]["desiredCount"] == 1
    api = ecs.describe_task_definition(taskDefinition="img2img-prefect-api")["taskDefinition"]
    (container,) = api["containerDefinitions"]
    assert container["image"] == IMAGE
    assert "--no-services" in container["command"][-1]
    assert {s["name"] for s in container["secrets"]} >= {"PREFECT_SERVER_API_AUTH_STRING"}

    elb = service_client(settings.aws, "elbv2")
    (balancer,) = elb.describe_load_balancers()["LoadBalancers"]
    assert balancer["Scheme"] == "internal"
    (listener,) = elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    assert listener["Protocol"] == "HTTPS" and listener["Port"] == 443
    assert dropped == []
