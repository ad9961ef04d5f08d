"""S3 "object created" notifications, parsed from an SQS message body.

Three envelopes are accepted, as AWS documents them:

- direct S3 → SQS: `{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
  "s3": {"bucket": {"name": ...}, "object": {"key": ..., "eTag": ...}}}]}`, keys URL-encoded;
- S3 → SNS → SQS: `{"Type": "Notification", "Message": "<the direct body as a string>"}`;
- S3 → EventBridge → SQS: `{"detail-type": "Object Created", "source": "aws.s3",
  "detail": {"bucket": {"name": ...}, "object": {"key": ..., "etag": ...}}}`.

`s3:TestEvent` messages and non-creation events are skipped, not errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict

from img2img.errors import InvalidEvent


def oversize_reason(size: int | None, max_bytes: int) -> str | None:
    """Why an upload whose event names `size` bytes is not read (None: it fits, or its
    event names no size and the read's own check holds it)."""
    if size is None or size <= max_bytes:
        return None
    return f"upload is {size} bytes; the limit is {max_bytes} (limits.max_bytes)"


class ObjectRef(BaseModel):
    """One uploaded object, as its notification named it. JSON-serialisable flow parameter."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    etag: str = ""
    version_id: str | None = None
    size: int | None = None
    sequencer: str | None = None
    event_time: datetime | None = None
    # When the dispatcher received the event (the first hop of the queue wait).
    received_at: datetime | None = None
    # Where the dispatcher placed it (`img2img.intake.placement`; None: lanes or tenants
    # off), and why it refused it (a lane or tenant that cannot be used: the run records
    # the failure, so the upload still ends with one outcome).
    lane: str | None = None
    tenant: str | None = None
    refused: str | None = None

    def as_parameter(self) -> dict[str, object]:
        """This upload as a flow run parameter: JSON, fields without a value left out (a
        run of hundreds of uploads keeps its parameters, and each read of the run, small)."""
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def tag(self) -> str:
        """What tells two uploads to the same key apart: the version id, else the ETag."""
        return self.version_id or self.etag or "unversioned"

    @property
    def identity(self) -> str:
        """Stable identity of this upload, the unit of de-duplication."""
        return f"{self.bucket}/{self.key}@{self.tag}"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass
class ParsedMessage:
    """What one SQS message carried: the created objects and why anything else was skipped."""

    objects: list[ObjectRef] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def parse_message(body: str) -> ParsedMessage:
    """Parse one SQS message body. Raises InvalidEvent naming what is wrong."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, TypeError) as exc:
        raise InvalidEvent(f"message body is not JSON: {exc}") from exc
    return parse_document(doc)


def parse_document(doc: Any) -> ParsedMessage:
    """Parse a decoded message body of any of the three envelopes."""
    if not isinstance(doc, dict):
        raise InvalidEvent(f"message body must be a JSON object, got {type(doc).__name__}")
    if doc.get("Type") == "Notification" and "Message" in doc:
        inner = doc["Message"]
        if not isinstance(inner, str):
            raise InvalidEvent("SNS envelope field 'Message' must be a string")
        return parse_message(inner)
    if doc.get("Event") == "s3:TestEvent":
        return ParsedMessage(skipped=[f"s3:TestEvent for bucket {doc.get('Bucket')!r}"])
    if "Records" in doc:
        return _parse_records(doc["Records"])
    if "detail-type" in doc and "detail" in doc:
        return _parse_eventbridge(doc)
    raise InvalidEvent(
        "message is not an S3 notification: expected 'Records', an SNS 'Notification' or an "
        f"EventBridge event, got keys {sorted(doc)[:8]}"
    )


def _parse_records(records: Any) -> ParsedMessage:
    if not isinstance(records, list):
        raise InvalidEvent(f"'Records' must be a list, got {type(records).__name__}")
    parsed = ParsedMessage()
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InvalidEvent(f"Records[{i}] must be an object, got {type(record).__name__}")
        source = record.get("eventSource")
        name = str(record.get("eventName", ""))
        if source != "aws:s3":
            parsed.skipped.append(f"Records[{i}]: eventSource {source!r} is not aws:s3")
            continue
        if not name.startswith("ObjectCreated:"):
            parsed.skipped.append(f"Records[{i}]: eventName {name!r} is not an object creation")
            continue
        s3 = _field(record, "s3", dict, f"Records[{i}]")
        bucket = _field(
            _field(s3, "bucket", dict, f"Records[{i}].s3"), "name", str, f"Records[{i}].s3.bucket"
        )
        obj = _field(s3, "object", dict, f"Records[{i}].s3")
        raw_key = _field(obj, "key", str, f"Records[{i}].s3.object")
        parsed.objects.append(
            _object_ref(
                bucket=bucket,
                key=unquote_plus(raw_key),
                etag=obj.get("eTag") or obj.get("etag") or "",
                version_id=obj.get("versionId"),
                size=obj.get("size"),
                sequencer=obj.get("sequencer"),
                event_time=record.get("eventTime"),
                where=f"Records[{i}]",
            )
        )
    return parsed


def _parse_eventbridge(doc: dict[str, Any]) -> ParsedMessage:
    if doc.get("source") != "aws.s3":
        return ParsedMessage(skipped=[f"EventBridge source {doc.get('source')!r} is not aws.s3"])
    if doc.get("detail-type") != "Object Created":
        return ParsedMessage(
            skipped=[f"EventBridge detail-type {doc.get('detail-type')!r} is not Object Created"]
        )
    detail = _field(doc, "detail", dict, "event")
    bucket = _field(_field(detail, "bucket", dict, "detail"), "name", str, "detail.bucket")
    obj = _field(detail, "object", dict, "detail")
    # EventBridge delivers keys as stored (not form-encoded), unlike direct notifications.
    key = _field(obj, "key", str, "detail.object")
    return ParsedMessage(
        objects=[
            _object_ref(
                bucket=bucket,
                key=key,
                etag=obj.get("etag") or "",
                version_id=obj.get("version-id"),
                size=obj.get("size"),
                sequencer=obj.get("sequencer"),
                event_time=doc.get("time"),
                where="detail",
            )
        ]
    )


def _field(container: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = container.get(name)
    if not isinstance(value, kind) or (kind is str and not value):
        raise InvalidEvent(f"{where}.{name} must be a non-empty {kind.__name__}, got {value!r:.80}")
    return value


def _object_ref(
    *,
    bucket: str,
    key: str,
    etag: Any,
    version_id: Any,
    size: Any,
    sequencer: Any,
    event_time: Any,
    where: str,
) -> ObjectRef:
    if size is not None and (not isinstance(size, int) or size < 0):
        raise InvalidEvent(f"{where} object size must be a non-negative integer, got {size!r}")
    return ObjectRef(
        bucket=bucket,
        key=key,
        etag=str(etag).strip('"'),
        version_id=str(version_id) if version_id not in (None, "", "null") else None,
        size=size,
        sequencer=str(sequencer) if sequencer else None,
        event_time=_parse_time(event_time, where),
    )


def _parse_time(value: Any, where: str) -> datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{where} event time must be an ISO-8601 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidEvent(f"{where} event time {value!r} is not ISO-8601") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
