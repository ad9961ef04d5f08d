"""The completion message an app receives for each upload: what it says, built from the
upload's outcome document (its result metadata or its failure record). No I/O here;
`announce.py` sends it.

One message per outcome, version 2 (version 1 named the stages `stage1` and `stage2` in
`timings_ms` and `device_batch`; version 2 names them `generate` and `upscale`):

    {"version": 2, "dedup_id": "results/<bucket>/<key>@<tag>.json", "outcome": "result",
     "upload": {"bucket", "key", "version_id", "etag", "uri"}, "request_id": "...",
     "result": {"uri", "width", "height"[, "presigned_url", "presigned_expires_at"]},
     "failure": null, "timings_ms": {...}, "device_batch": {"generate": 4, "upscale": 4},
     "flow_run_id": "...", "finished_at": "..."}

With lanes or tenants on, it also carries `"lane"` and `"tenant"` (and SNS attributes of
the same names, for subscription filters). A failure carries `"result": null` and
`"failure": {"stage", "reason", "retryable", "record_uri"}`. `dedup_id` is the outcome
document's key: stable for an upload, so a consumer drops a message whose id it has seen
(delivery is at least once).
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any, Literal

from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for

log = logging.getLogger("img2img.notify")

MESSAGE_VERSION = 2
# User-metadata key (x-amz-meta-request-id) that carries the caller's own id; a fixed name,
# so the app and the pipeline agree on it without configuration.
REQUEST_ID_METADATA = "request-id"
# What a caller's id may be: it is a message attribute subscribers route on, and a log field.
REQUEST_ID_MAX_CHARS = 128
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:/@+=~-]+")
# SNS and EventBridge take at most 256 KiB per message; a reason is cut well below that.
MAX_REASON_CHARS = 2000
# The EventBridge event's `source` and `detail-type`, for rules to match on.
EVENT_SOURCE = "img2img"
EVENT_DETAIL_TYPE = "img2img outcome"

Outcome = Literal["result", "failure"]


def document_key(ref: ObjectRef, outcome: Outcome) -> str:
    """The key of `ref`'s outcome document: its result metadata or its failure record. It is
    also the message's `dedup_id`."""
    keys = keys_for(ref)
    return keys.result_meta if outcome == "result" else keys.failure


def upload_of(message: dict[str, Any]) -> ObjectRef:
    """The upload a message is about (the inverse of its `upload` block), for consumers that
    match messages to what they uploaded."""
    upload = message.get("upload") or {}
    return ObjectRef(
        bucket=upload.get("bucket", ""),
        key=upload.get("key", ""),
        etag=upload.get("etag") or "",
        version_id=upload.get("version_id"),
    )


def request_id_from(metadata: dict[str, str] | None) -> str | None:
    """The caller's id from an upload's user metadata (keys as boto3 returns them, without
    the `x-amz-meta-` prefix, lower case), or None. An id that is not 1 to 128 of letters,
    digits and `._:/@+=~-` is dropped (logged, never carried): it is offered to subscribers
    as a routing attribute, so it cannot be a way to inject text into their filters or logs."""
    if not metadata:
        return None
    value = metadata.get(REQUEST_ID_METADATA)
    if not value:
        return None
    if len(value) > REQUEST_ID_MAX_CHARS or not REQUEST_ID_PATTERN.fullmatch(value):
        log.warning(
            "request id dropped: %d characters, %r; expected 1 to %d of letters, digits "
            "and ._:/@+=~-",
            len(value),
            value[:40],
            REQUEST_ID_MAX_CHARS,
        )
        return None
    return value


def outcome_message(
    ref: ObjectRef,
    results_bucket: str,
    outcome: Outcome,
    doc: dict[str, Any],
    presigned: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The message for `ref`'s outcome, from its outcome document `doc`.

    Args:
        outcome: "result" when `doc` is the result metadata, "failure" for a failure record.
        presigned: (URL, expiry as ISO 8601) of the result image, when the setting asks.
    """
    keys = keys_for(ref)
    message: dict[str, Any] = {
        "version": MESSAGE_VERSION,
        "dedup_id": document_key(ref, outcome),
        "outcome": outcome,
        "upload": {
            "bucket": ref.bucket,
            "key": ref.key,
            "version_id": ref.version_id,
            "etag": ref.etag,
            "uri": ref.uri,
        },
        "request_id": doc.get("request_id"),
        # Where the upload ran, when lanes or tenants are on.
        **{k: doc[k] for k in ("lane", "tenant") if doc.get(k)},
        "result": None,
        "failure": None,
        "timings_ms": dict(doc.get("timings_ms") or {}),
        # Images in each stage's device call (its stage time is a share of that call).
        "device_batch": dict(doc.get("device_batch") or {}),
        "flow_run_id": doc.get("flow_run_id"),
        "finished_at": doc.get("finished_at") or doc.get("failed_at"),
    }
    if outcome == "result":
        result: dict[str, Any] = {
            "uri": doc.get("result") or f"s3://{results_bucket}/{keys.result}",
            "width": doc.get("width"),
            "height": doc.get("height"),
        }
        if presigned is not None:
            result["presigned_url"], result["presigned_expires_at"] = presigned
        message["result"] = result
    else:
        message["failure"] = {
            "stage": doc.get("stage", "unknown"),
            "reason": str(doc.get("reason", ""))[:MAX_REASON_CHARS],
            "retryable": bool(doc.get("retryable", False)),
            "record_uri": f"s3://{results_bucket}/{keys.failure}",
        }
    return message


def sns_attributes(message: dict[str, Any]) -> dict[str, dict[str, str]]:
    """SNS message attributes, for subscription filter policies (for example only
    failures, or only one app's requests)."""
    attributes = {
        "outcome": {"DataType": "String", "StringValue": message["outcome"]},
        "upload_bucket": {"DataType": "String", "StringValue": message["upload"]["bucket"]},
    }
    if message.get("request_id"):
        attributes["request_id"] = {"DataType": "String", "StringValue": message["request_id"]}
    for name in ("lane", "tenant"):
        if message.get(name):
            attributes[name] = {"DataType": "String", "StringValue": message[name]}
    if message["failure"] is not None:
        retryable = "true" if message["failure"]["retryable"] else "false"
        attributes["retryable"] = {"DataType": "String", "StringValue": retryable}
    return attributes


def fifo_ids(message: dict[str, Any]) -> tuple[str, str]:
    """(de-duplication id, message group id) for a FIFO topic: both at most 128 characters,
    so digests of the outcome key and of the upload's bucket and key. One group per upload
    key keeps two versions of one key in order; different keys are not held up."""
    dedup = hashlib.sha256(message["dedup_id"].encode()).hexdigest()
    upload = message["upload"]
    group = hashlib.sha256(f"{upload['bucket']}/{upload['key']}".encode()).hexdigest()
    return dedup, group
