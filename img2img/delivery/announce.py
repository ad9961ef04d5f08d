"""Sending each upload's completion message, once its outcome document exists.

Exactly one announcement per outcome, as far as it can be had over at-least-once transports:

- A message is sent only after the outcome document (result metadata or failure record)
  was written, and is built from that document.
- After the send, the document is tagged `img2img-announced=<message id>`. Whoever finds an
  outcome it did not write itself (a redelivered event, a re-run, a batch that ran twice, the
  recovery service finishing a crashed run) sends the message only when that tag is absent.
  So a retried run, or a batch that runs twice, does not announce an outcome again.
- Two runs can hold the same upload at once (its event delivered twice and taken by two
  dispatcher replicas): only one creates the document (create-once writes), and the other
  finds it written but not yet tagged. That one leaves it to its writer for
  `notify.writer_grace_s` after it was written, watching for the tag, and announces it only
  if no tag came (the writer died).
- A writer that dies between its send and its tag leaves an untagged outcome; its run is
  re-run (crash recovery) and the re-run announces it once the grace is over. That message
  may be the second one: delivery is at least once, and a consumer drops a message whose
  `dedup_id` it has seen (on a `.fifo` topic SNS does that within its 5-minute window).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from img2img.aws import storage
from img2img.aws.clients import RETRYABLE_CODES, AwsClients
from img2img.config.notify import NotifySettings
from img2img.config.settings import Settings
from img2img.delivery.notify import (
    EVENT_DETAIL_TYPE,
    EVENT_SOURCE,
    Outcome,
    document_key,
    fifo_ids,
    outcome_message,
    sns_attributes,
)
from img2img.errors import NotifyRefused, NotifyUnavailable
from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient

log = logging.getLogger(__name__)

ANNOUNCED_TAG = "img2img-announced"
# S3's and SQS's codes, and what SNS, KMS and EventBridge answer when they are busy.
_RETRYABLE_CODES = RETRYABLE_CODES | {
    "Throttled",
    "KMSThrottling",
    "InternalFailure",
    "InternalException",
}


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        message = exc.response.get("Error", {}).get("Message", "")
        if code in _RETRYABLE_CODES:
            return NotifyUnavailable(f"{what}: {code}")
        return NotifyRefused(f"{what} refused the message: {code} {message}".strip())
    if isinstance(exc, BotoCoreError):
        return NotifyUnavailable(f"{what}: {exc}")
    return exc


@dataclass(frozen=True)
class Announcer:
    """Sends completion messages to the configured topic and bus (neither: does nothing)."""

    s3: S3Client
    sns: SNSClient
    events: EventBridgeClient
    settings: NotifySettings
    results_bucket: str

    @classmethod
    def for_clients(cls, clients: AwsClients, settings: Settings) -> Announcer:
        return cls(
            s3=clients.s3,
            sns=clients.sns,
            events=clients.events,
            settings=settings.notify,
            results_bucket=settings.storage.results_bucket,
        )

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def announce_once(
        self, ref: ObjectRef, written: tuple[Outcome, dict[str, Any]] | None = None
    ) -> bool:
        """Announce `ref`'s outcome once. True when a message was sent.

        Args:
            written: (outcome, document) when the caller has just created the outcome
                document itself: nobody can have announced it yet, so no lookup. None: the
                outcome was written by someone else (or not yet), and is announced only when
                it exists and its tag says nobody did.
        """
        if not self.enabled:
            return False
        if written is not None:
            outcome, doc = written
            self._send_and_tag(ref, outcome, doc)
            return True
        outcome_kind: Outcome
        for outcome_kind in ("result", "failure"):
            key = document_key(ref, outcome_kind)
            # The tag lookup is also the existence check: the document is read only when
            # it exists and is still unannounced.
            tags = storage.get_tags(self.s3, self.results_bucket, key)
            if tags is None:
                continue
            if ANNOUNCED_TAG in tags:
                return False
            found = storage.download_with_time(
                self.s3, self.results_bucket, key, storage.DOCUMENT_MAX_BYTES
            )
            if found is None or self._announced_by_writer(key, found[1]):
                return False
            self._send_and_tag(ref, outcome_kind, json.loads(found[0]))
            return True
        return False

    def _announced_by_writer(self, key: str, written_at: datetime) -> bool:
        """Whether the document's writer tags it as announced within the grace after it
        wrote it (it sends, then tags, right after writing); polls the tag until then."""
        until = written_at + timedelta(seconds=self.settings.writer_grace_s)
        while datetime.now(UTC) < until:
            time.sleep(min(0.25, max((until - datetime.now(UTC)).total_seconds(), 0)))
            tags = storage.get_tags(self.s3, self.results_bucket, key)
            if tags is None or ANNOUNCED_TAG in tags:
                return True
        return False

    def _send_and_tag(self, ref: ObjectRef, outcome: Outcome, doc: dict[str, Any]) -> None:
        message = outcome_message(ref, self.results_bucket, outcome, doc, self._presign(ref, doc))
        message_id = self._send(message)
        storage.put_tags(
            self.s3, self.results_bucket, document_key(ref, outcome), {ANNOUNCED_TAG: message_id}
        )

    def _presign(self, ref: ObjectRef, doc: dict[str, Any]) -> tuple[str, str] | None:
        if self.settings.presign_s <= 0 or "result" not in doc:
            return None
        lifetime = self.settings.presign_s
        url = self.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.results_bucket, "Key": keys_for(ref).result},
            ExpiresIn=lifetime,
        )
        expires = datetime.now(UTC) + timedelta(seconds=lifetime)
        return url, expires.isoformat(timespec="seconds")

    def _send(self, message: dict[str, Any]) -> str:
        """Publish to the topic and put to the bus; the id of the first message sent."""
        body = json.dumps(message, sort_keys=True, default=str)
        ids: list[str] = []
        if self.settings.topic_arn:
            arn = self.settings.topic_arn
            extra: dict[str, Any] = {}
            if arn.endswith(".fifo"):
                extra["MessageDeduplicationId"], extra["MessageGroupId"] = fifo_ids(message)
            try:
                sent = self.sns.publish(
                    TopicArn=arn,
                    Message=body,
                    MessageAttributes=sns_attributes(message),  # type: ignore[arg-type]
                    **extra,
                )
            except (ClientError, BotoCoreError) as exc:
                raise _translate(exc, f"SNS topic {arn}") from exc
            ids.append(sent["MessageId"])
        if self.settings.event_bus:
            bus = self.settings.event_bus
            entry: Any = {
                "Source": EVENT_SOURCE,
                "DetailType": EVENT_DETAIL_TYPE,
                "Detail": body,
                "EventBusName": bus,
                "Resources": [],
            }
            try:
                answer = self.events.put_events(Entries=[entry])
            except (ClientError, BotoCoreError) as exc:
                raise _translate(exc, f"EventBridge bus {bus}") from exc
            if answer.get("FailedEntryCount"):
                failed = answer["Entries"][0]
                code = failed.get("ErrorCode", "")
                what = f"EventBridge bus {bus}: {code} {failed.get('ErrorMessage', '')}".strip()
                if code in _RETRYABLE_CODES:
                    raise NotifyUnavailable(what)
                raise NotifyRefused(what)
            ids.append(str(answer["Entries"][0].get("EventId", "")))
        log.debug("announced %s as %s", message["dedup_id"], ids)
        return ids[0] if ids and ids[0] else "sent"
