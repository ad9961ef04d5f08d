"""Sending each upload's completion message, once its outcome document exists.

Exactly one announcement per outcome, as far as it can be had over at-least-once transports:

- A message is sent only after the outcome document (result metadata or failure record)
  was written, and is built from that document.
- After the send, the document is tagged `img2img-announced=<message id>`. Whoever finds an
  outcome it did not write itself (a redelivered event, a re-run, a batch that ran twice, the
  recovery service finishing a crashed run) sends the message only when that tag is absent.
  So a retried run, or a batch that runs twice, does not announce an outcome again.
- A writer that dies between its send and its tag leaves an untagged outcome; its run is
  re-run (crash recovery) and the re-run announces it. That message may be the second one:
  delivery is at least once, and a consumer drops a message whose `dedup_id` it has seen
  (on a `.fifo` topic SNS does that within its 5-minute window).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from img2img import storage
from img2img.aws import AwsClients
from img2img.errors import NotifyRefused, NotifyUnavailable
from img2img.events import ObjectRef
from img2img.keys import keys_for
from img2img.notify import (
    EVENT_DETAIL_TYPE,
    EVENT_SOURCE,
    Outcome,
    fifo_ids,
    outcome_message,
    sns_attributes,
)
from img2img.settings import NotifySettings, Settings

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient

log = logging.getLogger(__name__)

ANNOUNCED_TAG = "img2img-announced"
_RETRYABLE_CODES = {
    "Throttled",
    "Throttling",
    "ThrottlingException",
    "KMSThrottling",
    "InternalError",
    "InternalFailure",
    "InternalException",
    "ServiceUnavailable",
    "503",
    "500",
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

    def announce(
        self, ref: ObjectRef, outcome: Outcome, doc: dict[str, Any], *, written_now: bool
    ) -> bool:
        """Announce `ref`'s outcome, whose document is `doc`. True when a message was sent.

        Args:
            written_now: the caller has just created the outcome document itself, so nobody
                can have announced it yet (no tag lookup). Otherwise the document's tag says
                whether an earlier writer already did.
        """
        if not self.enabled:
            return False
        key = self._document_key(ref, outcome)
        if not written_now and self.announced(key):
            return False
        message = outcome_message(ref, self.results_bucket, outcome, doc, self._presign(ref, doc))
        message_id = self._send(message)
        storage.put_tags(self.s3, self.results_bucket, key, {ANNOUNCED_TAG: message_id})
        return True

    def announce_existing(self, ref: ObjectRef) -> bool:
        """Announce an outcome another writer made, unless it was announced already
        (reads the outcome document). False too when `ref` has no outcome yet."""
        if not self.enabled:
            return False
        keys = keys_for(ref)
        outcome: Outcome
        for outcome, key in (("result", keys.result_meta), ("failure", keys.failure)):
            body = storage.download_if_exists(self.s3, self.results_bucket, key)
            if body is not None:
                return self.announce(ref, outcome, json.loads(body), written_now=False)
        return False

    def announced(self, document_key: str) -> bool:
        tags = storage.get_tags(self.s3, self.results_bucket, document_key)
        return bool(tags and ANNOUNCED_TAG in tags)

    def _document_key(self, ref: ObjectRef, outcome: Outcome) -> str:
        keys = keys_for(ref)
        return keys.result_meta if outcome == "result" else keys.failure

    def _presign(self, ref: ObjectRef, doc: dict[str, Any]) -> tuple[str, str] | None:
        if self.settings.presign_s <= 0 or "result" not in doc:
            return None
        lifetime = self.settings.presign_s
        url = self.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.results_bucket, "Key": keys_for(ref).result},
            ExpiresIn=lifetime,
        )
        expires = datetime.now(timezone.utc) + timedelta(seconds=lifetime)
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
