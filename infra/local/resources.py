"""Create the pipeline's S3 and SQS resources, idempotently, through any endpoint.

On the local stack this runs against moto; it makes the same resources the AWS templates
make: private encrypted buckets, an ingest queue with a redrive policy to a dead-letter
queue, and ObjectCreated notifications from the uploads bucket to the queue.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from img2img.aws.clients import AwsClients
from img2img.config.aws import StorageSettings
from img2img.config.dispatch import DispatchSettings

if TYPE_CHECKING:
    from mypy_boto3_sqs.literals import QueueAttributeNameType

log = logging.getLogger(__name__)

MAX_RECEIVE_COUNT = 5
DLQ_RETENTION_S = 14 * 24 * 3600
# The completion topic and the app backend's queue subscribed to it (infra/aws/notify.yaml
# makes the same pair on AWS).
OUTCOME_TOPIC = "img2img-outcomes"
APP_QUEUE = "img2img-app-outcomes"
# moto's account: the local topic's ARN is known before the stack is up.
LOCAL_ACCOUNT = "123456789012"


def local_topic_arn(region: str) -> str:
    return f"arn:aws:sns:{region}:{LOCAL_ACCOUNT}:{OUTCOME_TOPIC}"


@dataclass(frozen=True)
class QueueUrls:
    ingest: str
    dead_letter: str


def ensure_resources(
    clients: AwsClients,
    storage: StorageSettings,
    dispatch: DispatchSettings,
    region: str,
    keep_stage_versions: bool = False,
) -> QueueUrls:
    """Every bucket and queue of the data path, and the uploads bucket's notifications.

    The results bucket keeps versions, as the AWS template's does: a second write of an
    outcome is then visible to the exactly-once audit (`infra/local/audit.py`).

    Args:
        keep_stage_versions: the stage bucket keeps versions too, so the audit counts how
            many times each stage's device work ran. Emulators only: a real directory
            bucket has no versions.
    """
    for bucket in (storage.uploads_bucket, storage.stage_bucket, storage.results_bucket):
        _ensure_bucket(clients, bucket, region)
    _keep_versions(clients, storage.results_bucket)
    if keep_stage_versions:
        _keep_versions(clients, storage.stage_bucket)
    queues = ensure_queues(clients, storage, dispatch)
    queue_arn = clients.sqs.get_queue_attributes(
        QueueUrl=queues.ingest, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    clients.s3.put_bucket_notification_configuration(
        Bucket=storage.uploads_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"Id": "img2img-ingest", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    return queues


def ensure_notifications(clients: AwsClients) -> tuple[str, str]:
    """The completion topic (encrypted) and the app's queue subscribed to it with raw
    delivery (the message body is the completion message itself); (topic ARN, queue URL)."""
    topic_arn = clients.sns.create_topic(
        Name=OUTCOME_TOPIC, Attributes={"KmsMasterKeyId": "alias/aws/sns"}
    )["TopicArn"]
    sqs = clients.sqs
    queue_url = sqs.create_queue(
        QueueName=APP_QUEUE,
        Attributes={"SqsManagedSseEnabled": "true", "MessageRetentionPeriod": str(4 * 86_400)},
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TopicDelivers",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    subscribed = clients.sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    if not any(s.get("Endpoint") == queue_arn for s in subscribed):
        clients.sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true"},
        )
    return topic_arn, queue_url


def ensure_queues(
    clients: AwsClients, storage: StorageSettings, dispatch: DispatchSettings
) -> QueueUrls:
    sqs = clients.sqs
    dlq_url = sqs.create_queue(
        QueueName=storage.dead_letter_queue,
        Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_S), "SqsManagedSseEnabled": "true"},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    attributes: dict[QueueAttributeNameType, str] = {
        "VisibilityTimeout": str(dispatch.visibility_timeout_s),
        "ReceiveMessageWaitTimeSeconds": str(dispatch.poll_wait_s),
        "SqsManagedSseEnabled": "true",
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
        ),
    }
    try:
        ingest_url = sqs.create_queue(QueueName=storage.ingest_queue, Attributes=attributes)[
            "QueueUrl"
        ]
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        ingest_url = sqs.get_queue_url(QueueName=storage.ingest_queue)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=ingest_url, Attributes=attributes)
    return QueueUrls(ingest=ingest_url, dead_letter=dlq_url)


def _keep_versions(clients: AwsClients, bucket: str) -> None:
    clients.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def _ensure_bucket(clients: AwsClients, bucket: str, region: str) -> None:
    s3 = clients.s3
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        try:
            if region == "us-east-1":
                s3.create_bucket(Bucket=bucket)
            else:
                s3.create_bucket(
                    Bucket=bucket,
                    CreateBucketConfiguration={"LocationConstraint": cast(Any, region)},
                )
            log.info("created bucket %s", bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise
    if bucket.endswith("--x-s3"):
        return  # directory buckets: always encrypted and private, no such settings to make
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
