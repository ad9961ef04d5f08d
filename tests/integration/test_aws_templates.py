"""The AWS templates: deploy what moto supports of storage.yaml through CloudFormation on the
local moto server, then run the pipeline against exactly those resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

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
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.load((TEMPLATES / name).read_text(), Loader=_CfnLoader)
    return doc


def without_unsupported(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    dropped = [k for k, r in doc["Resources"].items() if r["Type"] in UNSUPPORTED]
    for key in dropped:
        del doc["Resources"][key]
    text = json.dumps(doc)
    doc["Outputs"] = {k: v for k, v in doc.get("Outputs", {}).items()
                      if not any(d in json.dumps(v) for d in dropped)}
    assert all(d not in json.dumps(doc["Resources"]) for d in dropped), text[:200]
    return doc, dropped


@pytest.mark.usefixtures("prefect_api")
def test_storage_stack_on_moto_runs_the_pipeline(aws) -> None:  # type: ignore[no-untyped-def]
    from flows.pipeline import img2img_pipeline
    from img2img.aws import service_client
    from tasks.runtime import reset_runtime

    clients, settings = aws
    cfn = service_client(settings.aws, "cloudformation")
    doc, dropped = without_unsupported(load_template("storage.yaml"))
    assert dropped == ["StageBucket"]
    cfn.create_stack(StackName="img2img-storage", TemplateBody=json.dumps(doc),
                     Parameters=[{"ParameterKey": "Prefix", "ParameterValue": "cfntest"}])
    stack = cfn.describe_stacks(StackName="img2img-storage")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    out = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    # What the template promises: private, encrypted, TLS-only, versioned uploads, redrive.
    uploads, results = out["UploadsBucket"], out["ResultsBucket"]
    for bucket in (uploads, results):
        block = clients.s3.get_public_access_block(Bucket=bucket)
        assert all(block["PublicAccessBlockConfiguration"].values())
        assert clients.s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        policy = json.loads(clients.s3.get_bucket_policy(Bucket=bucket)["Policy"])
        assert any(s["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(s)
                   for s in policy["Statement"])
    assert clients.s3.get_bucket_versioning(Bucket=uploads)["Status"] == "Enabled"
    queue_url = clients.sqs.get_queue_url(QueueName=out["IngestQueueName"])["QueueUrl"]
    attrs = clients.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    assert json.loads(attrs["Attributes"]["RedrivePolicy"])["maxReceiveCount"] in (5, "5")

    # The directory bucket moto's CloudFormation lacks, named as the template names it.
    stage = "cfntest-stage--use1-az4--x-s3"
    clients.s3.create_bucket(Bucket=stage)

    import os

    env = {"IMG2IMG_STORAGE__UPLOADS_BUCKET": uploads,
           "IMG2IMG_STORAGE__RESULTS_BUCKET": results,
           "IMG2IMG_STORAGE__STAGE_BUCKET": stage}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_runtime()
    try:
        ref = upload(clients, uploads, "cfn/one.png", png(), FAST)
        version = clients.s3.head_object(Bucket=uploads, Key="cfn/one.png")["VersionId"]
        ref = ref.model_copy(update={"version_id": version})
        state = img2img_pipeline(objects=[ref], return_state=True)
        assert state.is_completed(), state.message
        status, meta = outcome(clients, results, ref)
        assert status == "completed" and meta["version_id"] == version
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_runtime()
