"""`img2img dlq show | replay`: read the ingest queue's dead-letter queue and move its
messages back after a fix.

Two kinds of message land there: ones the dispatcher refused (not an S3 notification,
another bucket, an unsafe key), which carry a `reason` attribute, and ones SQS moved there
itself after `maxReceiveCount` deliveries without a delete (the redrive policy).

Replay uses SQS's own message-move task (`StartMessageMoveTask`, up to 500 messages/s) where
the endpoint has it. Elsewhere it receives, sends to the ingest queue, and deletes from the
dead-letter queue only after the send succeeded: a crash in between leaves a copy in both
queues, which the pipeline's de-duplication absorbs, and never none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from img2img.config.aws import StorageSettings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger("img2img.dlq")

MAX_ROUNDS = 1000  # receive calls per command, at most 10 messages each


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    reason: str
    receives: int
    body: str


def _urls(sqs: SQSClient, storage: StorageSettings) -> tuple[str, str]:
    ingest = sqs.get_queue_url(QueueName=storage.ingest_queue)["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName=storage.dead_letter_queue)["QueueUrl"]
    return ingest, dlq


def _reason(message: Any) -> str:
    attrs = message.get("MessageAttributes") or {}
    if "reason" in attrs:
        return str(attrs["reason"].get("StringValue", ""))
    receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
    return (
        "moved here by the queue's redrive policy: received without being deleted "
        f"(receive count {receives}); the dispatcher could not create its run"
    )


def show(sqs: SQSClient, storage: StorageSettings, limit: int = 100) -> list[DeadLetter]:
    """Up to `limit` dead letters with their reasons. Each is hidden for 2 s while read, so
    one call sees each message once; nothing is deleted."""
    _, dlq = _urls(sqs, storage)
    seen: dict[str, DeadLetter] = {}
    for _ in range(MAX_ROUNDS):
        if len(seen) >= limit:
            break
        response = sqs.receive_message(
            QueueUrl=dlq,
            MaxNumberOfMessages=10,
            VisibilityTimeout=2,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in seen]
        if not fresh:
            break
        for m in fresh:
            seen[m["MessageId"]] = DeadLetter(
                message_id=m["MessageId"],
                reason=_reason(m),
                receives=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 0)),
                body=m.get("Body", ""),
            )
    return list(seen.values())[:limit]


def replay(sqs: SQSClient, storage: StorageSettings, dry_run: bool = False) -> dict[str, Any]:
    """Move every dead letter back to the ingest queue; with `dry_run`, only count them."""
    ingest, dlq = _urls(sqs, storage)
    waiting = int(
        sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]["ApproximateNumberOfMessages"]
    )
    if dry_run:
        return {"dry_run": True, "messages": waiting, "method": None, "moved": 0}
    attrs = ["QueueArn"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=attrs)["Attributes"]["QueueArn"]  # type: ignore[arg-type]
    ingest_arn = sqs.get_queue_attributes(QueueUrl=ingest, AttributeNames=attrs)["Attributes"][  # type: ignore[arg-type]
        "QueueArn"
    ]
    try:
        task = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=ingest_arn)
        log.info("started SQS message move task %s", task.get("TaskHandle"))
        return {
            "dry_run": False,
            "messages": waiting,
            "method": "StartMessageMoveTask",
            "task": task.get("TaskHandle"),
            "moved": waiting,
        }
    except (ClientError, NotImplementedError) as exc:
        log.info("no message-move task on this endpoint (%s); moving one by one", exc)
    moved = 0
    for _ in range(MAX_ROUNDS):
        response = sqs.receive_message(
            QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=60, WaitTimeSeconds=0
        )
        messages = response.get("Messages", [])
        if not messages:
            break
        for m in messages:
            # Send first, delete after: a failure in between duplicates, never loses.
            sqs.send_message(QueueUrl=ingest, MessageBody=m["Body"])
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"])
            moved += 1
    return {"dry_run": False, "messages": waiting, "method": "receive-send-delete", "moved": moved}
